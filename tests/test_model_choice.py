"""--model: MTAN trained, resumed and evaluated by the same entry scripts, engine, outputs and report as the
cross-task model, and the cross-task settings refused with it. CPU, tiny generated data."""
import json

import pandas
import pytest
import torch

from data import CITYSCAPES, NYUV2
from losses import XTaskLoss
from models import MTAN
from models.adamtnet import AdaMTNet
from training import engine
from training.config import CROSS_TASK_ONLY, keys_with
from training.options import parse_options
from training.recorder import read_run
from training.run import RunContext, main

MTAN_TINY = ["--batch_size", "2", "--workers", "0", "--notqdm", "--no_plots", "--height", "32", "--width", "64"]


def mtan_arguments(root, save_path, *extra):
    """A tiny MTAN run (32x64, batch 2) on `root` writing under `save_path`, then `extra`."""
    return ["--input_path", str(root), "--save_path", str(save_path), "--model", "mtan", *MTAN_TINY, *extra]


def test_adamtnet_is_sized_by_the_runs_batch_and_input():
    config = parse_options(NYUV2, ["--model", "adamtnet", "--tasks", "segmentation", "depth", "normal",
                                   "--batch_size", "4"])
    assert config.model.arguments(13, config.data) == {"num_classes": 13, "tasks": ("segmentation", "depth", "normal"),
                                                       "batch_size": 4, "height": 288, "width": 384}
    model = engine.build_model(config.replace(height=32, width=64), 13)
    assert isinstance(model, AdaMTNet) and (model.batch_size, model.height, model.width) == (4, 32, 64)


def test_the_default_model_is_the_cross_task_network():
    config = parse_options(CITYSCAPES, [])
    assert config.model.family == "xtask" and config["model"] == "xtask"
    assert config.model.arguments(7)["enc_layers"] == 34
    assert parse_options(CITYSCAPES, ["--model", "mtan"]).model.arguments(7) == {
        "num_classes": 7, "tasks": ("segmentation", "depth")}
    assert parse_options(NYUV2, ["--model", "mtan", "--single_task", "depth"]).model.arguments(13) == {
        "num_classes": 13, "tasks": ("depth",)}


@pytest.mark.parametrize("flags", [["--alpha", "0.1"], ["--lambda_2", "0.2"], ["--enc_layers", "18"],
                                   ["--wider_ttnet"], ["--tseg_loss", "kl"], ["--consistency", "xtc"],
                                   ["--direct_only"], ["--use_pretrain"]])
def test_cross_task_settings_are_refused_with_mtan(flags, capsys):
    with pytest.raises(SystemExit) as stopped:
        parse_options(CITYSCAPES, ["--model", "mtan", *flags])
    assert stopped.value.code == 2
    message = capsys.readouterr().err
    key = flags[0].lstrip("-").replace("lambda_2", "gamma")
    assert f"--{key}" in message and "--model mtan" in message and "Traceback" not in message


def test_the_cross_task_settings_are_those_of_the_transfer_nets_the_encoder_and_their_losses():
    assert set(keys_with(CROSS_TASK_ONLY)) == {
        "alpha", "gamma", "label_smoothing", "tdep_loss", "tseg_loss", "consistency", "enc_layers", "batch_norm",
        "wider_ttnet", "use_pretrain", "pretrained_weights", "direct_only"}


def test_mtan_is_built_by_the_engine_and_trained_on_its_direct_losses():
    config = parse_options(CITYSCAPES, ["--model", "mtan", "--cpu", "--uncertainty_weights"])
    parts = engine.build_training(config, torch.device("cpu"), 7)
    assert isinstance(parts.model, MTAN) and parts.model.tasks == ("segmentation", "depth")
    torch.manual_seed(0)
    batch = (torch.rand(2, 3, 32, 64), torch.randint(0, 7, (2, 32, 64)), torch.rand(2, 1, 32, 64) + 0.1)
    total, terms = engine.train_step(parts, batch, torch.device("cpu"))
    assert terms.transferred_depth.item() == terms.transferred_segmentation.item() == 0
    assert terms.segmentation_group.item() == pytest.approx(terms.segmentation.item())
    assert terms.depth_group.item() == pytest.approx(terms.depth.item())
    assert torch.isfinite(total)
    assert isinstance(parts.criterion, XTaskLoss)


