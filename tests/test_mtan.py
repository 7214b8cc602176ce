"""MTAN against a transcription of the original's SegNet MTAN (model/mtan/segnets.py: SegNet2tasks,
SegNet3tasks; model/kd4mtl/model/mtan_single.py: SegNet for one task): parameter counts, parameter
positions, outputs with the original's weights, shapes, argument errors and the shared layer GradNorm
measures at. Parameter counts use models built on the meta device (no memory, no initialisation cost)."""
import functools
import math
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from losses.balancing import activation_consumers, make_balancer
from models import MODEL_FAMILIES, MTAN, make_model
from models.mtan import MTANOutput

TWO_TASKS = ("segmentation", "depth")
THREE_TASKS = ("segmentation", "depth", "normal")
KD4MTL_TASK_NAMES = {"segmentation": "semantic", "depth": "depth", "normal": "normal"}


# --- Transcription of the original (layer definitions, registration order and forward as written there).

def build_original_trunk(network, filter):
    """The SegNet trunk and the first-level attention of the original's MTAN networks, registered on
    `network` in the original's order (shared by SegNet2tasks, SegNet3tasks and kd4mtl's SegNet)."""
    conv_layer, att_layer = network.conv_layer, network.att_layer
    network.encoder_block = nn.ModuleList([conv_layer([3, filter[0]])])
    network.decoder_block = nn.ModuleList([conv_layer([filter[0], filter[0]])])
    for i in range(4):
        network.encoder_block.append(conv_layer([filter[i], filter[i + 1]]))
        network.decoder_block.append(conv_layer([filter[i + 1], filter[i]]))
    network.conv_block_enc = nn.ModuleList([conv_layer([filter[0], filter[0]])])
    network.conv_block_dec = nn.ModuleList([conv_layer([filter[0], filter[0]])])
    for i in range(4):
        if i == 0:
            network.conv_block_enc.append(conv_layer([filter[i + 1], filter[i + 1]]))
            network.conv_block_dec.append(conv_layer([filter[i], filter[i]]))
        else:
            network.conv_block_enc.append(nn.Sequential(conv_layer([filter[i + 1], filter[i + 1]]),
                                                        conv_layer([filter[i + 1], filter[i + 1]])))
            network.conv_block_dec.append(nn.Sequential(conv_layer([filter[i], filter[i]]),
                                                        conv_layer([filter[i], filter[i]])))
    network.encoder_att = nn.ModuleList([nn.ModuleList([att_layer([filter[0], filter[0], filter[0]])])])
    network.decoder_att = nn.ModuleList([nn.ModuleList([att_layer([2 * filter[0], filter[0], filter[0]])])])
    network.encoder_block_att = nn.ModuleList([conv_layer([filter[0], filter[1]])])
    network.decoder_block_att = nn.ModuleList([conv_layer([filter[0], filter[0]])])


def build_original_attention_blocks(network, filter):
    """The attention blocks' shared convolutions of the original's MTAN networks, appended on `network`."""
    for i in range(4):
        if i < 3:
            network.encoder_block_att.append(network.conv_layer([filter[i + 1], filter[i + 2]]))
            network.decoder_block_att.append(network.conv_layer([filter[i + 1], filter[i]]))
        else:
            network.encoder_block_att.append(network.conv_layer([filter[i + 1], filter[i + 1]]))
            network.decoder_block_att.append(network.conv_layer([filter[i + 1], filter[i + 1]]))


