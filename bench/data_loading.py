"""Training samples per second read from the dataset files (cache=False) and from the preprocessed cache.

Run: python -m bench.data_loading [--train_samples 12] [--height 128 --width 256] [--cached_epochs 20]
Writes a raw Cityscapes dataset at the full 2048x1024 size (train_samples train, 2 val scenes) once into a
temporary folder, then in this one process reads every training sample in order, augmentation on, from the
files and from the cache (its build timed separately), and prints a table with the ratio cached / raw.
The temporary folder, cache included, is deleted at the end.
"""
import argparse
import os
import tempfile
import time
from pathlib import Path

from data import CityscapesDataset
from data.synthetic import write_cityscapes_raw

SOURCE_HEIGHT, SOURCE_WIDTH = 1024, 2048
VAL_SAMPLES = 2


def read_epochs(dataset, epochs):
    """Seconds to read every sample of `dataset` in order, `epochs` times."""
    start = time.perf_counter()
    for _ in range(epochs):
        for index in range(len(dataset)):
            dataset[index]
    return time.perf_counter() - start


def main():
    """Generate the data, time both paths and the build, and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train_samples", type=int, default=12)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--cached_epochs", type=int, default=20, help="passes over the cached split (it is fast)")
    options = parser.parse_args()
    settings = dict(height=options.height, width=options.width, augment=True, seed=0)
    with tempfile.TemporaryDirectory(prefix="bench-data-loading-") as folder:
        root = Path(folder) / "cityscapes"
        start = time.perf_counter()
        write_cityscapes_raw(root, {"train": options.train_samples, "val": VAL_SAMPLES}, height=SOURCE_HEIGHT,
                             width=SOURCE_WIDTH)
        print(f"wrote {options.train_samples} + {VAL_SAMPLES} raw Cityscapes scenes at {SOURCE_WIDTH}x{SOURCE_HEIGHT} "
              f"in {time.perf_counter() - start:.1f} s; reading train at {options.width}x{options.height}, "
              f"augmentation on, {os.cpu_count()} CPUs")
        from_files = CityscapesDataset(root, "train", cache=False, **settings)
        files_seconds = read_epochs(from_files, 1)
        start = time.perf_counter()
        cached = CityscapesDataset(root, "train", cache=Path(folder) / "cache", **settings)
        build_seconds = time.perf_counter() - start
        cached_seconds = read_epochs(cached, options.cached_epochs)
    count = options.train_samples
    rows = (("files (cache=False)", count, files_seconds),
            ("cache build (once)", count, build_seconds),
            ("cache (memory-mapped)", count * options.cached_epochs, cached_seconds))
    print(f"{'path':<24}{'samples':>9}{'seconds':>10}{'samples/s':>12}")
    for name, samples, seconds in rows:
        print(f"{name:<24}{samples:>9}{seconds:>10.3f}{samples / seconds:>12.1f}")
    ratio = (count * options.cached_epochs / cached_seconds) / (count / files_seconds)
    print(f"cached / files: {ratio:.0f}x")


if __name__ == "__main__":
    main()