@pytest.mark.slow
def test_mtan_trains_resumes_and_reproduces_its_results_with_infer_only(cityscapes_root, tmp_path, capsys):
    assert main(CITYSCAPES, mtan_arguments(cityscapes_root, tmp_path, "--epochs", "1", "--balancing", "dwa",
                                           "--no_augment", "--gpu_augment")) == 0
    printed = capsys.readouterr().out
    assert "MTAN" in printed and "ResNet" not in printed
    folder = tmp_path / "001"
    best = torch.load(folder / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    assert best["model_family"] == "mtan"
    assert best["model_arguments"] == {"num_classes": 7, "tasks": ("segmentation", "depth")}
    assert read_run(folder).config["model"] == "mtan" and read_run(folder).config["no_augment"]
    assert pandas.read_csv(tmp_path / "results.csv")["model"].tolist() == ["mtan"]

    assert main(CITYSCAPES, ["--save_path", str(tmp_path), "--resume", "1", "--epochs", "2", "--workers", "0",
                             "--notqdm", "--no_plots"]) == 0
    history = pandas.read_csv(folder / "metrics.csv")
    assert history["epoch"].tolist() == [1, 2] and history["train_transferred_depth"].eq(0).all()
    assert read_run(folder).finished
    results = json.load(open(folder / "results.json"))
    for key in ("miou", "pixel_acc", "abs", "abs_rel", "miou_paper", "abs_paper"):
        assert 0 <= results["metrics"][key] < float("inf"), key
    assert "consistency_energy" not in results

    assert main(CITYSCAPES, ["--save_path", str(tmp_path), "--infer_only", "--exp_num", "1", "--workers", "0",
                             "--notqdm", "--no_plots"]) == 0
    reproduced = json.load(open(folder / "infer" / "001" / "results.json"))
    for key, value in results["metrics"].items():
        if key != "iou":
            assert reproduced["metrics"][key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


@pytest.mark.slow
def test_mtan_single_task_baseline_runs_on_nyu(nyu_root, tmp_path):
    assert main(NYUV2, mtan_arguments(nyu_root, tmp_path, "--epochs", "1", "--single_task", "depth")) == 0
    best = torch.load(tmp_path / "001" / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    assert tuple(best["model_arguments"]["tasks"]) == ("depth",)
    assert not any(name.startswith("segmentation") or ".segmentation" in name for name in best["model"])
    metrics = json.load(open(tmp_path / "001" / "results.json"))["metrics"]
    assert "abs_rel" in metrics and "miou" not in metrics


def test_tasks_are_put_in_order_and_the_normals_baseline_reads_three_tasks():
    config = parse_options(NYUV2, ["--model", "mtan", "--tasks", "normal", "segmentation", "depth"])
    assert config.model.tasks == ("segmentation", "depth", "normal")
    assert config.model.arguments(13) == {"num_classes": 13, "tasks": ("segmentation", "depth", "normal")}
    baseline = parse_options(NYUV2, ["--model", "mtan", "--single_task", "normal"])
    assert baseline.model.tasks == ("segmentation", "depth", "normal")
    assert baseline.model.arguments(13) == {"num_classes": 13, "tasks": ("normal",)}
    assert parse_options(NYUV2, ["--model", "mtan", "--tasks", "segmentation", "depth", "normal", "--balancing",
                                 "pcgrad", "--pcgrad_weighting", "uncertainty"]).balancing.arguments(
        parse_options(NYUV2, []).optimization, 3)["group_count"] == 3


@pytest.mark.parametrize("family", ["mtan", "adamtnet"])
def test_a_three_task_step_trains_the_normals_as_a_third_group(nyu_root, family):
    config = parse_options(NYUV2, ["--model", family, "--tasks", "segmentation", "depth", "normal", "--cpu",
                                   "--uncertainty_weights", "--height", "32", "--width", "64", "--batch_size", "2"])
    parts = engine.build_training(config, torch.device("cpu"), 13)
    assert parts.normals and len(parts.balancer.log_variance) == 3
    dataset = NYUV2.build_dataset(nyu_root, "train", height=32, width=64, num_classes=13, ignore_index=-1,
                                  augment=True, seed=0, cache=False, tasks=config.model.tasks)
    dataset.defer_augmentation()
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=2)))
    assert len(batch) == 5
    image, targets = engine.training_batch(parts, batch, torch.device("cpu"))
    normal = targets[2]
    assert image.shape == (2, 3, 32, 64) and normal.shape == (2, 3, 32, 64)
    valid = normal.abs().sum(dim=1) > 0
    torch.testing.assert_close(normal.norm(dim=1)[valid], torch.ones(int(valid.sum())))
    total, terms = engine.train_step(parts, batch, torch.device("cpu"))
    assert terms.groups().shape == (3,) and terms.normal_group.item() == terms.normal.item() > 0
    assert set(parts.balancer.weights()) == {"sigma_segmentation", "sigma_depth", "sigma_normal"}
    assert torch.isfinite(total)


