"""One run of an entry script: configuration -> data -> model -> engine -> recorder -> report."""
import contextlib
import dataclasses
import datetime
import gc
import os
import random
import shlex
import sys
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from data.profiles import DatasetProfile
from data.sampling import ShardedBatchSampler
from losses import make_balancer
from models import make_model
from training import engine
from training.config import (RESTORED, RESTORED_UNLESS_GIVEN, RESUMABLE, RunConfig, keys_with,
                             rank_zero_only_values)
from training.demo import demo_data
from training.distillation import check_teachers
from training.distributed import check_process_count, distributed_parts
from training.interrupts import (LOST_PEER_EXIT_CODE, NON_FINITE_EXIT_CODE, NonFiniteTraining, RunInterrupted,
                                 StopSignals, lost_peer_cause)
from training.options import parse_options
from training.recorder import Recorder, create_numbered_folder, experiment_folder, load_checkpoint, read_run
from training.report import evaluate_and_report, prediction_grid_image, summary_row
from training.tensorboard_log import TensorBoardLog, summary_writer_class
from utils import distributed
from utils.distributed import ProcessSetup, setup_from_environment
from utils.errors import UserInputError
from utils.files import write_json
from utils.processes import ignore_stop_signals


@dataclass(frozen=True)
class RunContext:
    """What every part of one run reads: the dataset profile, the checked configuration, the device and
    this process's place among those torchrun started (one process by default)."""

    profile: DatasetProfile
    config: RunConfig
    device: torch.device
    processes: ProcessSetup = ProcessSetup()

    def dataset(self, split, augment):
        """The dataset of `split` as the configuration describes it."""
        data = self.config.data
        return self.profile.build_dataset(data.input_path, split, height=data.height, width=data.width,
                                          num_classes=data.num_classes, ignore_index=data.ignore_index,
                                          augment=augment, seed=self.config.optimization.seed, cache=data.cache(),
                                          tasks=self.config.model.tasks)

    def training_set(self):
        """The training split, augmented unless --no_augment."""
        return self.dataset("train", augment=not self.config.data.no_augment)

    def loader(self, dataset, generator=None):
        """A DataLoader of this process's share of each --batch_size batch of `dataset` (all of it in one
        process; see data.sampling): shuffled by `generator` when one is given (training; a last batch
        that would leave a process a single image is dropped: see data.sampling), in
        order otherwise. Workers are started per epoch, so each epoch's augmentation stream is set."""
        data, processes = self.config.data, self.processes
        sampler = ShardedBatchSampler(len(dataset), data.batch_size, processes.rank, processes.world_size,
                                      generator=generator)
        return DataLoader(dataset, batch_sampler=sampler, num_workers=data.workers,
                          pin_memory=self.device.type == "cuda", generator=generator,
                          worker_init_fn=ignore_stop_signals)

    def data_settings(self):
        """What evaluating a checkpoint needs of the data: size, classes, ignore index, path, batch size."""
        return {key: self.config[key] for key in keys_with(RESTORED) + keys_with(RESTORED_UNLESS_GIVEN)}

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


def resume_folder(config):
    """The experiment folder --resume names: an experiment number under --save_path, or a path."""
    resume, save_path = config.run.resume, config.run.save_path
    if str(resume).isdigit():
        return experiment_folder(save_path, int(resume), "--resume")
    if not os.path.isdir(resume):
        raise UserInputError(f"--resume {resume}: no such experiment folder; expected an experiment "
                             "number under --save_path or the path of an experiment folder")
    return resume


