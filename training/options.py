"""Command-line options: argv -> a checked training.config.RunConfig. The only module that knows how flags
are spelled (their aliases, switches and help); each flag's destination is the key of one setting of
RunConfig, declared with its roles in training/config.py.

A dataset profile (data.profiles) gives the defaults; every check runs before anything else, and a
mistake ends the program with the flag, the value and what was expected (exit status 2). The loss and
balancing settings are checked by building them, so their rules live in one place: the libraries raise
ValueError naming their own parameter, which `training.config.flag_message` turns into the flag.
"""
import argparse
import math
import os

from losses import BALANCERS, BALANCING_FORMS, XTaskLoss, make_balancer
from losses.depth import DEPTH_LOSSES
from losses.segmentation import TRANSFERRED_SEGMENTATION_LOSSES
from losses.xtask import CONSISTENCY_METHODS, TRANSFERRED_DEPTH_LOSSES
from models import MODEL_FAMILIES
from models.encoder import ENCODER_DEPTHS
from models.xtask_net import INPUT_MULTIPLE
from training.config import (AUTO, BALANCER_FLAGS, CROSS_TASK_ONLY, THREE_TASKS, TWO_TASKS, RunConfig, as_value,
                             flag_message, keys_with)

SEED_LIMIT = 2 ** 32
# The weightings PCGrad's per-task losses can come from (their total is a sum of per-task terms).
PCGRAD_WEIGHTINGS = ("none", "uncertainty", "dwa")
# The original's single-task script (main_stl.py) trains with torch's default Adam betas.
SINGLE_TASK_BETAS = {"b1": 0.9, "b2": 0.999}


class BalancingAlias(argparse.Action):
    """A flag of the original code (--uncertainty_weights, --gradnorm) that sets --balancing; two
    different balancing choices on one command line are refused."""

    def __init__(self, option_strings, dest, method, **keywords):
        super().__init__(option_strings, dest="balancing", nargs=0, **keywords)
        self.method = method

    def __call__(self, parser, namespace, values, option_string=None):
        """Set `balancing` unless another balancing flag already chose a different method."""
        set_balancing(parser, namespace, self.method, option_string)


class BalancingChoice(argparse.Action):
    """--balancing METHOD, refusing a second, different balancing flag."""

    def __call__(self, parser, namespace, values, option_string=None):
        """Set `balancing` unless another balancing flag already chose a different method."""
        set_balancing(parser, namespace, values, option_string)


def set_balancing(parser, namespace, method, option_string):
    """Record the balancing `method` chosen by `option_string`; a conflicting earlier choice is an error."""
    chosen = getattr(namespace, "balancing_flag", None)
    if chosen is not None and namespace.balancing != method:
        parser.error(f"{chosen} and {option_string} are exclusive: choose one balancing method")
    namespace.balancing = method
    namespace.balancing_flag = option_string


