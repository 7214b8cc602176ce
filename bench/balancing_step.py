"""Training-step throughput of each loss balancing method, GradNorm, DWA and PCGrad in both of their forms.

Run: python -m bench.balancing_step [--cpu] [--height 64 --width 128 --batch_size 4 --steps 5 --repeats 3]
         [--cases none uncertainty gradnorm:paper gradnorm:original dwa:paper dwa:original pcgrad:paper
          pcgrad:original]
Each case is warmed up by one step, then timed over `--repeats` interleaved rounds of `--steps` steps,
each step on its own. Per case it prints images/s at the median step time and its ratio against the
first case (the plain sum by default), the fastest step and its ratio (closest to an idle machine when
other processes share the CPU), and the floating-point operations of one more step with their ratio
(independent of the machine's load; torch.utils.flop_counter). All cases run in this one process, with
the engine's own training step (training.engine.train_step).
"""
import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.training_step import synchronize
from data import CITYSCAPES
from training.engine import build_training, train_step
from training.options import parse_options

CASES = ("none", "uncertainty", "gradnorm:paper", "gradnorm:original", "dwa:paper", "dwa:original", "pcgrad:paper",
         "pcgrad:original")


def build_case(case, arguments, device):
    """TrainingParts for `case` ("method" or "method:form") from the engine's builder, as the Cityscapes
    entry script builds them at the benchmark's size (the same seeded model for every case)."""
    method, _, form = case.partition(":")
    config = parse_options(CITYSCAPES, ["--balancing", method, "--balancing_form", form or "paper", "--enc_layers",
                                        str(arguments.enc_layers), "--height", str(arguments.height), "--width",
                                        str(arguments.width), "--batch_size", str(arguments.batch_size)])
    parts = build_training(config, device, config.data.num_classes)
    parts.balancer.start_epoch(1)
    parts.model.train()
    return parts


def step_seconds(parts, batch, steps, device):
    """The wall-clock duration of each of `steps` consecutive training steps on `batch`, in seconds."""
    durations = []
    for _ in range(steps):
        synchronize(device)
        start = time.perf_counter()
        train_step(parts, batch, device)
        synchronize(device)
        durations.append(time.perf_counter() - start)
    return durations


def step_flops(parts, batch, device):
    """Floating-point operations of one training step on `batch` (matrix products and convolutions, the
    forward and every backward pass), counted by torch.utils.flop_counter: independent of the machine's load."""
    with FlopCounterMode(display=False) as counter:
        train_step(parts, batch, device)
    return counter.get_total_flops()


def main():
    """Time every case in interleaved rounds and print the table of median step throughputs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--enc_layers", type=int, default=18)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    arguments = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not arguments.cpu else "cpu")
    print(f"device {device}, ResNet-{arguments.enc_layers}, {arguments.batch_size} x {arguments.height}x{arguments.width}, "
          f"median of {arguments.repeats} interleaved rounds x {arguments.steps} timed steps per case")
    batch = (torch.randn(arguments.batch_size, 3, arguments.height, arguments.width),
             torch.randint(0, 7, (arguments.batch_size, arguments.height, arguments.width)),
             torch.rand(arguments.batch_size, 1, arguments.height, arguments.width))
    parts = {case: build_case(case, arguments, device) for case in arguments.cases}
    for case in arguments.cases:
        step_seconds(parts[case], batch, 1, device)
    durations = {case: [] for case in arguments.cases}
    for _ in range(arguments.repeats):
        for case in arguments.cases:
            durations[case] += step_seconds(parts[case], batch, arguments.steps, device)
    flops = {case: step_flops(parts[case], batch, device) for case in arguments.cases}
    baseline = arguments.cases[0]
    print(f"{'':<26}{'img/s':>8} {'ratio':>6}   {'fastest':>7} {'ratio':>6}   {'GFLOP':>7} {'ratio':>6}   "
          f"(ratios vs {baseline}: of median steps, of fastest steps, of FLOPs)")
    for case in arguments.cases:
        method, _, form = case.partition(":")
        label = f"{method} ({form} form)" if form else method
        median, fastest = statistics.median(durations[case]), min(durations[case])
        print(f"{label:<26}{arguments.batch_size / median:>8.2f} {statistics.median(durations[baseline]) / median:>6.3f}"
              f"   {fastest:>6.3f}s {min(durations[baseline]) / fastest:>6.3f}"
              f"   {flops[case] / 1e9:>7.1f} {flops[baseline] / flops[case]:>6.3f}")


if __name__ == "__main__":
    main()
