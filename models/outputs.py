"""What the networks without transfer nets (MTAN, AdaMT-Net) share: their output and their argument checks."""
from typing import NamedTuple, Optional

import torch


class DirectOutput(NamedTuple):
    """The direct predictions of a network without transfer nets, None for a task it was not built for.

    segmentation: logits [N,C,H,W]; depth: [N,1,H,W] in the target's units (as trained; no activation);
    normal: [N,3,H,W], unit length along dim 1. `transferred_segmentation` and `transferred_depth` are
    always None, so code written for models.XTaskOutput reads a DirectOutput too.
    """

    segmentation: Optional[torch.Tensor]
    depth: Optional[torch.Tensor]
    normal: Optional[torch.Tensor]

    @property
    def transferred_segmentation(self):
        """None: no depth->segmentation transfer net."""
        return None

    @property
    def transferred_depth(self):
        """None: no segmentation->depth transfer net."""
        return None


def check_classes_and_tasks(num_classes, tasks, supported_task_sets):
    """ValueError naming the argument unless num_classes is an integer >= 2 and tuple(tasks) one of
    `supported_task_sets`."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes {num_classes!r}: expected an integer >= 2")
    if isinstance(tasks, str) or tuple(tasks) not in supported_task_sets:
        raise ValueError(f"tasks {tasks!r}: expected one of "
                         f"{', '.join(repr(task_set) for task_set in supported_task_sets)}")