def resumed_config(config, record):
    """The configuration of the run `record` (training.recorder.RunRecord) read back, with the settings
    a resume may change taken from `config` and the save path the folder's parent now (its results.csv
    gets the row, wherever the folder was when it started); UserInputError listing the flags given now
    that would change the model, data or optimisation."""
    saved, folder = record.config, record.folder
    if saved is None:
        raise UserInputError(f"--resume: cannot read the configuration of the run: {folder} has no config.json")
    resumable = keys_with(RESUMABLE)
    changed = [f"--{key}: {saved[key]!r} in the run, {config[key]!r} now" for key in config.explicit
               if key not in resumable and saved[key] != config[key]]
    if changed:
        raise UserInputError(f"--resume {folder}: these flags would change the model, data or optimisation of "
                             f"the run: {'; '.join(changed)}. Resume without them (only "
                             f"{', '.join('--' + key for key in resumable)} may change).")
    given = {key: config[key] for key in resumable if key in config.explicit}
    return saved.replace(**{**given, "save_path": os.path.dirname(os.path.abspath(folder))}, seeds=None,
                         explicit=config.explicit)


def check_same_data(record, data_identity, input_path):
    """UserInputError when the run `record` (training.recorder.RunRecord) recorded other data than
    `data_identity` ({split: identity}) of `input_path`; nothing for runs that recorded none."""
    if record.data_identity is None:
        return
    differences = []
    for split, current in data_identity.items():
        recorded = record.data_identity.get(split) or {}
        for key, what in (("layout", "layout"), ("samples", "images"), ("files", "files")):
            if recorded.get(key) != current[key]:
                if key == "files":
                    differences.append(f"{split}: other file names or sizes")
                else:
                    differences.append(f"{split} {what}: {recorded.get(key)} in the run, {current[key]} now")
                break
    if differences:
        raise UserInputError(f"--resume {record.folder}: --input_path {input_path} holds other data than the run "
                             f"trained on ({'; '.join(differences)}). Give the run's dataset (it may have moved: "
                             f"only its files' names and sizes are compared) or start a new run.")


def start_recorder(context, parts, datasets, generator):
    """The recorder of this run (datasets: the training and validation splits): a new experiment folder,
    or the --resume folder restored after checking that it trained on the same data."""
    config = context.config
    epochs = config.optimization.epochs
    train_set, val_set = datasets
    data_identity = {"train": train_set.identity(), "val": val_set.identity()}
    construction = {"model_family": config.model.family,
                    "model_arguments": config.model.arguments(train_set.num_classes, config.data),
                    "balancer": {"method": config.balancing.method,
                                 "arguments": config.balancing.arguments(config.optimization,
                                                                         len(config.model.tasks))},
                    "data": context.data_settings(), "data_identity": data_identity}
    writes = context.processes.is_main
    if config.run.resume is None:
        if not writes:
            return distributed.run_on_every_process(Recorder, None, parts, construction, epochs, generator)
        return distributed.run_on_every_process(Recorder.start, config, context.device, parts, construction,
                                                generator)
    folder = resume_folder(config)
    check_same_data(read_run(folder), data_identity, config.data.input_path)
    recorder = distributed.run_on_every_process(Recorder.resume, folder, epochs, parts,
                                                construction, generator, writes)
    print(f"resuming {recorder.folder} after epoch {recorder.next_epoch - 1} of {epochs}")
    return recorder


