"""XTaskTSNet: shapes, parameter counts, transfer-net inputs, gradient routes and argument errors."""
import pytest
import torch
import torchvision

from models import XTaskTSNet
from models.encoder import ResNetEncoder, pretrained_weights_path
from losses import XTaskLoss


def conv_parameters(in_channels, out_channels, kernel, bias=True):
    return in_channels * out_channels * kernel * kernel + (out_channels if bias else 0)


def expected_decoder_parameters(encoder_channels, out_channels, width=128):
    """Parameter count of one decoder worked out from the architecture's description."""
    stage0, stage1, stage2, stage3, stage4 = encoder_channels
    total = 0
    for in_channels in (stage4, width + stage3, width + stage2, width + stage1, width + stage0):
        total += conv_parameters(in_channels, width, 3) + 2 * width
        total += 2 * (conv_parameters(width, width, 3) + 2 * width)
    return total + conv_parameters(width, out_channels, 1, bias=False)


def expected_transfer_parameters(in_channels, out_channels, batch_norm, wider):
    """Parameter count of one TaskTransferNet worked out from the architecture's description."""
    width1, width2, width3 = (128, 256, 512) if wider else (64, 128, 256)
    stacks = [(in_channels, width1), (width1, width2), (width2, width3),
              (width3, width2), (2 * width2, width1), (2 * width1, width1)]
    total = 0
    for first_in, out in stacks:
        total += conv_parameters(first_in, out, 3) + conv_parameters(out, out, 3)
        if batch_norm:
            total += 2 * 2 * out
    return total + conv_parameters(width1, out_channels, 1, bias=False)


def expected_parameters(depth, num_classes, batch_norm=False, wider=False):
    resnet = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    encoder = sum(p.numel() for name, p in resnet.named_parameters() if not name.startswith("fc."))
    expansion = 4 if depth >= 50 else 1
    channels = (64, 64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion)
    return (encoder + expected_decoder_parameters(channels, num_classes) + expected_decoder_parameters(channels, 1)
            + expected_transfer_parameters(num_classes, 1, batch_norm, wider)
            + expected_transfer_parameters(1, num_classes, batch_norm, wider))


def count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_shapes_and_parameter_count_for_every_encoder_depth(depth):
    torch.manual_seed(0)
    model = XTaskTSNet(enc_layers=depth, num_classes=7).eval()
    assert count(model) == expected_parameters(depth, 7)
    with torch.no_grad():
        for height, width in ((128, 256), (288, 384)):
            outputs = model(torch.randn(1, 3, height, width))
            assert outputs.segmentation.shape == (1, 7, height, width)
            assert outputs.transferred_segmentation.shape == (1, 7, height, width)
            assert outputs.depth.shape == (1, 1, height, width)
            assert outputs.transferred_depth.shape == (1, 1, height, width)
            assert all(torch.isfinite(t).all() for t in outputs)


@pytest.mark.parametrize("batch_norm,wider", [(True, False), (False, True), (True, True)])
def test_transfer_net_options_change_the_architecture_as_described(batch_norm, wider):
    model = XTaskTSNet(18, 19, batch_norm=batch_norm, wider_ttnet=wider)
    assert count(model) == expected_parameters(18, 19, batch_norm, wider)
    has_batch_norm = any(isinstance(m, torch.nn.BatchNorm2d) for m in model.segmentation_to_depth.modules())
    assert has_batch_norm == batch_norm
    outputs = model(torch.randn(2, 3, 64, 96))
    assert outputs.transferred_segmentation.shape == (2, 19, 64, 96)


def test_xtask_34_7_parameter_count_is_stable():
    assert count(XTaskTSNet(34, 7)) == expected_parameters(34, 7) == 31553344


def test_initialisation_follows_the_description():
    model = XTaskTSNet(18, 7, batch_norm=True)
    for module in (model.segmentation_decoder, model.depth_to_segmentation):
        for layer in module.modules():
            if isinstance(layer, torch.nn.Conv2d) and layer.bias is not None:
                assert torch.count_nonzero(layer.bias) == 0
            if isinstance(layer, torch.nn.BatchNorm2d):
                assert torch.all(layer.weight == 1) and torch.all(layer.bias == 0)
    heads = (model.segmentation_decoder.head, model.depth_decoder.head, model.segmentation_to_depth.head)
    assert all(head.bias is None and head.kernel_size == (1, 1) for head in heads)


def test_direct_only_skips_the_transfer_nets():
    model = XTaskTSNet(18, 7).eval()
    calls = []
    for net in (model.segmentation_to_depth, model.depth_to_segmentation):
        net.register_forward_hook(lambda module, inputs, output: calls.append(module))
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 64, 64), direct_only=True)
    assert outputs.transferred_segmentation is None and outputs.transferred_depth is None
    assert outputs.segmentation.shape == (1, 7, 64, 64) and outputs.depth.shape == (1, 1, 64, 64)
    assert calls == []


