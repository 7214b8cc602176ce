"""Building blocks shared by the decoders and the TaskTransferNets."""
from torch import nn


def conv_relu(in_channels, out_channels, batch_norm):
    """3x3 convolution (with bias, padding 1), optional BatchNorm, ReLU."""
    layers = [nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.ReLU(inplace=True))
    return layers


def conv_stack(in_channels, out_channels, count, batch_norm):
    """`count` consecutive `conv_relu` layers, the first mapping in_channels -> out_channels."""
    layers = []
    for index in range(count):
        layers += conv_relu(in_channels if index == 0 else out_channels, out_channels, batch_norm)
    return nn.Sequential(*layers)


def upsample_x2():
    """Bilinear x2 upsampling with align_corners=True, as in the original."""
    return nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)


def init_weights(module):
    """Xavier-normal conv weights, zero conv biases, BatchNorm weight 1 and bias 0, for every submodule."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.xavier_normal_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)
