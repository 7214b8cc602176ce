"""The rows of the paper's comparison tables as runs of this repository, per dataset, each over several seeds;
then the comparison table of them all (`python -m tools.report SAVE_PATH --comparison`).

The runs, in the order of the paper's tables (each row labelled with its published numbers, data.published;
docs/comparisons.md gives the origin of every setting in the original's scripts, file and line):
- MTAN: `--model mtan` with the settings of the original's model/mtan/model_segnet_mtan_{cs,nyu}.py at their
  defaults: equal weighting (its `--weight` default, `--balancing none` here), Adam at lr 1e-4 with torch's
  default betas, StepLR every 100 epochs by 0.5, batches of 2, 200 epochs, no augmentation;
- KD4MTL: first its teachers, the single-task MTAN runs of the original's model/kd4mtl/model_mtan_single*.py
  (the same settings, one task), written under SAVE_PATH/teachers; then the MTAN settings with
  `--adaptor_lr 0.1` and `--distill_from` the teachers' folders, one command per seed, each distilling from
  that seed's teachers (found when it starts, see `teacher_folder`);
- PCGrad: the MTAN settings with `--pcgrad`, which there projected the uncertainty-weighted losses whatever
  `--weight` said (`--pcgrad_weighting uncertainty`), by its pcgrad.py (`--balancing_form original`), and
  had no scheduler;
- AdaMT-Net: `--model adamtnet` with the settings of the original's model/adamtnet/train_{cs,nyu2tasks,
  nyu3tasks}.py: its adaptive loss-specific weighting (`--use_adalsp` there, `--balancing adalsp
  --balancing_form original` here), Adam at lr 1e-4 with torch's default betas, no scheduler, 200 epochs,
  batches of 8 without augmentation on Cityscapes, of 4 with it on NYUv2;
- cross-task: the paper's command (data.profiles' `paper_command`: `--uncertainty_weights` with the entry
  script's defaults);
- on NYUv2 every method but the cross-task model with three tasks (the paper's *, `--tasks segmentation
  depth normal`) and with two (†);
- the single-task baselines that Δm measures the multi-task rows against (segmentation and depth at the
  entry script's defaults; surface normals, for the three-task rows, by the single-task MTAN).
No flag drops the scheduler here: the rows without one get a StepLR period of the run's epoch count, so
they never decay the learning rate during training.

Usage, from the repository root:

    python -m scripts.comparisons --dry_run                       # print every command and check that it parses
    python -m scripts.comparisons --dataset nyu --only 'pcgrad|single' -- --epochs 1 --cpu
    python -m scripts.comparisons --seeds 0 1 2 3 4 --save_path exps/comparisons

Arguments after `--` are appended to every command. The runs start one after the other from the
repository root (relative paths are taken from there); the first that fails stops the script with its
exit status. At the end `python -m tools.report SAVE_PATH --comparison` prints and writes the table.
"""
import dataclasses
import os
import shlex
import sys
from dataclasses import dataclass
from types import MappingProxyType
from typing import Optional

from data.published import (ADAMTNET, CROSS_TASK, KD4MTL, MTAN, PCGRAD, PUBLISHED_METRICS, PUBLISHED_RESULTS,
                            printed_number, row_label)
from scripts.run_list import (DATASET_PROFILES, ENTRY_SCRIPTS, REPO_ROOT, finished_runs, parse_study_arguments, plan,
                              planned_epochs, run_or_check)
from training.config import NOT_COMPARED, THREE_TASKS, TWO_TASKS, keys_with
from training.options import parse_options
from utils.errors import UserInputError
from utils.metric_definitions import METRICS

DEFAULT_SAVE_PATH = "./exps/comparisons"
TEACHERS_FOLDER = "teachers"  # under --save_path: the KD4MTL teachers (see teachers_save_path)
BASELINE = "single-task baseline of Δm"
TEACHER = "single-task MTAN teacher of KD4MTL"

