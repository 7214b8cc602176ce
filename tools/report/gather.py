"""Finding and reading the runs of an experiment root (through training.recorder.read_run), and grouping
them into configurations: the rows of the report, and their names."""
import json
import math
import os
from dataclasses import dataclass

from data.profiles import PROFILES
from training.config import COMPARED_BY_PRESENCE, KIND_OF_RUN, NOT_COMPARED, RunConfig, keys_with
from training.options import parse_options
from training.recorder import read_run
from utils.errors import UserInputError
from utils.metric_definitions import METRICS, TASKS


class UnusableRun(Exception):
    """A numbered folder that is not a finished, readable run; the message is the reason."""


@dataclass(frozen=True)
class Run:
    """One finished run: its folder name, configuration as read back, the metrics of results.json (null
    as NaN), its entry script's defaults ({key: value}), its configuration as a row sees it (every setting
    but those NOT_COMPARED) and notes on metrics that are NaN or null."""

    name: str
    config: RunConfig
    metrics: dict
    defaults: dict
    configuration: dict
    notes: tuple = ()

    @property
    def configuration_key(self):
        """The configuration as a canonical string: runs with equal keys share a row (a setting declared
    COMPARED_BY_PRESENCE, the KD4MTL teachers' folders, counts by whether it is set)."""
        return json.dumps(self.configuration, sort_keys=True, default=str)


@dataclass(frozen=True)
class Skipped:
    """A numbered folder left out of the report, and why."""

    name: str
    reason: str


def entry_defaults(dataset, demo):
    """The settings ({key: value}) of the entry script of `dataset` when no flag is given (its --demo
    defaults when `demo`)."""
    return parse_options(PROFILES[dataset], ["--demo"] if demo else []).flat()


# Named whenever set (not None, False or empty), first: they name the kind of run (and the first two choose the
# defaults the other settings are compared with).
KIND_KEYS = keys_with(KIND_OF_RUN)


def read_metrics(results, name):
    """(the report's metrics in results["metrics"] as floats, null as NaN; a note "NAME: KEY is NaN" or
    "NAME: KEY is null" per such metric of the run `name`); UnusableRun when there are none or one is not a
    number."""
    metrics = results.get("metrics")
    if not isinstance(metrics, dict):
        raise UnusableRun("results.json has no metrics")
    scalars, notes = {}, []
    for key in METRICS:
        if key not in metrics:
            continue
        value = metrics[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise UnusableRun(f"results.json: metric {key} is not a number ({value!r})")
        if value is None:
            notes.append(f"{name}: {key} is null")
        elif math.isnan(value):
            notes.append(f"{name}: {key} is NaN")
        scalars[key] = math.nan if value is None else float(value)
    if not scalars:
        raise UnusableRun(f"results.json has no {' or '.join(TASKS)} metrics")
    return scalars, tuple(notes)


def load_run(folder, defaults_of):
    """The finished run in `folder`, its defaults from `defaults_of(*entry settings)`; UnusableRun otherwise
    (the reader's complaint about a file, named relative to the folder)."""
    try:
        record = read_run(folder)
    except UserInputError as error:
        raise UnusableRun(str(error).replace(os.path.join(folder, ""), "")) from None
    if not record.finished and record.status is not None:
        raise UnusableRun(f"status: {record.status or 'empty'}")
    if record.config is None:
        raise UnusableRun("no config.json")
    if record.results is None:
        raise UnusableRun("no results.json")
    name = os.path.basename(folder)
    metrics, notes = read_metrics(record.results, name)
    settings = record.config.flat()
    ignored = keys_with(NOT_COMPARED)
    presence = keys_with(COMPARED_BY_PRESENCE)
    configuration = {key: bool(value) if key in presence else value
                     for key, value in settings.items() if key not in ignored}
    defaults = defaults_of(record.config.data.dataset, record.config.run.demo)
    return Run(name, record.config, metrics, defaults, configuration, notes)


def load_runs(exps_dir):
    """(finished runs, skipped folders) over the numbered folders directly under `exps_dir`, in order."""
    runs, skipped, defaults = [], [], {}

    def defaults_of(*choice):
        """entry_defaults, computed once per (dataset, demo)."""
        if choice not in defaults:
            defaults[choice] = entry_defaults(*choice)
        return defaults[choice]

    for name in sorted((entry for entry in os.listdir(exps_dir) if entry.isdigit()), key=int):
        folder = os.path.join(exps_dir, name)
        if not os.path.isdir(folder):
            continue
        try:
            runs.append(load_run(folder, defaults_of))
        except UnusableRun as reason:
            skipped.append(Skipped(name, str(reason)))
    return runs, skipped


def select_groups(runs, groups):
    """The runs whose group is one of `groups` (all runs when `groups` is empty or None)."""
    if not groups:
        return list(runs)
    return [run for run in runs if run.config.run.group in groups]


def group_by_configuration(runs):
    """Lists of runs sharing a configuration, in the order of their first folder."""
    by_key = {}
    for run in runs:
        by_key.setdefault(run.configuration_key, []).append(run)
    return list(by_key.values())


def format_setting(value):
    """A setting's value as it appears in a row name (a tuple, the tasks, as its items joined by "+")."""
    if isinstance(value, (tuple, list)):
        return "+".join(str(item) for item in value)
    return format(value, "g") if isinstance(value, float) else str(value)


def ordered_keys(runs):
    """Every configuration key of `runs`: KIND_KEYS, then the others in declaration order."""
    keys = list(dict.fromkeys(key for run in runs for key in run.configuration))
    return [key for key in KIND_KEYS if key in keys] + [key for key in keys if key not in KIND_KEYS]


def value_count(runs, key):
    """How many different values `key` takes in the configurations of `runs`."""
    return len({json.dumps(run.configuration.get(key), default=str) for run in runs})


def is_notable(run, key):
    """Whether `run`'s value of `key` goes into a name: a KIND_KEYS value that is set, any other value
    that is not at the run's entry script default."""
    value = run.configuration.get(key)
    if key in KIND_KEYS:
        return value not in (None, False, ())
    return value != run.defaults.get(key)


def row_names(runs):
    """A name per run (one run per row) made of the settings whose values differ between the rows, each
    left out where it is not notable (at its default); "default" when nothing is left. The defaults depend
    on the dataset and --demo, which are always named, so two rows never share a name."""
    differing = [key for key in ordered_keys(runs) if value_count(runs, key) > 1]
    names = []
    for run in runs:
        parts = [f"{key}={format_setting(run.configuration.get(key))}" for key in differing if is_notable(run, key)]
        names.append(" ".join(parts) or "default")
    return names


def shared_settings(runs):
    """"key=value ..." of the settings with one value in every row, notable in each."""
    shared = [key for key in ordered_keys(runs)
              if value_count(runs, key) == 1 and all(is_notable(run, key) for run in runs)]
    return " ".join(f"{key}={format_setting(runs[0].configuration.get(key))}" for key in shared)