def build_parser(profile):
    """The argument parser of one entry script, with `profile`'s defaults."""
    parser = argparse.ArgumentParser(description=profile.description, allow_abbrev=False,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--input_path", help="root of the dataset (layout detected from its folders)")
    data.add_argument("--height", type=int, help=f"input height, a multiple of {INPUT_MULTIPLE}")
    data.add_argument("--width", type=int, help=f"input width, a multiple of {INPUT_MULTIPLE}")
    data.add_argument("-n", "--num_classes", type=int, help=f"segmentation classes: one of {profile.class_counts}")
    data.add_argument("--ignore_index", type=int, help="label value of unlabelled pixels")
    data.add_argument("--no_augment", action="store_true", help="train without the flip and scale-crop "
                      "augmentation (as the original's MTAN and PCGrad rows did)")
    data.add_argument("-j", "--workers", type=int, default=2, help="DataLoader worker processes")
    data.add_argument("--cache_dir", help="folder of the preprocessed data caches (default: "
                      "$XDG_CACHE_HOME/xtask_mt, i.e. ~/.cache/xtask_mt; never inside --input_path)")
    data.add_argument("--no_cache", action="store_true", help="read and decode the dataset files at every "
                      "access instead of the preprocessed cache")

    model = parser.add_argument_group("model")
    model.add_argument("--model", choices=tuple(MODEL_FAMILIES), default="xtask", help="the network: the "
                       "cross-task model (xtask), MTAN, SegNet with task attention (mtan), or AdaMT-Net (adamtnet); "
                       "the last two have no transfer nets, so none of the cross-task settings")
    model.add_argument("--enc_layers", type=int, default=34, choices=ENCODER_DEPTHS, help="ResNet depth")
    model.add_argument("--use_pretrain", action="store_true",
                       help="initialise the encoder with torchvision's ImageNet weights (local file only)")
    model.add_argument("--pretrained_weights", help="explicit path of the ImageNet weights file")
    model.add_argument("--batch_norm", action="store_true", help="BatchNorm in the TaskTransferNets")
    model.add_argument("--wider_ttnet", action="store_true", help="double the TaskTransferNets' widths")
    model.add_argument("--tasks", nargs="+", choices=THREE_TASKS, default=TWO_TASKS, metavar="TASK",
                       help="the tasks learnt together: segmentation depth, or segmentation depth normal (NYUv2's "
                       "surface normals, --model mtan or adamtnet)")
    model.add_argument("--single_task", choices=THREE_TASKS,
                       help="single-task baseline: the encoder and this task's decoder, its direct loss only "
                       "(normal: --model mtan or adamtnet on NYUv2)")
    model.add_argument("--distill_from", nargs="+", default=(), metavar="RUN",
                       help="KD4MTL with --model mtan: the experiment folders of finished single-task MTAN runs "
                       "(--single_task TASK --model mtan), one per task in task order, whose features the "
                       "network learns to match")
    model.add_argument("--adaptor_lr", type=float, default=0.1,
                       help="learning rate of the KD4MTL adaptors' own Adam (weight decay 5e-4, as the original)")

    training = parser.add_argument_group("training")
    training.add_argument("-e", "--epochs", type=int, help="training epochs")
    training.add_argument("-b", "--batch_size", type=int, help="images per batch")
    training.add_argument("--optim", choices=("adam", "sgd"), default="adam", help="optimizer")
    training.add_argument("--lr", "--learning_rate", dest="lr", type=float, default=1e-4, help="learning rate")
    training.add_argument("--b1", "--beta_1", dest="b1", type=float, default=0.9, help="Adam beta1")
    training.add_argument("--b2", "--beta_2", dest="b2", type=float, default=0.99,
                          help="Adam beta2 (0.999 with --single_task, as the original's main_stl.py)")
    training.add_argument("--momentum", type=float, default=0.0,
                          help="SGD momentum (--optim sgd; the original used none)")
    training.add_argument("--scheduler_step_size", type=int, help="StepLR period in epochs")
    training.add_argument("--scheduler_gamma", type=float, help="StepLR decay factor")
    training.add_argument("--seed", type=int, default=0, help="random seed (model, shuffling, augmentation)")
    training.add_argument("--deterministic", action="store_true",
                          help="deterministic algorithms only (cuDNN too): same seed, same numbers")
    training.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                          help="run the configuration once per seed, one after another, each in its own "
                          "experiment folder, grouped")
    training.add_argument("--cpu", action="store_true", help="run on the CPU even when CUDA is present")
    training.add_argument("--sync_bn", action="store_true", help="under torchrun, BatchNorm normalises over the "
                          "global batch (SyncBatchNorm, CUDA only) instead of each process's local batch")

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
    loss.add_argument("--consistency", choices=CONSISTENCY_METHODS, default="xtsc",
                      help="what the transferred predictions are compared with: the detached direct predictions "
                      "(xtsc, by --tdep_loss and --tseg_loss) or the ground truth (xtc, by --lp and cross-entropy)")
    loss.add_argument("--balancing", choices=tuple(BALANCERS), default="none", action=BalancingChoice,
                      help="balancing of the two group losses")
    loss.add_argument("--uncertainty_weights", action=BalancingAlias, method="uncertainty",
                      help="the original's flag for --balancing uncertainty (Kendall et al. 2018)")
    loss.add_argument("--gradnorm", action=BalancingAlias, method="gradnorm",
                      help="the original's flag for --balancing gradnorm (Chen et al. 2018)")
    loss.add_argument("--gradnorm_alpha", type=float, default=0.16, help="GradNorm's asymmetry alpha")
    loss.add_argument("--balancing_form", "--gradnorm_form", dest="gradnorm_form", choices=BALANCING_FORMS,
                      default="paper", help="the form of GradNorm, DWA, PCGrad and AdaLSP: as published (paper) or as "
                      "the original code ran it (original)")
    loss.add_argument("--dwa_temperature", type=float, default=2.0, help="DWA's temperature T (--balancing dwa)")
    loss.add_argument("--pcgrad_weighting", choices=PCGRAD_WEIGHTINGS, default="none",
                      help="the weighting of the task losses that PCGrad's per-task gradients come from "
                      "(--balancing pcgrad; the original's PCGrad rows used uncertainty)")

    speed = parser.add_argument_group("speed (each 'auto' default is on with CUDA, off on the CPU)")
    speed.add_argument("--amp", action="store_true", help="bf16 autocast of the forward passes on CUDA (losses and "
                       "metrics in float32); off by default: the paper's runs were float32")
    speed.add_argument("--no_amp", dest="amp", action="store_false", default=argparse.SUPPRESS,
                       help="float32 forward passes (the default; kept for older command lines)")
    add_switch(speed, "channels_last", "channels-last memory format for the model and the images")
    add_switch(speed, "gpu_augment", "augment each training batch on the device (same flips, crops and "
               "depth scaling as the CPU workers; they only read the cached arrays)")
    speed.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA; the first steps "
                       "are slow while it compiles)")

    run = parser.add_argument_group("run and outputs")
    run.add_argument("--save_path", default="./exps", help="folder of the numbered experiment folders")
    run.add_argument("--resume", metavar="N_OR_FOLDER", help="continue experiment N under --save_path (or the "
                     "experiment folder given) from its last checkpoint; --epochs may grow")
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
    run.add_argument("--tensorboard", action="store_true", help="also write every printed figure and, each epoch, "
                     "the prediction grid to {experiment}/tensorboard (pip install -r requirements-extra.txt)")
    run.add_argument("--show", action="store_true", help="also open the figures in windows")
    run.add_argument("--run_only", action="store_true", help="accepted for the original's scripts: "
                     "figures are saved and not shown, which is the default")
    run.add_argument("--view_only", action="store_true", help="show the figures without saving them")
    run.add_argument("--multiple_gpu", action="store_true", help="the original's DataParallel flag: refused, "
                     "with the torchrun command that uses several GPUs")
    run.add_argument("--peer_timeout", type=float, metavar="MINUTES", help="under torchrun, how long a process "
                     "waits for the others in one collective operation before it stops (exit 4, with the resume "
                     "command); default torch's: 30 minutes on the CPU (gloo), 10 on GPUs (NCCL)")
    run.add_argument("--demo", action="store_true", help="generate a small synthetic dataset in the real "
                     "layout under data/demo/ and run a short CPU-sized training on it")
    parser.set_defaults(**profile.defaults)
    return parser


