"""DWA and PCGrad through the configuration and the engine's own builder and training step: their flags
reach the balancers, DWA's weights move after two epochs, PCGrad's weighting trains alongside the model,
and torchrun refuses PCGrad by flag."""
import pytest
import torch

from data import CITYSCAPES
from losses import DWA, PCGrad, UncertaintyWeights
from training import engine
from training.distributed import check_process_count
from training.options import parse_options
from utils.distributed import ProcessSetup
from utils.errors import UserInputError

CPU = torch.device("cpu")
TINY = ["--enc_layers", "18", "--height", "32", "--width", "64", "--batch_size", "2"]


def batch(seed):
    """A training batch of two 32x64 images with 7-class labels and positive depth."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(2, 3, 32, 64, generator=generator), torch.randint(0, 7, (2, 32, 64), generator=generator),
            torch.rand(2, 1, 32, 64, generator=generator) + 0.1)


def test_dwa_flags_reach_the_balancer_and_its_weights_move_from_the_third_epoch():
    config = parse_options(CITYSCAPES, [*TINY, "--balancing", "dwa", "--dwa_temperature", "0.5"])
    parts = engine.build_training(config, CPU, 7)
    assert isinstance(parts.balancer, DWA) and parts.balancer.form == "paper" and parts.balancer.temperature == 0.5
    weights = []
    for epoch in (1, 2, 3):
        parts.balancer.start_epoch(epoch)
        weights.append(parts.balancer.weights())
        for step in range(2):
            engine.train_step(parts, batch(10 * epoch + step), CPU)
    assert weights[0] == weights[1] == {"w_segmentation": 1.0, "w_depth": 1.0}
    assert weights[2] != weights[1] and sum(weights[2].values()) == pytest.approx(2.0)
    original = engine.build_training(config.replace(gradnorm_form="original"), CPU, 7).balancer
    assert original.form == "original"


def test_pcgrad_with_uncertainty_weighting_trains_the_weighting_and_the_model():
    config = parse_options(CITYSCAPES, [*TINY, "--balancing", "pcgrad", "--pcgrad_weighting", "uncertainty",
                                        "--seed", "3"])
    parts = engine.build_training(config, CPU, 7)
    assert isinstance(parts.balancer, PCGrad) and isinstance(parts.balancer.weighting, UncertaintyWeights)
    log_variance = parts.balancer.weighting.log_variance
    assert any(parameter is log_variance for parameter in parts.optimizer.param_groups[0]["params"])
    before = {name: parameter.detach().clone() for name, parameter in parts.model.named_parameters()}
    total, _ = engine.train_step(parts, batch(0), CPU)
    assert torch.isfinite(total) and bool(log_variance.detach().abs().sum() > 0)
    changed = [name for name, parameter in parts.model.named_parameters() if not torch.equal(before[name], parameter)]
    assert any(name.startswith("encoder.") for name in changed)
    assert any(name.startswith("segmentation_decoder.") for name in changed)


def test_torchrun_refuses_pcgrad_by_flag():
    config = parse_options(CITYSCAPES, [*TINY, "--batch_size", "4", "--balancing", "pcgrad"])
    with pytest.raises(UserInputError, match="--balancing pcgrad back-propagates once per task"):
        check_process_count(config, ProcessSetup(0, 2, 0), CPU)
    check_process_count(config, ProcessSetup(), CPU)
