"""The runs behind the paper's claims, per dataset, each over several seeds; then the report of them all.

For each dataset: the paper's command (uncertainty weights), the same without the transfer losses, each
balancing method, each direct depth loss, each transferred-loss variant, both TaskTransferNet options,
19 classes on Cityscapes, and the single-task baselines that Δm is measured against (at each class count
used). Every run differs from the paper's command in one thing.

Usage, from the repository root:

    python -m scripts.ablations --dry_run                      # print every command and check that it parses
    python -m scripts.ablations --dataset cityscapes --only 'gradnorm|single' -- --epochs 1 --cpu
    python -m scripts.ablations --seeds 0 1 2 3 4 --save_path exps/ablations

Arguments after `--` are appended to every command. The runs start one after the other from the
repository root (relative paths are taken from there); the first that fails stops the script with its
exit status. At the end `python -m tools.report SAVE_PATH` prints and writes the table (run as a command:
scripts/ and tools/ are on the same floor and do not import each other).
"""
import argparse
import contextlib
import io
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from data import CITYSCAPES, NYUV2
from training.options import parse_options

REPO_ROOT = Path(__file__).resolve().parent.parent
ENTRY_SCRIPTS = MappingProxyType({"cityscapes": "main_cross_cs.py", "nyu": "main_cross_nyu.py"})
DATASET_PROFILES = MappingProxyType({"cityscapes": CITYSCAPES, "nyu": NYUV2})
DEFAULT_SEEDS = (0, 1, 2)
DEFAULT_SAVE_PATH = "./exps"
PAPER_BALANCING = ("--uncertainty_weights",)

# (short name, category, flags) of the runs on every dataset; all but the balancing and single-task runs
# keep the paper's balancing.
COMMON_VARIANTS = (
    ("base", "base", PAPER_BALANCING),
    ("no_transfer", "transfer", (*PAPER_BALANCING, "--alpha", "0", "--gamma", "0")),
    ("balancing_none", "balancing", ("--balancing", "none")),
    ("gradnorm_paper", "balancing", ("--balancing", "gradnorm", "--gradnorm_form", "paper")),
    ("gradnorm_original", "balancing", ("--balancing", "gradnorm", "--gradnorm_form", "original")),
    ("lp_MSE", "direct_loss", (*PAPER_BALANCING, "--lp", "MSE")),
    ("lp_logL1", "direct_loss", (*PAPER_BALANCING, "--lp", "logL1")),
    ("lp_smoothL1", "direct_loss", (*PAPER_BALANCING, "--lp", "smoothL1")),
    ("tdep_ssim", "transferred_loss", (*PAPER_BALANCING, "--tdep_loss", "ssim")),
    ("tseg_kl", "transferred_loss", (*PAPER_BALANCING, "--tseg_loss", "kl")),
    ("tseg_kl_smoothing", "transferred_loss", (*PAPER_BALANCING, "--tseg_loss", "kl", "--label_smoothing", "0.1")),
    ("batch_norm", "ttnet", (*PAPER_BALANCING, "--batch_norm")),
    ("wider_ttnet", "ttnet", (*PAPER_BALANCING, "--wider_ttnet")),
    ("single_segmentation", "single_task", ("--single_task", "segmentation")),
    ("single_depth", "single_task", ("--single_task", "depth")),
)
# Cityscapes only: 19 classes, with the single-task baselines at 19 classes that its Δm needs.
DATASET_VARIANTS = MappingProxyType({
    "cityscapes": (
        ("classes_19", "classes", (*PAPER_BALANCING, "--num_classes", "19")),
        ("single_segmentation_19", "single_task", ("--single_task", "segmentation", "--num_classes", "19")),
        ("single_depth_19", "single_task", ("--single_task", "depth", "--num_classes", "19")),
    ),
    "nyu": (),
})


@dataclass(frozen=True)
class AblationRun:
    """One run of the list: name ("cityscapes/base"), category of the claim it tests, dataset and the flags
    it gives the entry script (before --seeds, --save_path and the extra arguments)."""

    name: str
    category: str
    dataset: str
    flags: tuple


def ablation_runs(dataset):
    """The runs of `dataset` ("cityscapes", "nyu" or "all"), in order."""
    datasets = tuple(ENTRY_SCRIPTS) if dataset == "all" else (dataset,)
    return [AblationRun(f"{name}/{short_name}", category, name, flags)
            for name in datasets for short_name, category, flags in COMMON_VARIANTS + DATASET_VARIANTS[name]]


def name_matches(name, pattern):
    """Whether `pattern` is a substring of `name` or a regular expression found in it."""
    if pattern in name:
        return True
    try:
        return re.search(pattern, name) is not None
    except re.error:
        return False


def entry_arguments(run, seeds, save_path, extra):
    """The entry script's arguments for `run`: its flags, --seeds, --save_path, then `extra`."""
    return [*run.flags, "--seeds", *map(str, seeds), "--save_path", save_path, *extra]


def command_line(run, arguments):
    """The shell line of a run, its name as a trailing comment."""
    return f"{shlex.join(['python', ENTRY_SCRIPTS[run.dataset], *arguments])}  # {run.name}"


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
    """Print each (run, arguments) as a command and check that it parses; 0 when all do, else 2."""
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


def execute(planned, save_path):
    """Run each (run, arguments) from the repository root, stop at the first failure (its exit status),
    then run the report on `save_path`; returns the exit status."""
    for index, (run, arguments) in enumerate(planned, start=1):
        print(f"[{index}/{len(planned)}] {command_line(run, arguments)}", flush=True)
        status = subprocess.run([sys.executable, ENTRY_SCRIPTS[run.dataset], *arguments], cwd=REPO_ROOT).returncode
        if status != 0:
            print(f"error: {run.name} failed with exit status {status}; stopping. The runs before it are in "
                  f"{save_path}; rerun the rest with --only.", file=sys.stderr)
            return status
    return subprocess.run([sys.executable, "-m", "tools.report", save_path], cwd=REPO_ROOT).returncode


def parse_arguments(argv):
    """(the script's options, the extra arguments after `--`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(prog="python -m scripts.ablations",
                                     description="Run the ablations behind the paper's claims, over seeds.",
                                     epilog="Arguments after -- are appended to every command "
                                            "(e.g. -- --epochs 1 --cpu).")
    parser.add_argument("--dataset", choices=(*ENTRY_SCRIPTS, "all"), default="all", help="which dataset's runs")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(DEFAULT_SEEDS), help="seeds of every run")
    parser.add_argument("--only", help="only the runs whose name contains this text or matches this regex")
    parser.add_argument("--save_path", default=DEFAULT_SAVE_PATH,
                        help="experiment folder root, passed to every run (relative to the repository root)")
    parser.add_argument("--dry_run", action="store_true", help="print the commands and check that they parse")
    return parser.parse_args(argv[:split]), argv[split + 1:]


def main(argv=None):
    """Plan the runs, then print and check them (--dry_run) or run them and the report; the exit status."""
    options, extra = parse_arguments(argv)
    runs = [run for run in ablation_runs(options.dataset)
            if options.only is None or name_matches(run.name, options.only)]
    if not runs:
        print(f"error: no run name matches --only {options.only!r}", file=sys.stderr)
        return 2
    planned = [(run, entry_arguments(run, options.seeds, options.save_path, extra)) for run in runs]
    return dry_run(planned) if options.dry_run else execute(planned, options.save_path)


if __name__ == "__main__":
    sys.exit(main())
