"""One run of an entry script: options -> data -> model -> engine -> recorder -> report."""
import argparse
import contextlib
import datetime
import json
import os
import random
import sys
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from data.sampling import ShardedBatchSampler
from losses import make_balancer
from models import XTaskTSNet
from training import engine
from training.demo import demo_data
from training.distributed import check_process_count, distributed_parts, quiet_options
from training.interrupts import NON_FINITE_EXIT_CODE, NonFiniteTraining, RunInterrupted, StopSignals
from training.options import (RESUMABLE_OPTIONS, balancer_arguments, model_arguments, parse_options,
                              speed_settings)
from training.recorder import Recorder, create_numbered_folder, experiment_folder, load_checkpoint
from training.report import evaluate_and_report, prediction_grid_image, summary_row
from training.tensorboard_log import TensorBoardLog, summary_writer_class
from utils import distributed
from utils.distributed import ProcessSetup, setup_from_environment
from utils.errors import UserInputError
from utils.files import write_json

# What --infer_only takes from the checkpoint: always the data geometry; the dataset path and the
# batch size unless given on the command line (the paper protocol averages depth per batch, so the
# same batch size gives the same numbers).
RESTORED_DATA = ("height", "width", "num_classes", "ignore_index")
RESTORED_UNLESS_GIVEN = ("input_path", "batch_size")


@dataclass(frozen=True)
class RunContext:
    """What every part of one run reads: the dataset profile, the checked options, the device and this
    process's place among those torchrun started (one process by default)."""

    profile: object
    options: object
    device: torch.device
    processes: ProcessSetup = ProcessSetup()

    def dataset(self, split, augment):
        """The dataset of `split` as the options describe it."""
        options = self.options
        return self.profile.build_dataset(options.input_path, split, height=options.height, width=options.width,
                                          num_classes=options.num_classes, ignore_index=options.ignore_index,
                                          augment=augment, seed=options.seed,
                                          cache=False if options.no_cache else options.cache_dir or True)

    def loader(self, dataset, generator=None):
        """A DataLoader of this process's share of each --batch_size batch of `dataset` (all of it in one
        process; see data.sampling): shuffled by `generator` when one is given (training; a last batch
        that would leave a process a single image, which BatchNorm cannot normalise, is dropped), in
        order otherwise. Workers are started per epoch, so each epoch's augmentation stream is set."""
        options, processes = self.options, self.processes
        sampler = ShardedBatchSampler(len(dataset), options.batch_size, processes.rank, processes.world_size,
                                      generator=generator)
        return DataLoader(dataset, batch_sampler=sampler, num_workers=options.workers,
                          pin_memory=self.device.type == "cuda", generator=generator)

    def data_settings(self):
        """What evaluating a checkpoint needs of the data: size, classes, ignore index, path, batch size."""
        return {key: getattr(self.options, key) for key in RESTORED_DATA + RESTORED_UNLESS_GIVEN}

    def resume_command(self, folder):
        """The command that continues the run in `folder`."""
        return f"python {self.profile.entry_script} --resume {os.path.abspath(folder)}"


def select_device(force_cpu):
    """CUDA when present, unless `force_cpu`."""
    return torch.device("cuda" if torch.cuda.is_available() and not force_cpu else "cpu")


