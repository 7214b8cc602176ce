"""What the study scripts share: a list of planned runs of the entry scripts, printed and checked by
the option parser (--dry_run), or run one after the other from the repository root.

A planned run is (run, arguments): `run` has `name`, `dataset` ("cityscapes" or "nyu") and `comment`
(what follows the command line after "#"); `arguments` are the entry script's.
"""
import argparse
import contextlib
import io
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from types import MappingProxyType

from data import CITYSCAPES, NYUV2
from training.options import build_parser, parse_options
from training.recorder import read_run
from utils.errors import UserInputError

REPO_ROOT = Path(__file__).resolve().parent.parent
ENTRY_SCRIPTS = MappingProxyType({"cityscapes": "main_cross_cs.py", "nyu": "main_cross_nyu.py"})
DATASET_PROFILES = MappingProxyType({"cityscapes": CITYSCAPES, "nyu": NYUV2})
DEFAULT_SEEDS = (0, 1, 2)


def name_matches(name, pattern):
    """Whether `pattern` is a substring of `name` or a regular expression found in it (a pattern that is
    not a regular expression matches as a substring only)."""
    if pattern in name:
        return True
    try:
        return re.search(pattern, name) is not None
    except re.error:
        return False


def selection_problem(pattern):
    """The message for an --only `pattern` that selected no run: not a regular expression, or no match."""
    try:
        re.compile(pattern)
    except re.error as error:
        return f"--only {pattern!r}: it is not a valid regular expression ({error})"
    return f"--only {pattern!r}: no run name matches it"


def plan(runs, only, arguments_of):
    """The planned (run, arguments_of(run)) of the `runs` whose name `only` selects (all when None); None,
    after printing why, when it selects none."""
    selected = [run for run in runs if only is None or name_matches(run.name, only)]
    if not selected:
        print(f"error: {selection_problem(only)}", file=sys.stderr)
        return None
    return [(run, arguments_of(run)) for run in selected]


def command_line(run, arguments):
    """The shell line of a run, its comment after "#"."""
    return f"{shlex.join(['python', ENTRY_SCRIPTS[run.dataset], *arguments])}  # {run.comment}"


def parse_problem(run, arguments):
    """Why `arguments` do not parse for `run`'s dataset (training.options.parse_options), or None."""
    messages = io.StringIO()
    try:
        with contextlib.redirect_stderr(messages):
            parse_options(DATASET_PROFILES[run.dataset], arguments)
    except SystemExit:
        lines = messages.getvalue().strip().splitlines()
        return lines[-1].split("error: ", 1)[-1] if lines else "refused by the option parser"
    return None


def dry_run(planned):
    """Print each planned (run, arguments) as a command and check that it parses; 0 when all do, else 2."""
    problems = []
    for run, arguments in planned:
        print(command_line(run, arguments))
        problem = parse_problem(run, arguments)
        if problem:
            problems.append(f"{run.name}: {problem}")
    if problems:
        print(f"{len(problems)} of {len(planned)} commands do not parse:", *problems, sep="\n  ", file=sys.stderr)
        return 2
    print(f"{len(planned)} commands, all parse")
    return 0


INTERRUPTED_EXIT_CODES = (130, 143)  # an entry script stopped by SIGINT / SIGTERM (it printed the resume command)


def run_in_foreground(command, cwd):
    """Run `command` from `cwd` to its end as a shell runs a foreground job: a Ctrl-C reaches it from the
    terminal (its process group) while this process waits, ignoring it, and a SIGTERM sent to this
    process is passed on to it, so that it stops as it does on its own (resume command, exit code)
    instead of being killed with this process. Returns its subprocess.CompletedProcess."""
    process = subprocess.Popen(command, cwd=cwd)
    previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda number, frame: process.send_signal(number))
    try:
        return subprocess.CompletedProcess(command, process.wait())
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def execute(planned, save_path, complete=None):
    """Run each planned (run, arguments) from the repository root and stop at the first failure; returns
    its exit status, or 0 when every run finished. `complete(run, arguments)`, when given, makes a run's
    final arguments just before it starts (from the runs before it); a UserInputError of it stops with 2."""
    for index, (run, arguments) in enumerate(planned, start=1):
        try:
            arguments = arguments if complete is None else complete(run, arguments)
        except UserInputError as error:
            print(f"error: {run.name}: {error}", file=sys.stderr)
            return 2
        print(f"[{index}/{len(planned)}] {command_line(run, arguments)}", flush=True)
        status = run_in_foreground([sys.executable, ENTRY_SCRIPTS[run.dataset], *arguments], REPO_ROOT).returncode
        if status in INTERRUPTED_EXIT_CODES:
            print(f"stopped: {run.name} was interrupted (exit status {status}); resume it with the command it "
                  f"printed above, then run the rest with --only. The runs before it are in {save_path}.",
                  file=sys.stderr)
            return status
        if status != 0:
            print(f"error: {run.name} failed with exit status {status}; stopping. The runs before it are in "
                  f"{save_path}; rerun the rest with --only.", file=sys.stderr)
            return status
    return 0


def parse_study_arguments(argv, study, description, dataset_choices, default_save_path):
    """(the options of `python -m scripts.{study}`, the extra arguments after `--`): --dataset (one of
    `dataset_choices`, the first by default), --seeds, --only, --save_path (`default_save_path`), --dry_run."""
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(prog=f"python -m scripts.{study}", description=description,
                                     epilog="Arguments after -- are appended to every command "
                                            "(e.g. -- --epochs 1 --cpu).")
    parser.add_argument("--dataset", choices=dataset_choices, default=dataset_choices[0], help="which dataset's runs")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(DEFAULT_SEEDS), help="seeds of every run")
    parser.add_argument("--only", help="only the runs whose name contains this text or matches this regex")
    parser.add_argument("--save_path", default=default_save_path,
                        help="experiment folder root, passed to every run (relative to the repository root)")
    parser.add_argument("--dry_run", action="store_true", help="print the commands and check that they parse")
    return parser.parse_args(argv[:split]), argv[split + 1:]


def planned_epochs(dataset, arguments, fallback):
    """The --epochs that `arguments` give the entry script of `dataset` (the last one given); arguments the
    parser refuses are left to the dry run's check, with `fallback` here."""
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            return build_parser(DATASET_PROFILES[dataset]).parse_known_args(arguments)[0].epochs
        except SystemExit:
            return fallback


def finished_runs(save_path):
    """The RunRecords (training.recorder.read_run) of the finished runs with a config.json in the numbered
    folders directly under `save_path`, in folder order; folders that cannot be read are left out."""
    if not os.path.isdir(save_path):
        return []
    records = []
    for name in sorted((entry for entry in os.listdir(save_path) if entry.isdigit()), key=int):
        try:
            record = read_run(os.path.join(save_path, name))
        except UserInputError:
            continue
        if record.finished and record.config is not None:
            records.append(record)
    return records


def run_or_check(planned, options, notes=(), complete=None, report_flags=()):
    """With --dry_run: print and check `planned`, then print `notes` (lines) when every command parsed;
    otherwise run them one after the other (`complete` as in `execute`), then `python -m tools.report` on
    --save_path with `report_flags`. The exit status."""
    if options.dry_run:
        status = dry_run(planned)
        if status == 0:
            for note in notes:
                print(note)
        return status
    status = execute(planned, options.save_path, complete)
    if status != 0:
        return status
    return run_in_foreground([sys.executable, "-m", "tools.report", options.save_path, *report_flags],
                             REPO_ROOT).returncode
