"""NYUv2, read from the MTAN-preprocessed release: {split}/{image,label,depth,normal}/{index}.npy with
image 288x384x3 in [0, 1], 13-class labels with -1 unlabelled, depth in metres with 0 missing, and
surface normals 288x384x3 (unit vectors, all three components 0 where invalid; the `normal` folder is
read only for tasks holding "normal"). The 13 class names and their plot colours live here."""

from pathlib import Path

from data.common import read_npy, read_npy_sample
from data.dataset import DEFAULT_TASKS, NORMAL_TASK, TASKS_WITH_NORMALS, MultiTaskDataset
from data.layouts import NYU_MTAN, detect_layout, list_npy_samples, require_folder
from utils.errors import UserInputError

NYU_FOLDERS = ("image", "label", "depth")
NORMAL_FOLDER = "normal"
DEPTH_UNITS = "depth in metres"

# The 13-class NYUv2 set of the MTAN release, in label order 0..12, and its plot colours (RGB).
NYU_13_CLASS_NAMES = (
    "bed", "books", "ceiling", "chair", "floor", "furniture", "objects", "picture", "sofa", "table", "tv",
    "wall", "window",
)
NYU_13_COLOURS = (
    (196, 120, 160), (240, 200, 40), (200, 200, 230), (230, 80, 40), (140, 100, 60), (60, 150, 110),
    (255, 0, 128), (90, 200, 230), (160, 60, 200), (230, 150, 80), (30, 30, 30), (130, 130, 130),
    (60, 90, 230),
)
NYU_CLASS_COUNTS = (len(NYU_13_CLASS_NAMES),)


def check_nyu_class_count(num_classes: int) -> None:
    """Raise UserInputError unless `num_classes` is the NYUv2 class count (13)."""
    if num_classes not in NYU_CLASS_COUNTS:
        raise UserInputError(
            f"--num_classes {num_classes} is not available for NYUv2; expected "
            f"{', '.join(str(count) for count in NYU_CLASS_COUNTS)}"
        )


class NYUv2Dataset(MultiTaskDataset):
    """NYUv2 13-class segmentation + depth (+ surface normals). Samples are (image [3, H, W] float32 in
    [0, 1], not normalised, as in the original; segmentation [H, W] int64 with `ignore_index` for
    unlabelled pixels; depth [1, H, W] float32 in metres with 0 where missing), and with tasks
    ("segmentation", "depth", "normal") also normal [3, H, W] float32 (the stored vectors renormalised to
    unit length, x towards the image's right; exactly 0 where invalid) 4th.

    height, width: output size; None keeps the size of the split's first image (288 x 384 in the
    MTAN release). Other sizes are resized as for Cityscapes (image INTER_AREA, labels, depth and
    normals INTER_NEAREST_EXACT, normals then renormalised to unit length). num_classes: 13, the only
    NYUv2 class set. cache: the split's preprocessed cache, as for CityscapesDataset. tasks: the targets
    read, ("segmentation", "depth") or ("segmentation", "depth", "normal"); the latter requires the
    {split}/normal folder with one H x W x 3 file per image.
    """

    layout = NYU_MTAN
    task_sets = (DEFAULT_TASKS, TASKS_WITH_NORMALS)

    def __init__(self, root, split: str, height: int = None, width: int = None, num_classes: int = 13,
                 ignore_index: int = -1, augment: bool = False, seed: int = 0, *, cache=True,
                 tasks: tuple = DEFAULT_TASKS):
        """root: the NYUv2 MTAN folder; split: "train" or "val"; tasks: the targets each sample carries."""
        check_nyu_class_count(num_classes)
        tasks = self.checked_tasks(tasks)
        root = Path(root)
        layout = detect_layout(root)
        if layout != NYU_MTAN:
            raise UserInputError(f"{root} holds the {layout} layout; expected the NYUv2 layout ({NYU_MTAN}): "
                                 "{split}/image, {split}/label and {split}/depth holding {index}.npy files")
        folders = NYU_FOLDERS + ((NORMAL_FOLDER,) if NORMAL_TASK in tasks else ())
        samples = list_npy_samples(require_folder(root / split, f"split {split!r}"), folders)
        if height is None or width is None:
            first_image_path = samples[0][0]
            stored_shape = read_npy(first_image_path, header_only=True).shape
            if len(stored_shape) != 3:
                raise UserInputError(f"{first_image_path} holds an image of shape {stored_shape}; expected H x W x 3")
            height = stored_shape[0] if height is None else height
            width = stored_shape[1] if width is None else width
        super().__init__(root, split, samples, (NYU_13_CLASS_NAMES, NYU_13_COLOURS), (height, width), ignore_index,
                         augment, seed, tasks=tasks)
        if cache is not False:
            self.use_cache(None if cache is True else cache)

    def read_sample(self, sample: tuple) -> tuple:
        """Read one sample at height x width (see MultiTaskDataset.read_sample)."""
        return read_npy_sample(sample, self.num_classes, self.ignore_index, DEPTH_UNITS, self.height, self.width)
