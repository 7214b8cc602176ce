"""Training augmentation throughput: the CPU per-sample path (data.transforms.random_augment, as a DataLoader
worker runs it) against the batched path (data.device_augment.augment_batch), in samples per second.

Run: python -m bench.augmentation [--height 128 --width 256] [--batch_size 8] [--seconds 3] [--device cuda]
The batch holds random samples (image in the ImageNet-normalised range, labels, disparity with gaps); each
path runs whole batches, after one warm-up batch, for about --seconds: the CPU path augments the batch's
samples one by one with their own generators (drawing included), the batched path augments the batch
already on the device (it arrives there unaugmented, with its drawn parameters, in the same copy that
would bring an augmented batch). On CUDA the timing is bracketed by torch.cuda.synchronize. Prints one
line per path and the ratio batched / CPU.
"""
import argparse
import os
import time

import numpy as np
import torch

from data.device_augment import augment_batch
from data.transforms import draw_augmentation, random_augment, to_tensors

DEPTH_IS_DISPARITY = True  # Cityscapes; metric depth costs the same (a division instead of a product)


def random_batch(batch_size: int, height: int, width: int) -> list:
    """`batch_size` samples (image float32 [H, W, 3], segmentation int64 [H, W], depth float32 [H, W])."""
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(batch_size):
        depth = rng.uniform(0.01, 0.4, (height, width)).astype(np.float32)
        depth[rng.random((height, width)) < 0.2] = 0
        samples.append((rng.uniform(-2, 2, (height, width, 3)).astype(np.float32),
                        rng.integers(-1, 7, (height, width)), depth))
    return samples


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def samples_per_second(augment_one_batch, batch_size: int, seconds: float, device: torch.device) -> float:
    """Samples per second of `augment_one_batch(batch_number)` run for about `seconds` after one warm-up call."""
    augment_one_batch(0)
    synchronize(device)
    batches = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        batches += 1
        augment_one_batch(batches)
    synchronize(device)
    return batches * batch_size / (time.perf_counter() - start)


def main():
    """Time both paths on one batch and print their samples/s and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0, help="timing length of each path")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    options = parser.parse_args()
    device = torch.device(options.device)
    samples = random_batch(options.batch_size, options.height, options.width)

    def augment_on_cpu(batch_number):
        """One batch through the CPU path: random_augment and to_tensors per sample."""
        for index, sample in enumerate(samples):
            generator = np.random.default_rng([0, batch_number, index])
            to_tensors(*random_augment(*sample, generator, DEPTH_IS_DISPARITY))

    image, segmentation, depth = (torch.stack(field).to(device) for field in zip(*(to_tensors(*s) for s in samples)))
    parameters = torch.stack([draw_augmentation(np.random.default_rng([0, 1, index]), options.height,
                                                options.width).as_tensor() for index in range(len(samples))])
    parameters = parameters.to(device)

    def augment_on_device(_):
        """One batch through the batched path on the device."""
        augment_batch(image, segmentation, depth, parameters, DEPTH_IS_DISPARITY)

    cpu_rate = samples_per_second(augment_on_cpu, options.batch_size, options.seconds, torch.device("cpu"))
    device_rate = samples_per_second(augment_on_device, options.batch_size, options.seconds, device)
    threads = f"{torch.get_num_threads()} torch threads"
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else threads
    print(f"augmentation at {options.width}x{options.height}, batch {options.batch_size}; {os.cpu_count()} CPUs, "
          f"batched path on {device} ({device_name})")
    print(f"{'path':<40}{'samples/s':>12}")
    print(f"{'CPU per-sample (random_augment)':<40}{cpu_rate:>12.1f}")
    print(f"{'batched (augment_batch on ' + device.type + ')':<40}{device_rate:>12.1f}")
    print(f"batched / CPU per-sample: {device_rate / cpu_rate:.2f}x")


if __name__ == "__main__":
    main()
