"""The speed switches of the training step (--amp, --channels_last, --gpu_augment, --compile): what each
computes, and that each falls back cleanly on the CPU. CPU, ResNet-18, tiny generated data."""
import json

import pandas
import pytest
import torch

from data import CITYSCAPES
from losses import XTaskLoss, make_balancer
from models import XTaskTSNet
from training import engine
from training.config import SpeedSettings
from training.options import parse_options
from training.run import main

TINY = ["--enc_layers", "18", "--batch_size", "2", "--workers", "0", "--notqdm", "--no_plots", "--height", "32",
        "--width", "64", "--cpu"]


def training_parts(speed, balancing="none"):
    torch.manual_seed(0)
    model = XTaskTSNet(18, 7)
    if speed.channels_last:
        model = model.to(memory_format=torch.channels_last)
    balancer = make_balancer(balancing)
    balancer.attach(model)
    optimizer = torch.optim.Adam(list(model.parameters()) + balancer.model_parameters(), lr=1e-4)
    return engine.TrainingParts(model, XTaskLoss(7, 0.01, 0.01), balancer, optimizer,
                                torch.optim.lr_scheduler.StepLR(optimizer, 1), speed)


def a_batch():
    generator = torch.Generator().manual_seed(1)
    return (torch.rand(2, 3, 32, 64, generator=generator), torch.randint(0, 7, (2, 32, 64), generator=generator),
            torch.rand(2, 1, 32, 64, generator=generator))


def test_auto_switches_follow_the_device_amp_is_opt_in_and_cuda_only_ones_fall_back_on_the_cpu(capsys):
    options = parse_options(CITYSCAPES, [])
    assert options.speed.resolve(torch.device("cuda")) == SpeedSettings(amp=False, channels_last=True,
                                                                          gpu_augment=True, compile=False)
    assert parse_options(CITYSCAPES, ["--amp"]).speed.resolve(torch.device("cuda")).amp
    assert options.speed.resolve(torch.device("cpu")) == SpeedSettings()
    asked = parse_options(CITYSCAPES, ["--amp", "--channels_last", "--compile", "--gpu_augment"])
    assert asked.speed.resolve(torch.device("cpu")) == SpeedSettings(gpu_augment=True)
    notes = capsys.readouterr().out
    assert all(f"note: --{name} speeds up CUDA only" in notes for name in ("amp", "channels_last", "compile"))
    refused = parse_options(CITYSCAPES, ["--no_amp", "--no_gpu_augment", "--no_channels_last"])
    assert refused.speed.resolve(torch.device("cuda")) == SpeedSettings()


@pytest.mark.parametrize("balancing", ["none", "gradnorm"])
def test_a_bf16_channels_last_step_stays_close_to_the_float32_step(balancing):
    """bf16 autocast is a CUDA feature here, but torch runs it on the CPU too: the engine's own step
    under amp and channels-last gives float32 predictions and losses within bf16 rounding of the float32
    step, and finite gradients."""
    reference, fast = training_parts(SpeedSettings(), balancing), training_parts(
        SpeedSettings(amp=True, channels_last=True), balancing)
    image = a_batch()[0]
    outputs = engine.forward(fast.model, image, fast.speed)
    assert all(output.dtype == torch.float32 for output in outputs)
    expected = engine.forward(reference.model, image, reference.speed)
    for fast_output, reference_output in zip(outputs, expected):
        relative_error = torch.linalg.vector_norm(fast_output - reference_output) / torch.linalg.vector_norm(
            reference_output)
        assert relative_error < 0.2  # bf16 keeps 8 mantissa bits: ~5-13 % through a random-init ResNet-18
    reference_total, reference_terms = engine.train_step(reference, a_batch(), torch.device("cpu"))
    fast_total, fast_terms = engine.train_step(fast, a_batch(), torch.device("cpu"))
    assert fast_total.dtype == fast_terms.segmentation.dtype == torch.float32
    torch.testing.assert_close(fast_total, reference_total, rtol=0.02, atol=0.0)
    assert all(bool(torch.isfinite(parameter).all()) for parameter in fast.model.parameters())


def test_evaluation_runs_under_inference_mode(cityscapes_root):
    parts = training_parts(SpeedSettings())
    seen = []
    parts.model.register_forward_hook(lambda module, inputs, output: seen.append(torch.is_inference_mode_enabled()))
    dataset = CITYSCAPES.build_dataset(cityscapes_root, "val", height=32, width=64, num_classes=7, ignore_index=250,
                                       augment=False, seed=0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2)
    engine.evaluate_loss(parts, loader, torch.device("cpu"), progress=False)
    engine.evaluate_metrics(parts.model, loader, torch.device("cpu"), 7, 250, progress=False)
    assert seen == [True] * (2 * len(loader))  # every forward of both passes, one per batch


def test_augmenting_on_the_device_trains_like_the_cpu_workers(cityscapes_root, tmp_path):
    """Same seed, same drawn flips and crops: --gpu_augment (batched, here on the CPU) and the CPU
    workers give the same losses and metrics up to float rounding (the bilinear image differs by
    ~1e-7). The learning rate is tiny so that training does not amplify that rounding: the losses then
    measure the augmented batches themselves."""
    for switch in ("--gpu_augment", "--no_gpu_augment"):
        assert main(CITYSCAPES, ["--input_path", cityscapes_root, "--save_path", str(tmp_path / switch), *TINY,
                                 "--epochs", "1", "--lr", "1e-7", switch]) == 0
    device, workers = (pandas.read_csv(tmp_path / switch / "001" / "metrics.csv")
                       for switch in ("--gpu_augment", "--no_gpu_augment"))
    for column in ("train_loss", "val_loss", "train_segmentation", "train_depth"):
        torch.testing.assert_close(torch.tensor(device[column].values), torch.tensor(workers[column].values),
                                   rtol=2e-3, atol=0.0)
    device_metrics, worker_metrics = (json.loads((tmp_path / switch / "001" / "results.json").read_text())["metrics"]
                                      for switch in ("--gpu_augment", "--no_gpu_augment"))
    for name in ("pixel_acc", "abs", "abs_rel", "pixel_acc_paper", "abs_paper", "abs_rel_paper"):
        assert device_metrics[name] == pytest.approx(worker_metrics[name], rel=5e-3)


def test_cuda_only_switches_change_nothing_on_the_cpu(cityscapes_root, tmp_path):
    for name, extra in (("plain", []), ("asked", ["--amp", "--channels_last", "--compile"])):
        assert main(CITYSCAPES, ["--input_path", cityscapes_root, "--save_path", str(tmp_path / name), *TINY,
                                 "--epochs", "1", *extra]) == 0
    plain, asked = (torch.load(tmp_path / name / "001" / "checkpoints" / "last.pt", weights_only=True)["model"]
                    for name in ("plain", "asked"))
    assert all(torch.equal(plain[key], asked[key]) for key in plain)


def test_build_training_lays_out_the_weights_as_the_speed_settings_say():
    options = parse_options(CITYSCAPES, ["--enc_layers", "18"])
    plain = engine.build_training(options, torch.device("cpu"), 7)
    fast = engine.build_training(options, torch.device("cpu"), 7, SpeedSettings(channels_last=True))
    first_convolution = (plain.model.encoder.stage0[0].weight, fast.model.encoder.stage0[0].weight)
    assert not first_convolution[0].is_contiguous(memory_format=torch.channels_last)
    assert first_convolution[1].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(*first_convolution) and fast.speed.channels_last and not plain.speed.channels_last
    assert not fast.optimizer.defaults["fused"]  # fused kernels on CUDA only
