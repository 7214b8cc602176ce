"""The three on-disk dataset layouts: telling them apart from their folders, and listing the
`{index}.npy` samples of the two MTAN-preprocessed releases."""

import os
from pathlib import Path

from utils.errors import UserInputError

CITYSCAPES_RAW = "cityscapes-raw"
CITYSCAPES_MTAN = "cityscapes-mtan"
NYU_MTAN = "nyu-mtan"

RAW_FOLDERS = ("leftImg8bit", "gtFine", "disparity")
CITYSCAPES_MTAN_LABEL_FOLDERS = ("label_7", "label_19")
NYU_MTAN_LABEL_FOLDER = "label"

LAYOUT_DESCRIPTIONS = (
    f"{CITYSCAPES_RAW}: the raw Cityscapes release, leftImg8bit/{{split}}/{{city}}/*_leftImg8bit.png with "
    "gtFine/{split}/{city}/*_gtFine_labelIds.png and disparity/{split}/{city}/*_disparity.png",
    f"{CITYSCAPES_MTAN}: the MTAN-preprocessed Cityscapes release, {{split}}/image, {{split}}/label_7 or "
    "{split}/label_19 and {split}/depth holding {index}.npy files",
    f"{NYU_MTAN}: the MTAN-preprocessed NYUv2 release, {{split}}/image, {{split}}/label and {{split}}/depth "
    "holding {index}.npy files",
)


def expected_layouts_text() -> str:
    """The three accepted layouts, one indented line each, for error messages."""
    return "".join(f"\n  - {description}" for description in LAYOUT_DESCRIPTIONS)


def folder_names(folder: Path) -> str:
    """The sorted entry names of `folder` as one comma-separated string, for error messages."""
    names = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in folder.iterdir())
    return ", ".join(names) if names else "nothing"


def detect_layout(root) -> str:
    """Which layout the dataset folder `root` holds: CITYSCAPES_RAW, CITYSCAPES_MTAN or NYU_MTAN.

    A root with any of leftImg8bit/, gtFine/, disparity/ is the raw release (all three must be
    there); otherwise its split folders holding image/ decide: label_7/ or label_19/ means
    Cityscapes, label/ means NYUv2.
    """
    root = Path(root)
    if not root.exists():
        raise UserInputError(f"dataset root {root} does not exist; expected a folder holding one of:"
                             f"{expected_layouts_text()}")
    if not root.is_dir():
        raise UserInputError(f"dataset root {root} is a file; expected a folder holding one of:"
                             f"{expected_layouts_text()}")
    present_raw = [name for name in RAW_FOLDERS if (root / name).is_dir()]
    if present_raw:
        missing_raw = [name for name in RAW_FOLDERS if name not in present_raw]
        if missing_raw:
            raise UserInputError(
                f"dataset root {root} looks like the raw Cityscapes release (it has {', '.join(present_raw)}/) "
                f"but lacks {', '.join(name + '/' for name in missing_raw)}; expected leftImg8bit/, gtFine/ and "
                "disparity/ side by side"
            )
        return CITYSCAPES_RAW
    split_folders = sorted(child for child in root.iterdir() if (child / "image").is_dir())
    for split_folder in split_folders:
        if any((split_folder / name).is_dir() for name in CITYSCAPES_MTAN_LABEL_FOLDERS):
            return CITYSCAPES_MTAN
        if (split_folder / NYU_MTAN_LABEL_FOLDER).is_dir():
            return NYU_MTAN
    hint = ""
    if (root / "image").is_dir():
        hint = f" ({root} looks like a split folder itself: point the input path at its parent)"
    raise UserInputError(
        f"dataset root {root} holds none of the three dataset layouts{hint}; found {folder_names(root)}. "
        f"Expected one of:{expected_layouts_text()}"
    )


def require_folder(folder: Path, description: str) -> Path:
    """`folder` if it is a directory; otherwise a UserInputError naming it and what its parent holds."""
    if not folder.is_dir():
        parent = folder.parent
        found = folder_names(parent) if parent.is_dir() else "no such folder either"
        raise UserInputError(f"missing {description}: expected a folder {folder}, but {parent} holds {found}")
    return folder


def check_not_broken_link(path: Path) -> None:
    """UserInputError when `path` is a symbolic link whose target does not exist."""
    if path.is_symlink() and not path.exists():
        raise UserInputError(f"{path} is a broken link: it points to {os.readlink(path)}, which does not exist")


def numbered_npy_files(folder: Path) -> dict:
    """Map index -> path of the `{index}.npy` files in `folder`; other .npy names are an error."""
    files = {}
    for path in folder.glob("*.npy"):
        if not path.stem.isdigit():
            raise UserInputError(f"unexpected file {path}: files in {folder} must be named {{index}}.npy, "
                                 "e.g. 0.npy, 1.npy, ...")
        files[int(path.stem)] = path
    return files


def list_npy_samples(split_folder: Path, folders: tuple) -> list:
    """The samples of an MTAN split folder in numeric index order: one tuple of paths per index,
    (split_folder/folders[0]/{index}.npy, split_folder/folders[1]/{index}.npy, ...). Every index of
    the first folder (the images) must be present in the others."""
    files_by_folder = [
        numbered_npy_files(require_folder(split_folder / folder, f"{folder} folder of split {split_folder.name}"))
        for folder in folders
    ]
    image_files = files_by_folder[0]
    if not image_files:
        raise UserInputError(f"empty split: {split_folder / folders[0]} holds no {{index}}.npy files; "
                             "expected at least one sample")
    samples = []
    for index in sorted(image_files):
        for folder, files in zip(folders[1:], files_by_folder[1:]):
            if index not in files:
                raise UserInputError(f"image {image_files[index]} has no matching {folder} file: expected "
                                     f"{split_folder / folder / image_files[index].name}")
        samples.append(tuple(files[index] for files in files_by_folder))
    return samples
