"""The consistency study: the consistency energy against a transcription of the original's EnergyLogger (on
fixed tensors and in the engine's validation pass), the study's commands against the original
const_energy.py's settings, and a tiny real run of scripts.consistency (figure, CSV, metrics.csv and
results.json)."""
import json
import shlex

import numpy as np
import pandas
import pytest
import torch

from data import CITYSCAPES
from data.synthetic import write_cityscapes_raw
from models import XTaskOutput
from scripts import consistency
from training import engine
from training.options import parse_options
from utils.consistency_energy import DEPTH_PART, ENERGY, ENERGY_KEYS, SEGMENTATION_PART, ConsistencyEnergyMeter

BATCH_SIZES = (3, 1, 2)


def original_energy(batches):
    """(energy, segmentation part, depth part) as the original module.py's EnergyLogger gives them, transcribed:
    per batch of (segmentation, transferred segmentation, depth, transferred depth) predictions, the mean over
    every element [N,C,H,W] of p * (log p - log q) with p = softmax(direct), q = softmax(transferred) over the
    classes (torch's kl_div(log q, p, reduction='mean')), and the mean |transferred depth - depth| over every
    pixel; each times the batch's image count, summed, divided by the images; energy = half of each."""
    def log_softmax(logits):
        logits = logits.double().numpy()
        shifted = logits - logits.max(axis=1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))

    segmentation_sum = depth_sum = images = 0.0
    for segmentation, transferred_segmentation, depth, transferred_depth in batches:
        log_p, log_q = log_softmax(segmentation), log_softmax(transferred_segmentation)
        count = segmentation.shape[0]
        segmentation_sum += (np.exp(log_p) * (log_p - log_q)).mean() * count
        depth_sum += np.abs(transferred_depth.double().numpy() - depth.double().numpy()).mean() * count
        images += count
    segmentation_part, depth_part = segmentation_sum / images, depth_sum / images
    return 0.5 * segmentation_part + 0.5 * depth_part, segmentation_part, depth_part


def fixed_batches(seed=0, classes=7, height=6, width=10):
    """XTaskOutput batches of BATCH_SIZES images with fixed random predictions."""
    generator = torch.Generator().manual_seed(seed)
    return [XTaskOutput(torch.randn(size, classes, height, width, generator=generator) * 3,
                        torch.randn(size, classes, height, width, generator=generator) * 3,
                        torch.rand(size, 1, height, width, generator=generator),
                        torch.rand(size, 1, height, width, generator=generator)) for size in BATCH_SIZES]


def test_the_energy_equals_the_originals_energy_logger_over_batches_of_different_sizes():
    batches = fixed_batches()
    meter = ConsistencyEnergyMeter(torch.device("cpu"))
    for outputs in batches:
        meter.update(outputs, outputs.segmentation.shape[0])
    energy, segmentation_part, depth_part = original_energy(
        [(outputs.segmentation, outputs.transferred_segmentation, outputs.depth, outputs.transferred_depth)
         for outputs in batches])
    values = meter.values()
    assert list(values) == list(ENERGY_KEYS)
    assert values[SEGMENTATION_PART] == pytest.approx(segmentation_part, rel=1e-5)
    assert values[DEPTH_PART] == pytest.approx(depth_part, rel=1e-5)
    assert values[ENERGY] == pytest.approx(energy, rel=1e-5)
    assert segmentation_part > 0 and depth_part > 0


def test_without_transferred_predictions_there_is_no_energy():
    meter = ConsistencyEnergyMeter(torch.device("cpu"))
    for outputs in fixed_batches():
        meter.update(outputs._replace(transferred_segmentation=None, transferred_depth=None), 2)
    assert meter.values() == {}


def test_the_validation_pass_measures_the_energy_of_its_own_predictions():
    """engine.evaluate_loss over batches of 2 and 1 images gives the transcribed EnergyLogger's energy of the
    model's predictions on those batches."""
    generator = torch.Generator().manual_seed(1)
    dataset = torch.utils.data.TensorDataset(torch.randn(3, 3, 32, 64, generator=generator),
                                             torch.randint(0, 7, (3, 32, 64), generator=generator),
                                             torch.rand(3, 1, 32, 64, generator=generator))
    loader = torch.utils.data.DataLoader(dataset, batch_size=2)
    config = parse_options(CITYSCAPES, ["--enc_layers", "18", "--height", "32", "--width", "64"])
    parts = engine.build_training(config, torch.device("cpu"), 7)
    values = engine.evaluate_loss(parts, loader, torch.device("cpu"), progress=False)
    with torch.inference_mode():
        parts.model.eval()
        batches = [parts.model(image) for image, _, _ in loader]
    expected = original_energy([(outputs.segmentation, outputs.transferred_segmentation, outputs.depth,
                                 outputs.transferred_depth) for outputs in batches])
    assert [values[key] for key in ENERGY_KEYS] == pytest.approx(expected, rel=1e-5)


