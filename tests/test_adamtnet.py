"""AdaMTNet against the original's AdaMT-Net (model/adamtnet/models.py: AdaMTNet, AdaMTNet3tasks):
parameter counts, parameter positions, outputs with the original's weights (eval and training mode),
shapes at this repository's input sizes, argument errors and the shared layer GradNorm measures at.
Parameter counts use models built on the meta device (no memory, no initialisation cost)."""
import functools
import math
import re
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn

from models.adamtnet import AdaMTNet, AdaMTNetOutput
from test_mtan import gradnorm_step_at_the_shared_stage, randomise_ as randomise_like_mtan

TWO_TASKS = ("segmentation", "depth")
THREE_TASKS = ("segmentation", "depth", "normal")
SMALL = dict(batch_size=3, height=32, width=64)  # a size both networks take, with few attention weights


# --- The original's code, from akarimoon/xtask_mt model/adamtnet/models.py at commit 167ee59, copied as
# written but for the class names of the two networks (prefixed Original) and EncoderSequential's forward,
# which the networks never call (they run the encoder's blocks themselves).

class EncoderConvBlock(nn.Module):
    def __init__(self, in_features, out_features):
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_features, out_features, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_features),
            nn.ReLU(inplace=True)
        )
        self.conv2 = nn.Sequential(
            nn.Conv2d(out_features, out_features, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_features),
            nn.ReLU(inplace=True)
        )

    def forward(self, x):
        out = self.conv1(x)
        out = self.conv2(out)
        return out


class DecoderConvBlock(nn.Module):
    def __init__(self, in_features, out_features, size=None):
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_features, out_features, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_features),
            nn.Sigmoid()
        )
        self.conv2 = nn.Sequential(
            nn.Conv2d(out_features, out_features, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_features),
            nn.Sigmoid()
        )
        self.dropout = nn.Dropout2d()
        self.up = nn.Upsample(scale_factor=2, mode='bilinear', align_corners=True)

        self.W = nn.Parameter(torch.Tensor(torch.rand(size=size)))

    def forward(self, x, e):
        x = torch.cat([self.up(x), e], dim=1)
        l1 = self.conv1(x)
        l2 = self.conv2(l1)
        attn = (self.W[:l1.shape[0]] * l1) * l2
        out = self.dropout(torch.cat([l2, attn], dim=1))
        return out


class EncoderSequential(nn.Module):
    def __init__(self, in_features, out_features, mid_features=[64, 128, 256, 512]):
        super().__init__()
        self.enc_block1 = EncoderConvBlock(in_features=in_features,
                                           out_features=mid_features[0])
        self.enc_block2 = EncoderConvBlock(in_features=mid_features[0],
                                           out_features=mid_features[1])
        self.enc_block3 = EncoderConvBlock(in_features=mid_features[1] + mid_features[0],
                                           out_features=mid_features[2])
        self.enc_block4 = EncoderConvBlock(in_features=mid_features[2] + mid_features[1] + mid_features[0],
                                           out_features=mid_features[3])
        self.bottleneck = nn.Conv2d(mid_features[3] + mid_features[2] + mid_features[1] + mid_features[0],
                                    out_features, kernel_size=1)
        self.dropout = nn.Dropout2d()
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)


