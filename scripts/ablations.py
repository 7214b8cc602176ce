"""Ablation runs, per dataset, each over several seeds; then the report of them all.

Two kinds of run, each labelled with its origin:
- "original": the runs of the original repository's ablation.sh (Cityscapes), by its groups: (i) the
  transfer weights alpha = 0, gamma = 0 and both; (ii) the ImageNet-pretrained encoder and ResNet-50 and
  -101; (iii) label smoothing and uncertainty weights on and off; all on top of its base command
  `--label_smoothing 0.1 --uncertainty_weights`. Its group (iv) uses `--temp 5`, a flag the released
  code does not have: those two lines are listed as not reproducible (NOT_REPRODUCIBLE), never run.
- "added": runs added here, each differing from the paper's command (uncertainty weights) in one thing:
  no transfer losses, each balancing method, each direct depth loss, each transferred-loss variant,
  both TaskTransferNet options, 19 classes on Cityscapes, and the single-task baselines that Δm is
  measured against (at each class count used).
The original's lines also pass `--run_only --notqdm` (figures saved, not shown; no progress bars): the
first is this repository's default and the second is left to the extra arguments. They pass `--alpha`
and `--gamma`, which the released original parser does not define (it has `--lambda_1`/`--lambda_2`;
here `--alpha`/`--gamma` are those two), so groups (i) and (iv) did not run as released.

Usage, from the repository root:

    python -m scripts.ablations --dry_run                      # print every command and check that it parses
    python -m scripts.ablations --dataset cityscapes --only 'gradnorm|single' -- --epochs 1 --cpu
    python -m scripts.ablations --seeds 0 1 2 3 4 --save_path exps/ablations

Arguments after `--` are appended to every command. The runs start one after the other from the
repository root (relative paths are taken from there); the first that fails stops the script with its
exit status. At the end `python -m tools.report SAVE_PATH` prints and writes the table (run as a command:
scripts/ and tools/ are on the same floor and do not import each other).
"""
import sys
from dataclasses import dataclass
from types import MappingProxyType

from scripts.run_list import ENTRY_SCRIPTS, parse_study_arguments, plan, run_or_check

DEFAULT_SAVE_PATH = "./exps"
PAPER_BALANCING = ("--uncertainty_weights",)
ORIGINAL_BASE = ("--label_smoothing", "0.1", "--uncertainty_weights")
ORIGINAL, ADDED = "original", "added"

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
# The original's ablation.sh (Cityscapes only), by its groups; (iii)'s last line is written there with
# a full-width space after the script name, so as written it does not run: its evident intent is listed.
ORIGINAL_VARIANTS = MappingProxyType({
    "cityscapes": (
        ("original_i_alpha_0", "original (i) transfer weights", (*ORIGINAL_BASE, "--alpha", "0.0")),
        ("original_i_gamma_0", "original (i) transfer weights", (*ORIGINAL_BASE, "--gamma", "0.0")),
        ("original_i_alpha_gamma_0", "original (i) transfer weights",
         (*ORIGINAL_BASE, "--alpha", "0.0", "--gamma", "0.0")),
        ("original_ii_pretrained", "original (ii) encoder", (*ORIGINAL_BASE, "--use_pretrain")),
        ("original_ii_resnet50", "original (ii) encoder", (*ORIGINAL_BASE, "--enc_layers", "50")),
        ("original_ii_resnet101", "original (ii) encoder", (*ORIGINAL_BASE, "--enc_layers", "101")),
        ("original_iii_smoothing_uncertainty", "original (iii) smoothing and uncertainty", ORIGINAL_BASE),
        ("original_iii_uncertainty", "original (iii) smoothing and uncertainty", ("--uncertainty_weights",)),
        ("original_iii_neither", "original (iii) smoothing and uncertainty", ()),
    ),
    "nyu": (),
})
# The original's ablation.sh lines that cannot run here, and why.
NOT_REPRODUCIBLE = (
    ("cityscapes/original_iv_temp_5", "--temp 5", "the released original code has no --temp flag (its parser "
     "refuses it), so what the temperature scaled is unknown"),
    ("cityscapes/original_iv_temp_5_alpha_gamma_0.05", "--temp 5 --alpha 0.05 --gamma 0.05",
     "the same --temp flag, which the released code does not have"),
)


@dataclass(frozen=True)
class AblationRun:
    """One run of the list: name ("cityscapes/base"), category of the claim it tests, dataset, the flags
    it gives the entry script (before --seeds, --save_path and the extra arguments) and its origin
    (ORIGINAL: a line of the original's ablation.sh; ADDED: added here)."""

    name: str
    category: str
    dataset: str
    flags: tuple
    origin: str = ADDED

    @property
    def comment(self):
        """What follows its command line after "#": the name and the origin."""
        return f"{self.name} ({self.origin})"


def ablation_runs(dataset):
    """The runs of `dataset` ("cityscapes", "nyu" or "all"), in order: the original's, then those added."""
    datasets = tuple(ENTRY_SCRIPTS) if dataset == "all" else (dataset,)
    runs = []
    for name in datasets:
        runs += [AblationRun(f"{name}/{short_name}", category, name, flags, ORIGINAL)
                 for short_name, category, flags in ORIGINAL_VARIANTS[name]]
        runs += [AblationRun(f"{name}/{short_name}", category, name, flags)
                 for short_name, category, flags in COMMON_VARIANTS + DATASET_VARIANTS[name]]
    return runs






def entry_arguments(run, seeds, save_path, extra):
    """The entry script's arguments for `run`: its flags, --seeds, --save_path, then `extra`."""
    return [*run.flags, "--seeds", *map(str, seeds), "--save_path", save_path, *extra]










def main(argv=None):
    """Plan the runs, then print and check them (--dry_run) or run them and the report; the exit status."""
    options, extra = parse_study_arguments(argv, "ablations", "Run the ablations behind the paper's claims, over "
                                           "seeds.", ("all", *ENTRY_SCRIPTS), DEFAULT_SAVE_PATH)
    planned = plan(ablation_runs(options.dataset), options.only,
                   lambda run: entry_arguments(run, options.seeds, options.save_path, extra))
    if planned is None:
        return 2
    notes = [f"not run: {name} (the original's ablation.sh with {flags}): {reason}"
             for name, flags, reason in NOT_REPRODUCIBLE]
    return run_or_check(planned, options, notes)


if __name__ == "__main__":
    sys.exit(main())