def train(context, stop):
    """Train (or resume), keep the best and last checkpoints, then evaluate the best; returns the
    results dict. `stop` (StopSignals) ends the run between steps, or at once while it starts."""
    config = context.config
    check_process_count(config, context.processes, context.device)
    check_teachers(config)
    with interruptible_start(context, stop):
        train_set, val_set = context.training_set(), context.dataset("val", augment=False)
        if config.data.no_cache:
            for dataset in (train_set, val_set):
                print(f"checking the {len(dataset)} {dataset.split} samples ...")
                dataset.check_every_sample(config.data.workers)
        generator = torch.Generator().manual_seed(config.optimization.seed)
        train_loader, val_loader = context.loader(train_set, generator), context.loader(val_set)
        speed = config.speed.resolve(context.device)
        if speed.gpu_augment and train_set.augment:
            train_set.defer_augmentation()
        parts = engine.build_training(config, context.device, train_set.num_classes, speed,
                                      train_set.depth_is_disparity)
        parts, training_parts = distributed_parts(parts, context.processes, context.device,
                                                  config.optimization.sync_bn)
    if config.run.tensorboard:
        summary_writer_class()
    recorder = start_recorder(context, parts, (train_set, val_set), generator)
    if config.run.tensorboard and recorder.folder is not None:
        recorder.board = TensorBoardLog(recorder.folder, lambda: prediction_grid_image(context, parts.model, val_set))
    print(f"{context.profile.name} ({train_set.layout}): {len(train_set)} train / {len(val_set)} val images at "
          f"{config.data.height}x{config.data.width}, {config.model.describe()}, balancing "
          f"{config.balancing.method}, "
          f"{sum(p.numel() for p in parts.model.parameters()):,} parameters, {context.device}"
          f"{f' x {context.processes.world_size} processes' if context.processes.is_distributed else ''}")
    if recorder.folder is not None:
        print(f"writing to {recorder.folder}")
    try:
        results = fit_and_evaluate(context, training_parts, recorder, (train_loader, val_loader), stop)
    except RunInterrupted:
        recorder.write_status(f"interrupted {interrupted_phase(recorder, 'at')}")
        report_interruption(context, recorder)
        raise
    except NonFiniteTraining as error:
        recorder.write_status(f"failed: {error}")
        raise NonFiniteTraining(f"{error}; {kept_checkpoints(recorder)}") from None
    except UserInputError as error:
        recorder.write_status(f"failed: {error}")
        raise
    except RuntimeError as error:
        cause = lost_peer_cause(error)
        if cause is None:
            raise
        recorder.write_status(f"interrupted {interrupted_phase(recorder, 'at')}: {cause}")
        report_interruption(context, recorder)
        raise
    return results


@contextlib.contextmanager
def interruptible_start(context, stop):
    """The start of training (the data read and cached, the model built), before anything of the run
    is written: a signal stops it at once (see StopSignals.at_once), saying that there is nothing to
    resume, or that the --resume folder is unchanged and how to resume it."""
    try:
        with stop.at_once():
            yield
    except RunInterrupted as interruption:
        if context.config.run.resume is None:
            kept = "no experiment folder was created, so there is nothing to resume"
        else:
            folder = resume_folder(context.config)
            kept = f"{folder} is unchanged; resume with:\n  {context.resume_command(folder)}"
        print_error(f"interrupted before training started: {kept}")
        raise RunInterrupted(interruption.signal_number, before_training=True) from None


def kept_checkpoints(recorder):
    """What a run that stopped on a non-finite value kept, in words."""
    if recorder.folder is None:
        return "nothing was written (--debug)" if recorder.saved_epoch else "nothing had been written"
    if recorder.saved_epoch == 0:
        return f"no checkpoint had been written yet ({recorder.folder} holds no trained epoch)"
    return (f"the last good checkpoints are kept (epoch {recorder.saved_epoch}, in "
            f"{os.path.join(recorder.folder, 'checkpoints')})")


def fit_and_evaluate(context, training_parts, recorder, loaders, stop):
    """The epoch loop on `training_parts`, then the best checkpoint's evaluation (of the recorder's plain
    model), results.json, the results.csv row and the status "finished"."""
    config = context.config
    history = engine.fit(training_parts, loaders, context.device, recorder, stop, progress=not config.run.notqdm)
    parts = recorder.parts
    best_epoch = recorder.restore_best()
    print(f"best validation loss {recorder.best_loss:.4f} at epoch {best_epoch}; evaluating that checkpoint")
    baseline = None
    if config.run.demo:
        baseline = engine.constant_baseline_metrics(context.dataset("train", augment=False), loaders[1],
                                                    context.device)
    results = evaluate_and_report(context, parts.model, parts.balancer, loaders[1], recorder.folder, history,
                                  baseline)
    stop.check()  # a signal during the final evaluation or the figures: the run is not marked finished
    results["epoch"] = best_epoch
    row = None if recorder.folder is None else summary_row(recorder.folder, context, results)
    recorder.finish(results, config.run.save_path, row)
    if recorder.folder is not None:
        print(f"outputs in {recorder.folder}: config.json, metrics.csv, results.json, checkpoints/, figures; "
              f"summary row in {os.path.join(config.run.save_path, 'results.csv')}")
    return results