@pytest.mark.slow
def test_mtan_learns_three_tasks_on_nyu_and_reports_the_normal_metrics(nyu_root, tmp_path, capsys):
    arguments = mtan_arguments(nyu_root, tmp_path, "--epochs", "1", "--tasks", "segmentation", "depth", "normal",
                               "--balancing", "pcgrad", "--pcgrad_weighting", "uncertainty")
    assert main(NYUV2, arguments) == 0
    printed = capsys.readouterr().out
    assert "Mean err" in printed and "<11.25" in printed
    folder = tmp_path / "001"
    metrics = json.load(open(folder / "results.json"))["metrics"]
    assert 0 <= metrics["normal_mean"] <= 180 and 0 <= metrics["normal_median"] <= 180
    assert 0 <= metrics["normal_11_25"] <= metrics["normal_22_5"] <= metrics["normal_30"] <= 1
    assert "miou" in metrics and "abs_rel" in metrics
    history = pandas.read_csv(folder / "metrics.csv")
    assert history["train_normal"].gt(0).all() and "sigma_normal" in history
    assert tuple(read_run(folder).config.model.tasks) == ("segmentation", "depth", "normal")
    summary = pandas.read_csv(tmp_path / "results.csv")
    assert summary["normal_mean"].iloc[0] == pytest.approx(metrics["normal_mean"])
    assert main(NYUV2, ["--save_path", str(tmp_path), "--infer_only", "--exp_num", "1", "--workers", "0",
                        "--notqdm", "--no_plots"]) == 0
    reproduced = json.load(open(folder / "infer" / "001" / "results.json"))["metrics"]
    assert reproduced["normal_mean"] == pytest.approx(metrics["normal_mean"], rel=1e-6)


def test_no_augment_gives_an_unaugmented_training_split(cityscapes_root):
    for flags, augmented in (([], True), (["--no_augment"], False)):
        config = parse_options(CITYSCAPES, ["--input_path", cityscapes_root, "--cpu", "--height", "64", "--width",
                                            "128", *flags])
        train_set = RunContext(CITYSCAPES, config, torch.device("cpu")).training_set()
        assert train_set.augment is augmented and train_set.split == "train"
    unaugmented = train_set
    first = [tensor.clone() for tensor in unaugmented[1]]
    unaugmented.set_epoch(7)
    assert all(torch.equal(tensor, again) for tensor, again in zip(first, unaugmented[1]))


@pytest.mark.slow
def test_adamtnet_trains_and_reproduces_its_results_with_infer_only(cityscapes_root, tmp_path, capsys):
    arguments = ["--input_path", str(cityscapes_root), "--save_path", str(tmp_path), "--model", "adamtnet", *MTAN_TINY,
                 "--epochs", "1", "--uncertainty_weights"]
    assert main(CITYSCAPES, arguments) == 0
    assert "AdaMT-Net" in capsys.readouterr().out
    folder = tmp_path / "001"
    best = torch.load(folder / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    assert best["model_family"] == "adamtnet"
    assert best["model_arguments"] == {"num_classes": 7, "tasks": ("segmentation", "depth"), "batch_size": 2,
                                       "height": 32, "width": 64}
    results = json.load(open(folder / "results.json"))["metrics"]
    assert main(CITYSCAPES, ["--save_path", str(tmp_path), "--infer_only", "--exp_num", "1", "--workers", "0",
                             "--notqdm", "--no_plots", "--batch_size", "1"]) == 0
    reproduced = json.load(open(folder / "infer" / "001" / "results.json"))["metrics"]
    for key in ("miou", "pixel_acc", "abs", "abs_rel"):
        assert reproduced[key] == pytest.approx(results[key], rel=1e-5), key
