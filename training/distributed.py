"""A run under torchrun: what the number of processes allows, and the model in DistributedDataParallel
(SyncBatchNorm on request).

Every process runs the same loop on its shard of each batch (data.sampling); rank 0 alone prints and
writes (its recorder has the experiment folder, the others' has none).
"""
import dataclasses
import inspect

import torch

from utils.errors import UserInputError


def check_process_count(config, setup, device):
    """UserInputError when `config` (training.config.RunConfig) cannot run on `device` with
    setup.world_size processes: --sync_bn off CUDA, a --batch_size (the global batch) that the processes
    cannot split evenly, or GradNorm's original form (three backward passes a step, which DDP cannot
    average), PCGrad or KD4MTL on several processes."""
    if config.optimization.sync_bn and device.type != "cuda":
        raise UserInputError(f"--sync_bn: torch's SyncBatchNorm runs on CUDA only and this run is on {device}; "
                             "drop --sync_bn (each process then normalises its own images)")
    if not setup.is_distributed:
        return
    batch_size, balancing = config.data.batch_size, config.balancing
    if batch_size % setup.world_size:
        raise UserInputError(f"--batch_size {batch_size} is the global batch, split over the "
                             f"{setup.world_size} processes torchrun started: expected a multiple of "
                             f"{setup.world_size}")
    if not config.run.infer_only and balancing.method == "pcgrad":
        raise UserInputError(f"--balancing pcgrad back-propagates once per task, which DistributedDataParallel "
                             f"does not average over the {setup.world_size} processes: run it in one process")
    if not config.run.infer_only and config.model.mtan.distill_from:
        raise UserInputError(f"--distill_from (KD4MTL) trains its adaptors outside DistributedDataParallel, "
                             f"which would not average them over the {setup.world_size} processes: run it in "
                             "one process")
    if not config.run.infer_only and balancing.method == "gradnorm" and balancing.gradnorm_form == "original":
        raise UserInputError(f"--gradnorm_form original back-propagates three times per step, which "
                             f"DistributedDataParallel cannot average over the {setup.world_size} processes: "
                             "use --gradnorm_form paper, or run it in one process")


def distributed_parts(parts, setup, device, sync_batch_norm):
    """(parts, training_parts) for a run of setup.world_size processes. `parts` holds the plain model
    (converted to SyncBatchNorm under `sync_batch_norm`, same parameters and state-dict keys): the
    recorder saves it and evaluation runs it. `training_parts` is the same but for the model wrapped in
    DistributedDataParallel, which training steps run (DDP averages its gradients). One process: both are
    `parts` unchanged."""
    if not setup.is_distributed:
        return parts, parts
    model = parts.model
    if sync_batch_norm:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        parts = dataclasses.replace(parts, model=model)
    # BatchNorm's running statistics are averaged at the end of each epoch (engine.train_one_epoch)
    # instead of being broadcast from rank 0 at each forward; torch renamed that switch in 2.14.
    parameters = inspect.signature(torch.nn.parallel.DistributedDataParallel).parameters
    no_forward_sync = {"forward_sync_buffers" if "forward_sync_buffers" in parameters else "broadcast_buffers": False}
    wrapped = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[setup.local_rank] if device.type == "cuda" else None, **no_forward_sync)
    return parts, dataclasses.replace(parts, model=wrapped)