class OriginalSegNetMTAN(nn.Module):
    """SegNet2tasks(class_nb) for task_count=2, SegNet3tasks() (class_nb 13) for task_count=3."""

    def __init__(self, class_nb, task_count):
        super().__init__()
        filter = [64, 128, 256, 512, 512]
        self.class_nb = class_nb
        self.task_count = task_count
        build_original_trunk(self, filter)
        for j in range(task_count):
            if j < 2:  # as in the original: with range(2) this leaves a third, level-0-only branch
                self.encoder_att.append(nn.ModuleList([self.att_layer([filter[0], filter[0], filter[0]])]))
                self.decoder_att.append(nn.ModuleList([self.att_layer([2 * filter[0], filter[0], filter[0]])]))
            for i in range(4):
                self.encoder_att[j].append(self.att_layer([2 * filter[i + 1], filter[i + 1], filter[i + 1]]))
                self.decoder_att[j].append(self.att_layer([filter[i + 1] + filter[i], filter[i], filter[i]]))
        build_original_attention_blocks(self, filter)
        self.pred_task1 = self.conv_layer([filter[0], self.class_nb], pred=True)
        self.pred_task2 = self.conv_layer([filter[0], 1], pred=True)
        if task_count == 3:
            self.pred_task3 = self.conv_layer([filter[0], 3], pred=True)
        self.down_sampling = nn.MaxPool2d(kernel_size=2, stride=2, return_indices=True)
        self.up_sampling = nn.MaxUnpool2d(kernel_size=2, stride=2)
        self.logsigma = nn.Parameter(torch.FloatTensor([-0.5, -0.5, -0.5]))
        original_init(self)

    conv_layer = staticmethod(lambda channel, pred=False: original_conv_layer(channel, pred))
    att_layer = staticmethod(lambda channel: original_att_layer(channel))

    def forward(self, x):
        g_encoder, g_decoder, g_upsampl = original_trunk(self, x)
        predictions = [original_task_features(self, i, g_encoder, g_decoder, g_upsampl)
                       for i in range(self.task_count)]
        t1_pred = F.log_softmax(self.pred_task1(predictions[0]), dim=1)
        t2_pred = self.pred_task2(predictions[1])
        if self.task_count == 2:
            return [t1_pred, t2_pred], self.logsigma
        t3_pred = self.pred_task3(predictions[2])
        t3_pred = t3_pred / torch.norm(t3_pred, p=2, dim=1, keepdim=True)
        return [t1_pred, t2_pred, t3_pred], self.logsigma


class OriginalSingleTaskSegNet(nn.Module):
    """kd4mtl's single-task MTAN SegNet(class_nb, task), task in semantic, depth, normal."""

    def __init__(self, class_nb=13, task="semantic"):
        super().__init__()
        filter = [64, 128, 256, 512, 512]
        self.class_nb = class_nb
        self.task = task
        build_original_trunk(self, filter)
        for j in range(1):
            for i in range(4):
                self.encoder_att[j].append(self.att_layer([2 * filter[i + 1], filter[i + 1], filter[i + 1]]))
                self.decoder_att[j].append(self.att_layer([filter[i + 1] + filter[i], filter[i], filter[i]]))
        build_original_attention_blocks(self, filter)
        out_channels = {"semantic": self.class_nb, "depth": 1, "normal": 3}[task]
        self.pred_task = self.conv_layer([filter[0], out_channels], pred=True)
        self.down_sampling = nn.MaxPool2d(kernel_size=2, stride=2, return_indices=True)
        self.up_sampling = nn.MaxUnpool2d(kernel_size=2, stride=2)
        original_init(self)

    conv_layer = staticmethod(lambda channel, pred=False: original_conv_layer(channel, pred))
    att_layer = staticmethod(lambda channel: original_att_layer(channel))

    def forward(self, x):
        g_encoder, g_decoder, g_upsampl = original_trunk(self, x)
        features = original_task_features(self, 0, g_encoder, g_decoder, g_upsampl)
        pred = self.pred_task(features)
        if self.task == "semantic":
            pred = F.log_softmax(pred, dim=1)
        if self.task == "normal":
            pred = pred / torch.norm(pred, p=2, dim=1, keepdim=True)
        return pred, features


def original_conv_layer(channel, pred=False):
    if not pred:
        return nn.Sequential(nn.Conv2d(channel[0], channel[1], kernel_size=3, padding=1),
                             nn.BatchNorm2d(num_features=channel[1]), nn.ReLU(inplace=True))
    return nn.Sequential(nn.Conv2d(channel[0], channel[0], kernel_size=3, padding=1),
                         nn.Conv2d(channel[0], channel[1], kernel_size=1, padding=0))


def original_att_layer(channel):
    return nn.Sequential(nn.Conv2d(channel[0], channel[1], kernel_size=1, padding=0), nn.BatchNorm2d(channel[1]),
                         nn.ReLU(inplace=True), nn.Conv2d(channel[1], channel[2], kernel_size=1, padding=0),
                         nn.BatchNorm2d(channel[2]), nn.Sigmoid())


def original_init(net):
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_normal_(m.weight)
            nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


