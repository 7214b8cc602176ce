"""torchrun: two processes on the CPU (gloo) give the metrics, the training steps, the outputs and the
checkpoint format of one process. Tiny generated Cityscapes data, ResNet-18, 32x64.

Run as a script under torchrun, this file is the worker of the two-process checks (`worker`): each
process evaluates a fixed model and takes a few training steps on its half of fixed global batches,
and saves what it got for the tests to compare with one process.
"""
import copy
import json
import os
import subprocess
import sys
import textwrap

import signal

import pandas
import pytest
import torch

from data import CITYSCAPES, NYUV2
from data.sampling import ShardedBatchSampler
from entry_processes import entry_with_fault
from models import XTaskTSNet
from training import engine
from losses.xtask import XTaskLossTerms
from training.distributed import check_process_count, distributed_parts
from training.interrupts import RunInterrupted, StopSignals
from training.options import parse_options
from training.run import RunContext, main
from utils import distributed
from utils.distributed import ProcessSetup
from utils.errors import UserInputError

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU = torch.device("cpu")
NUM_CLASSES = 7
VAL_IMAGES = 3  # of the shared cityscapes_root: divisible neither by the 2 processes nor by any batch size tested
EVALUATION_BATCH_SIZES = (2, 4)
BALANCINGS = ("none", "uncertainty", "gradnorm")
TRAINING_BATCHES = ((0, 1, 2, 3), (3, 1, 0, 2))  # two global batches of the 4 training images, not augmented
TINY = ["--height", "32", "--width", "64", "--enc_layers", "18", "--workers", "0", "--notqdm"]


def tiny_options(root, batch_size, *extra):
    """Checked options for the tiny data; SGD, so that the parameter updates are the gradients' (Adam's
    first steps are nearly the gradients' signs, which would hide a wrongly scaled gradient). The data
    cache goes beside the data (the worker processes start before the tests' private cache is set)."""
    return parse_options(CITYSCAPES, ["--input_path", root, *TINY, "--batch_size", str(batch_size), "--optim", "sgd",
                                      "--lr", "0.01", "--cache_dir", os.path.join(os.path.dirname(root), "cache"),
                                      *extra])


def fixed_model():
    """The same untrained network in every process, in eval mode."""
    torch.manual_seed(0)
    return XTaskTSNet(enc_layers=18, num_classes=NUM_CLASSES).eval()


def training_batches(context):
    """The global batches of TRAINING_BATCHES, as (image, segmentation_target, depth_target) tensors."""
    train_set = context.dataset("train", augment=False)
    return [tuple(torch.stack(tensors) for tensors in zip(*(train_set[index] for index in indices)))
            for indices in TRAINING_BATCHES]


def worker(root, output):
    """One of the two processes torchrun starts: evaluate the fixed model at each batch size, train from
    the same start on this process's half of each global batch for each balancing method, and save the
    metrics and the model and balancer states after each step to output/rank{R}.pt."""
    processes = distributed.init_from_environment(use_cuda=False)
    saved = {"evaluation": {}, "training": {}}
    for batch_size in EVALUATION_BATCH_SIZES:
        context = RunContext(CITYSCAPES, tiny_options(root, batch_size), CPU, processes)
        loader = context.loader(context.dataset("val", augment=False))
        saved["evaluation"][batch_size] = engine.evaluate_metrics(fixed_model(), loader, CPU, NUM_CLASSES, 250,
                                                                  progress=False)[0]
    for balancing in BALANCINGS:
        context = RunContext(CITYSCAPES, tiny_options(root, 4, "--balancing", balancing), CPU, processes)
        parts, training_parts = distributed_parts(engine.build_training(context.config, CPU, NUM_CLASSES),
                                                  processes, CPU, False)
        saved["training"][balancing] = []
        for batch in training_batches(context):
            engine.train_step(training_parts, [tensor[processes.rank::processes.world_size] for tensor in batch], CPU)
            saved["training"][balancing].append(copy.deepcopy({"model": parts.model.state_dict(),
                                                               "balancer": parts.balancer.state_dict()}))
    saved["agreement"] = what_the_processes_agree_on(processes.rank)
    torch.save(saved, os.path.join(output, f"rank{processes.rank}.pt"))
    distributed.shutdown()


