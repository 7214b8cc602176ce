"""ResNet encoder cut into five stages, with torchvision's ImageNet weights read from local files only."""
import os

import torch
from torch import nn
import torchvision


ENCODER_DEPTHS = (18, 34, 50, 101, 152)


def stage_channels(depth):
    """Output channels of the five encoder stages (stage0 .. stage4) for a ResNet of `depth` layers."""
    expansion = 4 if depth >= 50 else 1
    return (64, 64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion)


def _weights_enum(depth):
    """torchvision's ImageNet weights entry for resnet{depth} (the v1 weights, as the original used)."""
    return getattr(torchvision.models, f"ResNet{depth}_Weights").IMAGENET1K_V1


def pretrained_weights_path(depth, weights_file=None):
    """Where the ImageNet weights of resnet{depth} are expected: `weights_file` if given, otherwise the
    file torchvision would download into the local torch hub cache (`$TORCH_HOME/hub/checkpoints`)."""
    if weights_file is not None:
        return os.fspath(weights_file)
    file_name = os.path.basename(_weights_enum(depth).url)
    return os.path.join(torch.hub.get_dir(), "checkpoints", file_name)


class ResNetEncoder(nn.Module):
    """torchvision resnet{18,34,50,101,152} as five stages.

    stage0 = conv1+bn1+relu (1/2), stage1 = maxpool+layer1 (1/4), stage2 = layer2 (1/8),
    stage3 = layer3 (1/16), stage4 = layer4 (1/32); channels from `stage_channels(depth)`.
    """

    def __init__(self, enc_layers=34, pretrained=False, weights_file=None):
        super().__init__()
        if enc_layers not in ENCODER_DEPTHS:
            raise ValueError(f"enc_layers {enc_layers!r}: ResNet depth not available; expected one of {ENCODER_DEPTHS}")
        depth = self.depth = enc_layers
        self.channels = stage_channels(depth)
        backbone = getattr(torchvision.models, f"resnet{depth}")(weights=None)
        if pretrained:
            state = self._load_imagenet_state(depth, weights_file)
            try:
                backbone.load_state_dict(state)
            except RuntimeError as error:
                raise ValueError(f"use_pretrain: {pretrained_weights_path(depth, weights_file)} is not a resnet{depth} "
                                 f"state dict ({str(error).splitlines()[0]} {str(error).splitlines()[1][:200]})") from None
        self.stage0 = nn.Sequential(backbone.conv1, backbone.bn1, backbone.relu)
        self.stage1 = nn.Sequential(backbone.maxpool, backbone.layer1)
        self.stage2 = backbone.layer2
        self.stage3 = backbone.layer3
        self.stage4 = backbone.layer4

    @staticmethod
    def _load_imagenet_state(depth, weights_file):
        """The ImageNet state dict of resnet{depth} from local disk; a clear error when it is absent."""
        path = pretrained_weights_path(depth, weights_file)
        if os.path.isdir(path):
            raise ValueError(f"pretrained_weights {path}: that is a folder; expected the resnet{depth} weights file "
                             f"itself (e.g. {os.path.join(path, os.path.basename(pretrained_weights_path(depth)))})")
        if not os.path.isfile(path):
            expected = os.path.basename(pretrained_weights_path(depth))
            raise ValueError(
                f"use_pretrain: ImageNet weights for resnet{depth} not found at {path}. Expected the "
                f"torchvision file {expected} in {os.path.dirname(pretrained_weights_path(depth))} "
                f"(the torch hub cache; set TORCH_HOME to move it) or an explicit file path. "
                f"Nothing is downloaded at run time; copy the file there, or train without --use_pretrain.")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise ValueError(f"use_pretrain: cannot read ResNet weights from {path}: {error}") from error
        if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
            raise ValueError(f"use_pretrain: {path} holds a {type(state).__name__}, not a state dict of tensors "
                             f"(expected torchvision's resnet{depth} weights)")
        return state

    @property
    def last_shared_stage(self):
        """The stage whose output is the encoder's last activation, the one that holds `last_shared_weight`
        (stage4); GradNorm records that output to split the gradient by task there."""
        return self.stage4

    @property
    def last_shared_weight(self):
        """Weight tensor of the last convolution of the encoder's last block (GradNorm's shared layer)."""
        last_block = self.stage4[-1]
        last_conv = last_block.conv3 if hasattr(last_block, "conv3") else last_block.conv2
        return last_conv.weight

    @property
    def last_block_conv2_weight(self):
        """Weight tensor of conv2 of the encoder's last block (the original code's GradNorm layer)."""
        return self.stage4[-1].conv2.weight

    def forward(self, image):
        """Five feature maps, from image [N,3,H,W]: stage0 [N,64,H/2,W/2] ... stage4 [N,C4,H/32,W/32]."""
        stage0 = self.stage0(image)
        stage1 = self.stage1(stage0)
        stage2 = self.stage2(stage1)
        stage3 = self.stage3(stage2)
        stage4 = self.stage4(stage3)
        return stage0, stage1, stage2, stage3, stage4
