"""KD4MTL's feature distillation (Li and Bilen, "Knowledge Distillation for Multi-task Learning", ECCV-W
2020) as the original code ran it with MTAN (akarimoon/xtask_mt 167ee59, model/kd4mtl/model_mtan_kdmtl_2tasks.py
and model_mtan_kdmtl.py): per task, the multi-task student's attended features at two levels (the attended
encoder output and the attended last decoder level, `MTAN.forward_with_features`) go through that task's
adaptors (1x1 convolutions without bias), are normalised along the channels and pulled, by their squared
distance, to the equally normalised features of that task's frozen single-task MTAN teacher."""
from typing import Dict, NamedTuple

import torch
from torch import nn

# Channels of the distilled levels: the attended encoder output [N,512,H/32,W/32], then the attended last
# decoder level [N,64,H,W] (the original's `transformer`: conv1 512 -> 512, conv2 64 -> 64).
FEATURE_CHANNELS = (512, 64)
NORMALISATION_EPSILON = 1e-6
ADAPTOR_LEARNING_RATE = 0.1  # the original's --alr default
ADAPTOR_WEIGHT_DECAY = 5e-4


def original_task_weights(tasks):
    """{task: weight of its distillation loss}: 1 for segmentation and depth, 2 for surface normals (the
    original's lambda_: [1, 1] for two tasks, [1, 1, 2] for three)."""
    return {task: 2.0 if task == "normal" else 1.0 for task in tasks}


class TaskAdaptors(nn.Module):
    """Per task, one 1x1 convolution without bias per distilled level (channels -> channels), in the
    original's order (task by task, levels in `channels` order) and with PyTorch's default initialisation,
    as the original's `transformer` modules."""

    def __init__(self, tasks, channels=FEATURE_CHANNELS):
        super().__init__()
        self.tasks = tuple(tasks)
        self.adaptors = nn.ModuleDict({
            task: nn.ModuleList(nn.Conv2d(count, count, kernel_size=1, bias=False) for count in channels)
            for task in self.tasks})

    def forward(self, task, features):
        """`task`'s adapted features: a tuple with one [N,C,h,w] per level, as `features` (C as `channels`)."""
        return tuple(adaptor(level_features)
                     for adaptor, level_features in zip(self.adaptors[task], features, strict=True))


def channel_normalised(features, epsilon=NORMALISATION_EPSILON):
    """features [N,C,h,w] divided at every pixel by sqrt(sum over channels of features^2 + epsilon)."""
    return features / (features.pow(2).sum(dim=1, keepdim=True) + epsilon).sqrt()


def level_distance(student, teacher):
    """Squared distance over channels of student and teacher [N,C,h,w], averaged over N, h and w: a scalar."""
    return (student - teacher).pow(2).sum(dim=1).mean()


class DistillationTerms(NamedTuple):
    """total: the weighted sum of the per-task losses (a scalar tensor); per_task: {task: its loss summed
    over the levels, unweighted (the original's logged ds, dd, dn)}."""

    total: torch.Tensor
    per_task: Dict[str, torch.Tensor]


def distillation_loss(student_features, teacher_features, adaptors, task_weights):
    """DistillationTerms for {task: per-level student features} and {task: per-level teacher features}
    (tuples of [N,C,h,w], as `MTAN.forward_with_features` gives them), TaskAdaptors and {task: weight}:
    sum over tasks of weight * sum over levels of level_distance(channel_normalised(adaptor(student)),
    channel_normalised(teacher)), computed in float32; the teacher features are detached."""
    for name, features in (("student_features", student_features), ("teacher_features", teacher_features),
                           ("task_weights", task_weights)):
        if set(features) != set(adaptors.tasks):
            raise ValueError(f"{name}: expected the tasks {adaptors.tasks}, got {tuple(features)}")
    per_task = {}
    for task in adaptors.tasks:
        adapted = adaptors(task, student_features[task])
        per_task[task] = sum(
            level_distance(channel_normalised(student.float()), channel_normalised(teacher.detach().float()))
            for student, teacher in zip(adapted, teacher_features[task], strict=True))
    total = sum(task_weights[task] * per_task[task] for task in adaptors.tasks)
    return DistillationTerms(total, per_task)


def teacher_features(teachers, image):
    """{task: (encoder features [N,512,H/32,W/32], decoder features [N,64,H,W])} of each single-task MTAN
    teacher ({task: MTAN(num_classes, (task,))}) on image [N,3,H,W], computed without gradients. Each
    teacher's mode is left as it is: the original never puts its teachers in eval mode, so their BatchNorm
    normalises by the batch's statistics and keeps updating its running statistics."""
    with torch.no_grad():
        return {task: teacher.forward_with_features(image)[1][task] for task, teacher in teachers.items()}


def adaptor_optimizer(adaptors, learning_rate=ADAPTOR_LEARNING_RATE):
    """The original's optimizer of the adaptors: Adam (default betas and eps) with L2 weight decay 5e-4,
    learning rate 0.1 by default and no scheduler."""
    return torch.optim.Adam(adaptors.parameters(), lr=learning_rate, weight_decay=ADAPTOR_WEIGHT_DECAY)
