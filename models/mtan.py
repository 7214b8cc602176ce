"""MTAN: SegNet with task-specific attention (Liu, Johns and Davison, CVPR 2019), the multi-task baseline
of the original code (model/mtan/segnets.py: SegNet2tasks, SegNet3tasks; kd4mtl's mtan_single.py for
one task), with this repository's output conventions."""

import torch
from torch import nn
from torch.nn import functional as F

from models.layers import conv_relu, init_weights
from models.outputs import DirectOutput, check_classes_and_tasks

MTAN_TASKS = ("segmentation", "depth", "normal")
SUPPORTED_TASK_SETS = (("segmentation", "depth"), ("segmentation", "depth", "normal"),
                       ("segmentation",), ("depth",), ("normal",))
CHANNELS = (64, 128, 256, 512, 512)
LEVELS = len(CHANNELS)
INPUT_MULTIPLE = 2 ** LEVELS
LATER_CONV_COUNTS = (1, 1, 2, 2, 2)
HEAD_CHANNELS = {"depth": 1, "normal": 3}


MTANOutput = DirectOutput  # its predictions: segmentation logits, depth, unit normals


def conv_bn_relu(in_channels, out_channels):
    """3x3 convolution (padding 1), BatchNorm, ReLU: the original's `conv_layer`."""
    return nn.Sequential(*conv_relu(in_channels, out_channels, batch_norm=True))


def conv_bn_relu_stack(channels, count):
    """`count` conv_bn_relu(channels, channels), each its own Sequential, as the original nests them."""
    return nn.Sequential(*(conv_bn_relu(channels, channels) for _ in range(count)))


def attention_mask(in_channels, hidden_channels, out_channels):
    """1x1 conv, BatchNorm, ReLU, 1x1 conv, BatchNorm, sigmoid: an attention mask in (0, 1) (`att_layer`)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden_channels, kernel_size=1),
        nn.BatchNorm2d(hidden_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(hidden_channels, out_channels, kernel_size=1),
        nn.BatchNorm2d(out_channels),
        nn.Sigmoid(),
    )


def prediction_head(in_channels, out_channels):
    """3x3 conv (in_channels -> in_channels) then 1x1 conv to out_channels, both with bias, no activation."""
    return nn.Sequential(nn.Conv2d(in_channels, in_channels, kernel_size=3, padding=1),
                         nn.Conv2d(in_channels, out_channels, kernel_size=1))


def encoder_attention_branch():
    """One task's encoder attention masks, level 0 (full resolution) to 4: level 0 sees the level's first
    features (64 channels), level k > 0 their concatenation with the previous level's attended output."""
    return nn.ModuleList([attention_mask(CHANNELS[0], CHANNELS[0], CHANNELS[0])] + [
        attention_mask(2 * CHANNELS[level], CHANNELS[level], CHANNELS[level]) for level in range(1, LEVELS)])


def decoder_attention_branch():
    """One task's decoder attention masks, level 0 to 4: each sees the level's unpooled trunk features
    concatenated with the upsampled attended output of the level below."""
    return nn.ModuleList([attention_mask(2 * CHANNELS[0], CHANNELS[0], CHANNELS[0])] + [
        attention_mask(CHANNELS[level] + CHANNELS[level - 1], CHANNELS[level - 1], CHANNELS[level - 1])
        for level in range(1, LEVELS)])


