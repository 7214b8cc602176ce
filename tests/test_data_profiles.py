"""Dataset profiles: each builds its dataset from its demo writer's files, holds the paper's setting
in its defaults, and writes the demo data in the real layout; the registry names the known ones."""

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pytest

import data
from data import CITYSCAPES, CITYSCAPES_RAW, NYU_MTAN, NYUV2, PROFILES, DatasetProfile, NYUv2Dataset, detect_layout
from data.dataset import MultiTaskDataset
from data.profiles import profile
from utils.errors import UserInputError

REPOSITORY = Path(__file__).resolve().parents[1]
LAYOUT_OF_DEMO = {"cityscapes": CITYSCAPES_RAW, "nyu": NYU_MTAN}
TINY_DEMO_DATA = dict(splits={"train": 2, "val": 1}, height=32, width=64)
LOADER_MODULES = ("cityscapes", "common", "dataset", "layouts", "nyu", "transforms")


def tiny(dataset_profile: DatasetProfile) -> DatasetProfile:
    """`dataset_profile` with a demo of 2 train and 1 val scenes at 32 x 64."""
    return dataclasses.replace(dataset_profile, demo_data=TINY_DEMO_DATA)


@pytest.fixture(scope="module", params=sorted(PROFILES))
def data_tiny_demo(request, tmp_path_factory):
    """(profile, root) of each registered profile's tiny demo data, written by write_demo_data."""
    tiny_profile = tiny(PROFILES[request.param])
    root = tmp_path_factory.mktemp(request.param)
    assert tiny_profile.write_demo_data(root) == root
    return tiny_profile, root


def test_registry_holds_both_profiles_under_their_names():
    assert PROFILES == {"cityscapes": CITYSCAPES, "nyu": NYUV2}
    assert data.PROFILES is PROFILES and data.DatasetProfile is DatasetProfile
    for name, dataset_profile in PROFILES.items():
        assert dataset_profile.name == name
        assert profile(name) is dataset_profile
        assert issubclass(dataset_profile.dataset_class, MultiTaskDataset)
    assert (CITYSCAPES.dataset_class, NYUV2.dataset_class) == (data.CityscapesDataset, NYUv2Dataset)


def test_an_unknown_profile_name_lists_the_known_ones():
    with pytest.raises(UserInputError) as caught:
        profile("kitti")
    assert "'kitti'" in str(caught.value)
    assert "cityscapes, nyu" in str(caught.value)


def test_profiles_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        CITYSCAPES.name = "other"


def test_write_demo_data_writes_the_real_layout_with_the_demo_counts(data_tiny_demo):
    tiny_profile, root = data_tiny_demo
    assert detect_layout(root) == LAYOUT_OF_DEMO[tiny_profile.name]
    for split, count in TINY_DEMO_DATA["splits"].items():
        if tiny_profile.name == "cityscapes":
            written = sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
        else:
            written = sorted((root / split / "image").glob("*.npy"))
        assert len(written) == count


def file_contents(root: Path) -> dict:
    """Map path relative to `root` -> bytes, for every file under `root`."""
    return {path.relative_to(root): path.read_bytes() for path in root.rglob("*") if path.is_file()}


def test_write_demo_data_uses_seed_0(data_tiny_demo, tmp_path):
    tiny_profile, root = data_tiny_demo
    seed_0 = tiny_profile.demo_writer(tmp_path / "seed_0", seed=0, **TINY_DEMO_DATA)
    seed_1 = tiny_profile.demo_writer(tmp_path / "seed_1", seed=1, **TINY_DEMO_DATA)
    demo_files = file_contents(root)
    assert demo_files and demo_files == file_contents(seed_0)
    assert demo_files != file_contents(seed_1)


def test_each_profile_builds_its_dataset_with_its_class_table(data_tiny_demo):
    tiny_profile, root = data_tiny_demo
    for num_classes in tiny_profile.class_counts:
        dataset = tiny_profile.build_dataset(root, "train", height=16, width=32, num_classes=num_classes,
                                             ignore_index=255, augment=True, seed=7)
        assert isinstance(dataset, tiny_profile.dataset_class)
        assert (len(dataset), dataset.height, dataset.width) == (2, 16, 32)
        assert (dataset.num_classes, dataset.ignore_index, dataset.augment, dataset.seed) == (num_classes, 255, True, 7)
        assert isinstance(dataset.class_names, tuple) and len(dataset.class_names) == num_classes
        assert dataset.palette.shape == (num_classes, 3) and dataset.palette.dtype == np.uint8
        image, segmentation, depth = dataset[0]
        assert tuple(image.shape) == (3, 16, 32) and tuple(segmentation.shape) == (16, 32)


