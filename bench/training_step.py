"""Training-step throughput at each dataset's defaults, with each speed switch on and off, for each model
family and balancing method, and the projected time of the 250-epoch Cityscapes run.

Run: python -m bench.training_step [--cpu] [--quick] [--datasets cityscapes nyu]
         [--models xtask mtan adamtnet kd4mtl] [--balancing none uncertainty gradnorm] [--steps 20]
         [--warmup 5] [--compile] [--out table.md]
The parts come from the entry scripts' own code (training.options.parse_options with the dataset's
defaults, training.engine.build_training: fused optimizer on CUDA) and each step is the engine's
`train_step`, so the numbers are those of a real run minus the data loader. KD4MTL is MTAN with its
distillation step: its teachers are single-task MTANs built untrained here (a teacher's weights do not
change its cost), frozen, as a run loads them from --distill_from. A balancing method that a model
cannot use (--balancing adalsp off AdaMT-Net, gradnorm or pcgrad with KD4MTL) is skipped with a line.
Per dataset, model and balancing method it times: every switch off (float32, as before the speed work), every switch that helps this
device on, and "on" with one switch off at a time; images/s over `--steps` steps after `--warmup`
(CUDA synchronised at both ends only, so queued work overlaps as in training), with the ratio against
"all off". With --gpu_augment the batch carries its augmentation parameters and is augmented inside
the step; otherwise it arrives augmented (the CPU workers' cost is not in the step). Evaluation
throughput (the whole network, inference mode) and, on CUDA, the share of the step's wall time the
GPU spent in kernels (torch.profiler) are printed too. --quick: CPU-sized (ResNet-18, a quarter of
the default size in pixels, batch 4; the cross-task model's encoder ResNet-18).
"""
import argparse
import dataclasses
import time

import numpy as np
import torch

from data import PROFILES
from data.transforms import draw_augmentation
from models import make_model
from training import engine
from training.config import SpeedSettings
from training.distillation import distillation_from
from training.options import find_problem, parse_options

CITYSCAPES_TRAIN_IMAGES, CITYSCAPES_VAL_IMAGES, PAPER_EPOCHS = 2975, 500, 250
# Every switch but torch.compile (timed on request: its first steps are slow).
CUDA_SWITCHES = tuple(item.name for item in dataclasses.fields(SpeedSettings) if item.name != "compile")
KD4MTL = "kd4mtl"  # MTAN with the distillation step
MODELS = ("xtask", "mtan", "adamtnet", KD4MTL)


def synchronize(device):
    """Wait for the device's queued work (CUDA only)."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def configurations(device, with_compile):
    """(label, SpeedSettings) to time on `device`: all off, all on, all on but one switch (on CUDA),
    and all on with torch.compile when asked."""
    switches = CUDA_SWITCHES if device.type == "cuda" else ("gpu_augment",)
    all_on = SpeedSettings(**{name: True for name in switches})
    rows = [("all off (float32)", SpeedSettings()), ("all on", all_on)]
    if len(switches) > 1:
        rows += [(f"all on but {name}", dataclasses.replace(all_on, **{name: False})) for name in switches]
    if with_compile:
        rows.append(("all on + compile", dataclasses.replace(all_on, compile=True)))
    return rows


def synthetic_batch(data, speed, device, generator):
    """A training batch at the size of `data` (training.config.DataConfig): image, segmentation, depth
    (+ augmentation parameters [N, 4] under gpu_augment), in pinned memory on CUDA as the DataLoader
    gives it."""
    size = (data.batch_size, data.height, data.width)
    batch = [torch.rand(size[0], 3, *size[1:]), torch.randint(0, data.num_classes, size),
             torch.rand(size[0], 1, *size[1:])]
    if speed.gpu_augment:
        batch.append(torch.stack([draw_augmentation(generator, data.height, data.width).as_tensor()
                                  for _ in range(data.batch_size)]))
    return tuple(tensor.pin_memory() for tensor in batch) if device.type == "cuda" else tuple(batch)


def images_per_second(parts, batch, steps, warmup, device):
    """Training images per second of `steps` consecutive engine steps on `batch`, after `warmup` steps."""
    for _ in range(warmup):
        engine.train_step(parts, batch, device)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        engine.train_step(parts, batch, device)
    synchronize(device)
    return steps * len(batch[0]) / (time.perf_counter() - start)


@torch.inference_mode()
def evaluation_images_per_second(parts, batch, steps, device):
    """Evaluation images per second (the whole network in eval mode, inference mode, the step's speed
    settings) on the batch's images."""
    parts.model.eval()
    image = batch[0].to(device)
    engine.forward(parts.model, image, parts.speed)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        engine.forward(parts.model, image, parts.speed)
    synchronize(device)
    parts.model.train()
    return steps * len(image) / (time.perf_counter() - start)


def gpu_busy_fraction(parts, batch, device, steps=5):
    """Share of the wall time of `steps` training steps that CUDA kernels ran (torch.profiler), or None
    off CUDA."""
    if device.type != "cuda":
        return None
    activities = [torch.profiler.ProfilerActivity.CUDA]
    synchronize(device)
    start = time.perf_counter()
    with torch.profiler.profile(activities=activities) as profile:
        for _ in range(steps):
            engine.train_step(parts, batch, device)
        synchronize(device)
    wall = time.perf_counter() - start
    kernel_microseconds = sum(event.self_device_time_total for event in profile.key_averages())
    return kernel_microseconds / 1e6 / wall


