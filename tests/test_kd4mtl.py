"""KD4MTL end to end (--distill_from, --adaptor_lr): two single-task MTAN teachers trained here by the entry
script, then the multi-task MTAN distilled from them, resumed, and every user mistake refused with one line.
CPU, tiny generated Cityscapes data (32x64, batch 2)."""
import os

import pandas
import pytest
import torch

from data import CITYSCAPES
from training import engine
from training.options import parse_options
from training.recorder import read_run
from training.run import main

from tests.test_model_choice import mtan_arguments


@pytest.fixture(scope="module")
def teachers(cityscapes_root, tmp_path_factory):
    """{task: folder} of two finished single-task MTAN runs (one epoch each) on cityscapes_root."""
    save_path = tmp_path_factory.mktemp("teachers")
    folders = {}
    for task in ("segmentation", "depth"):
        assert main(CITYSCAPES, mtan_arguments(cityscapes_root, save_path, "--epochs", "1", "--single_task", task)) == 0
        folders[task] = str(save_path / f"{len(folders) + 1:03d}")
    return folders


def kd4mtl_arguments(root, save_path, teacher_folders, *extra):
    """A tiny KD4MTL run distilled from `teacher_folders` (segmentation, depth)."""
    return mtan_arguments(root, save_path, "--distill_from", *teacher_folders, *extra)


@pytest.mark.slow
def test_kd4mtl_trains_from_two_teachers_and_resumes_its_adaptors(cityscapes_root, teachers, tmp_path, capsys):
    teacher_folders = (teachers["segmentation"], teachers["depth"])
    assert main(CITYSCAPES, kd4mtl_arguments(cityscapes_root, tmp_path, teacher_folders, "--epochs", "1")) == 0
    folder = tmp_path / "001"
    first = torch.load(folder / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    steps_per_epoch = first["optimizer"]["state"][0]["step"].item()
    assert steps_per_epoch == 2  # 4 training images in batches of 2
    assert first["distillation"]["optimizer"]["state"][0]["step"].item() == steps_per_epoch
    assert read_run(folder).config.model.mtan.distill_from == teacher_folders

    assert main(CITYSCAPES, ["--save_path", str(tmp_path), "--resume", "1", "--epochs", "2", "--workers", "0",
                             "--notqdm", "--no_plots"]) == 0
    last = torch.load(folder / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert last["distillation"]["optimizer"]["state"][0]["step"].item() == 2 * steps_per_epoch
    moved = [name for name, weight in last["distillation"]["adaptors"].items()
             if not torch.equal(weight, first["distillation"]["adaptors"][name])]
    assert sorted(moved) == sorted(first["distillation"]["adaptors"])
    history = pandas.read_csv(folder / "metrics.csv")
    assert history["epoch"].tolist() == [1, 2]
    assert (history["train_distillation"] > 0).all() and "val_distillation" not in history
    assert (history["train_loss"] > history["train_segmentation"] + history["train_depth"]).all()
    summary = pandas.read_csv(tmp_path / "results.csv")
    assert summary["model"].tolist() == ["mtan", "mtan"] and summary["distill_from"].notna().all()
    assert read_run(folder).finished


def test_a_distillation_step_moves_the_student_and_adaptors_but_not_the_frozen_teachers(cityscapes_root, teachers):
    config = parse_options(CITYSCAPES, ["--model", "mtan", "--cpu", "--distill_from", teachers["segmentation"],
                                        teachers["depth"], "--height", "32", "--width", "64"])
    parts = engine.build_training(config, torch.device("cpu"), 7)
    distillation = parts.distillation
    before = {task: {name: value.clone() for name, value in teacher.state_dict().items()}
              for task, teacher in distillation.teachers.items()}
    adaptors_before = [weight.clone() for weight in distillation.adaptors.parameters()]
    torch.manual_seed(0)
    batch = (torch.rand(2, 3, 32, 64), torch.randint(0, 7, (2, 32, 64)), torch.rand(2, 1, 32, 64) + 0.1)
    parts.model.train()
    total, terms = engine.train_step(parts, batch, torch.device("cpu"))
    assert terms.distillation.item() > 0
    assert total.item() == pytest.approx((terms.segmentation + terms.depth + terms.distillation).item(), rel=1e-6)
    for task, teacher in distillation.teachers.items():
        assert not teacher.training and not any(weight.requires_grad for weight in teacher.parameters())
        for name, value in teacher.state_dict().items():
            assert torch.equal(value, before[task][name]), (task, name)
    assert all(not torch.equal(weight, old) for weight, old in zip(distillation.adaptors.parameters(), adaptors_before))
    assert distillation.optimizer.param_groups[0]["lr"] == 0.1
    assert distillation.optimizer.param_groups[0]["weight_decay"] == 5e-4


@pytest.mark.parametrize("flags, message", [
    (["--distill_from", "a", "b"], "use --model mtan, not xtask"),
    (["--model", "mtan", "--distill_from", "a"], "1 folder(s) for the tasks segmentation depth"),
    (["--model", "mtan", "--distill_from", "a", "b", "--gradnorm"], "choose --balancing none"),
    (["--model", "mtan", "--distill_from", "a", "--single_task", "depth"], "drop --single_task"),
    (["--model", "mtan", "--adaptor_lr", "0.01"], "--adaptor_lr is used with --distill_from only"),
    (["--model", "mtan", "--distill_from", "a", "b", "--adaptor_lr", "0"], "--adaptor_lr 0.0: expected a positive"),
])
def test_kd4mtl_settings_that_cannot_run_are_refused(flags, message, capsys):
    with pytest.raises(SystemExit) as stop:
        parse_options(CITYSCAPES, flags)
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_a_teacher_that_does_not_fit_is_named_before_any_folder_is_written(cityscapes_root, teachers, tmp_path,
                                                                          capsys):
    swapped = (teachers["depth"], teachers["segmentation"])
    assert main(CITYSCAPES, kd4mtl_arguments(cityscapes_root, tmp_path, swapped, "--epochs", "1")) == 2
    assert ("--distill_from (the segmentation teacher): " + teachers["depth"] + " is a mtan run of depth; expected "
            "a single-task MTAN run of segmentation") in capsys.readouterr().err
    larger = (teachers["segmentation"], teachers["depth"])
    assert main(CITYSCAPES, kd4mtl_arguments(cityscapes_root, tmp_path, larger, "--epochs", "1",
                                             "--height", "64")) == 2
    assert "was trained with height 32; this run has height 64" in capsys.readouterr().err
    missing = (teachers["segmentation"], os.path.join(str(tmp_path), "nowhere"))
    assert main(CITYSCAPES, kd4mtl_arguments(cityscapes_root, tmp_path, missing, "--epochs", "1")) == 2
    assert "the depth teacher): " + missing[1] + " is not an experiment folder" in capsys.readouterr().err
    assert not [name for name in os.listdir(tmp_path) if name.isdigit()]