def test_class_tables_belong_to_the_dataset_not_to_the_count(data_tiny_demo):
    tiny_profile, root = data_tiny_demo
    names = {count: tiny_profile.build_dataset(root, "val", height=16, width=32, num_classes=count,
                                               ignore_index=255, augment=False, seed=0).class_names
             for count in tiny_profile.class_counts}
    expected_first = {"cityscapes": {7: "flat", 19: "road"}, "nyu": {13: "bed"}}[tiny_profile.name]
    assert {count: class_names[0] for count, class_names in names.items()} == expected_first


@pytest.mark.parametrize("dataset_profile", (CITYSCAPES, NYUV2), ids=("cityscapes", "nyu"))
def test_defaults_hold_the_paper_setting(dataset_profile):
    paper = dataset_profile.paper_results
    setting = {key: dataset_profile.defaults[key] for key in ("num_classes", "height", "width")}
    assert setting == {key: paper[key] for key in ("num_classes", "height", "width")}
    assert paper["num_classes"] in dataset_profile.class_counts
    assert dataset_profile.is_paper_setting(**setting)
    assert not dataset_profile.is_paper_setting(setting["num_classes"], setting["height"] * 2, setting["width"])
    assert not dataset_profile.is_paper_setting(setting["num_classes"], setting["height"], setting["width"] // 2)
    assert not dataset_profile.is_paper_setting(setting["num_classes"] + 1, setting["height"], setting["width"])
    assert set(paper) == {"num_classes", "height", "width", "miou", "pixel_acc", "abs", "abs_rel"}
    script = dataset_profile.paper_command.split()[1]
    assert (REPOSITORY / script).is_file() and "--uncertainty_weights" in dataset_profile.paper_command


def test_paper_numbers_and_demo_settings():
    assert CITYSCAPES.paper_results == dict(num_classes=7, height=128, width=256, miou=0.6651, pixel_acc=0.9356,
                                            abs=0.0122, abs_rel=19.40)
    assert NYUV2.paper_results == dict(num_classes=13, height=288, width=384, miou=0.3031, pixel_acc=0.6302,
                                       abs=0.5954, abs_rel=0.2235)
    assert not CITYSCAPES.is_paper_setting(19, 128, 256)
    assert CITYSCAPES.demo_data == dict(splits={"train": 64, "val": 16}, height=128, width=256)
    assert NYUV2.demo_data == dict(splits={"train": 48, "val": 16}, height=96, width=128)
    assert (CITYSCAPES.class_counts, NYUV2.class_counts) == ((7, 19), (13,))
    assert (CITYSCAPES.depth_label, NYUV2.depth_label) == ("disparity / 256", "depth (m)")


def test_nyu_refuses_another_class_count(tmp_path):
    root = tiny(NYUV2).write_demo_data(tmp_path)
    assert NYUv2Dataset(root, "train", num_classes=13).num_classes == 13
    with pytest.raises(UserInputError) as caught:
        NYUv2Dataset(root, "train", num_classes=19)
    assert "--num_classes 19" in str(caught.value) and "expected 13" in str(caught.value)


def test_loaders_do_not_import_the_synthetic_package_or_the_profiles():
    for module in LOADER_MODULES:
        tree = ast.parse((REPOSITORY / "data" / f"{module}.py").read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        assert imported, module
        assert not {name for name in imported if name.startswith(("data.synthetic", "data.profiles"))}, module


def test_a_dataset_needs_one_name_and_one_colour_per_class(tmp_path):
    with pytest.raises(ValueError, match="2 names and 3 colours; expected one colour per class name"):
        MultiTaskDataset(tmp_path, "train", [], (("wall", "floor"), ((0, 0, 0),) * 3), (8, 8), -1, False, 0)
    dataset = MultiTaskDataset(tmp_path, "train", [], (("wall", "floor"), ((1, 2, 3), (4, 5, 6))), (8, 8), -1, False, 0)
    assert dataset.class_names == ("wall", "floor") and dataset.num_classes == 2
    np.testing.assert_array_equal(dataset.palette, np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8))
