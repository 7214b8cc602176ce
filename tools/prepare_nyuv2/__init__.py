"""NYUv2 from its official files, written in the layout of MTAN's preprocessed release that data/nyu.py
reads: {train,val}/{image,label,depth[,normal]}/{i}.npy.

Usage, from the repository root (h5py and scipy: pip install -r requirements-extra.txt):

    python -m tools.prepare_nyuv2 --labeled nyu_depth_v2_labeled.mat --splits splits.mat --out data/nyu \\
        [--height 288 --width 384] [--crop none|projection] [--normals] [--raw_depth] [--workers N] [--verify]

Modules: official_files (the labeled MATLAB v7.3 file, one frame at a time, and splits.mat), class_tables
(the published 894 -> 40 -> 13 class mappings, stored as CSV beside them), frames (crop, label mapping,
resizing), surface_normals (normals from depth with the NYU Kinect intrinsics), output_folder (the folder,
its settings record and completion marker, atomic writes, reading back), preparation (one run).

Rules:
- Splits: trainNdxs (795 images) become train/0..794, testNdxs (654) val/0..653, in the order splits.mat
  lists them.
- Stored as the MTAN release: image float32 [H, W, 3] in [0, 1]; label float32 [H, W], the 13 classes
  0..12 of data.nyu.NYU_13_CLASS_NAMES and -1 unlabelled (label id 0, or 894 -> 40 -> 13 through the
  tables); depth float32 [H, W, 1] in metres, 0 where missing; with --normals, normal float32 [H, W, 3].
- Depth: the file's `depths`, whose gaps the dataset's authors filled in; --raw_depth reads `rawDepths`,
  the Kinect's measurement with 0 where it has none.
- Crop: --crop none (the default) keeps the whole 480 x 640 frame, white border included: the MTAN
  release's 288 x 384 is 0.6 times 480 x 640, the frame's own aspect ratio, which points to the whole
  frame, and this default keeps the field of view of the files the paper's numbers come from (MTAN's
  preprocessing code is not published). --crop projection keeps the NYU toolbox's region of valid
  projected depth (rows 45-471, columns 41-601, 1-based; 427 x 561), which drops the border but is
  stretched by 1.5 % in width when resized to 288 x 384.
- Resizing: image by area averaging, labels, depth and normals by the centred nearest neighbour (see
  frames).
- Normals (--normals): fitted to the depth map with the NYU Kinect intrinsics, unit vectors in the camera
  frame of data/nyu.py (x right, y up, z towards the camera), 0 where undefined (see surface_normals).
  MTAN's normals came from another source, so three-task numbers on these files are not comparable with
  the paper's starred rows digit for digit.
- Writes are atomic; a second run with the same flags continues an interrupted one; the folder gets a
  .complete marker only once every sample is written. --out must be new, empty or this tool's own, and
  is written by one run at a time.
- Exit status: 0 done, 2 bad input (one line on stderr naming the flag, the file, what was found and what
  was expected), 130 interrupted.
"""
import argparse
import os
import sys
from pathlib import Path

from tools.prepare_nyuv2.frames import CROPS, NO_CROP, FrameSettings
from tools.prepare_nyuv2.official_files import INPAINTED_DEPTHS, RAW_DEPTHS
from tools.prepare_nyuv2.preparation import INTERRUPTED_EXIT_CODE, prepare
from utils.errors import UserInputError

DEFAULT_WORKERS = min(4, os.cpu_count() or 1)


def parse_arguments(argv):
    """The command line (see the module's usage)."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.prepare_nyuv2",
        description="Write NYUv2 in the MTAN layout that main_cross_nyu.py reads, from the official labeled "
                    "dataset and split.")
    parser.add_argument("--labeled", type=Path, required=True, help="nyu_depth_v2_labeled.mat (MATLAB v7.3)")
    parser.add_argument("--splits", type=Path, required=True, help="splits.mat with trainNdxs and testNdxs")
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder: new, empty, or an earlier run's to continue it (e.g. data/nyu)")
    parser.add_argument("--height", type=int, default=288, help="output height in pixels (MTAN: 288)")
    parser.add_argument("--width", type=int, default=384, help="output width in pixels (MTAN: 384)")
    parser.add_argument("--crop", choices=CROPS, default=NO_CROP,
                        help="none (default): the whole 480x640 frame, white border included, the field of view "
                             "that MTAN's 288x384 (0.6 x 480x640) points to; projection: the NYU toolbox's region of "
                             "valid depth, rows 45-471 and columns 41-601")
    parser.add_argument("--normals", action="store_true",
                        help="also write surface normals computed from the depth (not MTAN's normals)")
    parser.add_argument("--raw_depth", action="store_true",
                        help=f"read {RAW_DEPTHS} (Kinect depth, 0 where missing) instead of the in-painted "
                             f"{INPAINTED_DEPTHS}")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help=f"worker processes (0: this process; default {DEFAULT_WORKERS})")
    parser.add_argument("--verify", action="store_true", help="read every written sample back through the loader")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """Run the tool; returns the exit status: 0 done, 2 bad input, 130 interrupted."""
    arguments = parse_arguments(argv)
    settings = FrameSettings(arguments.height, arguments.width, arguments.crop, arguments.normals,
                             RAW_DEPTHS if arguments.raw_depth else INPAINTED_DEPTHS)
    try:
        return prepare(arguments.labeled, arguments.splits, arguments.out, settings, arguments.workers,
                       arguments.verify)
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to continue", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