def printed_commands(output):
    """(run name, entry script, arguments) of each command line printed by a dry run."""
    return [(line.rsplit("# ", 1)[1], words[1], words[2:]) for line in output.splitlines()
            if line.startswith("python ") for words in [shlex.split(line, comments=True)]]


@pytest.mark.parametrize("extra,epochs,balancing", [([], 250, "none"),
                                                    (["--uncertainty_weights", "-e", "300"], 300, "uncertainty")])
def test_the_dry_run_parses_every_command_and_each_has_the_original_settings(capsys, extra, epochs, balancing):
    assert consistency.main(["--dry_run", "--seeds", "0", "1", "2", "--", *extra]) == 0
    commands = printed_commands(capsys.readouterr().out)
    assert [name for name, _, _ in commands] == ["cityscapes/xtsc", "cityscapes/xtc"]
    for (name, script, arguments), method in zip(commands, ("xtsc", "xtc")):
        config = parse_options(CITYSCAPES, arguments)
        assert script == "main_cross_cs.py" and config.loss.consistency == method
        assert (config.optimization.optim, config.optimization.lr, config.optimization.momentum) == ("sgd", 1e-4, 0)
        assert config.optimization.scheduler_step_size >= config.optimization.epochs == epochs  # StepLR never fires
        data = config.data
        assert (data.batch_size, data.num_classes, data.height, data.width) == (8, 7, 128, 256)
        assert config.model.xtask.enc_layers == 34 and not config.model.xtask.use_pretrain
        loss = config.loss
        assert (loss.alpha, loss.gamma, loss.lp, loss.label_smoothing) == (0.01, 0.01, "L1", 0)
        assert config.balancing.method == balancing and config.optimization.seeds == (0, 1, 2)


def test_only_and_refused_commands(capsys):
    assert consistency.main(["--dry_run", "--only", "xtc$"]) == 0
    assert [name for name, _, _ in printed_commands(capsys.readouterr().out)] == ["cityscapes/xtc"]
    assert consistency.main(["--dry_run", "--", "--balancing", "gradnorm", "--uncertainty_weights"]) == 2
    assert "2 of 2 commands do not parse" in capsys.readouterr().err
    assert consistency.main(["--dry_run", "--only", "percp"]) == 2


@pytest.mark.slow
def test_a_tiny_study_writes_the_figure_and_the_numbers_of_its_runs(tmp_path, monkeypatch):
    """Both runs for real (entry-script processes, one thread each: a tiny network gains nothing from more)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    root = write_cityscapes_raw(tmp_path / "cityscapes", {"train": 4, "val": 2}, 128, 256, seed=2)
    save_path = tmp_path / "study"
    assert consistency.main(["--seeds", "0", "--save_path", str(save_path), "--", "--input_path", str(root),
                             "--height", "32", "--width", "64", "--enc_layers", "18", "--workers", "0", "--notqdm",
                             "--no_plots", "--epochs", "2", "--batch_size", "4", "--cpu"]) == 0
    assert (save_path / consistency.FIGURE_NAME).stat().st_size > 0
    table = pandas.read_csv(save_path / consistency.TABLE_NAME)
    for folder, method in (("001", "xtsc"), ("002", "xtc")):
        assert json.loads((save_path / folder / "config.json").read_text())["config"]["loss"]["consistency"] == method
        history = pandas.read_csv(save_path / folder / "metrics.csv")
        rows = table[table["method"] == method].reset_index(drop=True)
        assert list(rows["epoch"]) == list(history["epoch"]) == [1, 2] and set(rows["runs"]) == {1}
        for quantity in consistency.QUANTITIES:
            assert list(rows[f"{quantity}_mean"]) == pytest.approx(list(history[quantity]), rel=1e-12)
            assert rows[f"{quantity}_std"].isna().all()
        results = json.loads((save_path / folder / "results.json").read_text())
        best = history[history["epoch"] == results["epoch"]].iloc[0]
        for key in ENERGY_KEYS:  # the final evaluation of the best checkpoint measures the energy again
            assert results[key] == pytest.approx(best[f"val_{key}"], rel=1e-4)


def test_several_seeds_give_the_mean_and_the_sample_std_of_the_epochs_all_runs_hold():
    keys = consistency.QUANTITIES
    histories = [tuple({"epoch": float(epoch), **{key: value + epoch for key in keys}} for epoch in epochs)
                 for value, epochs in ((1.0, (1, 2, 3)), (2.0, (1, 2)), (4.0, (1, 2)))]
    rows = consistency.seed_statistics(histories)
    assert [(row["epoch"], row["runs"]) for row in rows] == [(1, 3), (2, 3)]
    for row in rows:
        values = [1.0 + row["epoch"], 2.0 + row["epoch"], 4.0 + row["epoch"]]
        for key in keys:
            assert row[f"{key}_mean"] == pytest.approx(np.mean(values))
            assert row[f"{key}_std"] == pytest.approx(np.std(values, ddof=1))