def add_switch(group, name, help_text):
    """--NAME / --no_NAME, stored in NAME as True / False, AUTO when neither is given."""
    group.add_argument(f"--{name}", dest=name, action="store_const", const=True, default=AUTO, help=help_text)
    group.add_argument(f"--no_{name}", dest=name, action="store_const", const=False, default=argparse.SUPPRESS,
                       help=f"turn --{name} off")


def parse_options(profile, argv=None):
    """The checked RunConfig of an entry script for `profile` and `argv`; invalid combinations exit with
    status 2 and the reason. `config.explicit` lists the keys given on the command line (the rest are
    defaults)."""
    parser = build_parser(profile)
    namespace = parser.parse_args(argv)
    if namespace.demo:
        parser.set_defaults(**{**profile.defaults, **profile.demo_defaults})
        namespace = parser.parse_args(argv)
    values = {key: as_value(value) for key, value in vars(namespace).items() if key != "balancing_flag"}
    not_given = object()
    probe = parser.parse_args(argv, namespace=argparse.Namespace(**{key: not_given for key in values}))
    explicit = tuple(sorted(key for key, value in vars(probe).items()
                            if value is not not_given and key != "balancing_flag"))
    config = RunConfig().replace(dataset=profile.name, explicit=explicit, **values)
    tasks = config.model.tasks
    if len(set(tasks)) == len(tasks) and set(tasks) in (set(TWO_TASKS), set(THREE_TASKS)):
        config = config.replace(tasks=tuple(task for task in THREE_TASKS if task in config.model.tasks))
    if config.model.single_task == "normal" and "tasks" not in explicit:
        config = config.replace(tasks=THREE_TASKS)
    if config.model.single_task is not None:
        config = config.replace(**{key: value for key, value in SINGLE_TASK_BETAS.items() if key not in explicit})
    problem = find_problem(config, profile)
    if problem:
        parser.error(problem)
    return config