def original_trunk(net, x):
    """The original's "global shared network" loops: g_encoder[i] = [block, conv block], g_decoder, g_upsampl."""
    g_encoder, g_decoder, g_maxpool, g_upsampl, indices = ([0] * 5 for _ in range(5))
    for i in range(5):
        g_encoder[i], g_decoder[-i - 1] = ([0] * 2 for _ in range(2))
    for i in range(5):
        g_encoder[i][0] = net.encoder_block[i](x if i == 0 else g_maxpool[i - 1])
        g_encoder[i][1] = net.conv_block_enc[i](g_encoder[i][0])
        g_maxpool[i], indices[i] = net.down_sampling(g_encoder[i][1])
    for i in range(5):
        g_upsampl[i] = net.up_sampling(g_maxpool[-1] if i == 0 else g_decoder[i - 1][-1], indices[-i - 1])
        g_decoder[i][0] = net.decoder_block[-i - 1](g_upsampl[i])
        g_decoder[i][1] = net.conv_block_dec[-i - 1](g_decoder[i][0])
    return g_encoder, g_decoder, g_upsampl


def original_task_features(net, i, g_encoder, g_decoder, g_upsampl):
    """The original's "task dependent attention module" for task i: atten_decoder[i][-1][-1]."""
    atten_encoder = [[0] * 3 for _ in range(5)]
    atten_decoder = [[0] * 3 for _ in range(5)]
    for j in range(5):
        if j == 0:
            atten_encoder[j][0] = net.encoder_att[i][j](g_encoder[j][0])
        else:
            atten_encoder[j][0] = net.encoder_att[i][j](torch.cat((g_encoder[j][0], atten_encoder[j - 1][2]), dim=1))
        atten_encoder[j][1] = (atten_encoder[j][0]) * g_encoder[j][1]
        atten_encoder[j][2] = net.encoder_block_att[j](atten_encoder[j][1])
        atten_encoder[j][2] = F.max_pool2d(atten_encoder[j][2], kernel_size=2, stride=2)
    for j in range(5):
        previous = atten_encoder[-1][-1] if j == 0 else atten_decoder[j - 1][2]
        atten_decoder[j][0] = F.interpolate(previous, scale_factor=2, mode="bilinear", align_corners=True)
        atten_decoder[j][0] = net.decoder_block_att[-j - 1](atten_decoder[j][0])
        atten_decoder[j][1] = net.decoder_att[i][-j - 1](torch.cat((g_upsampl[j], atten_decoder[j][0]), dim=1))
        atten_decoder[j][2] = (atten_decoder[j][1]) * g_decoder[j][-1]
    return atten_decoder[-1][-1]


def original_for(tasks, num_classes):
    """The original network that MTAN(num_classes, tasks) mirrors."""
    if len(tasks) == 1:
        return OriginalSingleTaskSegNet(num_classes, KD4MTL_TASK_NAMES[tasks[0]])
    return OriginalSegNetMTAN(num_classes, len(tasks))


# --- Parameter counts worked out from the original's layer definitions (filter = [64, 128, 256, 512, 512]).

FILTER = [64, 128, 256, 512, 512]


def conv_layer_count(in_channels, out_channels):
    """conv_layer: 3x3 conv with bias, BatchNorm (weight, bias)."""
    return 9 * in_channels * out_channels + out_channels + 2 * out_channels


def att_layer_count(in_channels, hidden, out_channels):
    """att_layer: 1x1 conv, BatchNorm, 1x1 conv, BatchNorm."""
    return in_channels * hidden + 3 * hidden + hidden * out_channels + 3 * out_channels


def pred_layer_count(in_channels, out_channels):
    """conv_layer(pred=True): 3x3 conv in -> in, 1x1 conv in -> out, both with bias."""
    return 9 * in_channels * in_channels + in_channels + in_channels * out_channels + out_channels


