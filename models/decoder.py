"""Task decoder: five up-blocks with skip connections from the encoder stages."""
import torch
from torch import nn

from models.layers import conv_stack, init_weights, upsample_x2


class Decoder(nn.Module):
    """Five up-blocks (3 x [3x3 conv, BatchNorm, ReLU] at `width` channels, then x2 bilinear upsampling),
    then a 1x1 convolution without bias to `out_channels`.

    Block 1 takes stage4; block k > 1 takes concat(block k-1, the encoder stage of the same resolution).
    """

    def __init__(self, encoder_channels, out_channels, width=128):
        super().__init__()
        stage0, stage1, stage2, stage3, stage4 = encoder_channels
        in_channels = (stage4, width + stage3, width + stage2, width + stage1, width + stage0)
        self.blocks = nn.ModuleList(
            nn.Sequential(conv_stack(channels, width, count=3, batch_norm=True), upsample_x2())
            for channels in in_channels)
        self.head = nn.Conv2d(width, out_channels, kernel_size=1, bias=False)
        init_weights(self)

    def forward(self, stages):
        """Prediction [N,out_channels,H,W] from the encoder stages (stage0 [N,C0,H/2,W/2] ... stage4)."""
        skips = stages[-2::-1]
        features = self.blocks[0](stages[-1])
        for block, skip in zip(self.blocks[1:], skips):
            features = block(torch.cat((features, skip), dim=1))
        return self.head(features)