class DecoderSequential(nn.Module):
    def __init__(self, in_features, out_features, mid_features=[64, 128, 256, 512], batch_size=8, height=128,
                 width=256):
        super().__init__()
        self.dec_block1 = DecoderConvBlock(in_features=in_features + mid_features[3],
                                           out_features=mid_features[3] // 2,
                                           size=(batch_size, mid_features[3] // 2, height // 8, width // 8))
        self.dec_block2 = DecoderConvBlock(in_features=mid_features[3] + mid_features[2],
                                           out_features=mid_features[2] // 2,
                                           size=(batch_size, mid_features[2] // 2, height // 4, width // 4))
        self.dec_block3 = DecoderConvBlock(in_features=mid_features[2] + mid_features[1],
                                           out_features=mid_features[1] // 2,
                                           size=(batch_size, mid_features[1] // 2, height // 2, width // 2))
        self.dec_block4 = DecoderConvBlock(in_features=mid_features[1] + mid_features[0],
                                           out_features=mid_features[0] // 2,
                                           size=(batch_size, mid_features[0] // 2, height, width))
        self.final_conv = nn.Conv2d(mid_features[0], out_features, kernel_size=1, stride=1, bias=False)


class OriginalAdaMTNet(nn.Module):
    def __init__(self, in_features=3, out_features_seg=7, out_features_dep=1,
                 bn_features=1024, mid_features=[64, 128, 256, 512],
                 batch_size=8, height=128, width=256):
        super(OriginalAdaMTNet, self).__init__()
        self.encoder = EncoderSequential(in_features, bn_features)
        self.decoder_segmt = DecoderSequential(bn_features, out_features_seg, batch_size=batch_size, height=height,
                                               width=width)
        self.decoder_depth = DecoderSequential(bn_features, out_features_dep, batch_size=batch_size, height=height,
                                               width=width)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.dropout = nn.Dropout2d()
        self.up = nn.Upsample(scale_factor=2, mode='bilinear', align_corners=True)

    def forward(self, x):
        e1 = self.encoder.enc_block1(x)
        out1 = self.pool(self.dropout(e1))
        e2 = self.encoder.enc_block2(out1)
        out2 = self.pool(self.dropout(e2))
        e3 = self.encoder.enc_block3(torch.cat([
                                        out2,
                                        self.pool(self.pool(e1))
                                    ], dim=1))
        out3 = self.pool(self.dropout(e3))
        e4 = self.encoder.enc_block4(torch.cat([
                                        out3,
                                        self.pool(self.pool(e2)),
                                        self.pool(self.pool(self.pool(e1)))
                                    ], dim=1))
        out4 = self.pool(self.dropout(e4))
        out = self.encoder.bottleneck(torch.cat([
                                        out4,
                                        self.pool(self.pool(e3)),
                                        self.pool(self.pool(self.pool(e2))),
                                        self.pool(self.pool(self.pool(self.pool(e1))))
                                    ], dim=1))

        seg4 = self.decoder_segmt.dec_block1(out, e4)
        seg3 = self.decoder_segmt.dec_block2(seg4, e3)
        seg2 = self.decoder_segmt.dec_block3(seg3, e2)
        seg1 = self.decoder_segmt.dec_block4(seg2, e1)
        seg_out = self.decoder_segmt.final_conv(seg1)

        dep4 = self.decoder_depth.dec_block1(out, e4)
        dep3 = self.decoder_depth.dec_block2(dep4, e3)
        dep2 = self.decoder_depth.dec_block3(dep3, e2)
        dep1 = self.decoder_depth.dec_block4(dep2, e1)
        dep_out = self.decoder_depth.final_conv(dep1)

        return seg_out, dep_out


class OriginalAdaMTNet3tasks(nn.Module):
    def __init__(self, in_features=3, out_features_seg=7, out_features_dep=1, out_features_nor=1,
                 bn_features=1024, mid_features=[64, 128, 256, 512],
                 batch_size=8, height=128, width=256):
        super(OriginalAdaMTNet3tasks, self).__init__()
        self.encoder = EncoderSequential(in_features, bn_features)
        self.decoder_segmt = DecoderSequential(bn_features, out_features_seg, batch_size=batch_size, height=height,
                                               width=width)
        self.decoder_depth = DecoderSequential(bn_features, out_features_dep, batch_size=batch_size, height=height,
                                               width=width)
        self.decoder_normal = DecoderSequential(bn_features, out_features_nor, batch_size=batch_size,
                                                height=height, width=width)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.dropout = nn.Dropout2d()
        self.up = nn.Upsample(scale_factor=2, mode='bilinear', align_corners=True)

    def forward(self, x):
        e1 = self.encoder.enc_block1(x)
        out1 = self.pool(self.dropout(e1))
        e2 = self.encoder.enc_block2(out1)
        out2 = self.pool(self.dropout(e2))
        e3 = self.encoder.enc_block3(torch.cat([
                                        out2,
                                        self.pool(self.pool(e1))
                                    ], dim=1))
        out3 = self.pool(self.dropout(e3))
        e4 = self.encoder.enc_block4(torch.cat([
                                        out3,
                                        self.pool(self.pool(e2)),
                                        self.pool(self.pool(self.pool(e1)))
                                    ], dim=1))
        out4 = self.pool(self.dropout(e4))
        out = self.encoder.bottleneck(torch.cat([
                                        out4,
                                        self.pool(self.pool(e3)),
                                        self.pool(self.pool(self.pool(e2))),
                                        self.pool(self.pool(self.pool(self.pool(e1))))
                                    ], dim=1))

        seg4 = self.decoder_segmt.dec_block1(out, e4)
        seg3 = self.decoder_segmt.dec_block2(seg4, e3)
        seg2 = self.decoder_segmt.dec_block3(seg3, e2)
        seg1 = self.decoder_segmt.dec_block4(seg2, e1)
        seg_out = self.decoder_segmt.final_conv(seg1)

        dep4 = self.decoder_depth.dec_block1(out, e4)
        dep3 = self.decoder_depth.dec_block2(dep4, e3)
        dep2 = self.decoder_depth.dec_block3(dep3, e2)
        dep1 = self.decoder_depth.dec_block4(dep2, e1)
        dep_out = self.decoder_depth.final_conv(dep1)

        nor4 = self.decoder_normal.dec_block1(out, e4)
        nor3 = self.decoder_normal.dec_block2(nor4, e3)
        nor2 = self.decoder_normal.dec_block3(nor3, e2)
        nor1 = self.decoder_normal.dec_block4(nor2, e1)
        nor_out = self.decoder_normal.final_conv(nor1)
        nor_out = nor_out / torch.norm(nor_out, p=2, dim=1, keepdim=True)

        return seg_out, dep_out, nor_out


# --- End of the original's code.


def original_for(tasks, num_classes, batch_size, height, width):
    """The original network that AdaMTNet(num_classes, tasks, batch_size, height, width) mirrors."""
    network = OriginalAdaMTNet if len(tasks) == 2 else OriginalAdaMTNet3tasks
    return network(out_features_seg=num_classes, batch_size=batch_size, height=height, width=width)


# --- Parameter counts worked out from the original's layer definitions (mid_features = [64, 128, 256, 512]).

def conv_bn_count(in_channels, out_channels):
    """3x3 conv with bias, BatchNorm (weight, bias)."""
    return 9 * in_channels * out_channels + out_channels + 2 * out_channels


def attention_weight_count(batch_size, height, width):
    """One decoder's W: batch_size x (256 h/8 w/8 + 128 h/4 w/4 + 64 h/2 w/2 + 32 h w) = 60 batch_size h w."""
    return 60 * batch_size * height * width


def original_parameter_count(head_channels, batch_size, height, width):
    """Parameters of AdaMTNet / AdaMTNet3tasks with decoder heads of `head_channels` outputs."""
    encoder = (sum(conv_bn_count(inputs, out) + conv_bn_count(out, out)
                   for inputs, out in ((3, 64), (64, 128), (192, 256), (448, 512)))
               + 960 * 1024 + 1024)
    decoder_convs = sum(conv_bn_count(inputs, out) + conv_bn_count(out, out)
                        for inputs, out in ((1536, 256), (768, 128), (384, 64), (192, 32)))
    return encoder + sum(decoder_convs + attention_weight_count(batch_size, height, width) + 64 * channels
                         for channels in head_channels)


# (tasks, num_classes, batch_size, height, width, the original's count as its count_parameters prints it):
# its Cityscapes script (AdaMTNet()), its NYUv2 scripts (13 classes, batch_size=4, 288x384).
COUNTS = [
    (TWO_TASKS, 7, 8, 128, 256, 49_136_064),
    (TWO_TASKS, 13, 4, 288, 384, 70_763_328),
    (THREE_TASKS, 13, 4, 288, 384, 102_791_872),
]
NORMAL_HEAD_EXTRA = 64 * 2  # our normals head: 64 x 3 weights, the original's 64 x 1


@functools.lru_cache(maxsize=None)
def meta_pair(tasks, num_classes, batch_size, height, width):
    """(AdaMTNet, the original it mirrors), both on the meta device: shapes only."""
    with torch.device("meta"):
        return (AdaMTNet(num_classes, tasks, batch_size, height, width),
                original_for(tasks, num_classes, batch_size, height, width))


def count(model):
    return sum(parameter.numel() for parameter in model.parameters())


@pytest.mark.parametrize("tasks,num_classes,batch_size,height,width,original_count", COUNTS)
def test_parameter_count_equals_the_originals(tasks, num_classes, batch_size, height, width, original_count):
    model, original = meta_pair(tasks, num_classes, batch_size, height, width)
    head_channels = [num_classes, 1, 1][:len(tasks)]  # the original's normals head: 1 channel
    assert count(original) == original_parameter_count(head_channels, batch_size, height, width) == original_count
    assert count(model) == original_count + (NORMAL_HEAD_EXTRA if "normal" in tasks else 0)
    attention_weights = sum(block.attention_weight.numel() for task in tasks
                            for block in getattr(model, f"{task}_decoder").blocks)
    assert attention_weights == len(tasks) * attention_weight_count(batch_size, height, width)


@pytest.mark.parametrize("tasks", [TWO_TASKS, THREE_TASKS])
def test_parameters_and_state_line_up_with_the_originals_by_position(tasks):
    model, original = meta_pair(tasks, 13, 4, 288, 384)
    for ours, theirs in ((list(model.parameters()), list(original.parameters())),
                         (list(model.state_dict().values()), list(original.state_dict().values()))):
        assert len(ours) == len(theirs)
        our_shapes = [tuple(tensor.shape) for tensor in ours]
        their_shapes = [tuple(tensor.shape) for tensor in theirs]
        if "normal" in tasks:  # the normals head, registered last: 3 output channels here, 1 there
            assert (our_shapes.pop(), their_shapes.pop()) == ((3, 64, 1, 1), (1, 64, 1, 1))
        assert our_shapes == their_shapes
    last_decoder = model.normal_decoder if "normal" in tasks else model.depth_decoder
    assert list(model.parameters())[-1] is last_decoder.head.weight


def test_attention_weights_are_initialised_uniform_in_0_1_as_in_the_original():
    model = AdaMTNet(7, **SMALL)
    weights = torch.cat([block.attention_weight.flatten() for block in model.depth_decoder.blocks])
    assert weights.numel() == attention_weight_count(**SMALL)
    assert 0 <= weights.min() and weights.max() < 1 and abs(weights.mean().item() - 0.5) < 0.01


def randomise_(module, seed):
    """test_mtan.randomise_ with the attention weights uniform in [0, 1), as the original draws them."""
    return randomise_like_mtan(module, seed, lambda parameter, generator: parameter.uniform_(0, 1, generator=generator))


def pair_with_the_same_weights(tasks, num_classes, seed):
    """(AdaMTNet, original) at SMALL in eval mode, ours holding copies of the original's state-dict values
    loaded by position; ours' 3-channel normals head holds the original's 1-channel head weight thrice."""
    with torch.device("meta"):
        original = original_for(tasks, num_classes, **SMALL)
        model = AdaMTNet(num_classes, tasks, **SMALL)
    original = randomise_(original, seed)
    values = [tensor.clone() for tensor in original.state_dict().values()]
    if "normal" in tasks:
        values[-1] = values[-1].repeat(3, 1, 1, 1)
    model.load_state_dict(OrderedDict(zip(model.state_dict().keys(), values, strict=True)), assign=True)
    return model.eval(), original


def check_outputs_equal(outputs, original_outputs, tasks, num_classes):
    """Our AdaMTNetOutput equals the original's (segmentation logits, depth; normals as stated)."""
    segmentation, depth, *normal = original_outputs
    batch = segmentation.shape[0]
    assert isinstance(outputs, AdaMTNetOutput)
    assert outputs.segmentation.shape == (batch, num_classes, 32, 64) and outputs.depth.shape == (batch, 1, 32, 64)
    assert outputs.transferred_segmentation is None and outputs.transferred_depth is None
    assert len(outputs.segmentation.argmax(dim=1).unique()) > 1 and outputs.depth.std() > 0.01
    torch.testing.assert_close(outputs.segmentation, segmentation)
    torch.testing.assert_close(outputs.depth, depth)
    if "normal" in tasks:
        # Three equal channels o normalised: sign(o) / sqrt(3) each, the original's 1 channel o / |o| = sign(o).
        assert outputs.normal.shape == (batch, 3, 32, 64)
        torch.testing.assert_close(outputs.normal, normal[0].expand(-1, 3, -1, -1) / math.sqrt(3))
        torch.testing.assert_close(outputs.normal.norm(dim=1), torch.ones(batch, 32, 64))
    else:
        assert outputs.normal is None


@pytest.mark.parametrize("tasks,num_classes", [(TWO_TASKS, 7), (THREE_TASKS, 13)])
def test_eval_outputs_equal_the_originals_batch_of_one_with_its_weights(tasks, num_classes):
    model, original = pair_with_the_same_weights(tasks, num_classes, seed=1)
    images = torch.randn(2, 3, 32, 64, generator=torch.Generator().manual_seed(2))
    # What the normals heads receive: the normals decoders' features, compared in full below.
    our_features, their_features = [], []
    if "normal" in tasks:
        model.normal_decoder.head.register_forward_pre_hook(lambda head, inputs: our_features.append(inputs[0]))
        original.decoder_normal.final_conv.register_forward_pre_hook(
            lambda head, inputs: their_features.append(inputs[0]))
    with torch.no_grad():
        outputs = model(images)
        direct_outputs = model(images, direct_only=True)  # the engine's evaluation call; changes nothing
        one_by_one = [original(image[None]) for image in images]  # the original's test protocol: batch 1
        original_batch = original(images)
    assert model.tasks == tasks
    assert torch.equal(direct_outputs.segmentation, outputs.segmentation)
    assert torch.equal(direct_outputs.depth, outputs.depth)
    check_outputs_equal(outputs, [torch.cat(parts) for parts in zip(*one_by_one)], tasks, num_classes)
    if "normal" in tasks:
        assert our_features[0].shape == (2, 64, 32, 64) and our_features[0].std() > 0.01
        torch.testing.assert_close(our_features[0], torch.cat(their_features[:2]))
    # Eval mode gives every sample attention weight 0; the original's batch of 2 gives its second sample W[1].
    torch.testing.assert_close(outputs.depth[:1], original_batch[1][:1])
    assert not torch.allclose(outputs.depth[1], original_batch[1][1])


def without_dropout(module):
    """`module` with its Dropout2d layers in eval mode (no random masks); the rest keeps its mode."""
    for layer in module.modules():
        if isinstance(layer, nn.Dropout2d):
            layer.eval()
    return module


@pytest.mark.parametrize("tasks,num_classes", [(TWO_TASKS, 7), (THREE_TASKS, 13)])
def test_training_mode_weights_batch_positions_as_the_original_and_cycles_beyond_its_batch_size(tasks, num_classes):
    model, original = pair_with_the_same_weights(tasks, num_classes, seed=3)
    model, original = without_dropout(model.train()), without_dropout(original.train())
    images = torch.randn(3, 3, 32, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        # Batches of at most batch_size (3): W[:N], as in the original (BatchNorm on the batch's statistics).
        check_outputs_equal(model(images[:2]), original(images[:2]), tasks, num_classes)
        check_outputs_equal(model(images), original(images), tasks, num_classes)
        # A batch of 6, the 3 images twice (same BatchNorm statistics): sample i gets W[i mod 3].
        twice = model(torch.cat((images, images)))
        once = original(images)
    check_outputs_equal(twice, [torch.cat((output, output)) for output in once], tasks, num_classes)


def test_outputs_at_this_repositorys_input_sizes():
    cityscapes = AdaMTNet(7).eval()
    with torch.no_grad():
        outputs = cityscapes(torch.rand(2, 3, 128, 256))
    assert cityscapes.tasks == TWO_TASKS and (cityscapes.height, cityscapes.width) == (128, 256)
    assert outputs.segmentation.shape == (2, 7, 128, 256) and outputs.depth.shape == (2, 1, 128, 256)
    assert outputs.normal is None and torch.isfinite(outputs.segmentation).all()
    nyu, _ = meta_pair(THREE_TASKS, 13, 4, 288, 384)
    for batch in (2, 4, 9):
        outputs = nyu.train(batch == 9)(torch.empty(batch, 3, 288, 384, device="meta"))
        assert [tuple(output.shape) for output in outputs] == [(batch, 13, 288, 384), (batch, 1, 288, 384),
                                                               (batch, 3, 288, 384)]


def test_the_shared_parameters_are_those_every_task_reaches_and_get_gradients():
    torch.manual_seed(5)
    model = AdaMTNet(7, TWO_TASKS, **SMALL)
    outputs = model(torch.rand(2, 3, 32, 64))
    parameters = list(model.parameters())
    reached = []
    for output in (outputs.segmentation, outputs.depth):
        gradients = torch.autograd.grad(output.square().sum(), parameters, allow_unused=True, retain_graph=True)
        reached.append({id(parameter) for parameter, gradient in zip(parameters, gradients)
                        if gradient is not None and bool(gradient.abs().sum() > 0)})
    shared = {id(parameter) for parameter in model.shared_parameters()}
    assert shared == reached[0] & reached[1]
    assert len(shared) == 4 * 8 + 2  # four encoder blocks of two conv + BatchNorm layers, the bottleneck
    assert id(model.last_shared_weight) in shared and model.last_shared_weight.shape == (1024, 960, 1, 1)
    assert model.last_block_conv2_weight is model.last_shared_weight
    assert model.last_shared_stage is model.bottleneck and model.last_shared_stage.weight is model.last_shared_weight


def test_gradnorm_splits_the_gradient_by_task_at_the_shared_stage():
    model, _ = pair_with_the_same_weights(TWO_TASKS, 5, seed=6)
    model.train()
    torch.manual_seed(7)
    assert gradnorm_step_at_the_shared_stage(model, (2, 3, 32, 64), seed=7).shape == (2, 1024, 2, 4)
    # Every parameter gets a gradient (as DistributedDataParallel requires); positions past the batch get 0.
    assert all(parameter.grad is not None for parameter in model.parameters())
    assert model.last_shared_weight.grad.abs().sum() > 0
    attention_gradient = model.depth_decoder.blocks[0].attention_weight.grad.flatten(1).abs().sum(dim=1)
    assert attention_gradient[0] > 0 and attention_gradient[1] > 0 and attention_gradient[2] == 0


@pytest.mark.parametrize("num_classes", [1, 0, 2.0, True, "7"])
def test_invalid_num_classes_is_a_clear_error(num_classes):
    with torch.device("meta"), pytest.raises(ValueError, match=r"^num_classes"):
        AdaMTNet(num_classes)


@pytest.mark.parametrize("tasks", ["depth", (), ("segmentation",), ("depth", "segmentation"),
                                   ("segmentation", "normal"), ("segmentation", "depth", "edges")])
def test_unsupported_tasks_are_a_clear_error(tasks):
    with torch.device("meta"), pytest.raises(ValueError, match=r"^tasks .*\('segmentation', 'depth'\)"):
        AdaMTNet(7, tasks)


@pytest.mark.parametrize("arguments,message", [
    (dict(batch_size=0), r"^batch_size 0: expected an integer >= 1"),
    (dict(batch_size=2.0), r"^batch_size 2.0"),
    (dict(height=120), r"^height 120: expected a positive multiple of 16"),
    (dict(width=0), r"^width 0: expected a positive multiple of 16"),
])
def test_invalid_sizes_are_a_clear_error(arguments, message):
    with torch.device("meta"), pytest.raises(ValueError, match=message):
        AdaMTNet(7, **arguments)


@pytest.mark.parametrize("shape", [(1, 3, 288, 384), (1, 3, 64, 128), (3, 128, 256)])
def test_an_image_of_another_size_than_built_for_is_a_clear_error(shape):
    model, _ = meta_pair(TWO_TASKS, 7, 8, 128, 256)
    with pytest.raises(ValueError, match=rf"^image: expected \[N,3,128,256\].*{re.escape(str(shape))}"):
        model(torch.empty(shape, device="meta"))
