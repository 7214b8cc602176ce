"""AdaMT-Net (Jha et al., CVPR Workshops 2020), the multi-task baseline of the original code
(model/adamtnet/models.py: AdaMTNet, AdaMTNet3tasks), with this repository's output conventions."""

import torch
from torch import nn
from torch.nn import functional as F

from models.layers import upsample_x2
from models.outputs import DirectOutput, check_classes_and_tasks

ADAMTNET_TASKS = ("segmentation", "depth", "normal")
SUPPORTED_TASK_SETS = (("segmentation", "depth"), ("segmentation", "depth", "normal"))
ENCODER_CHANNELS = (64, 128, 256, 512)
BOTTLENECK_CHANNELS = 1024
LEVELS = len(ENCODER_CHANNELS)
INPUT_MULTIPLE = 2 ** LEVELS


AdaMTNetOutput = DirectOutput  # its predictions: segmentation logits, depth, unit normals


def head_channels(task, num_classes):
    """Output channels of `task`'s prediction: num_classes logits, 1 depth value or 3 normal components."""
    return {"segmentation": num_classes, "depth": 1, "normal": 3}[task]


def conv_bn(in_channels, out_channels, activation):
    """3x3 convolution (padding 1, with bias), BatchNorm, then the `activation` module."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
                         nn.BatchNorm2d(out_channels), activation)


def encoder_block(in_channels, out_channels):
    """Two conv_bn with ReLU, in_channels -> out_channels -> out_channels (the original's EncoderConvBlock)."""
    return nn.Sequential(conv_bn(in_channels, out_channels, nn.ReLU(inplace=True)),
                         conv_bn(out_channels, out_channels, nn.ReLU(inplace=True)))


class AttentionDecoderBlock(nn.Module):
    """The original's DecoderConvBlock: upsample x2, concatenate the encoder's skip features, two conv_bn
    with sigmoid (first, second), attention = weight * first * second with a learned per-position weight,
    output = Dropout2d(concat(second, attention)) with twice the convs' channels."""

    def __init__(self, in_channels, out_channels, weight_shape):
        """in_channels: upsampled input plus skip channels; weight_shape: (positions, out_channels, h, w)
        of the attention weight, drawn uniformly from [0, 1) as in the original."""
        super().__init__()
        self.first_conv = conv_bn(in_channels, out_channels, nn.Sigmoid())
        self.second_conv = conv_bn(out_channels, out_channels, nn.Sigmoid())
        self.dropout = nn.Dropout2d()
        self.upsample = upsample_x2()
        self.attention_weight = nn.Parameter(torch.rand(weight_shape))

    def position_weights(self, batch):
        """Attention weights [batch,C,h,w] while training (sample i gets weight i modulo the number of
        positions), [1,C,h,w] in eval mode (weight 0 for every sample)."""
        if not self.training:
            return self.attention_weight[:1]
        positions = self.attention_weight.shape[0]
        return self.attention_weight.repeat(-(-batch // positions), 1, 1, 1)[:batch]

    def forward(self, features, skip):
        """features [N,C_in,h/2,w/2] and skip [N,C_skip,h,w] -> [N,2*out_channels,h,w]."""
        concatenated = torch.cat((self.upsample(features), skip), dim=1)
        first = self.first_conv(concatenated)
        second = self.second_conv(first)
        attention = (self.position_weights(first.shape[0]) * first) * second
        return self.dropout(torch.cat((second, attention), dim=1))


class TaskDecoder(nn.Module):
    """One task's decoder (the original's DecoderSequential): four AttentionDecoderBlocks, deepest first,
    each fed the encoder block output of its resolution, then a 1x1 convolution without bias."""

    def __init__(self, out_channels, batch_size, height, width):
        """Attention weights for `batch_size` positions at an input of height x width."""
        super().__init__()
        self.blocks = nn.ModuleList()
        for level in reversed(range(LEVELS)):
            below = BOTTLENECK_CHANNELS if level == LEVELS - 1 else ENCODER_CHANNELS[level + 1]
            conv_channels = ENCODER_CHANNELS[level] // 2
            weight_shape = (batch_size, conv_channels, height // 2 ** level, width // 2 ** level)
            self.blocks.append(AttentionDecoderBlock(below + ENCODER_CHANNELS[level], conv_channels, weight_shape))
        self.head = nn.Conv2d(ENCODER_CHANNELS[0], out_channels, kernel_size=1, bias=False)

    def forward(self, bottleneck, block_outputs):
        """bottleneck [N,1024,H/16,W/16] and the encoder block outputs (level 0 = [N,64,H,W] first) ->
        the head's output [N,out_channels,H,W]."""
        features = bottleneck
        for block, skip in zip(self.blocks, reversed(block_outputs)):
            features = block(features, skip)
        return self.head(features)


class AdaMTNet(nn.Module):
    """AdaMT-Net: a shared encoder of four conv blocks (64, 128, 256, 512 channels, each block fed the
    previous one's output, Dropout2d and max-pooled, concatenated with every earlier block's output
    max-pooled to its resolution) and a 1x1 bottleneck conv to 1024 channels at 1/16 resolution; per
    task, a decoder of four attention blocks (upsampling, skip features of the encoder block at that
    resolution, two conv-BatchNorm-sigmoid layers and a learned attention weight) and a 1x1 head.

    `tasks` (a tuple, kept as `model.tasks`) is ("segmentation", "depth") (the original's AdaMTNet) or
    ("segmentation", "depth", "normal") (AdaMTNet3tasks). `batch_size`, `height` and `width` have the
    original's defaults (its Cityscapes script builds AdaMTNet(); its NYUv2 scripts pass 13 classes,
    batch_size=4, height=288, width=384). The layers are registered in the original's order and
    initialised as there (PyTorch's defaults; attention weights uniform in [0, 1)), so its parameters and
    state-dict values load by position, with these differences from the original's class:

    - Attention weights depend on the batch size: each decoder block holds one weight per batch position,
      [batch_size, C, height/2^k, width/2^k] (the original's W), which the original slices as W[:N] for a
      batch of N. The parameter keeps that shape (so the original's weights load when the network is
      built with the batch size it was trained with). While training, sample i uses weight
      i mod batch_size: identical to the original for batches of at most batch_size (the last, smaller
      batch of an epoch included), and usable for larger ones, where the original fails. In eval mode
      every sample uses weight 0: the original's test protocol (batch size 1), so that a prediction
      depends neither on the sample's position in the batch nor on the batch size; the original's
      eval-mode forward of a batch of N > 1 (its validation loss) used W[:N] instead.
    - Attention weights also fix the input size: the network takes images of exactly height x width
      (multiples of 16), the size it was built for, as the original does (other sizes fail there).
    - The three-task network's normals head has 3 output channels, normalised to unit length along
      dim 1 (F.normalize, clamped at 1e-12). The original's has one channel, which its division by the
      L2 norm turns into +-1 everywhere (NaN at 0), trained by an L1 loss broadcast against the 3-channel
      target: not a usable normal. Our 1x1 head (no bias) thus has 64 x 3 weights instead of 64 x 1: 128
      parameters more than the original, and that one state-dict entry does not load from it.
    - Segmentation is logits and depth is the head's output, as in the original (trained with
      CrossEntropyLoss and L1 there); the original's adaptive loss weighting (AdaLSP, in its training
      scripts) is not part of the model: this repository's balancers (losses.balancing) take its place.
    - The original's modules without parameters that its forward never calls (AdaMTNet.up,
      EncoderSequential's dropout and pool) are left out, and its pooling of an earlier block's output
      by 2^k is one max-pooling of kernel 2^k instead of k of kernel 2 (the same maxima); its
      in_features (3), bn_features (1024) and mid_features (ignored there) are fixed.

    GradNorm measures at the bottleneck conv (`last_shared_stage`): the last layer of the shared encoder,
    whose output [N,1024,H/16,W/16] every task's decoder starts from. The original code has no GradNorm
    for AdaMT-Net, so both of the balancers' forms (`last_shared_weight`, `last_block_conv2_weight`) name
    that conv's weight; `shared_parameters()` is the encoder (the original's AdaLSP treats the same
    parameters as shared). AdaLSP (`--balancing adalsp`) reads each task's decoder through
    `decoder_parameters(task)` and `decoder_first_layer_weight(task)`.
    """

    def __init__(self, num_classes, tasks=("segmentation", "depth"), batch_size=8, height=128, width=256):
        """num_classes >= 2 segmentation logits; tasks one of SUPPORTED_TASK_SETS; attention weights for
        batch_size positions and images of height x width (positive multiples of 16)."""
        super().__init__()
        check_classes_and_tasks(num_classes, tasks, SUPPORTED_TASK_SETS)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size {batch_size!r}: expected an integer >= 1")
        for name, size in (("height", height), ("width", width)):
            if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % INPUT_MULTIPLE:
                raise ValueError(f"{name} {size!r}: expected a positive multiple of {INPUT_MULTIPLE}")
        self.num_classes = num_classes
        self.tasks = tuple(tasks)
        self.batch_size = batch_size
        self.height = height
        self.width = width
        block_inputs = [3] + [ENCODER_CHANNELS[level - 1] + sum(ENCODER_CHANNELS[:level - 1])
                              for level in range(1, LEVELS)]
        self.encoder_blocks = nn.ModuleList(
            encoder_block(block_inputs[level], ENCODER_CHANNELS[level]) for level in range(LEVELS))
        self.bottleneck = nn.Conv2d(sum(ENCODER_CHANNELS), BOTTLENECK_CHANNELS, kernel_size=1)
        self.dropout = nn.Dropout2d()
        self.segmentation_decoder = None
        self.depth_decoder = None
        self.normal_decoder = None
        for task in self.tasks:
            setattr(self, f"{task}_decoder",
                    TaskDecoder(head_channels(task, num_classes), batch_size, height, width))

    @property
    def last_shared_stage(self):
        """The bottleneck conv: its output [N,1024,H/16,W/16] is the last activation the tasks share;
        GradNorm records it to split the gradient by task there."""
        return self.bottleneck

    @property
    def last_shared_weight(self):
        """Weight [1024,960,1,1] of the bottleneck conv, the last shared layer: where GradNorm measures."""
        return self.bottleneck.weight

    @property
    def last_block_conv2_weight(self):
        """The same weight as `last_shared_weight`, for GradNorm's original form (no AdaMT-Net layer of its own)."""
        return self.last_shared_weight

    def shared_parameters(self):
        """The parameters every task's loss reaches: the encoder blocks' and the bottleneck's (PCGrad's
        paper form projects their gradients); the decoders are task-specific."""
        return list(self.encoder_blocks.parameters()) + list(self.bottleneck.parameters())

    def task_decoder(self, task):
        """The TaskDecoder of `task` (one of `tasks`); a ValueError naming the model's tasks otherwise."""
        if task not in self.tasks:
            raise ValueError(f"task {task!r}: this AdaMTNet has decoders for {', '.join(self.tasks)}")
        return getattr(self, f"{task}_decoder")

    def decoder_parameters(self, task):
        """The parameters of `task`'s decoder (its attention blocks and head): only that task's loss reaches
        them (AdaLSP scales their gradients by task)."""
        return list(self.task_decoder(task).parameters())

    def decoder_first_layer_weight(self, task):
        """Weight [C_out, C_in, 3, 3] of the first convolution of `task`'s decoder (its deepest attention
        block's first conv, the original's dec_block1.conv1[0]): where AdaLSP measures the task's gradient."""
        return self.task_decoder(task).blocks[0].first_conv[0].weight

    def shared_encoder(self, image):
        """image [N,3,H,W] -> (encoder block outputs, level k [N,C_k,H/2^k,W/2^k] for k = 0..3,
        bottleneck [N,1024,H/16,W/16])."""
        block_outputs = []
        features = image
        for block in self.encoder_blocks:
            block_outputs.append(block(features))
            earlier = [F.max_pool2d(output, kernel_size=2 ** distance)
                       for distance, output in enumerate(reversed(block_outputs[:-1]), start=2)]
            features = torch.cat([F.max_pool2d(self.dropout(block_outputs[-1]), kernel_size=2)] + earlier, dim=1)
        return block_outputs, self.bottleneck(features)

    def forward(self, image, direct_only=False):
        """AdaMTNetOutput for image [N,3,height,width] (the size the network was built for); `direct_only`
        is accepted for the engine's sake and changes nothing (AdaMT-Net has no transfer nets)."""
        if image.dim() != 4 or tuple(image.shape[-2:]) != (self.height, self.width):
            raise ValueError(
                f"image: expected [N,3,{self.height},{self.width}] (the size this AdaMTNet was built for: its "
                f"attention weights have that size), got shape {tuple(image.shape)}; build it with the "
                f"run's height and width (e.g. 128x256 or 288x384)")
        block_outputs, bottleneck = self.shared_encoder(image)
        predictions = dict.fromkeys(ADAMTNET_TASKS)
        for task in self.tasks:
            predictions[task] = getattr(self, f"{task}_decoder")(bottleneck, block_outputs)
        if predictions["normal"] is not None:
            predictions["normal"] = F.normalize(predictions["normal"], p=2, dim=1)
        return AdaMTNetOutput(**predictions)
