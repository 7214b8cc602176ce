"""Command-line options: one parser builder, per-dataset defaults, and the checks run before anything."""
import argparse
from dataclasses import dataclass, field

from losses.balancing import make_balancer
from losses.depth import DEPTH_LOSSES
from losses.segmentation import TRANSFERRED_SEGMENTATION_LOSSES
from losses.xtask import TRANSFERRED_DEPTH_LOSSES, XTaskLoss
from models.encoder import ENCODER_DEPTHS
from models.xtask_net import INPUT_MULTIPLE
from utils.errors import UserInputError


@dataclass(frozen=True)
class DatasetProfile:
    """What distinguishes the Cityscapes and NYUv2 entry scripts: a name, defaults, reference numbers."""

    name: str
    description: str
    defaults: dict
    class_counts: tuple
    depth_label: str
    paper_results: dict
    demo_defaults: dict = field(default_factory=dict)
    demo_data: dict = field(default_factory=dict)


CITYSCAPES = DatasetProfile(
    name="cityscapes",
    description="Cross-task consistency learning on Cityscapes (segmentation + disparity).",
    defaults=dict(input_path="data/cityscapes", height=128, width=256, num_classes=7, epochs=250,
                  batch_size=8, scheduler_step_size=80, scheduler_gamma=0.5, alpha=0.01, gamma=0.01,
                  ignore_index=250),
    class_counts=(7, 19),
    depth_label="disparity / 256",
    paper_results=dict(num_classes=7, miou=0.6651, pixel_acc=0.9356, abs=0.0122, abs_rel=19.40),
    demo_defaults=dict(input_path="data/demo/cityscapes", height=32, width=64, enc_layers=18, epochs=14,
                       batch_size=8, scheduler_step_size=10, lr=1e-3, workers=0),
    demo_data=dict(splits={"train": 64, "val": 16}, height=128, width=256),
)

NYUV2 = DatasetProfile(
    name="nyu",
    description="Cross-task consistency learning on NYUv2 (13-class segmentation + depth in metres).",
    defaults=dict(input_path="data/nyu", height=288, width=384, num_classes=13, epochs=100, batch_size=6,
                  scheduler_step_size=60, scheduler_gamma=0.5, alpha=1e-4, gamma=1e-4, ignore_index=-1),
    class_counts=(13,),
    depth_label="depth (m)",
    paper_results=dict(num_classes=13, miou=0.3031, pixel_acc=0.6302, abs=0.5954, abs_rel=0.2235),
    demo_defaults=dict(input_path="data/demo/nyu", height=64, width=64, enc_layers=18, epochs=10,
                       batch_size=8, scheduler_step_size=8, lr=1e-3, workers=0),
    demo_data=dict(splits={"train": 48, "val": 16}, height=96, width=128),
)