def original_parameter_count(task_count, head_channels):
    """Parameters of SegNet2tasks / SegNet3tasks (logsigma included) or, for task_count 1, kd4mtl's SegNet."""
    f = FILTER
    encoder_block = conv_layer_count(3, f[0]) + sum(conv_layer_count(f[i], f[i + 1]) for i in range(4))
    decoder_block = conv_layer_count(f[0], f[0]) + sum(conv_layer_count(f[i + 1], f[i]) for i in range(4))
    conv_block_enc = (conv_layer_count(f[0], f[0]) + conv_layer_count(f[1], f[1])
                      + sum(2 * conv_layer_count(f[i + 1], f[i + 1]) for i in range(1, 4)))
    conv_block_dec = (2 * conv_layer_count(f[0], f[0])
                      + sum(2 * conv_layer_count(f[i], f[i]) for i in range(1, 4)))
    encoder_block_att = (conv_layer_count(f[0], f[1]) + sum(conv_layer_count(f[i + 1], f[i + 2]) for i in range(3))
                         + conv_layer_count(f[4], f[4]))
    decoder_block_att = (conv_layer_count(f[0], f[0]) + sum(conv_layer_count(f[i + 1], f[i]) for i in range(3))
                         + conv_layer_count(f[4], f[4]))
    encoder_att_branch = (att_layer_count(f[0], f[0], f[0])
                          + sum(att_layer_count(2 * f[i + 1], f[i + 1], f[i + 1]) for i in range(4)))
    decoder_att_branch = (att_layer_count(2 * f[0], f[0], f[0])
                          + sum(att_layer_count(f[i + 1] + f[i], f[i], f[i]) for i in range(4)))
    total = (encoder_block + decoder_block + conv_block_enc + conv_block_dec + encoder_block_att + decoder_block_att
             + task_count * (encoder_att_branch + decoder_att_branch)
             + sum(pred_layer_count(f[0], channels) for channels in head_channels))
    if task_count == 2:  # SegNet2tasks' third branch: its level-0 masks only
        total += att_layer_count(f[0], f[0], f[0]) + att_layer_count(2 * f[0], f[0], f[0])
    if task_count > 1:
        total += 3  # logsigma
    return total


# (tasks, num_classes, the original's parameter count as its count_parameters prints it, logsigma included
# for the multi-task networks; MTAN has 3 fewer there, as logsigma belongs to the balancer).
COUNTS = [
    (TWO_TASKS, 7, 41_228_235),
    (TWO_TASKS, 13, 41_228_625),
    (TWO_TASKS, 19, 41_229_015),
    (THREE_TASKS, 13, 44_229_076),
    (("segmentation",), 7, 38_185_415),
    (("segmentation",), 13, 38_185_805),
    (("depth",), 13, 38_185_025),
    (("normal",), 13, 38_185_155),
]


@functools.lru_cache(maxsize=None)
def meta_pair(tasks, num_classes):
    """(MTAN, the original it mirrors), both on the meta device: shapes only."""
    with torch.device("meta"):
        return MTAN(num_classes, tasks), original_for(tasks, num_classes)


def count(model):
    return sum(parameter.numel() for parameter in model.parameters())


def without_logsigma(items):
    """(name, tensor) pairs of the original but its uncertainty weights, which MTAN leaves to the balancer."""
    return [(name, tensor) for name, tensor in items if name != "logsigma"]


@pytest.mark.parametrize("tasks,num_classes,original_count", COUNTS)
def test_parameter_count_equals_the_originals(tasks, num_classes, original_count):
    model, original = meta_pair(tasks, num_classes)
    head_channels = [{"segmentation": num_classes, "depth": 1, "normal": 3}[task] for task in tasks]
    logsigma = 3 if len(tasks) > 1 else 0
    assert count(original) == original_parameter_count(len(tasks), head_channels) == original_count
    assert count(model) == original_count - logsigma


@pytest.mark.parametrize("tasks,num_classes", [(TWO_TASKS, 7), (THREE_TASKS, 13), (("depth",), 13)])
def test_parameters_and_state_line_up_with_the_originals_by_position(tasks, num_classes):
    model, original = meta_pair(tasks, num_classes)
    assert "logsigma" not in dict(model.named_parameters())
    for ours, theirs in ((list(model.parameters()), without_logsigma(original.named_parameters())),
                         (list(model.state_dict().values()), without_logsigma(original.state_dict().items()))):
        assert len(ours) == len(theirs)
        assert [tuple(tensor.shape) for tensor in ours] == [tuple(tensor.shape) for _, tensor in theirs]


def test_only_the_unused_third_branch_of_the_two_task_network_is_frozen():
    model, original = meta_pair(TWO_TASKS, 7)
    frozen = [name for name, parameter in model.named_parameters() if not parameter.requires_grad]
    stub = {id(p) for branches in (model.encoder_attention, model.decoder_attention) for p in branches[2].parameters()}
    assert frozen and {id(p) for p in model.parameters() if not p.requires_grad} == stub
    assert count(model.encoder_attention[2]) + count(model.decoder_attention[2]) == 21_248
    assert len(original.encoder_att[2]) == 1 and len(model.encoder_attention[2]) == 1
    for tasks in (THREE_TASKS, ("segmentation",)):
        assert all(parameter.requires_grad for parameter in meta_pair(tasks, 13)[0].parameters())


