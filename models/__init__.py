"""Models: the cross-task network and its parts, and the registry of model families."""
from models.decoder import Decoder
from models.encoder import ENCODER_DEPTHS, ResNetEncoder
from models.mtan import MTAN
from models.registry import MODEL_FAMILIES, make_model
from models.transfer_net import TaskTransferNet
from models.xtask_net import XTaskOutput, XTaskTSNet

__all__ = ["Decoder", "ENCODER_DEPTHS", "MODEL_FAMILIES", "MTAN", "ResNetEncoder", "TaskTransferNet",
           "XTaskOutput", "XTaskTSNet", "make_model"]
