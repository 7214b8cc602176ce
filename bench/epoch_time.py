"""Wall time of real training epochs on a Cityscapes-size dataset, data loading and validation included,
and the projected time of the 250-epoch run.

Run: python -m bench.epoch_time [--train_images 2975 --val_images 500] [--epochs 3] [--out epoch.md]
         [-- extra flags for main_cross_cs.py, e.g. --uncertainty_weights --workers 8]
Generates the synthetic street scenes in the MTAN layout at 128x256 (the Cityscapes default size) in a
temporary folder, then runs main_cross_cs.py on them in a subprocess (its own cache build, loaders,
engine and recorder), reads the per-epoch seconds from the experiment's metrics.csv and projects
250 epochs from the median epoch after the first (which includes cuDNN's algorithm search). On CUDA,
nvidia-smi samples the GPU's utilisation every 200 ms during the run. The temporary folder (data,
cache, experiment) is deleted at the end.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import pandas

from data.synthetic import write_cityscapes_mtan

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER_EPOCHS = 250


def gpu_utilisation_sampler(path):
    """A running `nvidia-smi` that appends the GPU's utilisation (%) to `path` every 200 ms, or None
    when there is no nvidia-smi."""
    try:
        return subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                 "-lms", "200"], stdout=open(path, "w"), stderr=subprocess.DEVNULL)
    except OSError:
        return None


def main():
    """Generate the data, run the entry script, and print the epoch times and the projection."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train_images", type=int, default=2975)
    parser.add_argument("--val_images", type=int, default=500)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", help="also write the table (markdown) to this file")
    parser.add_argument("extra", nargs="*", help="flags for main_cross_cs.py (after --)")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="xtask-epoch-") as folder:
        start = time.perf_counter()
        root = write_cityscapes_mtan(os.path.join(folder, "data"),
                                     {"train": arguments.train_images, "val": arguments.val_images},
                                     arguments.height, arguments.width)
        generation = time.perf_counter() - start
        command = [sys.executable, os.path.join(REPOSITORY, "main_cross_cs.py"), "--input_path", str(root),
                   "--save_path", os.path.join(folder, "exps"), "--cache_dir", os.path.join(folder, "cache"),
                   "--height", str(arguments.height), "--width", str(arguments.width),
                   "--epochs", str(arguments.epochs), "--notqdm", "--no_plots", *arguments.extra]
        print("$ " + " ".join(command), flush=True)
        utilisation_path = os.path.join(folder, "utilisation.csv")
        sampler = gpu_utilisation_sampler(utilisation_path)
        start = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True)
        run_seconds = time.perf_counter() - start
        if sampler is not None:
            sampler.terminate()
            sampler.wait()
        print(result.stdout[-3000:], result.stderr[-3000:], sep="\n", flush=True)
        if result.returncode != 0:
            sys.exit(f"main_cross_cs.py exited with {result.returncode}")
        history = pandas.read_csv(os.path.join(folder, "exps", "001", "metrics.csv"))
        samples = []
        if sampler is not None:
            samples = [float(line) for line in open(utilisation_path) if line.strip().replace(".", "").isdigit()]
    seconds = list(history["epoch_seconds"])
    steady = statistics.median(seconds[1:] or seconds)
    rest = run_seconds - sum(seconds)
    lines = [f"{arguments.train_images} train / {arguments.val_images} val images at {arguments.height}x"
             f"{arguments.width}, flags: {' '.join(arguments.extra) or '(defaults)'}",
             f"- data generation: {generation:.0f} s (not part of a run)",
             f"- whole run of {arguments.epochs} epochs: {run_seconds:.1f} s (start-up, cache build and final "
             f"evaluation: {rest:.1f} s)",
             f"- epoch seconds: {', '.join(f'{value:.1f}' for value in seconds)}; training images/s: "
             f"{', '.join(f'{value:.0f}' for value in history['images_per_second'])}",
             f"- projected {PAPER_EPOCHS}-epoch run: {(PAPER_EPOCHS * steady + rest) / 60:.1f} min "
             f"({PAPER_EPOCHS} x {steady:.1f} s + {rest:.0f} s)"]
    if samples:
        lines.append(f"- GPU utilisation during the run (nvidia-smi, {len(samples)} samples): mean "
                     f"{statistics.mean(samples):.0f} %, median {statistics.median(samples):.0f} %")
    print("\n".join(lines))
    if arguments.out:
        with open(arguments.out, "w") as stream:
            stream.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