def interrupted_phase(recorder, preposition):
    """Where an interrupted run was: "{preposition} epoch N" while training, "during the final evaluation"
    after it."""
    if recorder.saved_epoch >= recorder.epochs:
        return "during the final evaluation"
    return f"{preposition} epoch {recorder.saved_epoch + 1}"


def report_interruption(context, recorder):
    """Say what an interrupted run kept: the resume command when a checkpoint exists (rank 0 only)."""
    if not context.processes.is_main:
        return
    phase = interrupted_phase(recorder, "during")
    if recorder.folder is not None and recorder.saved_epoch > 0:
        print(f"interrupted {phase}: {recorder.folder} holds epochs 1-{recorder.saved_epoch}; "
              f"resume with:\n  {context.resume_command(recorder.folder)}", file=sys.stderr)
    else:
        print(f"interrupted {phase}: no checkpoint was written yet, so there is nothing to resume",
              file=sys.stderr)


def infer(context):
    """--infer_only: evaluate experiment N's best checkpoint, rebuilt from the checkpoint alone; results go
    to a new folder N/infer/MMM."""
    config = context.config
    source = experiment_folder(config.run.save_path, config.run.exp_num)
    path = os.path.join(source, "checkpoints", "best.pt")
    record = read_run(source)
    if "best.pt" not in record.checkpoints:
        raise UserInputError(f"--exp_num {config.run.exp_num}: {source} has no checkpoints/best.pt to evaluate "
                             f"(status: {record.status or 'unknown'})")
    checkpoint = load_checkpoint(path, context.device)
    restored = keys_with(RESTORED) + tuple(key for key in keys_with(RESTORED_UNLESS_GIVEN) if key not in config.explicit)
    config = config.replace(**{key: checkpoint["data"][key] for key in restored})
    context = dataclasses.replace(context, config=config)
    check_process_count(config, context.processes, context.device)
    val_set = context.dataset("val", augment=False)
    model = make_model(checkpoint.get("model_family", "xtask"), **checkpoint["model_arguments"]).to(context.device)
    balancer = make_balancer(checkpoint["balancer"]["method"], **checkpoint["balancer"]["arguments"])
    try:
        model.load_state_dict(checkpoint["model"])
        balancer.to(context.device).load_state_dict(checkpoint["balancing"])
    except RuntimeError as error:
        raise UserInputError(f"{path} does not match the model it describes "
                             f"({checkpoint['model_arguments']}, balancing {checkpoint['balancer']}): "
                             f"{str(error).splitlines()[0]}") from None
    writes = not config.run.debug and context.processes.is_main
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


def seeded_runs(config):
    """The configuration of each run: one per --seeds entry (with that seed and a shared group id), or
    `config` itself."""
    seeds = config.optimization.seeds
    if seeds is None:
        return [config]
    group = f"{datetime.datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}"
    print(f"{len(seeds)} runs, seeds {' '.join(map(str, seeds))}, group {group}")
    return [config.replace(seed=seed, group=group) for seed in seeds]


def with_seeds(argv, seeds):
    """`argv` with the values of its --seeds replaced by `seeds`."""
    position = argv.index("--seeds")
    end = position + 1
    while end < len(argv) and argv[end].isdigit():
        end += 1
    return argv[:position + 1] + [str(seed) for seed in seeds] + argv[end:]


