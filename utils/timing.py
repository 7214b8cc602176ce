"""Inference latency at batch size 1: median over warm repeats, CUDA events on the GPU."""
import statistics
import time

import torch


@torch.no_grad()
def inference_latency_ms(model, height, width, device, direct_only, warmup=5, repeats=30):
    """Median latency in milliseconds of one forward pass of a [1,3,height,width] image on `device`."""
    model.eval()
    image = torch.randn(1, 3, height, width, device=device)
    for _ in range(warmup):
        model(image, direct_only=direct_only)
    timings = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            model(image, direct_only=direct_only)
            end.record()
            torch.cuda.synchronize(device)
            timings.append(start.elapsed_time(end))
        else:
            start = time.perf_counter()
            model(image, direct_only=direct_only)
            timings.append((time.perf_counter() - start) * 1000)
    return statistics.median(timings)