# model/mtan/model_segnet_mtan_{cs,nyu}.py and model/kd4mtl/model_mtan_{single,kdmtl}*.py: Adam at lr 1e-4
# (torch's default betas), batches of 2, 200 epochs, no augmentation (--apply_augmentation is off by
# default); StepLR (100 epochs, 0.5) but under PCGrad.
ORIGINAL_EPOCHS = 200  # model_segnet_mtan_cs.py:86, _nyu.py:72; the kd4mtl scripts; adamtnet's --epochs default
ADAM = ("--optim", "adam", "--lr", "1e-4", "--b1", "0.9", "--b2", "0.999")
ORIGINAL_OPTIMIZATION = ("--epochs", str(ORIGINAL_EPOCHS), "--batch_size", "2", *ADAM, "--no_augment")
ORIGINAL_SCHEDULER = ("--scheduler_step_size", "100", "--scheduler_gamma", "0.5")
ORIGINAL_INPUT = MappingProxyType({
    "cityscapes": ("--num_classes", "7", "--height", "128", "--width", "256"),
    "nyu": ("--num_classes", "13", "--height", "288", "--width", "384"),
})
# model/adamtnet/train_cs.py: batches of 8, no transform; train_nyu{2,3}tasks.py: batches of 4, the
# training set augmented (scale-crop and flip); both Adam at lr 1e-4, no scheduler, --epochs 200.
ADAMTNET_OPTIMIZATION = MappingProxyType({
    "cityscapes": ("--epochs", str(ORIGINAL_EPOCHS), "--batch_size", "8", *ADAM, "--no_augment"),
    "nyu": ("--epochs", str(ORIGINAL_EPOCHS), "--batch_size", "4", *ADAM),
})
EQUAL_WEIGHTING = ("--balancing", "none")
ORIGINAL_PCGRAD = ("--balancing", "pcgrad", "--balancing_form", "original", "--pcgrad_weighting", "uncertainty")
ORIGINAL_ADALSP = ("--balancing", "adalsp", "--balancing_form", "original")
KD4MTL_ADAPTORS = ("--adaptor_lr", "0.1")  # model_mtan_kdmtl*.py's --alr default
# (name suffix, tasks) of each task set of a dataset's table, in the table's order (NYUv2: *, then †).
TASK_SETS = MappingProxyType({
    "cityscapes": (("", TWO_TASKS),),
    "nyu": (("_three_tasks", THREE_TASKS), ("_two_tasks", TWO_TASKS)),
})
# The tasks that the rows of a dataset's table train: those of its single-task baselines and KD4MTL teachers.
TRAINED_TASKS = MappingProxyType({"cityscapes": TWO_TASKS, "nyu": THREE_TASKS})


def numbers_text(results):
    """The published numbers of a row: "mIoU 53.04, Pix Acc 91.11, Abs 0.0144, Abs Rel 33.63"."""
    return ", ".join(f"{METRICS[key].title} {printed_number(key, results[key])}" for key in PUBLISHED_METRICS)


@dataclass(frozen=True)
class ComparisonRun:
    """One run of the list: name ("cityscapes/mtan"), dataset, the flags it gives the entry script (before
    the seeds, --save_path and the extra arguments), the label of its row in the paper's comparison table
    (None for a run that is no row: `purpose` says what it is for), whether it runs without a
    learning-rate decay, and, for a KD4MTL run, its one seed and its teachers (ComparisonRuns, in task
    order) whose folders its `--distill_from` takes (None and (): the run goes over --seeds)."""

    name: str
    dataset: str
    flags: tuple
    label: Optional[str] = None
    without_scheduler: bool = False
    purpose: str = BASELINE
    seed: Optional[int] = None
    teachers: tuple = ()

    @property
    def comment(self):
        """What follows its command line after "#": the name and the paper's row with its numbers, or its purpose."""
        if self.label is None:
            return f"{self.name} ({self.purpose})"
        return f"{self.name} ({self.label}; paper: {numbers_text(PUBLISHED_RESULTS[self.dataset][self.label])})"