def seed_everything(seed, deterministic):
    """Seed Python, NumPy and torch (all devices); `deterministic` also makes torch choose deterministic
    algorithms (cuDNN included), so two runs with one seed give the same numbers; otherwise cuDNN
    benchmarks its convolution algorithms for the fixed input size (CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = not deterministic


def resume_folder(options):
    """The experiment folder --resume names: an experiment number under --save_path, or a path."""
    if str(options.resume).isdigit():
        return experiment_folder(options.save_path, int(options.resume), "--resume")
    if not os.path.isdir(options.resume):
        raise UserInputError(f"--resume {options.resume}: no such experiment folder; expected an experiment "
                             "number under --save_path or the path of an experiment folder")
    return options.resume


def resumed_options(options, folder):
    """The options of the run in `folder`, with the flags a resume may change taken from `options`;
    UserInputError listing the flags given now that would change the model, data or optimisation."""
    path = os.path.join(folder, "config.json")
    try:
        with open(path) as stream:
            saved = json.load(stream)["options"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserInputError(f"--resume: cannot read the options of the run from {path}: {error}") from None
    changed = [f"--{key}: {saved.get(key)!r} in the run, {getattr(options, key)!r} now" for key in options.explicit
               if key not in RESUMABLE_OPTIONS and saved.get(key) != getattr(options, key)]
    if changed:
        raise UserInputError(f"--resume {folder}: these flags would change the model, data or optimisation of "
                             f"the run: {'; '.join(changed)}. Resume without them (only "
                             f"{', '.join('--' + key for key in RESUMABLE_OPTIONS)} may change).")
    merged = argparse.Namespace(**saved)
    for key in RESUMABLE_OPTIONS:
        if key in options.explicit or key not in saved:
            setattr(merged, key, getattr(options, key))
    merged.explicit = options.explicit
    merged.seeds = None
    return merged


def start_recorder(context, parts, train_set, generator):
    """The recorder of this run: a new experiment folder, or the --resume folder restored."""
    options = context.options
    construction = {"model_arguments": model_arguments(options, train_set.num_classes),
                    "balancer": dict(zip(("method", "arguments"), balancer_arguments(options))),
                    "data": context.data_settings()}
    writes = context.processes.is_main
    if options.resume is None:
        if not writes:
            return distributed.run_on_every_process(Recorder, None, parts, construction, options.epochs, generator)
        return distributed.run_on_every_process(Recorder.start, options, context.device, parts, construction,
                                                generator)
    recorder = distributed.run_on_every_process(Recorder.resume, resume_folder(options), options, parts,
                                                construction, generator, writes)
    print(f"resuming {recorder.folder} after epoch {recorder.next_epoch - 1} of {options.epochs}")
    return recorder


def train(context, stop):
    """Train (or resume), keep the best and last checkpoints, then evaluate the best; returns the
    results dict. `stop` (StopSignals) ends the run between steps."""
    options = context.options
    check_process_count(options, context.processes, context.device)
    train_set, val_set = context.dataset("train", augment=True), context.dataset("val", augment=False)
    if options.no_cache:
        for dataset in (train_set, val_set):
            print(f"checking the {len(dataset)} {dataset.split} samples ...")
            dataset.check_every_sample(options.workers)
    generator = torch.Generator().manual_seed(options.seed)
    train_loader, val_loader = context.loader(train_set, generator), context.loader(val_set)
    speed = speed_settings(options, context.device)
    if speed.gpu_augment:
        train_set.defer_augmentation()
    parts = engine.build_training(options, context.device, train_set.num_classes, speed,
                                  train_set.depth_is_disparity)
    parts, training_parts = distributed_parts(parts, context.processes, context.device,
                                              getattr(options, "sync_bn", False))
    if options.tensorboard:
        summary_writer_class()
    recorder = start_recorder(context, parts, train_set, generator)
    if options.tensorboard and recorder.folder is not None:
        recorder.board = TensorBoardLog(recorder.folder, lambda: prediction_grid_image(context, parts.model, val_set))
    print(f"{context.profile.name} ({train_set.layout}): {len(train_set)} train / {len(val_set)} val images at "
          f"{options.height}x{options.width}, ResNet-{options.enc_layers}, balancing {options.balancing}, "
          f"{sum(p.numel() for p in parts.model.parameters()):,} parameters, {context.device}"
          f"{f' x {context.processes.world_size} processes' if context.processes.is_distributed else ''}")
    if recorder.folder is not None:
        print(f"writing to {recorder.folder}")
    try:
        results = fit_and_evaluate(context, training_parts, recorder, (train_loader, val_loader), stop)
    except RunInterrupted:
        recorder.write_status(f"interrupted at epoch {recorder.saved_epoch + 1}")
        report_interruption(context, recorder)
        raise
    except (NonFiniteTraining, UserInputError) as error:
        recorder.write_status(f"failed: {error}")
        raise
    recorder.write_status("finished")
    return results


def fit_and_evaluate(context, training_parts, recorder, loaders, stop):
    """The epoch loop on `training_parts`, then the best checkpoint's evaluation (of the recorder's plain
    model), results.json and the results.csv row."""
    options = context.options
    history = engine.fit(training_parts, loaders, context.device, recorder, stop, progress=not options.notqdm)
    parts = recorder.parts
    best_epoch = recorder.restore_best()
    print(f"best validation loss {recorder.best_loss:.4f} at epoch {best_epoch}; evaluating that checkpoint")
    baseline = None
    if options.demo:
        baseline = engine.constant_baseline_metrics(context.dataset("train", augment=False), loaders[1],
                                                    context.device)
    results = evaluate_and_report(context, parts.model, parts.balancer, loaders[1], recorder.folder, history,
                                  baseline)
    results["epoch"] = best_epoch
    recorder.write_results(results)
    if recorder.folder is not None:
        recorder.append_summary(options.save_path, summary_row(recorder.folder, context, results))
        print(f"outputs in {recorder.folder}: config.json, metrics.csv, results.json, checkpoints/, figures; "
              f"summary row in {os.path.join(options.save_path, 'results.csv')}")
    return results


def report_interruption(context, recorder):
    """Say what an interrupted run kept: the resume command when a checkpoint exists (rank 0 only)."""
    if not context.processes.is_main:
        return
    epoch = recorder.saved_epoch + 1
    if recorder.folder is not None and recorder.saved_epoch > 0:
        print(f"interrupted during epoch {epoch}: {recorder.folder} holds epochs 1-{recorder.saved_epoch}; "
              f"resume with:\n  {context.resume_command(recorder.folder)}", file=sys.stderr)
    else:
        print(f"interrupted during epoch {epoch}: no checkpoint was written yet, so there is nothing to resume",
              file=sys.stderr)


def infer(context):
    """--infer_only: evaluate experiment N's best checkpoint, rebuilt from the checkpoint alone; results go
    to a new folder N/infer/MMM."""
    options = context.options
    source = experiment_folder(options.save_path, options.exp_num)
    path = os.path.join(source, "checkpoints", "best.pt")
    checkpoint = load_checkpoint(path, context.device)
    restored = RESTORED_DATA + tuple(key for key in RESTORED_UNLESS_GIVEN if key not in options.explicit)
    for key in restored:
        setattr(options, key, checkpoint["data"][key])
    check_process_count(options, context.processes, context.device)
    val_set = context.dataset("val", augment=False)
    model = XTaskTSNet(**checkpoint["model_arguments"]).to(context.device)
    balancer = make_balancer(checkpoint["balancer"]["method"], **checkpoint["balancer"]["arguments"])
    try:
        model.load_state_dict(checkpoint["model"])
        balancer.to(context.device).load_state_dict(checkpoint["balancing"])
    except RuntimeError as error:
        raise UserInputError(f"{path} does not match the model it describes "
                             f"({checkpoint['model_arguments']}, balancing {checkpoint['balancer']}): "
                             f"{str(error).splitlines()[0]}") from None
    writes = not options.debug and context.processes.is_main
    folder = distributed.run_on_every_process(
        lambda: create_numbered_folder(os.path.join(source, "infer")) if writes else None)
    print(f"evaluating {path} (epoch {checkpoint['epoch']}) on {len(val_set)} val images")
    results = evaluate_and_report(context, model, balancer, context.loader(val_set), folder, checkpoint["history"])
    results["epoch"] = checkpoint["epoch"]
    if folder is not None:
        write_json(os.path.join(folder, "results.json"), results)
        print(f"outputs in {folder}")
    return results


def user_message(error):
    """The message of a UserInputError; one re-raised from a DataLoader worker carries the worker's
    traceback text first, which is cut off."""
    message = str(error)
    marker = f"{UserInputError.__name__}: "
    if "Original Traceback" in message and marker in message:
        message = message.rsplit(marker, 1)[1]
    return message.strip()


def seeded_runs(options):
    """The options of each run: one per --seeds entry (a copy with that seed and a shared group id), or
    the options themselves."""
    if options.seeds is None:
        options.group = getattr(options, "group", None)
        return [options]
    group = f"{datetime.datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}"
    print(f"{len(options.seeds)} runs, seeds {' '.join(map(str, options.seeds))}, group {group}")
    return [argparse.Namespace(**{**vars(options), "seed": seed, "group": group}) for seed in options.seeds]


def run(profile, options, stop):
    """Train (once, or once per seed), resume or evaluate as the options say."""
    if options.resume is not None:
        options = resumed_options(options, resume_folder(options))
    options.dataset = profile.name
    processes = distributed.init_from_environment(use_cuda=select_device(options.cpu).type == "cuda")
    if processes.is_distributed and options.demo:
        raise UserInputError("--demo generates its dataset in one process: run it without torchrun")
    if not processes.is_main:
        quiet_options(options)
    for run_options in seeded_runs(options):
        context = RunContext(profile, run_options, select_device(run_options.cpu), processes)
        seed_everything(run_options.seed, run_options.deterministic)
        with demo_data(profile, run_options):
            if run_options.infer_only:
                infer(context)
            else:
                train(context, stop)


@contextlib.contextmanager
def output_of_rank_zero_only():
    """Discard the standard output of the processes torchrun started other than rank 0 (their lines
    would repeat rank 0's); nothing changes in one process."""
    if setup_from_environment().is_main:
        yield
        return
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield


def print_error(message):
    """Print `message` to standard error, on rank 0 only (every process stops with the same error)."""
    if distributed.is_main():
        print(message, file=sys.stderr)


def main(profile, argv=None):
    """Run an entry script for `profile`; returns the exit status: 0 done, 2 a user's mistake, 3
    non-finite training, 130/143 stopped by SIGINT/SIGTERM."""
    options = parse_options(profile, argv)
    with StopSignals() as stop, output_of_rank_zero_only():
        try:
            run(profile, options, stop)
        except UserInputError as error:
            print_error(f"error: {user_message(error)}")
            return 2
        except NonFiniteTraining as error:
            print_error(f"error: {error}; the run stopped, the last good checkpoints are kept (lower --lr?)")
            return NON_FINITE_EXIT_CODE
        except RunInterrupted as interruption:
            print_error(f"{interruption}")
            return interruption.exit_code
        finally:
            distributed.shutdown()
    return 0