def build_parser(profile):
    """The argument parser of one entry script, with `profile`'s defaults."""
    parser = argparse.ArgumentParser(description=profile.description, allow_abbrev=False,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--input_path", help="root of the dataset (layout detected from its folders)")
    data.add_argument("--height", type=int, help=f"input height, a multiple of {INPUT_MULTIPLE}")
    data.add_argument("--width", type=int, help=f"input width, a multiple of {INPUT_MULTIPLE}")
    data.add_argument("--num_classes", type=int, help=f"segmentation classes: one of {profile.class_counts}")
    data.add_argument("--ignore_index", type=int, help="label value of unlabelled pixels")
    data.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")

    model = parser.add_argument_group("model")
    model.add_argument("--enc_layers", type=int, default=34, help=f"ResNet depth: one of {ENCODER_DEPTHS}")
    model.add_argument("--use_pretrain", action="store_true",
                       help="initialise the encoder with torchvision's ImageNet weights (local file only)")
    model.add_argument("--pretrained_weights", help="explicit path of the ImageNet weights file")
    model.add_argument("--batch_norm", action="store_true", help="BatchNorm in the TaskTransferNets")
    model.add_argument("--wider_ttnet", action="store_true", help="double the TaskTransferNets' widths")

    training = parser.add_argument_group("training")
    training.add_argument("-e", "--epochs", type=int, help="training epochs")
    training.add_argument("-b", "--batch_size", type=int, help="images per batch")
    training.add_argument("--optim", choices=("adam", "sgd"), default="adam", help="optimizer")
    training.add_argument("--lr", type=float, default=1e-4, help="learning rate")
    training.add_argument("--b1", type=float, default=0.9, help="Adam beta1 (SGD momentum)")
    training.add_argument("--b2", type=float, default=0.99, help="Adam beta2")
    training.add_argument("--scheduler_step_size", type=int, help="StepLR period in epochs")
    training.add_argument("--scheduler_gamma", type=float, help="StepLR decay factor")
    training.add_argument("--seed", type=int, default=0, help="random seed (model, shuffling, augmentation)")
    training.add_argument("--cpu", action="store_true", help="run on the CPU even when CUDA is present")

    loss = parser.add_argument_group("loss")
    loss.add_argument("--alpha", "--lambda_1", dest="alpha", type=float,
                      help="weight of the transferred depth loss in the segmentation group")
    loss.add_argument("--gamma", "--lambda_2", dest="gamma", type=float,
                      help="weight of the transferred segmentation loss in the depth group")
    loss.add_argument("--label_smoothing", type=float, default=0.0, help="label smoothing of the "
                      "transferred segmentation target")
    loss.add_argument("--lp", default="L1", help=f"direct depth loss: {', '.join(DEPTH_LOSSES)}")
    loss.add_argument("--tdep_loss", default="L1", help=f"transferred depth loss: "
                      f"{', '.join(TRANSFERRED_DEPTH_LOSSES)}")
    loss.add_argument("--tseg_loss", default="cross", help=f"transferred segmentation loss: "
                      f"{', '.join(TRANSFERRED_SEGMENTATION_LOSSES)}")
    loss.add_argument("--uncertainty_weights", action="store_true",
                      help="balance the two groups with uncertainty weights (Kendall et al. 2018)")
    loss.add_argument("--gradnorm", action="store_true", help="balance the two groups with GradNorm "
                      "(Chen et al. 2018)")
    loss.add_argument("--gradnorm_alpha", type=float, default=0.16, help="GradNorm's asymmetry alpha")

    run = parser.add_argument_group("run and outputs")
    run.add_argument("--save_path", default="./exps", help="folder of the numbered experiment folders")
    run.add_argument("--notqdm", action="store_true", help="no progress bars")
    run.add_argument("--debug", action="store_true", help="write nothing to disk")
    run.add_argument("--infer_only", action="store_true",
                     help="evaluate the best checkpoint of experiment --exp_num instead of training")
    run.add_argument("--exp_num", type=int, help="experiment number for --infer_only")
    run.add_argument("--direct_only", action="store_true",
                     help="evaluate without running the TaskTransferNets")
    run.add_argument("--time_inf", action="store_true",
                     help="print inference latency at batch size 1, with and without the transfer nets")
    run.add_argument("--no_plots", action="store_true", help="write no figures")
    run.add_argument("--show", action="store_true", help="also open the figures in windows")
    run.add_argument("--run_only", action="store_true", help="accepted for the original's scripts: "
                     "figures are saved and not shown, which is the default")
    run.add_argument("--view_only", action="store_true", help="show the figures without saving them")
    run.add_argument("--demo", action="store_true", help="generate a small synthetic dataset in the real "
                     "layout under data/demo/ and run a short CPU-sized training on it")
    parser.set_defaults(**profile.defaults)
    return parser


def parse_options(profile, argv=None):
    """Parsed and checked options; invalid combinations exit with status 2 and the reason.
    `options.explicit` lists the options given on the command line (the rest are defaults)."""
    parser = build_parser(profile)
    options = parser.parse_args(argv)
    if options.demo:
        parser.set_defaults(**{**profile.defaults, **profile.demo_defaults})
        options = parser.parse_args(argv)
    not_given = object()
    probe = parser.parse_args(argv, namespace=argparse.Namespace(**{key: not_given for key in vars(options)}))
    options.explicit = sorted(key for key, value in vars(probe).items() if value is not not_given)
    problem = find_problem(options, profile)
    if problem:
        parser.error(problem)
    return options


def balancing_method(options):
    """The loss balancing method named by the flags: none, uncertainty or gradnorm."""
    if options.uncertainty_weights:
        return "uncertainty"
    if options.gradnorm:
        return "gradnorm"
    return "none"


def find_problem(options, profile):
    """The first reason the options cannot run together, or None. The loss and balancing settings are
    checked by building them (cheap: no tensors of any size), so the rules live in one place."""
    checks = (
        (options.uncertainty_weights and options.gradnorm,
         "--uncertainty_weights and --gradnorm are exclusive: choose one balancing method"),
        (options.height <= 0 or options.height % INPUT_MULTIPLE,
         f"--height {options.height}: expected a positive multiple of {INPUT_MULTIPLE}"),
        (options.width <= 0 or options.width % INPUT_MULTIPLE,
         f"--width {options.width}: expected a positive multiple of {INPUT_MULTIPLE}"),
        (options.num_classes not in profile.class_counts,
         f"--num_classes {options.num_classes}: {profile.name} supports {profile.class_counts}"),
        (options.enc_layers not in ENCODER_DEPTHS,
         f"--enc_layers {options.enc_layers}: expected one of {ENCODER_DEPTHS}"),
        (options.epochs < 1, f"--epochs {options.epochs}: expected at least 1"),
        (options.batch_size < 1, f"--batch_size {options.batch_size}: expected at least 1"),
        (options.workers < 0, f"--workers {options.workers}: expected 0 or more"),
        (options.lr <= 0, f"--lr {options.lr}: expected a positive learning rate"),
        (options.scheduler_step_size < 1,
         f"--scheduler_step_size {options.scheduler_step_size}: expected at least 1"),
        (options.infer_only and options.exp_num is None, "--infer_only needs --exp_num N"),
        (options.exp_num is not None and not options.infer_only, "--exp_num is used with --infer_only only"),
        (options.show and options.no_plots, "--show and --no_plots contradict each other"),
        (options.view_only and options.no_plots, "--view_only and --no_plots contradict each other"),
        (options.pretrained_weights and not options.use_pretrain,
         "--pretrained_weights is used with --use_pretrain only"),
    )
    for failed, message in checks:
        if failed:
            return message
    try:
        XTaskLoss(options.num_classes, options.alpha, options.gamma, label_smoothing=options.label_smoothing,
                  lp=options.lp, tseg_loss=options.tseg_loss, tdep_loss=options.tdep_loss,
                  ignore_index=options.ignore_index)
        make_balancer(balancing_method(options), gradnorm_alpha=options.gradnorm_alpha)
    except UserInputError as error:
        return str(error)
    return None