def task_flags(tasks):
    """The flags that train `tasks`: none for the two default tasks."""
    return () if tasks == TWO_TASKS else ("--tasks", *tasks)


def row_runs(dataset, short_name, method, flags, without_scheduler=False):
    """The runs of `method`'s rows of the table of `dataset`, one per task set in the table's order."""
    return [ComparisonRun(f"{dataset}/{short_name}{suffix}", dataset, (*flags, *task_flags(tasks)),
                          row_label(dataset, method, len(tasks)), without_scheduler)
            for suffix, tasks in TASK_SETS[dataset]]


def teacher_placeholder(teacher, seed):
    """What a KD4MTL command holds in place of a teacher's folder until it starts (and in --dry_run)."""
    return f"<folder of {teacher.name}, seed {seed}>"


def kd4mtl_runs(dataset, flags, teachers, seeds):
    """KD4MTL's runs of `dataset` with `flags`: per row, one run per seed, distilling from that seed's runs
    of `teachers` ({task: teacher run}) of the row's tasks."""
    runs = []
    for row_run, (_, tasks) in zip(row_runs(dataset, "kd4mtl", KD4MTL, flags), TASK_SETS[dataset]):
        distilled = tuple(teachers[task] for task in tasks)
        runs += [dataclasses.replace(row_run, name=f"{row_run.name}/seed{seed}", seed=seed, teachers=distilled,
                                     flags=(*row_run.flags, "--distill_from",
                                            *(teacher_placeholder(teacher, seed) for teacher in distilled)))
                 for seed in seeds]
    return runs


def baseline_flags(task):
    """The flags of the single-task baseline of Δm for `task`: the entry script's defaults (the cross-task
    network's encoder with one decoder), or the single-task MTAN for surface normals (no such decoder there)."""
    return ("--model", "mtan", "--single_task", task) if task == "normal" else ("--single_task", task)


def comparison_runs(dataset, seeds):
    """The runs of `dataset` ("cityscapes", "nyu" or "all") for `seeds`: the rows of its table in their
    order (the KD4MTL teachers before KD4MTL), then the single-task baselines of Δm."""
    datasets = tuple(ENTRY_SCRIPTS) if dataset == "all" else (dataset,)
    runs = []
    for name in datasets:
        mtan = (*ORIGINAL_INPUT[name], "--model", "mtan", *ORIGINAL_OPTIMIZATION)
        teachers = {task: ComparisonRun(f"{name}/teacher_{task}", name,
                                        (*mtan, "--single_task", task, *ORIGINAL_SCHEDULER), purpose=TEACHER)
                    for task in TRAINED_TASKS[name]}
        paper_flags = tuple(shlex.split(DATASET_PROFILES[name].paper_command)[2:])
        runs += row_runs(name, "mtan", MTAN, (*mtan, *EQUAL_WEIGHTING, *ORIGINAL_SCHEDULER))
        runs += teachers.values()
        runs += kd4mtl_runs(name, (*mtan, *EQUAL_WEIGHTING, *ORIGINAL_SCHEDULER, *KD4MTL_ADAPTORS), teachers, seeds)
        runs += row_runs(name, "pcgrad", PCGRAD, (*mtan, *ORIGINAL_PCGRAD), without_scheduler=True)
        runs += row_runs(name, "adamtnet", ADAMTNET, (*ORIGINAL_INPUT[name], "--model", "adamtnet",
                                                      *ADAMTNET_OPTIMIZATION[name], *ORIGINAL_ADALSP),
                         without_scheduler=True)
        runs.append(ComparisonRun(f"{name}/cross_task", name, paper_flags, row_label(name, CROSS_TASK, len(TWO_TASKS))))
        runs += [ComparisonRun(f"{name}/single_{task}", name, baseline_flags(task)) for task in TRAINED_TASKS[name]]
    return runs


