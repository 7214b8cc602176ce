"""Training-step throughput of each loss balancing method, and of GradNorm in the original two-pass form.

Run: python bench/balancing_step.py [--cpu] [--height 64 --width 128 --batch_size 4 --steps 5]
Prints images/s per method and the ratio against the plain sum, all measured in this one process.
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from losses import XTaskLoss, make_balancer  # noqa: E402
from models import XTaskTSNet  # noqa: E402


def two_pass_gradnorm_backward(balancer, groups, shared_weight):
    """The original code's GradNorm step: create_graph gradient norms of the weighted groups, a backward
    of the total with retain_graph, then a second backward of L_grad into the weights only."""
    if torch.isnan(balancer.initial_losses).any():
        balancer.initial_losses.copy_(groups.detach())
    weighted = balancer.task_weight * groups
    norms = torch.stack([torch.linalg.vector_norm(torch.autograd.grad(weighted[k], shared_weight, retain_graph=True,
                                                                      create_graph=True)[0]) for k in range(2)])
    weighted.sum().backward(retain_graph=True)
    ratio = groups.detach() / balancer.initial_losses
    target = (norms.mean() * (ratio / ratio.mean()) ** balancer.alpha).detach()
    balancer.task_weight.grad = torch.autograd.grad((norms - target).abs().sum(), balancer.task_weight)[0]


def measure(method, options, device):
    """Images per second of `options.steps` timed training steps (after one warm-up step)."""
    torch.manual_seed(0)
    model = XTaskTSNet(options.enc_layers, 7).to(device)
    criterion = XTaskLoss(7, 0.01, 0.01)
    balancer = make_balancer("gradnorm" if method == "gradnorm (two-pass)" else method).to(device)
    optimizer = torch.optim.Adam(list(model.parameters()) + balancer.model_parameters(), lr=1e-4)
    image = torch.randn(options.batch_size, 3, options.height, options.width, device=device)
    segmentation = torch.randint(0, 7, (options.batch_size, options.height, options.width), device=device)
    depth = torch.rand(options.batch_size, 1, options.height, options.width, device=device)
    for step in range(options.steps + 1):
        if step == 1:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        groups = criterion(model(image), segmentation, depth).groups()
        if method == "gradnorm (two-pass)":
            two_pass_gradnorm_backward(balancer, groups, model.last_shared_weight)
        else:
            balancer.backward(groups, model.last_shared_weight)
        optimizer.step()
        balancer.step()
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
    for method in ("none", "uncertainty", "gradnorm", "gradnorm (two-pass)"):
        throughput = measure(method, options, device)
        baseline = baseline or throughput
        print(f"{method:<22}{throughput:>8.2f} img/s   ratio vs none {throughput / baseline:.3f}")


if __name__ == "__main__":
    main()
