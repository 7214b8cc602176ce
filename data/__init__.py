"""Datasets: Cityscapes (raw or MTAN-preprocessed) and NYUv2 (MTAN-preprocessed) as
(image, segmentation, depth) samples, each owning its class names and plot colours; the dataset
profiles the entry scripts run (data.profiles); and, in data.synthetic, a scene generator that
writes all three layouts."""
from data.cityscapes import CityscapesDataset
from data.layouts import CITYSCAPES_MTAN, CITYSCAPES_RAW, NYU_MTAN, detect_layout
from data.nyu import NYUv2Dataset
from data.profiles import CITYSCAPES, NYUV2, PROFILES, DatasetProfile, profile

__all__ = ["CITYSCAPES", "CITYSCAPES_MTAN", "CITYSCAPES_RAW", "CityscapesDataset", "DatasetProfile", "NYUV2",
           "NYUv2Dataset", "NYU_MTAN", "PROFILES", "detect_layout", "profile"]