class MTAN(nn.Module):
    """Multi-Task Attention Network on SegNet: a shared SegNet trunk (five encoder levels with max-pooling,
    five decoder levels with max-unpooling by the encoder's indices) and, per task, attention masks at
    every encoder and decoder level that select features of the trunk; the attended full-resolution
    features of each task go to that task's prediction head.

    `tasks` (a tuple, kept as `model.tasks`) is one of ("segmentation", "depth") (the original's
    SegNet2tasks(num_classes)), ("segmentation", "depth", "normal") (SegNet3tasks, built there with 13
    classes only) or a single task ("segmentation",), ("depth",) or ("normal",) (kd4mtl's single-task MTAN
    SegNet: the same trunk and one attention branch). The layers are registered in the original's order,
    so its parameters and state-dict values load by position, except:

    - the original's `logsigma` (uncertainty weighting, its first parameter) is not part of the model;
      this repository's balancers (losses.balancing.UncertaintyWeights) hold such weights;
    - SegNet2tasks also registers the level-0 encoder and decoder attention masks of a third branch that
      its forward never uses; the two-task network keeps them (`encoder_attention[2]`,
      `decoder_attention[2]`), so that parameter counts and positions match, but frozen
      (requires_grad False): they get no gradient either way, and DistributedDataParallel refuses
      trainable parameters that get none.

    Outputs (MTANOutput) differ from the original's: segmentation is logits, not log-softmax (same argmax,
    softmax(logits) = exp(log-softmax)); depth is the head's output as there; normal is divided by its
    L2 norm as there, clamped at 1e-12 (F.normalize) where the original would divide by zero.

    GradNorm measures at the last conv of the shared trunk: the second conv of decoder level 0
    (`last_shared_stage` = `decoder_later_convs[0]`), whose output every task's last attention mask
    multiplies; the original code has no GradNorm for MTAN, so both of the balancers' forms
    (`last_shared_weight`, `last_block_conv2_weight`) name that conv's weight.
    """

    def __init__(self, num_classes, tasks=("segmentation", "depth")):
        super().__init__()
        check_classes_and_tasks(num_classes, tasks, SUPPORTED_TASK_SETS)
        self.num_classes = num_classes
        self.tasks = tuple(tasks)
        wider = [CHANNELS[min(level + 1, LEVELS - 1)] for level in range(LEVELS)]
        narrower = [CHANNELS[max(level - 1, 0)] for level in range(LEVELS)]
        # Indexed by level, 0 = full resolution; the decoder runs them from level 4 down to 0.
        self.encoder_first_convs = nn.ModuleList(
            conv_bn_relu(3 if level == 0 else CHANNELS[level - 1], CHANNELS[level]) for level in range(LEVELS))
        self.decoder_first_convs = nn.ModuleList(
            conv_bn_relu(CHANNELS[level], narrower[level]) for level in range(LEVELS))
        self.encoder_later_convs = nn.ModuleList(
            conv_bn_relu_stack(CHANNELS[level], LATER_CONV_COUNTS[level]) for level in range(LEVELS))
        self.decoder_later_convs = nn.ModuleList(
            conv_bn_relu_stack(narrower[level], LATER_CONV_COUNTS[level]) for level in range(LEVELS))
        # [task][level]; the two-task network has the original's unused, frozen level-0 third branch.
        self.encoder_attention = nn.ModuleList(encoder_attention_branch() for _ in self.tasks)
        self.decoder_attention = nn.ModuleList(decoder_attention_branch() for _ in self.tasks)
        if len(self.tasks) == 2:
            self.encoder_attention.append(nn.ModuleList([attention_mask(CHANNELS[0], CHANNELS[0], CHANNELS[0])]))
            self.decoder_attention.append(nn.ModuleList([attention_mask(2 * CHANNELS[0], CHANNELS[0], CHANNELS[0])]))
        # Shared by the tasks' attention branches, applied to each task's attended features.
        self.encoder_attention_convs = nn.ModuleList(
            conv_bn_relu(CHANNELS[level], wider[level]) for level in range(LEVELS))
        self.decoder_attention_convs = nn.ModuleList(
            conv_bn_relu(CHANNELS[level], narrower[level]) for level in range(LEVELS))
        self.segmentation_head = None
        self.depth_head = None
        self.normal_head = None
        for task in self.tasks:
            setattr(self, f"{task}_head",
                    prediction_head(CHANNELS[0], num_classes if task == "segmentation" else HEAD_CHANNELS[task]))
        init_weights(self)
        for branches in (self.encoder_attention, self.decoder_attention):
            for unused_branch in branches[len(self.tasks):]:
                unused_branch.requires_grad_(False)

    @property
    def last_shared_stage(self):
        """The trunk's decoder level 0 convs (one conv, BatchNorm, ReLU): its output [N,64,H,W] is the last
        activation the tasks share; GradNorm records it to split the gradient by task there."""
        return self.decoder_later_convs[0]

    @property
    def last_shared_weight(self):
        """Weight [64,64,3,3] of the last conv of the shared trunk: the layer GradNorm measures gradients at."""
        return self.decoder_later_convs[0][-1][0].weight

    @property
    def last_block_conv2_weight(self):
        """The same weight as `last_shared_weight`, for GradNorm's original form (no MTAN layer of its own)."""
        return self.last_shared_weight

    def shared_parameters(self):
        """The parameters every task's loss reaches: the SegNet trunk's convolutions and the attention
        blocks' convolutions that all tasks share (PCGrad's paper form projects their gradients); the
        attention masks and heads are task-specific."""
        shared = (self.encoder_first_convs, self.decoder_first_convs, self.encoder_later_convs,
                  self.decoder_later_convs, self.encoder_attention_convs, self.decoder_attention_convs)
        return [parameter for module in shared for parameter in module.parameters()]

    def shared_trunk(self, image):
        """The SegNet trunk on image [N,3,H,W]: per level (0 = full resolution) the encoder's first-conv
        features and level outputs, and, deepest level first, the decoder's unpooled inputs and outputs."""
        encoder_first, encoder_outputs, pooling_indices = [], [], []
        features = image
        for first_conv, later_convs in zip(self.encoder_first_convs, self.encoder_later_convs):
            encoder_first.append(first_conv(features))
            encoder_outputs.append(later_convs(encoder_first[-1]))
            features, indices = F.max_pool2d(encoder_outputs[-1], kernel_size=2, stride=2, return_indices=True)
            pooling_indices.append(indices)
        decoder_unpooled, decoder_outputs = [], []
        for level in reversed(range(LEVELS)):
            decoder_unpooled.append(F.max_unpool2d(features, pooling_indices[level], kernel_size=2, stride=2))
            features = self.decoder_later_convs[level](self.decoder_first_convs[level](decoder_unpooled[-1]))
            decoder_outputs.append(features)
        return encoder_first, encoder_outputs, decoder_unpooled, decoder_outputs

    def forward(self, image, direct_only=False, with_features=False):
        """MTANOutput for image [N,3,H,W] (H, W multiples of 32), or with `with_features` the pair that
        `forward_with_features` gives (through forward, so that wrappers such as torch.compile see it);
        `direct_only` is accepted for the engine's sake and changes nothing (MTAN has no transfer nets)."""
        outputs, features = self.forward_with_features(image)
        return (outputs, features) if with_features else outputs

    def attended_encoder_features(self, branch, trunk):
        """Task `branch`'s attended encoder output [N,512,H/32,W/32] (after the last pooling) from the
        `shared_trunk` outputs: the original's atten_encoder[i][-1][-1], the first level KD4MTL distills."""
        encoder_first, encoder_outputs, _, _ = trunk
        attended = None
        for level in range(LEVELS):
            mask_input = encoder_first[level] if level == 0 else torch.cat((encoder_first[level], attended), dim=1)
            masked = self.encoder_attention[branch][level](mask_input) * encoder_outputs[level]
            attended = F.max_pool2d(self.encoder_attention_convs[level](masked), kernel_size=2, stride=2)
        return attended

    def attended_decoder_features(self, branch, trunk, encoded):
        """Task `branch`'s attended full-resolution features [N,64,H,W] (its head's input) from the
        `shared_trunk` outputs and its `attended_encoder_features` [N,512,H/32,W/32]: the original's
        atten_decoder[i][-1][-1], the second level KD4MTL distills."""
        _, _, decoder_unpooled, decoder_outputs = trunk
        attended = encoded
        for step, level in enumerate(reversed(range(LEVELS))):
            upsampled = F.interpolate(attended, scale_factor=2, mode="bilinear", align_corners=True)
            upsampled = self.decoder_attention_convs[level](upsampled)
            mask = self.decoder_attention[branch][level](torch.cat((decoder_unpooled[step], upsampled), dim=1))
            attended = mask * decoder_outputs[step]
        return attended

    def forward_with_features(self, image):
        """(MTANOutput as `forward` gives it, {task: (encoder features [N,512,H/32,W/32], decoder features
        [N,64,H,W])}) for image [N,3,H,W] (H, W multiples of 32), in one pass: the task-specific attended
        features KD4MTL distills, which the original's forward returns as `feat` (kd4mtl/model/mtan.py)."""
        check_image_shape(image)
        trunk = self.shared_trunk(image)
        predictions = dict.fromkeys(MTAN_TASKS)
        features = {}
        for branch, task in enumerate(self.tasks):
            encoded = self.attended_encoder_features(branch, trunk)
            features[task] = (encoded, self.attended_decoder_features(branch, trunk, encoded))
            predictions[task] = getattr(self, f"{task}_head")(features[task][1])
        if predictions["normal"] is not None:
            predictions["normal"] = F.normalize(predictions["normal"], p=2, dim=1)
        return MTANOutput(**predictions), features


def check_image_shape(image):
    """Raise ValueError unless image is [N,3,H,W] with H and W multiples of 32, as MTAN's forward requires."""
    height, width = image.shape[-2:]
    if image.dim() != 4 or height % INPUT_MULTIPLE or width % INPUT_MULTIPLE:
        raise ValueError(
            f"image: expected [N,3,H,W] with H and W multiples of {INPUT_MULTIPLE}, got shape "
            f"{tuple(image.shape)}; choose --height/--width accordingly (e.g. 128x256 or 288x384)")