def test_log_softmax_is_applied_to_the_segmentation_input_only():
    model = XTaskTSNet(18, 5).eval()
    seen = {}
    model.segmentation_to_depth.down1.register_forward_hook(
        lambda module, inputs, output: seen.__setitem__("segmentation_to_depth", inputs[0].clone()))
    model.depth_to_segmentation.down1.register_forward_hook(
        lambda module, inputs, output: seen.__setitem__("depth_to_segmentation", inputs[0].clone()))
    with torch.no_grad():
        outputs = model(torch.randn(2, 3, 64, 64))
    torch.testing.assert_close(seen["segmentation_to_depth"], torch.log_softmax(outputs.segmentation, dim=1))
    torch.testing.assert_close(seen["depth_to_segmentation"], outputs.depth)
    assert not torch.allclose(seen["segmentation_to_depth"], outputs.segmentation)


def gradient_norms(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()

    def norm(module):
        grads = [p.grad.abs().sum() for p in module.parameters() if p.grad is not None]
        return float(sum(grads)) if grads else 0.0
    return {name: norm(getattr(model, name)) for name in
            ("encoder", "segmentation_decoder", "depth_decoder", "segmentation_to_depth", "depth_to_segmentation")}


def test_transferred_losses_reach_only_the_decoder_they_are_meant_for():
    torch.manual_seed(0)
    model = XTaskTSNet(18, 4)
    criterion = XTaskLoss(num_classes=4, alpha=0.5, gamma=0.5)
    image = torch.randn(2, 3, 64, 64)
    segmentation_target = torch.randint(0, 4, (2, 64, 64))
    depth_target = torch.rand(2, 1, 64, 64) + 0.1

    terms = criterion(model(image), segmentation_target, depth_target)
    norms = gradient_norms(model, terms.transferred_depth)
    assert norms["segmentation_decoder"] > 0 and norms["encoder"] > 0 and norms["segmentation_to_depth"] > 0
    assert norms["depth_decoder"] == 0 and norms["depth_to_segmentation"] == 0

    terms = criterion(model(image), segmentation_target, depth_target)
    norms = gradient_norms(model, terms.transferred_segmentation)
    assert norms["depth_decoder"] > 0 and norms["encoder"] > 0 and norms["depth_to_segmentation"] > 0
    assert norms["segmentation_decoder"] == 0 and norms["segmentation_to_depth"] == 0


def test_unknown_encoder_depth_is_a_clear_error():
    with pytest.raises(ValueError, match=r"^enc_layers 20.*18, 34, 50, 101, 152"):
        XTaskTSNet(enc_layers=20)


def test_input_size_not_multiple_of_32_is_a_clear_error():
    model = XTaskTSNet(18, 7)
    with pytest.raises(ValueError, match=r"multiples of 32.*\(1, 3, 100, 100\)"):
        model(torch.randn(1, 3, 100, 100))


def test_missing_pretrained_weights_name_the_expected_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(ValueError, match="^use_pretrain") as error:
        XTaskTSNet(18, 7, use_pretrain=True)
    message = str(error.value)
    assert "resnet18-f37072fd.pth" in message
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints") in message


def test_pretrained_weights_load_from_the_hub_cache_and_from_an_explicit_file(tmp_path, monkeypatch):
    torch.manual_seed(3)
    reference = torchvision.models.resnet18(weights=None)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    cached = pretrained_weights_path(18)
    (tmp_path / "torch_home" / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(reference.state_dict(), cached)
    model = XTaskTSNet(18, 7, use_pretrain=True)
    torch.testing.assert_close(model.encoder.stage0[0].weight, reference.conv1.weight)
    torch.testing.assert_close(model.encoder.stage4[-1].conv2.weight, reference.layer4[-1].conv2.weight)

    explicit = tmp_path / "my_resnet18.pth"
    torch.save(reference.state_dict(), explicit)
    model = XTaskTSNet(18, 7, use_pretrain=True, pretrained_weights=explicit)
    torch.testing.assert_close(model.encoder.stage2[0].conv1.weight, reference.layer2[0].conv1.weight)


def test_gradnorm_shared_layer_is_the_last_conv_of_the_last_block():
    assert XTaskTSNet(18, 7).last_shared_weight.shape == (512, 512, 3, 3)
    assert XTaskTSNet(50, 7).last_shared_weight.shape == (2048, 512, 1, 1)


@pytest.mark.parametrize("enc_layers", [18, 50])
def test_last_shared_stage_is_the_encoder_stage4_and_holds_the_shared_weights(enc_layers):
    model = XTaskTSNet(enc_layers, 7)
    assert model.last_shared_stage is model.encoder.stage4 is model.encoder.last_shared_stage
    stage_weights = {id(parameter) for parameter in model.last_shared_stage.parameters()}
    assert id(model.last_shared_weight) in stage_weights and id(model.last_block_conv2_weight) in stage_weights


def test_the_shared_parameters_are_the_encoders():
    model = XTaskTSNet(18, 7)
    assert [id(p) for p in model.shared_parameters()] == [id(p) for p in model.encoder.parameters()]


def test_a_folder_given_as_the_weights_file_is_named_as_a_folder(tmp_path):
    with pytest.raises(ValueError, match="^pretrained_weights .*: that is a folder; expected the resnet18 weights"):
        ResNetEncoder(18, pretrained=True, weights_file=tmp_path)
