"""TaskTransferNet: a small U-Net that maps one task's prediction to the other task."""
import torch
from torch import nn

from models.layers import conv_stack, init_weights, upsample_x2


class TaskTransferNet(nn.Module):
    """Three down blocks (2 x [3x3 conv (+BN) + ReLU], 2x2 max-pool) of widths 64/128/256, three up blocks
    (x2 bilinear upsampling, then 2 x [3x3 conv (+BN) + ReLU]) to 128/64/64 with skips from the pooled
    outputs of down blocks 2 and 1, then a 1x1 convolution without bias. `wider` doubles every width.

    With `log_softmax_input` (the segmentation -> depth net) the input logits go through log-softmax
    over channels first; the depth -> segmentation net takes the raw depth.
    """

    def __init__(self, in_channels, out_channels, batch_norm=False, wider=False, log_softmax_input=False):
        super().__init__()
        width1, width2, width3 = (128, 256, 512) if wider else (64, 128, 256)
        self.log_softmax_input = log_softmax_input
        self.down1 = conv_stack(in_channels, width1, count=2, batch_norm=batch_norm)
        self.down2 = conv_stack(width1, width2, count=2, batch_norm=batch_norm)
        self.down3 = conv_stack(width2, width3, count=2, batch_norm=batch_norm)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.upsample = upsample_x2()
        self.up1 = conv_stack(width3, width2, count=2, batch_norm=batch_norm)
        self.up2 = conv_stack(width2 + width2, width1, count=2, batch_norm=batch_norm)
        self.up3 = conv_stack(width1 + width1, width1, count=2, batch_norm=batch_norm)
        self.head = nn.Conv2d(width1, out_channels, kernel_size=1, bias=False)
        init_weights(self)

    def forward(self, prediction):
        """Transferred prediction [N,out_channels,H,W] from one task's prediction [N,in_channels,H,W]
        (H and W multiples of 8)."""
        if self.log_softmax_input:
            prediction = torch.log_softmax(prediction, dim=1)
        down1 = self.pool(self.down1(prediction))
        down2 = self.pool(self.down2(down1))
        down3 = self.pool(self.down3(down2))
        features = self.up1(self.upsample(down3))
        features = self.up2(self.upsample(torch.cat((features, down2), dim=1)))
        features = self.up3(self.upsample(torch.cat((features, down1), dim=1)))
        return self.head(features)
