"""The fixed costs of a run around its training steps, each against the way it was done before:

- checkpoint write: torch.save streamed into the atomic write's temporary file (utils.files.save_torch)
  against serialising into memory first and writing those bytes (the earlier save_torch), on a state of
  `--megabytes` MB (258 MB: last.pt of a ResNet-18 cross-task run with its Adam state); MB/s of each
  and the extra memory each holds while writing;
- process exit: how long an entry-script process takes to end after its work, with the imported modules'
  objects frozen first (training.run.process_main: gc.freeze) and without.

Run: python -m bench.run_overheads [--megabytes 258] [--repeats 3] [--folder DIR]
"""
import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from utils.files import atomic_write_bytes, save_torch

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def save_through_memory(path, content):
    """The earlier save_torch: the whole serialised checkpoint in memory, then written atomically."""
    buffer = io.BytesIO()
    torch.save(content, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def checkpoint_state(megabytes):
    """A state dict of float32 tensors of about `megabytes` MB, in tensors of at most 4 MB (as a model's)."""
    count = int(megabytes * 1e6) // 4
    sizes = [min(2 ** 20, count - start) for start in range(0, count, 2 ** 20)]
    return {f"tensor_{index}": torch.randn(size) for index, size in enumerate(sizes)}


def time_writes(write, folder, state, repeats):
    """Median seconds of `repeats` writes of `state` by `write(path, state)` into `folder`."""
    seconds = []
    for repeat in range(repeats):
        start = time.perf_counter()
        write(os.path.join(folder, f"last-{repeat}.pt"), state)
        seconds.append(time.perf_counter() - start)
        os.remove(os.path.join(folder, f"last-{repeat}.pt"))
    return statistics.median(seconds)


def exit_seconds(freeze, repeats):
    """Median seconds from the end of an entry-script process's work to the end of the process, with its
    imported modules' objects frozen (`freeze`) or not."""
    code = ("import gc, sys, time\nimport main_cross_cs\n" + ("gc.freeze()\n" if freeze else "")
            + "print(time.time(), flush=True)\n")
    seconds = []
    for _ in range(repeats):
        process = subprocess.run([sys.executable, "-c", code], cwd=REPOSITORY, capture_output=True, text=True,
                                 env={**os.environ, "PYTHONPATH": REPOSITORY}, check=True)
        seconds.append(time.time() - float(process.stdout.split()[0]))
    return statistics.median(seconds)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=258.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folder", default=None, help="where the checkpoints are written (default: a temporary "
                        "folder in the current one, on the disk runs write to)")
    arguments = parser.parse_args(argv)
    state = checkpoint_state(arguments.megabytes)
    size = sum(tensor.numel() * tensor.element_size() for tensor in state.values()) / 1e6
    with tempfile.TemporaryDirectory(dir=arguments.folder or ".") as folder:
        before = time_writes(save_through_memory, folder, state, arguments.repeats)
        streamed = time_writes(save_torch, folder, state, arguments.repeats)
    print(f"checkpoint write, {size:.0f} MB, median of {arguments.repeats}:")
    print(f"  through memory (before): {size / before:7.1f} MB/s, {size:.0f} MB held beside the state")
    print(f"  streamed (save_torch):   {size / streamed:7.1f} MB/s, nothing held beside the state; "
          f"{before / streamed:.2f}x")
    unfrozen, frozen = exit_seconds(False, arguments.repeats), exit_seconds(True, arguments.repeats)
    print(f"process exit after importing the entry script's modules, median of {arguments.repeats}:")
    print(f"  without gc.freeze (before): {unfrozen:.2f} s")
    print(f"  with gc.freeze (process_main): {frozen:.2f} s; {unfrozen / frozen:.1f}x shorter")


if __name__ == "__main__":
    main()