def teachers_save_path(save_path):
    """The experiment root of the KD4MTL teachers: a folder of `save_path`, so that the table's report does not
    take them for Δm baselines (it matches single-task runs by dataset, classes and input size)."""
    return os.path.join(save_path, TEACHERS_FOLDER)


def run_save_path(run, save_path):
    """Where `run` writes: `save_path`, or teachers_save_path for a KD4MTL teacher."""
    return teachers_save_path(save_path) if run.purpose == TEACHER else save_path


def entry_arguments(run, seeds, save_path, extra):
    """The entry script's arguments for `run`: [StepLR period = its epochs,] flags, its seed (--seed for a
    KD4MTL run, else --seeds `seeds`), --save_path, `extra`."""
    seed_flags = ("--seeds", *map(str, seeds)) if run.seed is None else ("--seed", str(run.seed))
    arguments = [*run.flags, *seed_flags, "--save_path", run_save_path(run, save_path), *extra]
    if run.without_scheduler:
        return ["--scheduler_step_size", str(planned_epochs(run.dataset, arguments, ORIGINAL_EPOCHS)), *arguments]
    return arguments


def compared_settings(config):
    """{key: value} of the settings of `config` (a RunConfig) that tell what a run learnt: all but those
    declared NOT_COMPARED (seeds, paths, device and speed switches)."""
    ignored = keys_with(NOT_COMPARED)
    return {key: value for key, value in config.flat().items() if key not in ignored}


def teacher_folder(teacher, seed, save_path, extra):
    """The folder, as the entry script finds it from the repository root, of the latest finished run of
    `teacher` with `seed` among the numbered folders of its save path: the one whose settings but those
    NOT_COMPARED are its command's (with `save_path` and `extra`); UserInputError when there is none."""
    profile = DATASET_PROFILES[teacher.dataset]
    expected = compared_settings(parse_options(profile, entry_arguments(teacher, (seed,), save_path, extra)))
    root = run_save_path(teacher, save_path)
    found = [record.folder for record in finished_runs(REPO_ROOT / root)
             if record.config["seed"] == seed and compared_settings(record.config) == expected]
    if not found:
        raise UserInputError(f"--distill_from: no finished run of {teacher.name} with seed {seed} in {root}; expected "
                             f"one of its command's settings (run it first: --only {teacher.name})")
    return os.path.join(root, os.path.basename(found[-1]))


def with_teacher_folders(run, arguments, save_path, extra):
    """`arguments` of `run` with each teacher placeholder replaced by that teacher's folder (teacher_folder)."""
    folders = {teacher_placeholder(teacher, run.seed): teacher_folder(teacher, run.seed, save_path, extra)
               for teacher in run.teachers}
    return [folders.get(argument, argument) for argument in arguments]


def main(argv=None):
    """Plan the runs, then print and check them (--dry_run) or run them and the comparison table; the exit status."""
    options, extra = parse_study_arguments(
        argv, "comparisons", "Run the rows of the paper's comparison tables (MTAN, KD4MTL with its teachers, PCGrad, "
        "AdaMT-Net, the cross-task model) and their single-task baselines, over seeds.", ("all", *ENTRY_SCRIPTS),
        DEFAULT_SAVE_PATH)
    planned = plan(comparison_runs(options.dataset, options.seeds), options.only,
                   lambda run: entry_arguments(run, options.seeds, options.save_path, extra))
    if planned is None:
        return 2
    notes = [f"<folder of TEACHER, seed S>: when a KD4MTL command starts, the latest finished run of that teacher "
             f"and seed in {teachers_save_path(options.save_path)}"] if any(run.teachers for run, _ in planned) else []
    return run_or_check(planned, options, notes,
                        lambda run, arguments: with_teacher_folders(run, arguments, options.save_path, extra),
                        ("--comparison",))


if __name__ == "__main__":
    sys.exit(main())