def what_the_processes_agree_on(rank):
    """What this process sees when only one of the processes fails, is signalled or sees a NaN: the error
    raised by a write that fails on rank 0 alone, the stop after a SIGTERM that reached rank 1 alone, and
    the non-finite report of a loss that was NaN on rank 1 alone, at its second step."""
    def write_on_rank_zero():
        if rank == 0:
            raise UserInputError("cannot write last.pt")

    agreement = {}
    try:
        distributed.run_on_every_process(write_on_rank_zero)
    except UserInputError as error:
        agreement["error"] = str(error)
    stop = StopSignals()
    stop.requested = signal.SIGTERM if rank == 1 else None
    try:
        stop.check()
    except RunInterrupted as interruption:
        agreement["stop_exit_code"] = interruption.exit_code
    meter = engine.LossMeter(CPU)
    terms = XTaskLossTerms(*torch.ones(len(XTaskLossTerms._fields)))
    for step in (1, 2):
        meter.update(torch.tensor(float("nan") if rank == 1 and step == 2 else 1.0), terms, 2)
    meter.reduce_across_processes()
    agreement["non_finite"] = meter.non_finite_report()
    agreement["images"] = meter.count
    return agreement


def torchrun(arguments, cwd, timeout=600):
    """Run `arguments` (a script and its arguments) in two CPU processes under torchrun."""
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           *arguments], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": REPOSITORY, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def two_process_results(cityscapes_root, tmp_path_factory):
    """What the two `worker` processes saved, by rank."""
    output = tmp_path_factory.mktemp("ranks")
    result = torchrun([os.path.abspath(__file__), cityscapes_root, str(output)], cwd=REPOSITORY)
    assert result.returncode == 0, result.stderr[-3000:]
    return [torch.load(output / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]


@pytest.mark.parametrize("dataset_size,batch_size,world_size", [(5, 4, 2), (7, 4, 2), (9, 6, 3), (4, 2, 2),
                                                                 (5, 2, 1), (3, 4, 2)])
def test_the_processes_evaluate_every_image_once_in_the_batches_of_one_process(dataset_size, batch_size,
                                                                                world_size):
    samplers = [ShardedBatchSampler(dataset_size, batch_size, rank, world_size) for rank in range(world_size)]
    local_batches = [list(sampler) for sampler in samplers]
    assert [len(batches) for batches in local_batches] == [len(sampler) for sampler in samplers]
    single = list(ShardedBatchSampler(dataset_size, batch_size))
    for index, batch in enumerate(single):
        union = [image for batches in local_batches if index < len(batches) for image in batches[index]]
        assert sorted(union) == batch
    assert sorted(image for batches in local_batches for batch in batches for image in batch) == list(range(dataset_size))
    assert all(sampler.batch_count == len(single) for sampler in samplers)


@pytest.mark.parametrize("dataset_size,batch_size,world_size,kept_batches", [
    (9, 4, 2, 2),   # last batch of 1 image: dropped, as in one process
    (10, 4, 2, 2),  # 2 images on 2 processes would leave each one image: dropped
    (12, 8, 2, 2),  # 4 images, 2 per process: kept
    (10, 4, 1, 3)])  # one process keeps a last batch of 2
def test_training_batches_are_one_permutation_split_over_the_processes(dataset_size, batch_size, world_size,
                                                                       kept_batches):
    def batches(rank, world_size):
        return list(ShardedBatchSampler(dataset_size, batch_size, rank, world_size,
                                        torch.Generator().manual_seed(5)))

    single = batches(0, 1)
    local_batches = [batches(rank, world_size) for rank in range(world_size)]
    assert all(len(local) == kept_batches for local in local_batches)
    for index, local in enumerate(zip(*local_batches)):
        assert sorted(image for batch in local for image in batch) == sorted(single[index])
        assert len({len(batch) for batch in local}) == 1 and len(local[0]) >= min(2, batch_size // world_size)


@pytest.mark.xdist_group("two_process_workers")  # one worker builds the module fixture once
def test_two_processes_give_the_metrics_of_one_on_the_same_batches(cityscapes_root, two_process_results):
    paper_depth = {}
    for batch_size in EVALUATION_BATCH_SIZES:
        context = RunContext(CITYSCAPES, tiny_options(cityscapes_root, batch_size), CPU)
        loader = context.loader(context.dataset("val", augment=False))
        assert len(loader.dataset) == VAL_IMAGES
        expected = engine.evaluate_metrics(fixed_model(), loader, CPU, NUM_CLASSES, 250, progress=False)[0]
        paper_depth[batch_size] = expected["abs_paper"]
        for rank_results in two_process_results:
            metrics = rank_results["evaluation"][batch_size]
            assert list(metrics) == list(expected)
            for key, value in expected.items():
                assert metrics[key] == pytest.approx(value, rel=1e-6, abs=1e-9, nan_ok=True), (batch_size, key)
    # The paper protocol's depth terms are per batch: were they taken per process (local batches of half
    # the size), the 4-image batches would give the 2-image batches' figure.
    assert paper_depth[4] != pytest.approx(paper_depth[2], rel=1e-6)


def reference_step(parts, halves):
    """One step of `parts` as two processes take it: the loss of each half of the global batch on its own
    (BatchNorm in train mode normalises per process, so one pass over the whole batch would normalise
    differently), the two halves' gradients averaged (what DDP and the balancer's averaging compute),
    then the optimizer. For the plain sum and uncertainty weighting."""
    parameters = list(parts.model.parameters()) + parts.balancer.model_parameters()
    gradients = []
    for image, segmentation_target, depth_target in halves:
        terms = parts.criterion(parts.model(image), segmentation_target, depth_target)
        gradients.append(torch.autograd.grad(parts.balancer.combine(terms.groups()), parameters))
    parts.optimizer.zero_grad()
    for parameter, per_half in zip(parameters, zip(*gradients)):
        parameter.grad = (per_half[0] + per_half[1]) / 2
    parts.optimizer.step()


def reference_gradnorm_step(parts, halves):
    """One step of paper-form GradNorm over two processes, written out (per half, for the reason given in
    `reference_step`): the model gets the mean of the halves' gradients of sum_k w_k L_k; the norms are
    those of the halves' mean gradient of each L_k at the shared weight, the loss ratios those of the
    halves' mean losses (L(0) from the first step); the weights take their own Adam step and are
    rescaled to sum to 2."""
    balancer, model = parts.balancer, parts.model
    weights, shared_weight = balancer.task_weight, model.last_shared_weight
    parameters = list(model.parameters())
    model_gradients, group_gradients, losses = [], [], []
    for image, segmentation_target, depth_target in halves:
        groups = parts.criterion(model(image), segmentation_target, depth_target).groups()
        group_gradients.append([torch.autograd.grad(group, shared_weight, retain_graph=True)[0] for group in groups])
        model_gradients.append(torch.autograd.grad((weights.detach() * groups).sum(), parameters))
        losses.append(groups.detach())
    parts.optimizer.zero_grad()
    for parameter, per_half in zip(parameters, zip(*model_gradients)):
        parameter.grad = (per_half[0] + per_half[1]) / 2
    parts.optimizer.step()
    mean_losses = (losses[0] + losses[1]) / 2
    if torch.isnan(balancer.initial_losses).any():
        balancer.initial_losses.copy_(mean_losses)
    norms = torch.stack([torch.linalg.vector_norm((first + second) / 2) for first, second in zip(*group_gradients)])
    weighted_norms = weights * norms
    ratio = mean_losses / balancer.initial_losses
    target = (weighted_norms.mean() * (ratio / ratio.mean()) ** balancer.alpha).detach()
    weights.grad = torch.autograd.grad((weighted_norms - target).abs().sum(), weights)[0]
    balancer.optimizer.step()
    with torch.no_grad():
        weights.mul_(2 / weights.sum())


@pytest.mark.parametrize("balancing", BALANCINGS)
@pytest.mark.xdist_group("two_process_workers")  # one worker builds the module fixture once
def test_two_processes_train_like_the_halves_of_the_global_batch_averaged(cityscapes_root, two_process_results,
                                                                          balancing):
    """Each step is compared from the state the processes reached before it: the training of an untrained
    network is so sensitive (L1 kinks, argmax targets) that a rounding difference of 1e-8 after one step
    grows to 1e-4 after the next."""
    context = RunContext(CITYSCAPES, tiny_options(cityscapes_root, 4, "--balancing", balancing), CPU)
    parts = engine.build_training(context.config, CPU, NUM_CLASSES)
    step = reference_gradnorm_step if balancing == "gradnorm" else reference_step
    after_steps = [rank_results["training"][balancing] for rank_results in two_process_results]
    for number, batch in enumerate(training_batches(context)):
        if number > 0:
            parts.model.load_state_dict(after_steps[0][number - 1]["model"])
            parts.balancer.load_state_dict(after_steps[0][number - 1]["balancer"])
        before = {name: parameter.detach().clone() for name, parameter in parts.model.named_parameters()}
        step(parts, [[tensor[rank::2] for tensor in batch] for rank in (0, 1)])
        updates = {name: parameter.detach() - before[name] for name, parameter in parts.model.named_parameters()}
        assert max(float(update.abs().max()) for update in updates.values()) > 1e-3
        for rank_steps in after_steps:
            trained = rank_steps[number]
            for name, update in updates.items():
                torch.testing.assert_close(trained["model"][name] - before[name], update, rtol=1e-3, atol=2e-7,
                                           msg=lambda message: f"step {number + 1}, {name}: {message}")
            for name, value in parts.balancer.state_dict().items():
                if isinstance(value, torch.Tensor):
                    torch.testing.assert_close(trained["balancer"][name], value, rtol=1e-5, atol=1e-7,
                                               msg=lambda message: f"step {number + 1}, {name}: {message}")
    if balancing != "none":
        learned = parts.balancer.state_dict()["log_variance" if balancing == "uncertainty" else "task_weight"]
        assert not torch.equal(learned, torch.zeros(2) if balancing == "uncertainty" else torch.ones(2))


@pytest.mark.xdist_group("two_process_workers")  # one worker builds the module fixture once
def test_the_processes_stop_together_when_one_of_them_fails_is_signalled_or_sees_a_nan(two_process_results):
    for rank_results in two_process_results:
        assert rank_results["agreement"] == {"error": "cannot write last.pt", "stop_exit_code": 143,
                                             "non_finite": (2, ["loss"]), "images": 8}


@pytest.mark.parametrize("options,setup,device,message", [
    (["--batch_size", "3"], ProcessSetup(0, 2, 0), "cpu", "--batch_size 3 is the global batch"),
    (["--batch_size", "4", "--sync_bn"], ProcessSetup(), "cpu", "--sync_bn: torch's SyncBatchNorm runs on CUDA only"),
    (["--batch_size", "4", "--gradnorm", "--gradnorm_form", "original"], ProcessSetup(1, 2, 1), "cpu",
     "--gradnorm_form original back-propagates three times")])
def test_what_the_processes_cannot_run_is_refused_by_flag(options, setup, device, message):
    with pytest.raises(UserInputError, match=message):
        check_process_count(parse_options(CITYSCAPES, options), setup, torch.device(device))


def test_sync_bn_on_the_cpu_exits_2_before_anything_is_written(tmp_path, capsys):
    assert main(CITYSCAPES, ["--input_path", str(tmp_path), "--save_path", str(tmp_path / "exps"), "--cpu",
                             "--sync_bn", *TINY]) == 2
    assert "--sync_bn: torch's SyncBatchNorm runs on CUDA only" in capsys.readouterr().err
    assert not (tmp_path / "exps").exists()


def checkpoints(folder):
    return [torch.load(folder / "checkpoints" / name, map_location="cpu", weights_only=True)
            for name in ("best.pt", "last.pt")]


def nested_keys(value):
    """The key structure of a (nested) checkpoint dict: dicts become their keys' structure."""
    if isinstance(value, dict):
        return {key: nested_keys(item) for key, item in value.items() if not str(key).isdigit()}
    return type(value).__name__


@pytest.mark.slow
def test_torchrun_runs_the_entry_script_writes_once_and_resumes_and_one_process_reads_it(cityscapes_root, tmp_path,
                                                                                           finished_run):
    """The checkpoints of one process to compare the formats with are the shared finished run's
    (--uncertainty_weights too)."""
    script = os.path.join(REPOSITORY, "main_cross_cs.py")

    def arguments(save_path, *extra):
        return [script, "--cpu", "--input_path", cityscapes_root, "--save_path", str(save_path), *TINY,
                "--batch_size", "4", "--no_plots", "--uncertainty_weights", *extra]

    straight = torchrun(arguments(tmp_path / "straight", "--epochs", "2"), cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert sorted(os.listdir(tmp_path / "straight")) == ["001", "results.csv", "results.csv.lock"]
    assert len(pandas.read_csv(tmp_path / "straight" / "results.csv")) == 1
    lines = straight.stdout.splitlines()
    for start in ("epoch   1/2", "epoch   2/2", "writing to", "paper protocol", "outputs in"):
        assert sum(line.startswith(start) for line in lines) == 1, start
    assert "x 2 processes" in straight.stdout
    folder = tmp_path / "straight" / "001"
    assert (folder / "status").read_text() == "finished\n"
    assert list(pandas.read_csv(folder / "metrics.csv")["epoch"]) == [1, 2]

    for distributed_checkpoint, single_checkpoint in zip(checkpoints(folder), checkpoints(finished_run / "001")):
        assert nested_keys(distributed_checkpoint) == nested_keys(single_checkpoint)

    assert main(CITYSCAPES, ["--save_path", str(tmp_path / "straight"), "--infer_only", "--exp_num", "1",
                             "--workers", "0", "--notqdm", "--no_plots"]) == 0
    written = json.load(open(folder / "results.json"))["metrics"]
    reproduced = json.load(open(folder / "infer" / "001" / "results.json"))["metrics"]
    for key, value in written.items():
        assert reproduced[key] == pytest.approx(value, rel=1e-6, abs=1e-9, nan_ok=True), key

    first = torchrun(arguments(tmp_path / "pieces", "--epochs", "1"), cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = torchrun([script, "--save_path", str(tmp_path / "pieces"), "--resume", "1", "--epochs", "2",
                        "--notqdm"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("resuming") == 1
    expected, continued = checkpoints(folder)[1], checkpoints(tmp_path / "pieces" / "001")[1]
    assert continued["epoch"] == expected["epoch"] == 2
    for name, tensor in expected["model"].items():
        torch.testing.assert_close(continued["model"][name], tensor, rtol=1e-6, atol=1e-8, msg=name)
    torch.testing.assert_close(continued["balancing"]["log_variance"], expected["balancing"]["log_variance"])


if __name__ == "__main__":
    worker(*sys.argv[1:])


@pytest.mark.slow
def test_torchrun_trains_mtan_on_three_tasks_and_its_metrics_are_those_of_one_process(nyu_root, tmp_path):
    """MTAN with surface normals and DWA in two processes: the evaluation at the end of training (each
    process a shard, the normal histogram summed over them) equals --infer_only in one process."""
    script = os.path.join(REPOSITORY, "main_cross_nyu.py")
    result = torchrun([script, "--cpu", "--input_path", nyu_root, "--save_path", str(tmp_path), "--model", "mtan",
                       "--tasks", "segmentation", "depth", "normal", "--balancing", "dwa", "--height", "32",
                       "--width", "64", "--batch_size", "4", "--epochs", "1", "--workers", "0", "--notqdm",
                       "--no_plots"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "x 2 processes" in result.stdout and result.stdout.count("Mean err") == 1
    assert main(NYUV2, ["--save_path", str(tmp_path), "--infer_only", "--exp_num", "1", "--workers", "0",
                        "--notqdm", "--no_plots"]) == 0
    written = json.load(open(tmp_path / "001" / "results.json"))["metrics"]
    reproduced = json.load(open(tmp_path / "001" / "infer" / "001" / "results.json"))["metrics"]
    assert {"normal_mean", "normal_median", "normal_30", "miou", "abs_rel"} <= set(written)
    for key, value in written.items():
        assert reproduced[key] == pytest.approx(value, rel=1e-6, abs=1e-9, nan_ok=True), key


def rank_1_stops_in_epoch_2(cityscapes_root, tmp_path, what_rank_1_does, *extra):
    """A tiny 3-epoch run in two CPU processes under torchrun (logs under tmp_path / "logs"), whose rank 1,
    at its first step of epoch 2 (epoch 1 is saved), writes the time into tmp_path / "rank-1-stopped-at",
    then runs the code `what_rank_1_does` (os, signal and time imported); `extra`: more entry-script
    arguments. (torchrun's CompletedProcess, the experiment folder, rank 0's stderr)."""
    fault = textwrap.dedent("""
        import os, signal, time
        from training import engine
        real_step, steps = engine.train_step, []
        def step_or_stop(parts, batch, device):
            steps.append(1)
            if os.environ["RANK"] == "1" and len(steps) == 2:  # one step per epoch: epoch 1 is saved
                with open("rank-1-stopped-at", "w") as stream:
                    stream.write(str(time.time()))
        {}
            return real_step(parts, batch, device)
        engine.train_step = step_or_stop
    """).format(textwrap.indent(textwrap.dedent(what_rank_1_does), " " * 8))
    save_path, logs = tmp_path / "exps", tmp_path / "logs"
    result = torchrun(["--log-dir", str(logs), "--redirects", "3", entry_with_fault(tmp_path, fault), "--cpu",
                       "--input_path", cityscapes_root, "--save_path", str(save_path), "--height", "32", "--width",
                       "64", "--enc_layers", "18", "--workers", "0", "--notqdm", "--batch_size", "4", "--no_plots",
                       "--epochs", "3", *extra], cwd=tmp_path, timeout=120)
    return result, save_path / "001", next(logs.glob("*/attempt_0/0/stderr.log")).read_text()


@pytest.mark.slow
def test_a_torchrun_process_that_hangs_stops_rank_0_after_the_peer_timeout_with_the_resume_command(cityscapes_root,
                                                                                                  tmp_path):
    # A process that stops answering without closing its connections (a hung process, a node cut off)
    # is noticed only after the collective timeout: --peer_timeout sets it (here 3 s instead of 30 min).
    hang = """
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # torchrun's SIGTERM ends it once rank 0 has stopped
        time.sleep(600)
    """
    result, folder, rank_0_stderr = rank_1_stops_in_epoch_2(cityscapes_root, tmp_path, hang, "--peer_timeout", "0.05")
    assert result.returncode == 1, result.stderr[-3000:]
    assert rank_0_stderr.startswith(f"interrupted during epoch 2: {folder} holds epochs 1-1; resume with:\n"
                                    f"  python main_cross_cs.py --resume {folder}\n"
                                    "stopped: another torchrun process exited or cannot be reached (Timed out "
                                    "waiting 3000ms"), rank_0_stderr
    assert "Traceback" not in rank_0_stderr
    status = (folder / "status").read_text()
    assert status.startswith("interrupted at epoch 2: another torchrun process exited or cannot be reached"), status
    waited = os.path.getmtime(folder / "status") - float((tmp_path / "rank-1-stopped-at").read_text())
    assert 3 <= waited < 20, waited
    assert checkpoints(folder)[1]["epoch"] == 1  # last.pt