def report_seeds(profile, runs, stopped, failure, argv):
    """After seed runs[stopped] ended with `failure`: which seeds finished, which stopped and how, which
    never started, and the command that runs those (after resuming the interrupted one; with them when it
    was interrupted before training, which wrote nothing)."""
    seeds = [run_config.optimization.seed for run_config in runs]
    interrupted = isinstance(failure, RunInterrupted)
    before_training = interrupted and failure.before_training
    how = "was interrupted before training" if before_training else "was interrupted" if interrupted else "failed"
    lines = [f"seeds: {', '.join(map(str, seeds[:stopped])) or 'none'} finished; {seeds[stopped]} {how}; "
             f"{', '.join(map(str, seeds[stopped + 1:])) or 'none'} not started"]
    rest = seeds[stopped:] if before_training else seeds[stopped + 1:]
    if rest:
        first = "after resuming it as said above, " if interrupted and not before_training else ""
        which = " and ".join(([f"seed {seeds[stopped]}"] if before_training else [])
                             + (["the seeds not started"] if seeds[stopped + 1:] else []))
        command = " ".join(shlex.quote(part) for part in ["python", profile.entry_script, *with_seeds(argv, rest)])
        lines.append(f"{first}run {which} with:\n  {command}")
    print_error("\n".join(lines))


def run(profile, config, stop, argv=()):
    """Train (once, or once per seed), resume or evaluate as the configuration says; `argv`, the command
    line, for the command that runs the seeds a failure left unstarted."""
    if config.run.resume is not None:
        record = read_run(resume_folder(config))
        config = resumed_config(config, record)
        if record.finished and len(record.history) >= config.optimization.epochs:
            print(f"{record.folder} finished all {len(record.history)} epochs of its run: nothing to resume "
                  f"(--epochs N with N > {len(record.history)} trains it on)")
            return
    processes = distributed.init_from_environment(use_cuda=select_device(config.run.cpu).type == "cuda",
                                                  timeout_minutes=config.run.peer_timeout)
    if processes.is_distributed and config.run.demo:
        raise UserInputError("--demo generates its dataset in one process: run it without torchrun")
    if not processes.is_main:
        config = config.replace(**rank_zero_only_values())
    runs = seeded_runs(config)
    for index, run_config in enumerate(runs):
        seed_everything(run_config.optimization.seed, run_config.optimization.deterministic)
        with demo_data(profile, run_config) as data_config:
            context = RunContext(profile, data_config, select_device(data_config.run.cpu), processes)
            if data_config.run.infer_only:
                with stop.at_once():  # nothing to keep: its results.json is written last, atomically
                    infer(context)
                continue
            try:
                train(context, stop)
            except (NonFiniteTraining, RunInterrupted, UserInputError) as failure:
                if config.optimization.seeds is not None:
                    report_seeds(profile, runs, index, failure, list(argv))
                raise


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
    non-finite training, 4 another torchrun process lost, 130/143 stopped by SIGINT/SIGTERM."""
    argv = list(sys.argv[1:] if argv is None else argv)
    config = parse_options(profile, argv)
    with StopSignals() as stop, output_of_rank_zero_only():
        try:
            run(profile, config, stop, argv)
        except UserInputError as error:
            print_error(f"error: {user_message(error)}")
            return 2
        except NonFiniteTraining as error:
            print_error(f"error: {error}; the run stopped (lower --lr?)")
            return NON_FINITE_EXIT_CODE
        except RunInterrupted as interruption:
            print_error(f"{interruption}")
            return interruption.exit_code
        except RuntimeError as error:
            cause = lost_peer_cause(error)
            if cause is None:
                raise
            print_error(f"stopped: {cause}")
            return LOST_PEER_EXIT_CODE
        finally:
            distributed.shutdown()
    return 0


def process_main(profile):
    """What an entry script's process runs: main(profile) on the command line, after freezing the objects
    of the imported modules (gc.freeze: they live as long as the process, so no garbage collection walks
    them; the process ends about 1.4 s sooner); the exit status."""
    gc.freeze()
    return main(profile)
