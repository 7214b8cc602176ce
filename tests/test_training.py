"""Both entry scripts end to end on tiny generated data (CPU, ResNet-18, small sizes), their outputs,
--infer_only, and the mapping of every flag to the code it names."""
import json
import math
import os
import shutil
import subprocess
import sys

import pandas
import pytest
import torch

from data import CITYSCAPES, NYUV2
from losses import GradNorm, LossBalancer, UncertaintyWeights
from training import engine
from training.options import parse_options
from training.recorder import read_run
from training.run import main

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--enc_layers", "18", "--epochs", "2", "--batch_size", "2", "--workers", "0", "--notqdm", "--height", "32",
        "--width", "64"]


def cityscapes_arguments(root, save_path, *extra):
    return ["--input_path", root, "--save_path", str(save_path), *TINY, *extra]


def nyu_arguments(root, save_path, *extra):
    return ["--input_path", root, "--save_path", str(save_path), *TINY, *extra]


def check_experiment(folder, epochs=2, balancing_columns=()):
    """Every output file of a finished run exists and parses; returns results.json."""
    config = json.load(open(folder / "config.json"))
    assert config["device"] == "cpu" and config["versions"]["torch"] == torch.__version__
    assert config["format"] == 2 and read_run(folder).config.to_json() == config["config"]
    history = pandas.read_csv(folder / "metrics.csv")
    assert list(history["epoch"]) == list(range(1, epochs + 1))
    for column in ("train_loss", "val_loss", "train_transferred_depth", "val_transferred_segmentation", "lr",
                   "epoch_seconds", *balancing_columns):
        assert history[column].notna().all(), column
    evaluation_keys = {"model", "model_family", "model_arguments", "balancing", "balancer", "data", "epoch", "best_val_loss",
                       "history"}
    best = torch.load(folder / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    last = torch.load(folder / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert set(best) == evaluation_keys | {"format"}
    assert set(last) == evaluation_keys | {"format", "optimizer", "scheduler", "random_states"}
    assert (folder / "checkpoints" / "best.pt").stat().st_size < 0.5 * (folder / "checkpoints" / "last.pt").stat().st_size
    assert (folder / "status").read_text() == "finished\n"
    assert sorted(os.listdir(folder / "checkpoints")) == ["best.pt", "last.pt"]
    assert last["epoch"] == epochs
    assert last["best_val_loss"] == pytest.approx(history["val_loss"].min())
    results = json.load(open(folder / "results.json"))
    metrics = results["metrics"]
    for key in ("miou", "pixel_acc", "miou_paper", "pixel_acc_paper"):
        assert 0 <= metrics[key] <= 1, key
    for key in ("abs", "abs_rel", "rmse", "rmse_log", "sq_rel", "abs_paper", "abs_rel_paper"):
        assert 0 <= metrics[key] < math.inf, key
    for key in ("delta1", "delta2", "delta3"):
        assert 0 <= metrics[key] <= 1, key
    best = torch.load(folder / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    assert best["model_arguments"] == {"enc_layers": 18, "num_classes": read_run(folder).config["num_classes"],
                                       "batch_norm": False, "wider_ttnet": False, "single_task": None}
    assert best["balancer"]["method"] == read_run(folder).config["balancing"]
    assert results["epoch"] == int(history["epoch"][history["val_loss"].idxmin()])
    for figure in ("loss_curves.png", "predictions.png", "depth_error.png"):
        assert (folder / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return results


def check_cityscapes_run(save_path, columns, printed, earlier_experiments=()):
    """The Cityscapes run of experiment 001 under `save_path` (2 epochs, balancing columns `columns`,
    after the results.csv rows of `earlier_experiments`) wrote every output and printed `printed`."""
    results = check_experiment(save_path / "001", balancing_columns=columns)
    summary = pandas.read_csv(save_path / "results.csv")
    assert list(summary["experiment"]) == [*earlier_experiments, 1]
    assert summary["miou"].iloc[-1] == pytest.approx(results["metrics"]["miou"])
    assert "epoch   2/2" in printed and "paper protocol" in printed and "standard" in printed
    if columns:
        assert columns[0] in printed


@pytest.mark.parametrize("balancing,columns", [([], ()), (["--gradnorm"], ("w_segmentation", "w_depth"))])
def test_cityscapes_run_writes_every_output(cityscapes_root, tmp_path, balancing, columns, capsys):
    assert main(CITYSCAPES, cityscapes_arguments(cityscapes_root, tmp_path, *balancing)) == 0
    check_cityscapes_run(tmp_path, columns, capsys.readouterr().out)


def test_cityscapes_uncertainty_run_writes_every_output(finished_run):
    """The shared finished run (--uncertainty_weights, 2 epochs, figures; one hand-written row before)."""
    check_cityscapes_run(finished_run, ("sigma_segmentation", "sigma_depth"),
                         (finished_run.parent / "stdout.txt").read_text(), earlier_experiments=(0,))


def test_infer_only_reproduces_results(finished_run, tmp_path):
    """On a copy of the shared finished run (--uncertainty_weights). That a second run into one save path
    gets a new folder and a second results.csv row is checked by the reduced demo's second run."""
    save_path = shutil.copytree(finished_run, tmp_path / "exps")
    original = json.load(open(save_path / "001" / "results.json"))
    config_before = (save_path / "001" / "config.json").read_bytes()
    infer_arguments = ["--save_path", str(save_path), "--infer_only", "--exp_num", "1", "--workers", "0", "--notqdm",
                       "--no_plots"]
    assert main(CITYSCAPES, infer_arguments) == 0
    reproduced = json.load(open(save_path / "001" / "infer" / "001" / "results.json"))
    for key, value in original["metrics"].items():
        if key != "iou":
            assert reproduced["metrics"][key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert reproduced["epoch"] == original["epoch"]
    assert (save_path / "001" / "config.json").read_bytes() == config_before
    assert json.load(open(save_path / "001" / "results.json")) == original


def test_nyu_runs_without_a_balancing_flag_and_masks_missing_values(nyu_root, tmp_path):
    assert main(NYUV2, nyu_arguments(nyu_root, tmp_path, "--direct_only")) == 0
    results = check_experiment(tmp_path / "001")
    assert results["direct_only"] is True
    config = read_run(tmp_path / "001").config
    assert config["ignore_index"] == -1 and config["num_classes"] == 13


def test_debug_writes_nothing_and_time_inf_prints_latency(cityscapes_root, tmp_path, capsys):
    arguments = cityscapes_arguments(cityscapes_root, tmp_path / "exps", "--debug", "--time_inf", "--epochs", "1")
    assert main(CITYSCAPES, arguments) == 0
    assert not (tmp_path / "exps").exists()
    printed = capsys.readouterr().out
    assert "latency (with transfer nets" in printed and "latency (direct only" in printed


def test_explicit_options_are_told_apart_from_defaults():
    options = parse_options(CITYSCAPES, ["--batch_size", "8", "-e", "3", "--demo"])
    assert options.explicit == ("batch_size", "demo", "epochs")
    assert options["height"] == 32 and "height" not in options.explicit


def test_every_flag_reaches_the_code_it_names():
    options = parse_options(CITYSCAPES, [
        "--enc_layers", "18", "--num_classes", "19", "--batch_norm", "--wider_ttnet", "--lp", "MSE",
        "--tdep_loss", "ssim", "--tseg_loss", "kl", "--label_smoothing", "0.1", "--lambda_1", "0.2",
        "--lambda_2", "0.3", "--optim", "sgd", "--lr", "0.05", "--momentum", "0.8", "--scheduler_step_size", "7",
        "--scheduler_gamma", "0.25", "--gradnorm", "--gradnorm_alpha", "0.5"])
    parts = engine.build_training(options, torch.device("cpu"), 19)
    model, criterion, balancer, optimizer, scheduler = (parts.model, parts.criterion, parts.balancer, parts.optimizer,
                                                        parts.scheduler)
    assert model.encoder.depth == 18 and model.num_classes == 19
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.segmentation_to_depth.modules())
    assert model.segmentation_to_depth.down1[0].out_channels == 128
    assert (criterion.lp, criterion.tdep_loss, criterion.tseg_loss) == ("MSE", "ssim", "kl")
    assert (criterion.label_smoothing, criterion.alpha, criterion.gamma) == (0.1, 0.2, 0.3)
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.param_groups[0]["lr"] == 0.05
    assert optimizer.param_groups[0]["momentum"] == 0.8
    assert (scheduler.step_size, scheduler.gamma) == (7, 0.25)
    assert isinstance(balancer, GradNorm) and balancer.alpha == 0.5 and balancer.form == "paper"
    assert balancer.optimizer.param_groups[0]["betas"] == (options["b1"], options["b2"])
    assert parse_options(CITYSCAPES, ["--optim", "sgd"])["momentum"] == 0.0

    options = parse_options(NYUV2, ["--uncertainty_weights", "--b1", "0.7", "--b2", "0.95"])
    assert (options["alpha"], options["gamma"], options["ignore_index"], options["height"], options["width"]) == (1e-4, 1e-4, -1, 288, 384)
    assert (options["epochs"], options["batch_size"], options["scheduler_step_size"]) == (100, 6, 60)
    parts = engine.build_training(options, torch.device("cpu"), 13)
    criterion, balancer, optimizer = parts.criterion, parts.balancer, parts.optimizer
    assert isinstance(balancer, UncertaintyWeights) and criterion.ignore_index == -1
    assert optimizer.param_groups[0]["betas"] == (0.7, 0.95)
    assert any(p is balancer.log_variance for p in optimizer.param_groups[0]["params"])
    options = parse_options(CITYSCAPES, [])
    assert (options["alpha"], options["gamma"], options["epochs"], options["batch_size"], options["num_classes"]) == (0.01, 0.01, 250, 8, 7)
    assert type(engine.build_training(options, torch.device("cpu"), 7).balancer) is LossBalancer


def test_the_original_command_lines_run_verbatim():
    options = parse_options(CITYSCAPES, ["-n", "19", "-j", "3", "--learning_rate", "0.002", "--beta_1", "0.8",
                                         "--beta_2", "0.9", "-e", "5", "-b", "4", "--lambda_1", "0.1",
                                         "--lambda_2", "0.2", "--gradnorm"])
    assert (options["num_classes"], options["workers"], options["lr"], options["b1"], options["b2"]) == (19, 3, 0.002, 0.8, 0.9)
    assert (options["epochs"], options["batch_size"], options["alpha"], options["gamma"]) == (5, 4, 0.1, 0.2)
    assert options["balancing"] == "gradnorm" and "balancing" in options.explicit
    assert parse_options(NYUV2, ["--uncertainty_weights"])["balancing"] == "uncertainty"
    assert parse_options(NYUV2, ["--balancing", "uncertainty", "--uncertainty_weights"])["balancing"] == "uncertainty"
    assert parse_options(NYUV2, [])["balancing"] == "none"


def test_original_gradnorm_form_gets_the_original_weight_optimizer_and_shared_layer():
    options = parse_options(CITYSCAPES, ["--gradnorm", "--gradnorm_form", "original", "--enc_layers", "50",
                                         "--b2", "0.95", "--lr", "0.003"])
    parts = engine.build_training(options, torch.device("cpu"), 7)
    assert parts.balancer.form == "original"
    assert parts.balancer.optimizer.param_groups[0]["betas"] == (0.9, 0.999)
    assert parts.balancer.optimizer.param_groups[0]["lr"] == 0.003
    assert parts.balancer.attachment.shared_weight is parts.model.encoder.stage4[-1].conv2.weight


def test_lp_flag_changes_the_depth_loss(cityscapes_root):
    values = {}
    for lp in ("L1", "MSE"):
        options = parse_options(CITYSCAPES, ["--input_path", cityscapes_root, "--lp", lp])
        criterion = engine.build_training(options, torch.device("cpu"), 7).criterion
        prediction = torch.full((1, 1, 4, 4), 3.0)
        outputs = type("Outputs", (), {"segmentation": torch.zeros(1, 7, 4, 4), "depth": prediction,
                                       "transferred_depth": None, "transferred_segmentation": None})
        values[lp] = criterion(outputs, torch.zeros(1, 4, 4, dtype=torch.long), torch.ones(1, 1, 4, 4)).depth.item()
    assert values == {"L1": pytest.approx(2.0), "MSE": pytest.approx(4.0)}


@pytest.mark.parametrize("profile,arguments,reason", [
    (CITYSCAPES, ["--uncertainty_weights", "--gradnorm"], "exclusive"),
    (CITYSCAPES, ["--height", "100"], "--height 100"),
    (NYUV2, ["--num_classes", "19"], "--num_classes 19"),
    (CITYSCAPES, ["--enc_layers", "20"], "--enc_layers: invalid choice: 20"),
    (CITYSCAPES, ["--lp", "L3"], "--lp"),
    (CITYSCAPES, ["--infer_only"], "--exp_num"),
    (CITYSCAPES, ["--alpha", "2"], "--alpha 2"),
    (CITYSCAPES, ["--gradnorm", "--gradnorm_alpha", "-1"], "--gradnorm_alpha -1"),
    (CITYSCAPES, ["--balancing", "gradnorm", "--uncertainty_weights"], "exclusive"),
    (CITYSCAPES, ["--gradnorm_form", "other"], "--gradnorm_form: invalid choice"),
    (CITYSCAPES, ["--multiple_gpu"], "torchrun"),
    (CITYSCAPES, ["--optim", "sgd", "--momentum", "-0.5"], "--momentum -0.5"),
    (CITYSCAPES, ["--peer_timeout", "0"], "--peer_timeout 0.0: expected a positive, finite number of minutes"),
    (NYUV2, ["--peer_timeout", "inf"], "--peer_timeout inf: expected a positive, finite number of minutes"),
    # tasks:  surface normals need NYUv2 and MTAN; GradNorm balances two groups
    (CITYSCAPES, ["--model", "mtan", "--tasks", "segmentation", "depth", "normal"],
     "cityscapes has no surface normals"),
    (CITYSCAPES, ["--model", "mtan", "--single_task", "normal"], "cityscapes has no surface normals"),
    (NYUV2, ["--tasks", "segmentation", "depth", "normal"], "no surface-normal head; use --model mtan"),
    (NYUV2, ["--single_task", "normal"], "no surface-normal head; use --model mtan"),
    (NYUV2, ["--model", "mtan", "--tasks", "segmentation", "depth", "normal", "--gradnorm"], "GradNorm is implemented"),
    (NYUV2, ["--model", "mtan", "--tasks", "segmentation", "normal"], "expected segmentation depth, or"),
    (NYUV2, ["--model", "mtan", "--tasks", "segmentation", "depth", "depth"], "each once"),
    (NYUV2, ["--model", "mtan", "--tasks", "segmentation", "depth", "normal", "--single_task", "depth"],
     "drop --tasks"),
    (NYUV2, ["--model", "mtan", "--tasks", "segmentation", "depth", "--single_task", "normal"], "drop --tasks"),
])
def test_invalid_combinations_are_refused_with_exit_code_2(profile, arguments, reason, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_options(profile, arguments)
    assert exit_info.value.code == 2
    assert reason in capsys.readouterr().err


def test_scripts_refuse_bad_input_with_exit_code_2_and_no_traceback(tmp_path):
    for script, arguments, expected in (
            ("main_cross_nyu.py", ["--num_classes", "19"], "--num_classes 19"),
            ("main_cross_cs.py", ["--input_path", str(tmp_path / "missing"), "--save_path", str(tmp_path / "exps"),
                                  "--cpu", "--enc_layers", "18"], str(tmp_path / "missing"))):
        result = subprocess.run([sys.executable, script, *arguments], cwd=REPOSITORY, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 2, result.stderr
        assert expected in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "exps").exists()


def test_infer_only_of_a_missing_experiment_is_a_clear_error(tmp_path, capsys):
    code = main(CITYSCAPES, ["--save_path", str(tmp_path), "--infer_only", "--exp_num", "7"])
    assert code == 2
    assert "--exp_num 7" in capsys.readouterr().err


@pytest.mark.slow
def test_reduced_demo_generates_the_raw_layout_once_and_runs_end_to_end(tmp_path, capsys):
    """The demo path with one epoch instead of the full schedule (the full demo is too long for CI)."""
    demo_root = tmp_path / "demo"
    arguments = ["--demo", "--input_path", str(demo_root), "--save_path", str(tmp_path / "exps"), "--epochs", "1",
                 "--notqdm", "--no_plots"]
    assert main(CITYSCAPES, arguments) == 0
    assert sorted(os.listdir(demo_root)) == [".complete", "disparity", "gtFine", "leftImg8bit"]
    image_files = [name for _, _, names in os.walk(demo_root / "leftImg8bit" / "train") for name in names]
    assert len(image_files) == CITYSCAPES.demo_data["splits"]["train"]
    config = read_run(tmp_path / "exps" / "001").config
    assert (config["demo"], config["enc_layers"], config["height"], config["width"]) == (True, 18, 32, 64)
    results = json.load(open(tmp_path / "exps" / "001" / "results.json"))
    baseline = results["baseline"]
    assert 0 < baseline["pixel_acc"] < 1 and baseline["abs"] > 0
    printed = capsys.readouterr().out
    assert "constant baseline" in printed and "generating the demo dataset" in printed

    marker_time = os.stat(demo_root / ".complete").st_mtime_ns
    assert main(CITYSCAPES, [*arguments, "--infer_only", "--exp_num", "1"]) == 0
    assert os.stat(demo_root / ".complete").st_mtime_ns == marker_time
    assert "generating the demo dataset" not in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path / "exps")) == ["001", "results.csv", "results.csv.lock"]
    reproduced = json.load(open(tmp_path / "exps" / "001" / "infer" / "001" / "results.json"))
    assert reproduced["metrics"]["miou"] == pytest.approx(results["metrics"]["miou"], rel=1e-6)
    assert len(pandas.read_csv(tmp_path / "exps" / "results.csv")) == 1


@pytest.mark.parametrize("task,present,absent", [
    ("segmentation", ("miou", "pixel_acc_paper"), ("abs", "abs_paper", "delta1")),
    ("depth", ("abs", "abs_rel_paper", "delta1"), ("miou", "pixel_acc_paper"))])
def test_single_task_baselines_run_end_to_end_on_both_scripts(cityscapes_root, nyu_root, tmp_path, task, present,
                                                              absent):
    for profile, root, make_arguments in ((CITYSCAPES, cityscapes_root, cityscapes_arguments),
                                          (NYUV2, nyu_root, nyu_arguments)):
        save_path = tmp_path / profile.name
        assert main(profile, make_arguments(root, save_path, "--single_task", task, "--epochs", "1")) == 0
        folder = save_path / "001"
        metrics = json.load(open(folder / "results.json"))["metrics"]
        assert all(key in metrics for key in present) and not any(key in metrics for key in absent)
        best = torch.load(folder / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
        assert best["model_arguments"]["single_task"] == task
        other = "depth" if task == "segmentation" else "segmentation"
        assert not any(name.startswith((f"{other}_decoder", "segmentation_to_depth", "depth_to_segmentation"))
                       for name in best["model"])
        config = read_run(folder).config
        assert (config["single_task"], config["dataset"], config["balancing"]) == (task, profile.name, "none")
        assert (folder / "predictions.png").exists() and (folder / "depth_error.png").exists() == (task == "depth")


def test_seeds_run_once_per_seed_in_one_group(cityscapes_root, tmp_path):
    assert main(CITYSCAPES, cityscapes_arguments(cityscapes_root, tmp_path, "--seeds", "3", "4", "--epochs", "1",
                                                 "--no_plots")) == 0
    configs = [read_run(tmp_path / name).config for name in ("001", "002")]
    assert [config["seed"] for config in configs] == [3, 4]
    assert configs[0]["group"] == configs[1]["group"] is not None
    summary = pandas.read_csv(tmp_path / "results.csv")
    assert list(summary["seed"]) == [3, 4] and summary["group"].nunique() == 1
    first = json.load(open(tmp_path / "001" / "results.json"))["metrics"]
    second = json.load(open(tmp_path / "002" / "results.json"))["metrics"]
    assert first["miou"] != second["miou"] or first["abs"] != second["abs"]


def test_single_task_refuses_balancing(capsys):
    with pytest.raises(SystemExit):
        parse_options(CITYSCAPES, ["--single_task", "depth", "--uncertainty_weights"])
    assert "--single_task depth trains one task alone" in capsys.readouterr().err


def test_tensorboard_writes_scalars_and_the_prediction_grid(finished_run):
    """The shared finished run (--tensorboard, 2 epochs)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(finished_run / "001" / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "val/loss", "train/transferred_depth", "lr", "results/miou"} <= set(tags["scalars"])
    assert [event.step for event in events.Scalars("val/loss")] == [1, 2]
    history = pandas.read_csv(finished_run / "001" / "metrics.csv")
    assert [event.value for event in events.Scalars("val/loss")] == pytest.approx(list(history["val_loss"]))
    images = events.Images("predictions")
    assert [image.step for image in images] == [1, 2] and images[0].width > 100


def test_tensorboard_missing_is_a_clear_error(monkeypatch, tmp_path, cityscapes_root, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    assert main(CITYSCAPES, cityscapes_arguments(cityscapes_root, tmp_path, "--tensorboard", "--epochs", "1")) == 2
    assert "pip install -r requirements-extra.txt" in capsys.readouterr().err
    assert not tmp_path.exists() or os.listdir(tmp_path) == []
