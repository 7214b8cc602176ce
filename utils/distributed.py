"""Several processes started by torchrun (one per GPU, on one or many nodes): the process group, and the
few collective operations the rest of the project needs. Every function works without a process group
too (one process): it then does nothing or returns its input, so callers need not ask which case they
are in. The process group itself is torch's; nothing is kept here.

CPU tensors travel over gloo and CUDA tensors over NCCL (the group is created with both backends on
CUDA), so a flag or a Python object never forces a wait for the GPU.
"""
import datetime
import os
import pickle
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist

GLOO_TRANSPORT_SOURCE = "/gloo/transport/"  # in the message of every error of gloo's connections
SOURCE_LOCATION = re.compile(r"^\[[^\]]*\]\s*")  # the "[file:line] " that starts a gloo message


@dataclass(frozen=True)
class ProcessSetup:
    """Where this process stands among those torchrun started: its rank (0 writes and prints), the number
    of processes and its rank on its own node (the GPU it drives)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_distributed(self):
        """Whether there is more than one process."""
        return self.world_size > 1

    @property
    def is_main(self):
        """Whether this is rank 0, the process that prints and writes."""
        return self.rank == 0


def setup_from_environment(environ=None):
    """The ProcessSetup torchrun describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK); one process
    when they are absent."""
    environ = os.environ if environ is None else environ
    return ProcessSetup(rank=int(environ.get("RANK", 0)), world_size=int(environ.get("WORLD_SIZE", 1)),
                        local_rank=int(environ.get("LOCAL_RANK", 0)))


def init_from_environment(use_cuda, timeout_minutes=None):
    """Join the process group torchrun describes (gloo on the CPU; NCCL for CUDA tensors and gloo for CPU
    ones on GPUs, each process on GPU LOCAL_RANK), whose collective operations wait `timeout_minutes` for
    the other processes (None: torch's default); returns the ProcessSetup. One process: no group."""
    setup = setup_from_environment()
    if setup.is_distributed and not is_initialized():
        if use_cuda:
            torch.cuda.set_device(setup.local_rank)
        timeout = None if timeout_minutes is None else datetime.timedelta(minutes=timeout_minutes)
        dist.init_process_group(backend="cpu:gloo,cuda:nccl" if use_cuda else "gloo", rank=setup.rank,
                                world_size=setup.world_size, timeout=timeout)
    return setup


def is_initialized():
    """Whether a process group of several processes is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main():
    """Whether this process is rank 0 (also before the group exists: torchrun's RANK)."""
    return (dist.get_rank() if is_initialized() else setup_from_environment().rank) == 0


def unwrap_model(model):
    """The model inside a DistributedDataParallel wrapper, or `model` itself."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def all_reduce_sum(tensor):
    """Sum `tensor` over the processes, in place; returns it."""
    if is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_min(tensor):
    """Minimum of `tensor` over the processes, in place; returns it."""
    if is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return tensor


def average_across_processes(tensor):
    """Mean of `tensor` over the processes, in place; returns it."""
    if is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= dist.get_world_size()
    return tensor


def average_gradients(parameters):
    """Replace each parameter's gradient by its mean over the processes (parameters without a gradient
    are skipped; every process must hold gradients for the same parameters)."""
    if not is_initialized():
        return
    for parameter in parameters:
        if parameter.grad is not None:
            average_across_processes(parameter.grad)


def average_floating_buffers(module):
    """Replace each floating-point buffer of `module` (BatchNorm's running statistics) by its mean over
    the processes, so that every process evaluates the same model."""
    if not is_initialized():
        return
    for buffer in module.buffers():
        if buffer.is_floating_point():
            average_across_processes(buffer)


def largest_over_processes(value):
    """The largest of the integers `value` given by the processes (a CPU collective: no GPU wait)."""
    if not is_initialized():
        return value
    tensor = torch.tensor(value, dtype=torch.int64)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor)


def transferable(error):
    """`error` when it survives pickling, else a RuntimeError with its type and message."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


def run_on_every_process(action, *arguments):
    """`action(*arguments)` on this process, then an agreement: when it raised on any process, it raises
    on every process (its own exception where it failed, the first failing rank's elsewhere), so that no
    process waits in a collective for one that stopped. Returns the action's result."""
    if not is_initialized():
        return action(*arguments)
    try:
        result, error = action(*arguments), None
    except Exception as caught:
        result, error = None, caught
    errors = [None] * dist.get_world_size()
    dist.all_gather_object(errors, None if error is None else transferable(error))
    if error is not None:
        raise error
    first = next((other for other in errors if other is not None), None)
    if first is not None:
        raise first
    return result


def peer_failure(error):
    """The first sentence of `error` when it is a collective operation's failure to reach another
    process of the group (that process exited, or its connection closed, reset or timed out): one of
    torch's DistError, or gloo's transport errors (RuntimeError); None for any other error, and
    without a process group."""
    if not is_initialized() or not isinstance(error, RuntimeError):
        return None
    message = str(error).strip()
    if not isinstance(error, dist.DistError) and GLOO_TRANSPORT_SOURCE not in message:
        return None
    first_line = SOURCE_LOCATION.sub("", message.splitlines()[0] if message else type(error).__name__)
    return first_line.split(". ")[0].rstrip(".")


def shutdown():
    """Leave the process group (nothing without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
