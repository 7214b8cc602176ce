"""The model families a run can train, by the name its configuration gives (training.config.ModelConfig):
a new family is a module in models/ plus one entry here."""
from models.adamtnet import AdaMTNet
from models.mtan import MTAN
from models.xtask_net import XTaskTSNet

MODEL_FAMILIES = {"xtask": XTaskTSNet, "mtan": MTAN, "adamtnet": AdaMTNet}


def make_model(family, **arguments):
    """The model of `family` built with `arguments`; ValueError naming an unknown family."""
    if family not in MODEL_FAMILIES:
        raise ValueError(f"model {family!r}: unknown model family; expected one of {', '.join(MODEL_FAMILIES)}")
    return MODEL_FAMILIES[family](**arguments)
