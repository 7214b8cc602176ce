"""Models: the cross-task network and its parts."""
from models.decoder import Decoder
from models.encoder import ENCODER_DEPTHS, ResNetEncoder
from models.transfer_net import TaskTransferNet
from models.xtask_net import XTaskOutput, XTaskTSNet

__all__ = ["Decoder", "ENCODER_DEPTHS", "ResNetEncoder", "TaskTransferNet", "XTaskOutput", "XTaskTSNet"]
