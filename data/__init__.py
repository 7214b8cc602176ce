"""Datasets: Cityscapes (raw or MTAN-preprocessed) and NYUv2 (MTAN-preprocessed) as
(image, segmentation, depth) samples, their class tables and plot colours, and a synthetic scene
generator that writes all three layouts."""
from data.cityscapes import CityscapesDataset
from data.classes import CITYSCAPES_19_CLASS_NAMES, CITYSCAPES_7_CLASS_NAMES, NYU_13_CLASS_NAMES, class_names, palette
from data.layouts import CITYSCAPES_MTAN, CITYSCAPES_RAW, NYU_MTAN, detect_layout
from data.nyu import NYUv2Dataset

__all__ = ["CITYSCAPES_19_CLASS_NAMES", "CITYSCAPES_7_CLASS_NAMES", "CITYSCAPES_MTAN", "CITYSCAPES_RAW",
           "CityscapesDataset", "NYUv2Dataset", "NYU_13_CLASS_NAMES", "NYU_MTAN", "class_names", "detect_layout",
           "palette"]