def randomise_(module, seed, draw_other=lambda parameter, generator: parameter.normal_(generator=generator)):
    """Give every parameter and BatchNorm statistic of `module` (meta or not) random values on the CPU
    that keep activations of order 1 through the network (the parameters of layers other than
    convolutions and BatchNorm by `draw_other(parameter, generator)`, normal by default); returns the
    module, in eval mode."""
    module.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.Conv2d):
                fan_in = layer.weight[0].numel()
                layer.weight.normal_(0, math.sqrt(2 / fan_in), generator=generator)
                if layer.bias is not None:
                    layer.bias.normal_(0, 0.1, generator=generator)
            elif isinstance(layer, nn.BatchNorm2d):
                layer.weight.uniform_(0.5, 1.5, generator=generator)
                layer.bias.normal_(0, 0.1, generator=generator)
                layer.running_mean.normal_(0, 0.1, generator=generator)
                layer.running_var.uniform_(0.5, 1.5, generator=generator)
                layer.num_batches_tracked.zero_()
            else:
                for parameter in layer.parameters(recurse=False):
                    draw_other(parameter, generator)
    return module.eval()


def mtan_with_weights_of(original, num_classes, tasks):
    """MTAN(num_classes, tasks) holding `original`'s state-dict values, loaded by position."""
    with torch.device("meta"):
        model = MTAN(num_classes, tasks)
    values = [tensor for _, tensor in without_logsigma(original.state_dict().items())]
    model.load_state_dict(OrderedDict(zip(model.state_dict().keys(), values, strict=True)), assign=True)
    return model.eval()