def bench_config(profile_name, model, balancing, quick, enc_layers):
    """The entry script's configuration for `profile_name`, `model` (one of MODELS) and `balancing`
    (CPU-sized under `quick`; `enc_layers` for the cross-task model), or the reason it cannot run."""
    family = "mtan" if model == KD4MTL else model
    arguments = ["--model", family, "--balancing", balancing]
    if quick:
        defaults = parse_options(PROFILES[profile_name], []).data
        height, width = (max(32, size // 2 // 32 * 32) for size in (defaults.height, defaults.width))
        arguments += ["--height", str(height), "--width", str(width), "--batch_size", "4"]
    if family == "xtask" and (quick or enc_layers):
        arguments += ["--enc_layers", str(enc_layers or 18)]
    config = parse_options(PROFILES[profile_name], arguments)
    if model == KD4MTL:
        config = config.replace(distill_from=tuple(f"untrained {task} teacher" for task in config.model.tasks))
    return find_problem(config, PROFILES[profile_name]) or config


def build_parts(config, model, device, speed, depth_is_disparity):
    """The engine's TrainingParts of `config`; for KD4MTL with untrained, frozen single-task MTAN teachers."""
    if model != KD4MTL:
        return engine.build_training(config, device, config.data.num_classes, speed, depth_is_disparity)
    parts = engine.build_training(config.replace(distill_from=()), device, config.data.num_classes, speed,
                                  depth_is_disparity)
    teachers = {task: make_model("mtan", num_classes=config.data.num_classes, tasks=(task,)).to(device).eval()
                .requires_grad_(False) for task in config.model.tasks}
    parts.distillation = distillation_from(teachers, config.model.mtan.adaptor_lr, device)
    return parts


def describe_model(config, model):
    """The model column: the family (the cross-task model with its encoder)."""
    if model == "xtask":
        return f"cross-task, ResNet-{config.model.xtask.enc_layers}"
    return {"mtan": "MTAN", "adamtnet": "AdaMT-Net", KD4MTL: "KD4MTL (MTAN)"}[model]


def projected_run_minutes(train_rate, eval_rate):
    """Minutes of the 250-epoch Cityscapes run: every epoch trains 2,975 and validates 500 images, and
    the best checkpoint is evaluated once more at the end."""
    epoch_seconds = CITYSCAPES_TRAIN_IMAGES / train_rate + CITYSCAPES_VAL_IMAGES / eval_rate
    return (PAPER_EPOCHS * epoch_seconds + CITYSCAPES_VAL_IMAGES / eval_rate) / 60


def main():
    """Time every (dataset, balancing, configuration) and print (and optionally write) the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--quick", action="store_true", help="CPU-sized: ResNet-18, half height and width, batch 4")
    parser.add_argument("--datasets", nargs="+", choices=tuple(PROFILES), default=list(PROFILES))
    parser.add_argument("--models", nargs="+", choices=MODELS, default=["xtask"])
    parser.add_argument("--balancing", nargs="+", default=["none", "uncertainty", "gradnorm"])
    parser.add_argument("--enc_layers", type=int, help="override the ResNet depth")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow first steps)")
    parser.add_argument("--out", help="also write the table (markdown) to this file")
    arguments = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not arguments.cpu else "cpu")
    torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    lines = [f"training step on {name}, torch {torch.__version__}; {arguments.steps} steps after {arguments.warmup}",
             "", "| dataset | size, batch | model | balancing | configuration | train img/s | ratio | eval img/s "
             "| GPU busy |", "|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    projections = []
    for profile_name in arguments.datasets:
        for model, balancing in ((model, balancing) for model in arguments.models for balancing in arguments.balancing):
            config = bench_config(profile_name, model, balancing, arguments.quick, arguments.enc_layers)
            if isinstance(config, str):
                print(f"skipped {profile_name}, {model}, {balancing}: {config}", flush=True)
                continue
            data = config.data
            baseline = None
            for label, speed in configurations(device, arguments.compile):
                parts = build_parts(config, model, device, speed, PROFILES[profile_name].dataset_class.depth_is_disparity)
                batch = synthetic_batch(data, speed, device, np.random.default_rng(0))
                train_rate = images_per_second(parts, batch, arguments.steps, arguments.warmup, device)
                eval_rate = evaluation_images_per_second(parts, batch, arguments.steps, device)
                busy = gpu_busy_fraction(parts, batch, device)
                baseline = baseline or train_rate
                row = (f"| {profile_name} | {data.height}x{data.width}, {data.batch_size} | "
                       f"{describe_model(config, model)} | {balancing} | {label} | {train_rate:.1f} | "
                       f"{train_rate / baseline:.2f} | {eval_rate:.1f} | "
                       f"{'-' if busy is None else f'{100 * busy:.0f} %'} |")
                lines.append(row)
                print(row, flush=True)
                if profile_name == "cityscapes" and label in ("all off (float32)", "all on"):
                    projections.append(f"{describe_model(config, model)}, {balancing}, {label}: "
                                       f"{projected_run_minutes(train_rate, eval_rate):.1f} min")
    if projections:
        lines += ["", "projected 250-epoch Cityscapes run at these rates (2,975 train + 500 val images an epoch, "
                      "data loading not included):"] + [f"- {projection}" for projection in projections]
        print("\n".join(lines[-len(projections) - 1:]))
    if arguments.out:
        with open(arguments.out, "w") as stream:
            stream.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
