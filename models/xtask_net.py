"""XTaskTSNet: shared ResNet encoder, segmentation and depth decoders, and two TaskTransferNets."""
from typing import NamedTuple, Optional

import torch
from torch import nn

from models.decoder import Decoder
from models.encoder import ResNetEncoder
from models.transfer_net import TaskTransferNet

INPUT_MULTIPLE = 32
TASKS = ("segmentation", "depth")


class XTaskOutput(NamedTuple):
    """The network's four predictions; the transferred ones are None when run with `direct_only` or
    for a single-task network, whose other task's direct prediction is None too.

    segmentation, transferred_segmentation: logits [N,C,H,W]; depth, transferred_depth: [N,1,H,W] in the
    target's units (disparity/256 on Cityscapes, metres on NYUv2).
    """

    segmentation: Optional[torch.Tensor]
    transferred_segmentation: Optional[torch.Tensor]
    depth: Optional[torch.Tensor]
    transferred_depth: Optional[torch.Tensor]


class XTaskTSNet(nn.Module):
    """Cross-task network: encoder -> segmentation and depth decoders -> TaskTransferNets.

    `transferred_depth` = segmentation->depth net applied to `segmentation`;
    `transferred_segmentation` = depth->segmentation net applied to `depth`.
    With `single_task` ("segmentation" or "depth") only the encoder and that task's decoder are built
    (the other decoder and the transfer nets are None), for the single-task baselines.
    """

    def __init__(self, enc_layers=34, num_classes=7, batch_norm=False, wider_ttnet=False,
                 use_pretrain=False, pretrained_weights=None, single_task=None):
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes {num_classes!r}: expected an integer >= 2")
        if single_task is not None and single_task not in TASKS:
            raise ValueError(f"single_task {single_task!r}: expected one of {', '.join(TASKS)} (or None for both)")
        self.num_classes = num_classes
        self.tasks = TASKS if single_task is None else (single_task,)
        self.encoder = ResNetEncoder(enc_layers, pretrained=use_pretrain, weights_file=pretrained_weights)
        self.segmentation_decoder = None
        self.depth_decoder = None
        self.segmentation_to_depth = None
        self.depth_to_segmentation = None
        if "segmentation" in self.tasks:
            self.segmentation_decoder = Decoder(self.encoder.channels, num_classes)
        if "depth" in self.tasks:
            self.depth_decoder = Decoder(self.encoder.channels, 1)
        if single_task is None:
            self.segmentation_to_depth = TaskTransferNet(num_classes, 1, batch_norm=batch_norm,
                                                         wider=wider_ttnet, log_softmax_input=True)
            self.depth_to_segmentation = TaskTransferNet(1, num_classes, batch_norm=batch_norm,
                                                         wider=wider_ttnet)

    @property
    def last_shared_stage(self):
        """The module whose output is the last activation both tasks share (the encoder's stage4, which
        holds `last_shared_weight`); GradNorm records that output to split the gradient by task there."""
        return self.encoder.last_shared_stage

    @property
    def last_shared_weight(self):
        """Weight of the last conv of the encoder's last block: the layer GradNorm measures gradients at."""
        return self.encoder.last_shared_weight

    @property
    def last_block_conv2_weight(self):
        """Weight of conv2 of the encoder's last block: where the original code's GradNorm measures."""
        return self.encoder.last_block_conv2_weight

    def shared_parameters(self):
        """The parameters every task's loss reaches: the encoder's (PCGrad's paper form projects their
        gradients)."""
        return list(self.encoder.parameters())

    def forward(self, image, direct_only=False):
        """XTaskOutput for image [N,3,H,W] (H, W multiples of 32); `direct_only` skips the transfer nets.
        A single-task network gives None for the other task and for both transferred predictions."""
        height, width = image.shape[-2:]
        if image.dim() != 4 or height % INPUT_MULTIPLE or width % INPUT_MULTIPLE:
            raise ValueError(
                f"image: expected [N,3,H,W] with H and W multiples of {INPUT_MULTIPLE}, got shape "
                f"{tuple(image.shape)}; choose --height/--width accordingly (e.g. 128x256 or 288x384)")
        stages = self.encoder(image)
        segmentation = None if self.segmentation_decoder is None else self.segmentation_decoder(stages)
        depth = None if self.depth_decoder is None else self.depth_decoder(stages)
        if direct_only or len(self.tasks) == 1:
            return XTaskOutput(segmentation, None, depth, None)
        return XTaskOutput(
            segmentation=segmentation,
            transferred_segmentation=self.depth_to_segmentation(depth),
            depth=depth,
            transferred_depth=self.segmentation_to_depth(segmentation),
        )