@pytest.mark.parametrize("tasks,num_classes", [(TWO_TASKS, 7), (THREE_TASKS, 13)])
def test_outputs_equal_the_originals_with_its_weights(tasks, num_classes):
    with torch.device("meta"):
        original = original_for(tasks, num_classes)
    original = randomise_(original, seed=1)
    model = mtan_with_weights_of(original, num_classes, tasks)
    image = torch.randn(1, 3, 32, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        (log_probabilities, depth, *normal), _ = original(image)
        outputs = model(image)
    assert isinstance(outputs, MTANOutput) and model.tasks == tasks
    assert outputs.segmentation.shape == (1, num_classes, 32, 64) and outputs.depth.shape == (1, 1, 32, 64)
    assert outputs.transferred_segmentation is None and outputs.transferred_depth is None
    assert torch.equal(outputs.segmentation.argmax(dim=1), log_probabilities.argmax(dim=1))
    assert len(outputs.segmentation.argmax(dim=1).unique()) > 1
    torch.testing.assert_close(outputs.segmentation.softmax(dim=1), log_probabilities.exp())
    torch.testing.assert_close(outputs.depth, depth)
    assert outputs.depth.std() > 0.01
    if "normal" in tasks:
        assert outputs.normal.shape == (1, 3, 32, 64)
        torch.testing.assert_close(outputs.normal, normal[0])
        torch.testing.assert_close(outputs.normal.norm(dim=1), torch.ones(1, 32, 64))
    else:
        assert outputs.normal is None


@pytest.mark.parametrize("task", ["segmentation", "depth"])
def test_single_task_network_is_kd4mtls_single_task_mtan(task):
    with torch.device("meta"):
        original = OriginalSingleTaskSegNet(7, KD4MTL_TASK_NAMES[task])
    original = randomise_(original, seed=3)
    model = mtan_with_weights_of(original, 7, (task,))
    assert model.tasks == (task,) and len(model.encoder_attention) == len(model.decoder_attention) == 1
    image = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        prediction, _ = original(image)
        outputs = model(image)
        direct_outputs = model(image, direct_only=True)  # the engine's evaluation call; changes nothing
    assert torch.equal(getattr(direct_outputs, task), getattr(outputs, task))
    assert [name for name, value in outputs._asdict().items() if value is not None] == [task]
    ours = getattr(outputs, task)
    if task == "segmentation":
        assert ours.shape == (1, 7, 32, 32)
        torch.testing.assert_close(ours.log_softmax(dim=1), prediction)
    else:
        assert ours.shape == (1, 1 if task == "depth" else 3, 32, 32)
        torch.testing.assert_close(ours, prediction)


@pytest.mark.parametrize("num_classes", [1, 0, 2.0, True, "7"])
def test_invalid_num_classes_is_a_clear_error(num_classes):
    with torch.device("meta"), pytest.raises(ValueError, match=r"^num_classes"):
        MTAN(num_classes)


@pytest.mark.parametrize("tasks", ["depth", (), ("depth", "segmentation"), ("segmentation", "normal"),
                                   ("segmentation", "segmentation"), ("segmentation", "depth", "edges")])
def test_unsupported_tasks_are_a_clear_error(tasks):
    with torch.device("meta"), pytest.raises(ValueError, match=r"^tasks .*\('segmentation', 'depth'\)"):
        MTAN(7, tasks)


def test_input_size_not_multiple_of_32_is_a_clear_error():
    model, _ = meta_pair(TWO_TASKS, 7)
    with pytest.raises(ValueError, match=r"multiples of 32.*\(1, 3, 48, 64\)"):
        model(torch.empty(1, 3, 48, 64, device="meta"))


def test_registered_as_the_mtan_family():
    assert MODEL_FAMILIES["mtan"] is MTAN
    with torch.device("meta"):
        model = make_model("mtan", num_classes=19, tasks=THREE_TASKS)
    assert isinstance(model, MTAN) and model.tasks == THREE_TASKS and model.num_classes == 19


@pytest.mark.parametrize("tasks", [TWO_TASKS, THREE_TASKS, ("depth",)])
def test_shared_layer_is_the_last_conv_of_the_shared_trunk(tasks):
    model, _ = meta_pair(tasks, 7 if len(tasks) < 3 else 13)
    assert model.last_shared_weight is model.last_block_conv2_weight
    assert model.last_shared_weight.shape == (64, 64, 3, 3)
    assert model.last_shared_stage is model.decoder_later_convs[0]
    stage_weights = [parameter for parameter in model.last_shared_stage.parameters() if parameter.dim() == 4]
    assert stage_weights[-1] is model.last_shared_weight
    trunk = (model.encoder_first_convs, model.encoder_later_convs,
             model.decoder_first_convs, model.decoder_later_convs)
    trunk_weights = {id(parameter) for part in trunk for parameter in part.parameters()}
    assert id(model.last_shared_weight) in trunk_weights
    # The last conv the trunk runs: decoder level 0 comes last, after its first conv.
    convs = [layer for layer in model.decoder_later_convs[0].modules() if isinstance(layer, nn.Conv2d)]
    assert convs[-1].weight is model.last_shared_weight


def gradnorm_step_at_the_shared_stage(model, image_shape, seed):
    """One paper-form GradNorm step of `model` (5 classes, train mode) on a random batch of `image_shape`
    [N, 3, H, W]: asserts that the gradient splits by task at the model's shared stage and that GradNorm's
    weights get a finite gradient; returns the shared stage's activation."""
    balancer = make_balancer("gradnorm", form="paper")
    balancer.attach(model)
    recorded = []
    model.last_shared_stage.register_forward_hook(lambda module, inputs, output: recorded.append(output))
    generator = torch.Generator().manual_seed(seed)
    batch, _, height, width = image_shape
    outputs = model(torch.randn(*image_shape, generator=generator))
    segmentation_target = torch.randint(0, 5, (batch, height, width), generator=generator)
    groups = torch.stack([F.cross_entropy(outputs.segmentation, segmentation_target),
                          F.l1_loss(outputs.depth, torch.rand(batch, 1, height, width, generator=generator))])
    (activation,) = recorded
    assert activation_consumers(groups, activation, model.last_shared_weight) is not None
    balancer.backward(groups)
    assert torch.isfinite(balancer.task_weight.grad).all()
    return activation


def test_gradnorm_splits_the_gradient_by_task_at_the_shared_stage():
    with torch.device("meta"):
        original = OriginalSegNetMTAN(5, 2)
    model = mtan_with_weights_of(randomise_(original, seed=5), 5, TWO_TASKS).train()
    assert gradnorm_step_at_the_shared_stage(model, (1, 3, 32, 32), seed=6).shape == (1, 64, 32, 32)
    # Every trainable parameter gets a gradient (as DistributedDataParallel requires), the frozen ones none.
    assert all((parameter.grad is not None) == parameter.requires_grad for parameter in model.parameters())


def test_the_shared_parameters_are_those_every_task_reaches():
    model = MTAN(7)
    image = torch.rand(2, 3, 32, 64)
    outputs = model(image)
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    reached = []
    for output in (outputs.segmentation, outputs.depth):
        gradients = torch.autograd.grad(output.sum(), trainable, allow_unused=True, retain_graph=True)
        reached.append({id(parameter) for parameter, gradient in zip(trainable, gradients)
                        if gradient is not None and bool(gradient.abs().sum() > 0)})
    assert {id(parameter) for parameter in model.shared_parameters()} == reached[0] & reached[1]