def find_problem(config, profile):
    """The first reason the settings of `config` cannot run together, or None. The loss and balancing
    settings are checked by building them (cheap: no tensors of any size)."""
    data, model, optimization, run = config.data, config.model, config.optimization, config.run
    seeds = None if optimization.seeds is None else list(optimization.seeds)
    checks = (
        (data.height <= 0 or data.height % INPUT_MULTIPLE,
         f"--height {data.height}: expected a positive multiple of {INPUT_MULTIPLE}"),
        (data.width <= 0 or data.width % INPUT_MULTIPLE,
         f"--width {data.width}: expected a positive multiple of {INPUT_MULTIPLE}"),
        (data.num_classes not in profile.class_counts,
         f"--num_classes {data.num_classes}: {profile.name} supports {profile.class_counts}"),
        (optimization.epochs < 1, f"--epochs {optimization.epochs}: expected at least 1"),
        (data.batch_size < 1, f"--batch_size {data.batch_size}: expected at least 1"),
        (data.workers < 0, f"--workers {data.workers}: expected 0 or more"),
        (not math.isfinite(optimization.lr) or optimization.lr <= 0,
         f"--lr {optimization.lr}: expected a positive, finite learning rate"),
        (not 0 <= optimization.b1 < 1, f"--b1 {optimization.b1}: expected a value in [0, 1)"),
        (not 0 <= optimization.b2 < 1, f"--b2 {optimization.b2}: expected a value in [0, 1)"),
        (not 0 <= optimization.seed < SEED_LIMIT,
         f"--seed {optimization.seed}: expected an integer in 0..{SEED_LIMIT - 1}"),
        (not math.isfinite(optimization.scheduler_gamma) or optimization.scheduler_gamma <= 0,
         f"--scheduler_gamma {optimization.scheduler_gamma}: expected a positive, finite factor"),
        (os.path.exists(run.save_path) and not os.path.isdir(run.save_path),
         f"--save_path {run.save_path}: that is a file; expected a folder (it is created when missing)"),
        (run.peer_timeout is not None and not 0 < run.peer_timeout < math.inf,
         f"--peer_timeout {run.peer_timeout}: expected a positive, finite number of minutes"),
        (run.tensorboard and (run.debug or run.infer_only),
         "--tensorboard writes into the experiment folder of a training run: not with --debug or --infer_only"),
        (run.resume is not None and (run.debug or run.infer_only),
         "--resume continues a run in its folder: it cannot go with --debug or --infer_only"),
        (data.batch_size == 1 and data.height == data.width == INPUT_MULTIPLE,
         f"--batch_size 1 at {INPUT_MULTIPLE}x{INPUT_MULTIPLE}: BatchNorm needs more than one value per channel at "
         f"the deepest (1x1) stage; use --batch_size 2 or more, or a larger input"),
        (not 0 <= optimization.momentum < math.inf,
         f"--momentum {optimization.momentum}: expected a finite value >= 0"),
        (optimization.scheduler_step_size < 1,
         f"--scheduler_step_size {optimization.scheduler_step_size}: expected at least 1"),
        (run.infer_only and run.exp_num is None, "--infer_only needs --exp_num N"),
        (run.exp_num is not None and not run.infer_only, "--exp_num is used with --infer_only only"),
        (run.show and run.no_plots, "--show and --no_plots contradict each other"),
        (run.view_only and run.no_plots, "--view_only and --no_plots contradict each other"),
        (model.xtask.pretrained_weights and not model.xtask.use_pretrain,
         "--pretrained_weights is used with --use_pretrain only"),
        (model.single_task is not None and config.balancing.method != "none",
         f"--single_task {model.single_task} trains one task alone: no loss balancing (drop --balancing "
         f"{config.balancing.method})"),
        (seeds is not None and any(not 0 <= seed < SEED_LIMIT for seed in seeds),
         f"--seeds {seeds}: expected integers in 0..{SEED_LIMIT - 1}"),
        (seeds is not None and "seed" in config.explicit, "--seed and --seeds: give one of them"),
        (seeds is not None and (run.resume is not None or run.infer_only),
         "--seeds starts new runs: it cannot go with --resume or --infer_only"),
        (run.multiple_gpu, "--multiple_gpu (DataParallel in the original) is not used: run the same command "
         "without it through torchrun, e.g. torchrun --nproc_per_node=NUMBER_OF_GPUS "
         f"{profile.entry_script} ... (DistributedDataParallel; --batch_size stays the global batch)"),
    )
    for failed, message in checks:
        if failed:
            return message
    problem = task_problem(config, profile) or distillation_problem(config)
    if problem:
        return problem
    cross_task_only = [f"--{key}" for key in config.explicit if key in keys_with(CROSS_TASK_ONLY)]
    if model.family != "xtask" and cross_task_only:
        return (f"{', '.join(cross_task_only)}: a setting of the cross-task model (its encoder, transfer nets or "
                f"their losses), not of --model {model.family}; drop it or use --model xtask")
    try:
        XTaskLoss(**config.loss.arguments(data.num_classes, data.ignore_index,
                                          None if model.single_task == "normal" else model.single_task))
    except ValueError as error:
        return flag_message(error)
    try:
        make_balancer(config.balancing.method, **config.balancing.arguments(optimization, len(model.tasks)))
    except ValueError as error:
        return flag_message(error, BALANCER_FLAGS)
    return None


