"""Training-step throughput of each loss balancing method, GradNorm in both of its forms.

Run: python bench/balancing_step.py [--cpu] [--height 64 --width 128 --batch_size 4 --steps 5]
Prints images/s per method and the ratio against the plain sum, all measured in this one process, with
the engine's own training step (training.engine.train_step).
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from losses import XTaskLoss, make_balancer  # noqa: E402
from models import XTaskTSNet  # noqa: E402
from training.engine import TrainingParts, train_step  # noqa: E402

CASES = (("none", "paper"), ("uncertainty", "paper"), ("gradnorm", "paper"), ("gradnorm", "original"))


def measure(method, form, options, device):
    """Images per second of `options.steps` timed training steps (after one warm-up step)."""
    torch.manual_seed(0)
    model = XTaskTSNet(options.enc_layers, 7).to(device)
    balancer = make_balancer(method, form=form).to(device)
    optimizer = torch.optim.Adam(list(model.parameters()) + balancer.model_parameters(), lr=1e-4)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
    parts = TrainingParts(model, XTaskLoss(7, 0.01, 0.01), balancer, optimizer, scheduler)
    batch = (torch.randn(options.batch_size, 3, options.height, options.width),
             torch.randint(0, 7, (options.batch_size, options.height, options.width)),
             torch.rand(options.batch_size, 1, options.height, options.width))
    balancer.start_epoch(1)
    model.train()
    for step in range(options.steps + 1):
        if step == 1:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        train_step(parts, batch, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return options.steps * options.batch_size / (time.perf_counter() - start)


def main():
    """Measure every method and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--enc_layers", type=int, default=18)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    options = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not options.cpu else "cpu")
    print(f"device {device}, ResNet-{options.enc_layers}, {options.batch_size} x {options.height}x{options.width}, "
          f"{options.steps} timed steps each")
    baseline = None
    for method, form in CASES:
        throughput = measure(method, form, options, device)
        baseline = baseline or throughput
        label = f"{method} ({form} form)" if method == "gradnorm" else method
        print(f"{label:<26}{throughput:>8.2f} img/s   ratio vs none {throughput / baseline:.3f}")


if __name__ == "__main__":
    main()
