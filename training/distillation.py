"""KD4MTL in training: the single-task MTAN teachers read from their experiment folders (--distill_from), the
per-task adaptors with their own optimizer (--adaptor_lr), and the distillation loss of a training step.

A teacher is a finished run of this repository, `--single_task TASK --model mtan`, with the student's
settings that a single-task baseline shares with its multi-task runs (BASELINE_MATCH: dataset, class count,
input size); its best.pt is loaded, frozen and kept in eval mode (the paper's fixed
teachers; the original left them in train mode, see docs/comparisons.md). The teachers are not part of the
student's checkpoints: a resumed run reads them again from the same folders. The adaptors and their Adam
are, in last.pt (`Distillation.state_dict`).
"""
import os
from dataclasses import dataclass

import torch

from losses.distillation import (TaskAdaptors, adaptor_optimizer, distillation_loss, original_task_weights,
                                 teacher_features)
from models import make_model
from training.config import BASELINE_MATCH, keys_with
from training.recorder import load_checkpoint, read_run
from utils.errors import UserInputError

def teacher_problem(folder, task, config):
    """Why the experiment `folder` cannot be the `task` teacher of the run `config` (a RunConfig), or None."""
    if not os.path.isdir(folder):
        return f"{folder} is not an experiment folder (not found)"
    record = read_run(folder)
    if record.config is None or not record.finished:
        return f"{folder} is not a finished run (status: {record.status or 'no config.json'})"
    teacher = record.config
    if teacher.model.family != "mtan" or teacher.model.single_task != task:
        return (f"{folder} is a {teacher.model.family} run of {teacher.model.single_task or 'several tasks'}; "
                f"expected a single-task MTAN run of {task} (--single_task {task} --model mtan)")
    for key in keys_with(BASELINE_MATCH):
        if teacher[key] != config[key]:
            return f"{folder} was trained with {key} {teacher[key]}; this run has {key} {config[key]}"
    if "best.pt" not in record.checkpoints:
        return f"{folder} holds no checkpoints/best.pt"
    return None


def check_teachers(config):
    """A UserInputError naming --distill_from when a teacher folder of `config` does not fit (see
    `teacher_problem`); cheap (reads JSON files), so a run checks it before loading any data."""
    for task, folder in zip(config.model.trained_tasks(), config.model.mtan.distill_from):
        problem = teacher_problem(folder, task, config)
        if problem is not None:
            raise UserInputError(f"--distill_from (the {task} teacher): {problem}")


def load_teacher(folder, task, device):
    """The frozen single-task MTAN of `folder`'s best.pt for `task`, in eval mode on `device`."""
    checkpoint = load_checkpoint(os.path.join(folder, "checkpoints", "best.pt"), "cpu")
    arguments = checkpoint["model_arguments"]
    if checkpoint["model_family"] != "mtan" or tuple(arguments.get("tasks", ())) != (task,):
        raise UserInputError(f"--distill_from (the {task} teacher): {folder}'s best.pt holds a "
                             f"{checkpoint['model_family']} model of {arguments.get('tasks')}; expected MTAN of {task}")
    teacher = make_model("mtan", **arguments)
    teacher.load_state_dict(checkpoint["model"])
    teacher.requires_grad_(False)
    return teacher.to(device).eval()


@dataclass
class Distillation:
    """KD4MTL's training-time parts: {task: frozen teacher}, the per-task adaptors, their optimizer and
    {task: weight} of the per-task distillation losses (the original's 1, 1, 2)."""

    teachers: dict
    adaptors: TaskAdaptors
    optimizer: torch.optim.Optimizer
    task_weights: dict

    def loss(self, student_features, image):
        """The weighted distillation loss (scalar tensor) of the student's {task: per-level features}
        (MTAN.forward_with_features) against the teachers' on image [N,3,H,W]."""
        targets = teacher_features(self.teachers, image)
        return distillation_loss(student_features, targets, self.adaptors, self.task_weights).total

    def state_dict(self):
        """The adaptors' weights and their optimizer's state (the teachers are read from their folders)."""
        return {"adaptors": self.adaptors.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state):
        """Restore what `state_dict` gave."""
        self.adaptors.load_state_dict(state["adaptors"])
        self.optimizer.load_state_dict(state["optimizer"])


def build_distillation(config, device):
    """The Distillation of `config` on `device` (its teachers checked and loaded), or None without
    --distill_from. The adaptors are initialised from the run's seed, after the student."""
    folders = config.model.mtan.distill_from
    if not folders:
        return None
    check_teachers(config)
    tasks = config.model.trained_tasks()
    teachers = {task: load_teacher(folder, task, device) for task, folder in zip(tasks, folders)}
    return distillation_from(teachers, config.model.mtan.adaptor_lr, device)


def distillation_from(teachers, adaptor_lr, device):
    """The Distillation of {task: frozen teacher on `device`} (in task order): new adaptors on `device`,
    their Adam at `adaptor_lr`, the original's task weights."""
    adaptors = TaskAdaptors(tuple(teachers)).to(device)
    return Distillation(teachers, adaptors, adaptor_optimizer(adaptors, adaptor_lr), original_task_weights(tuple(teachers)))