def distillation_problem(config):
    """The first reason the KD4MTL settings of `config` (--distill_from, --adaptor_lr) cannot run, or None;
    the teacher folders themselves are checked when the run starts (training.distillation)."""
    model, method = config.model, config.balancing.method
    folders, adaptor_lr = model.mtan.distill_from, model.mtan.adaptor_lr
    tasks = model.trained_tasks()
    checks = (
        (not math.isfinite(adaptor_lr) or adaptor_lr <= 0,
         f"--adaptor_lr {adaptor_lr}: expected a positive, finite learning rate"),
        ("adaptor_lr" in config.explicit and not folders, "--adaptor_lr is used with --distill_from only"),
        (folders and model.family != "mtan",
         f"--distill_from (KD4MTL) distils single-task MTAN teachers into MTAN: use --model mtan, not {model.family}"),
        (folders and model.single_task is not None,
         f"--distill_from with --single_task {model.single_task}: KD4MTL trains the multi-task network; drop "
         "--single_task"),
        (folders and len(folders) != len(tasks),
         f"--distill_from: {len(folders)} folder(s) for the tasks {' '.join(tasks)}; expected one teacher run per "
         "task, in this order"),
        (folders and method not in ("none", "uncertainty", "dwa"),
         f"--distill_from with --balancing {method}: KD4MTL adds its distillation loss to a weighted sum of the task "
         "losses; choose --balancing none (the original's), uncertainty or dwa"),
    )
    return next((message for failed, message in checks if failed), None)


def task_problem(config, profile):
    """The first reason the tasks of `config` cannot be trained with its model and dataset, or None."""
    model, tasks = config.model, config.model.tasks
    given = " ".join(tasks)
    has_normals = any("normal" in task_set for task_set in profile.dataset_class.task_sets)
    checks = (
        (tasks not in (TWO_TASKS, THREE_TASKS),
         f"--tasks {given}: expected segmentation depth, or segmentation depth normal (each once)"),
        (model.single_task == "normal" and not has_normals,
         f"--single_task normal: {profile.name} has no surface normals (NYUv2 has)"),
        ("normal" in tasks and not has_normals, f"--tasks {given}: {profile.name} has no surface normals (NYUv2 has)"),
        (model.single_task == "normal" and "normal" not in tasks,
         f"--single_task normal with --tasks {given}: the normals baseline reads the surface normals; drop --tasks"),
        ("normal" in tasks and model.family == "xtask",
         f"--tasks {given}: the cross-task model has no surface-normal head; use --model mtan or adamtnet"),
        (model.single_task in TWO_TASKS and tasks == THREE_TASKS,
         f"--single_task {model.single_task} with --tasks {given}: a segmentation or depth baseline learns its task "
         "alone from the two-task data; drop --tasks"),
        ("normal" in tasks and config.balancing.method == "gradnorm",
         f"--gradnorm with --tasks {given}: GradNorm is implemented for the two groups of segmentation and depth; "
         "choose --balancing none, uncertainty, dwa, pcgrad or (with --model adamtnet) adalsp"),
        (config.balancing.method == "adalsp"
         and not hasattr(MODEL_FAMILIES[model.family], "decoder_first_layer_weight"),
         f"--balancing adalsp with --model {model.family}: AdaMT-Net's weighting reads the gradients of its task "
         "decoders' first layers, which only AdaMT-Net names; use it with --model adamtnet"),
    )
    return next((message for failed, message in checks if failed), None)
