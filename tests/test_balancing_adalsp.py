"""AdaLSP, AdaMT-Net's adaptive loss-specific weighting (both forms): the model's gradients on a tiny
network of an encoder and two or three task decoders, against the formulas computed by hand (paper form)
and against a transcription of the original's compute_loss_with_adalsp (original form), in one process
and in two (gloo, halves of the batch); the registry, the flags and their refusals, the errors, and one
training step of a real AdaMTNet."""
import copy
import pickle

import pytest
import torch
import torch.distributed as dist
from torch import nn

from data import CITYSCAPES, NYUV2
from losses import ADALSP_FORMS, BALANCERS, AdaLSP, AdaLSPOriginal, AdaLSPPaper, make_balancer
from models.adamtnet import AdaMTNet
from training import engine
from training.options import parse_options

CPU = torch.device("cpu")
TASKS = ("segmentation", "depth", "normal")
LOSS_SCALES = (1.0, 5.0, 0.3)  # unequal group losses, so that the shares differ
ADAMTNET = ["--model", "adamtnet", "--height", "32", "--width", "32", "--batch_size", "2"]


class TinyMultiTaskNet(nn.Module):
    """A shared encoder (one linear layer) and per task a decoder of two linear layers, naming its decoders
    as AdaMTNet does for AdaLSP; float64, so that the comparisons are tight."""

    def __init__(self, task_count, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.tasks = TASKS[:task_count]
        self.encoder = nn.Linear(4, 5)
        self.decoders = nn.ModuleDict({task: nn.Sequential(nn.Linear(5, 3), nn.Tanh(), nn.Linear(3, 2))
                                       for task in self.tasks})
        self.double()

    def forward(self, inputs):
        """inputs [N,4] -> one output [N,2] per task."""
        features = torch.tanh(self.encoder(inputs))
        return [self.decoders[task](features) for task in self.tasks]

    def decoder_parameters(self, task):
        """The parameters of `task`'s decoder."""
        return list(self.decoders[task].parameters())

    def decoder_first_layer_weight(self, task):
        """Weight [3,5] of the first layer of `task`'s decoder."""
        return self.decoders[task][0].weight


def tiny_batch(task_count, seed=1, size=8):
    """Inputs [size,4] and one target [size,2] per task."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(size, 4, generator=generator, dtype=torch.float64),
            [torch.randn(size, 2, generator=generator, dtype=torch.float64) for _ in range(task_count)])


def group_losses(outputs, targets):
    """[K]: the scaled mean squared error of each task."""
    return torch.stack([scale * ((output - target) ** 2).mean()
                        for scale, output, target in zip(LOSS_SCALES, outputs, targets)])


def gradients_of(model):
    """{name: gradient} of the model's parameters (None where there is none)."""
    return {name: None if parameter.grad is None else parameter.grad.clone()
            for name, parameter in model.named_parameters()}


def balancer_gradients(model, form, inputs, targets):
    """The model's gradients after one AdaLSP backward (gradients zeroed first), the balancer and its total."""
    balancer = AdaLSP(form=form, group_count=len(model.tasks))
    balancer.attach(model)
    model.zero_grad(set_to_none=True)
    total = balancer.backward(group_losses(model(inputs), targets))
    return gradients_of(model), balancer, total


def hand_paper_gradients(model, inputs, targets):
    """The paper form by hand: g_k of each group alone, m_k = mean |g_k| at decoder k's first layer,
    w = m / sum(m); decoder k gets w_k g_k, the encoder sum_k w_k g_k. Returns (gradients, w)."""
    groups = group_losses(model(inputs), targets)
    names = [name for name, _ in model.named_parameters()]
    parameters = list(model.parameters())
    per_group = []
    for group in groups:
        gradients = torch.autograd.grad(group, parameters, retain_graph=True, allow_unused=True)
        per_group.append({name: torch.zeros_like(parameter) if gradient is None else gradient
                          for name, parameter, gradient in zip(names, parameters, gradients)})
    magnitudes = [per_group[index][f"decoders.{task}.0.weight"].abs().mean() for index, task in enumerate(model.tasks)]
    shares = [magnitude / sum(magnitudes) for magnitude in magnitudes]
    expected = {}
    for name in names:
        owner = [index for index, task in enumerate(model.tasks) if name.startswith(f"decoders.{task}.")]
        if owner:
            expected[name] = shares[owner[0]] * per_group[owner[0]][name]
        else:
            expected[name] = sum(share * gradients[name] for share, gradients in zip(shares, per_group))
    return expected, torch.stack(shares)


def original_procedure(model, inputs, targets):
    """compute_loss_with_adalsp as the original's scripts run it, transcribed step by step on `model`
    (train_cs.py lines 64-81 with two tasks, train_nyu3tasks.py lines 64-88 with three). Returns the
    model's gradients."""
    losses = group_losses(model(inputs), targets)
    encoder = list(model.encoder.parameters())
    decoders = [model.decoders[task] for task in model.tasks]
    model.zero_grad()
    encoder_copies = []
    for loss in losses:
        loss.backward(retain_graph=True)
        encoder_copies.append([parameter.grad.clone() for parameter in encoder])
    if len(decoders) == 2:
        mag1, mag2 = (decoder[0].weight.grad.abs().mean() for decoder in decoders)
        for parameter in decoders[0].parameters():
            parameter.grad *= mag1 / (mag1 + mag2)
        for parameter in decoders[1].parameters():
            parameter.grad *= mag1 / (mag1 + mag2)
        for i, parameter in enumerate(encoder):
            parameter.grad = mag1 / (mag1 + mag2) * encoder_copies[0][i] + mag2 / (mag1 + mag2) * encoder_copies[1][i]
    else:
        mag1, mag2, mag3 = (decoder[0].weight.grad.abs().mean() for decoder in decoders)
        for parameter in decoders[0].parameters():
            parameter.grad *= mag1 / (mag1 + mag2 + mag3)
        for parameter in decoders[1].parameters():
            parameter.grad *= mag2 / (mag1 + mag2 + mag3)
        for parameter in decoders[1].parameters():
            parameter.grad *= mag3 / (mag1 + mag2 + mag3)
        for i, parameter in enumerate(encoder):
            parameter.grad = (mag1 / (mag1 + mag2 + mag3) * encoder_copies[0][i]
                              + mag2 / (mag1 + mag2 + mag3) * encoder_copies[1][i]
                              + mag3 / (mag1 + mag2 + mag3) * encoder_copies[2][i])
    return gradients_of(model)


def assert_same_gradients(got, expected):
    """Every parameter's gradient as expected, to float64 rounding."""
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-12, atol=1e-15, msg=name)


@pytest.mark.parametrize("task_count", [2, 3])
def test_paper_form_gives_each_decoder_its_share_of_its_gradient_and_the_encoder_the_weighted_sum(task_count):
    model = TinyMultiTaskNet(task_count)
    inputs, targets = tiny_batch(task_count)
    expected, shares = hand_paper_gradients(model, inputs, targets)
    got, balancer, total = balancer_gradients(model, "paper", inputs, targets)
    assert_same_gradients(got, expected)
    assert len(set(shares.tolist())) == task_count  # the shares differ: the test would see a swapped factor
    assert list(balancer.weights()) == [f"w_{task}" for task in TASKS[:task_count]]
    assert list(balancer.weights().values()) == pytest.approx(shares.tolist(), rel=1e-6)
    assert total.item() == pytest.approx(group_losses(model(inputs), targets).sum().item(), rel=1e-12)


@pytest.mark.parametrize("task_count", [2, 3])
def test_original_form_gives_the_gradients_of_the_original_procedure(task_count):
    model = TinyMultiTaskNet(task_count)
    inputs, targets = tiny_batch(task_count)
    expected = original_procedure(copy.deepcopy(model), inputs, targets)
    got, balancer, _ = balancer_gradients(model, "original", inputs, targets)
    assert_same_gradients(got, expected)
    _, shares = hand_paper_gradients(model, inputs, targets)
    assert list(balancer.weights().values()) == pytest.approx(shares.tolist(), rel=1e-6)


def test_the_forms_differ_where_the_original_slips():
    model = TinyMultiTaskNet(2)
    inputs, targets = tiny_batch(2)
    paper, _, _ = balancer_gradients(model, "paper", inputs, targets)
    original, balancer, _ = balancer_gradients(model, "original", inputs, targets)
    share_segmentation, share_depth = balancer.shares.tolist()
    # the original scales the depth decoder by the segmentation share (train_cs.py lines 78-79)
    name = "decoders.depth.2.weight"
    torch.testing.assert_close(original[name] * share_depth, paper[name] * share_segmentation)
    # and its segmentation decoder is the paper's
    torch.testing.assert_close(original["decoders.segmentation.2.weight"], paper["decoders.segmentation.2.weight"])
    assert not torch.allclose(original["encoder.weight"], paper["encoder.weight"])


@pytest.mark.parametrize("form", ADALSP_FORMS)
def test_backward_adds_to_gradients_from_before_the_step(form):
    model = TinyMultiTaskNet(3)
    inputs, targets = tiny_batch(3)
    alone, _, _ = balancer_gradients(model, form, inputs, targets)
    earlier = {name: torch.full_like(parameter, 0.5) for name, parameter in model.named_parameters()}
    balancer = AdaLSP(form=form, group_count=3)
    balancer.attach(model)
    for name, parameter in model.named_parameters():
        parameter.grad = earlier[name].clone()
    balancer.backward(group_losses(model(inputs), targets))
    assert_same_gradients(gradients_of(model), {name: alone[name] + earlier[name] for name in alone})


@pytest.mark.parametrize("form", ADALSP_FORMS)
def test_without_any_first_layer_gradient_the_shares_are_equal(form):
    model = TinyMultiTaskNet(2)
    with torch.no_grad():
        for task in model.tasks:
            model.decoders[task][2].weight.zero_()  # nothing reaches the first layers
    inputs, targets = tiny_batch(2)
    got, balancer, _ = balancer_gradients(model, form, inputs, targets)
    assert balancer.weights() == {"w_segmentation": 0.5, "w_depth": 0.5}
    assert all(bool(torch.isfinite(gradient).all()) for gradient in got.values())


def test_validation_total_is_the_plain_sum_and_the_shares_start_equal():
    balancer = AdaLSP(group_count=3)
    groups = torch.tensor([1.0, 2.0, 4.0])
    assert balancer.combine(groups).item() == 7.0
    assert balancer.weights() == pytest.approx({"w_segmentation": 1 / 3, "w_depth": 1 / 3, "w_normal": 1 / 3})


def test_registry_forms_and_constructor_errors():
    assert BALANCERS["adalsp"] is AdaLSP
    assert type(AdaLSP()) is AdaLSPPaper and type(AdaLSP(form="original")) is AdaLSPOriginal
    settings = dict(alpha=0.16, form="original", lr=1e-4, betas=(0.9, 0.999), temperature=2.0, weighting="none",
                    seed=0, group_count=3)
    balancer = make_balancer("adalsp", **settings)
    assert type(balancer) is AdaLSPOriginal and balancer.shares.shape == (3,)
    with pytest.raises(ValueError, match="form 'published': unknown AdaLSP form; expected one of paper, original"):
        AdaLSP(form="published")
    with pytest.raises(ValueError, match="form 'original': AdaLSPPaper is AdaLSP's 'paper' form"):
        AdaLSPPaper(form="original")
    with pytest.raises(ValueError, match="group_count 4: AdaLSP is implemented for .* \\(2 or 3 groups\\)"):
        AdaLSP(group_count=4)


def test_model_errors_and_extra_losses_are_refused():
    balancer = AdaLSP()
    with pytest.raises(RuntimeError, match="call attach\\(model\\)"):
        balancer.backward(torch.ones(2, requires_grad=True))
    with pytest.raises(TypeError, match="Linear must name them with decoder_parameters\\(task\\)"):
        balancer.attach(nn.Linear(2, 2))
    model = TinyMultiTaskNet(2)
    model.decoder_parameters = lambda task: list(model.decoders[task][2].parameters())
    with pytest.raises(ValueError, match="decoder_first_layer_weight\\('segmentation'\\): expected one of"):
        balancer.attach(model)
    model = TinyMultiTaskNet(2)
    balancer.attach(model)
    inputs, targets = tiny_batch(2)
    outputs = model(inputs)
    with pytest.raises(ValueError, match="groups: no group reaches the first layer of the depth decoder"):
        balancer.backward(group_losses([outputs[0], outputs[0]], targets))
    groups = group_losses(outputs, targets)
    with pytest.raises(ValueError, match="extra: AdaLSPPaper balances the group losses' gradients"):
        balancer.backward(groups, extra=groups.sum())


def test_copies_leave_the_model_behind():
    balancer = AdaLSP(form="original")
    balancer.attach(TinyMultiTaskNet(2))
    for duplicate in (copy.deepcopy(balancer), pickle.loads(pickle.dumps(balancer))):
        assert duplicate.decoders is None and type(duplicate) is AdaLSPOriginal


def two_process_worker(rank, rendezvous, results):
    """One of two gloo processes (forked: this module's imports come with it): AdaLSP's backward (both
    forms, two and three tasks, two steps each) of its half of the batch through DistributedDataParallel;
    rank 0 saves the gradients of the last step."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    gradients = {}
    for form in ADALSP_FORMS:
        for task_count in (2, 3):
            model = TinyMultiTaskNet(task_count)
            wrapped = nn.parallel.DistributedDataParallel(model)
            balancer = AdaLSP(form=form, group_count=task_count)
            balancer.attach(wrapped)
            inputs, targets = tiny_batch(task_count)
            half = slice(4 * rank, 4 * rank + 4)
            for _ in range(2):
                wrapped.zero_grad(set_to_none=True)
                balancer.backward(group_losses(wrapped(inputs[half]), [target[half] for target in targets]))
            gradients[form, task_count] = gradients_of(model)
    if rank == 0:
        torch.save(gradients, results)
    dist.destroy_process_group()


def test_two_processes_give_the_gradients_of_one_process_on_the_whole_batch(tmp_path):
    results = tmp_path / "gradients.pt"
    torch.multiprocessing.start_processes(two_process_worker, args=(str(tmp_path / "rendezvous"), str(results)),
                                          nprocs=2, start_method="fork")
    distributed = torch.load(results, weights_only=True)
    for (form, task_count), got in distributed.items():
        inputs, targets = tiny_batch(task_count)
        expected, _, _ = balancer_gradients(TinyMultiTaskNet(task_count), form, inputs, targets)
        for name in expected:
            torch.testing.assert_close(got[name], expected[name], rtol=1e-10, atol=1e-14, msg=f"{form} {name}")


@pytest.mark.parametrize("form", ADALSP_FORMS)
def test_flags_build_adalsp_for_adamtnet_with_two_or_three_tasks(form):
    config = parse_options(CITYSCAPES, [*ADAMTNET, "--balancing", "adalsp", "--balancing_form", form])
    balancer = make_balancer(config.balancing.method, **config.balancing.arguments(config.optimization, 2))
    assert type(balancer) is {"paper": AdaLSPPaper, "original": AdaLSPOriginal}[form]
    config = parse_options(NYUV2, ["--model", "adamtnet", "--balancing", "adalsp", "--balancing_form", form,
                                   "--tasks", "segmentation", "depth", "normal"])
    balancer = make_balancer(config.balancing.method, **config.balancing.arguments(config.optimization, 3))
    assert balancer.form == form and balancer.shares.shape == (3,)


@pytest.mark.parametrize("argv, message", [
    (["--balancing", "adalsp"], "--balancing adalsp with --model xtask: AdaMT-Net's weighting reads the gradients "
                                "of its task decoders' first layers, which only AdaMT-Net names; use it with "
                                "--model adamtnet"),
    (["--balancing", "adalsp", "--model", "mtan"], "--balancing adalsp with --model mtan: AdaMT-Net's weighting "
                                                   "reads the gradients of its task decoders' first layers, which "
                                                   "only AdaMT-Net names; use it with --model adamtnet"),
    ([*ADAMTNET, "--balancing", "adalsp", "--single_task", "depth"],
     "--single_task depth trains one task alone: no loss balancing (drop --balancing adalsp)"),
])
def test_flags_refuse_adalsp_without_adamtnet_decoders_or_with_one_task(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_options(CITYSCAPES, argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"error: {message}")


def test_adamtnet_names_each_task_decoder_and_its_first_layer():
    with torch.device("meta"):
        model = AdaMTNet(7)
    weight = model.decoder_first_layer_weight("depth")
    assert weight is model.depth_decoder.blocks[0].first_conv[0].weight
    assert weight.shape == (256, 1536, 3, 3)  # the original's dec_block1.conv1[0]: 1024 + 512 channels in, 256 out
    decoders = [model.decoder_parameters(task) for task in model.tasks]
    assert [len(parameters) for parameters in decoders] == [len(list(model.depth_decoder.parameters()))] * 2
    named = {id(parameter) for parameters in decoders for parameter in parameters}
    shared = {id(parameter) for parameter in model.shared_parameters()}
    assert not named & shared and named | shared == {id(parameter) for parameter in model.parameters()}
    with pytest.raises(ValueError, match="task 'normal': this AdaMTNet has decoders for segmentation, depth"):
        model.decoder_parameters("normal")


def test_a_real_adamtnet_takes_a_training_step_with_adalsp():
    config = parse_options(CITYSCAPES, [*ADAMTNET, "--balancing", "adalsp", "--balancing_form", "original",
                                        "--optim", "sgd"])
    parts = engine.build_training(config, CPU, 7)
    assert isinstance(parts.balancer, AdaLSPOriginal)
    generator = torch.Generator().manual_seed(0)
    batch = (torch.rand(2, 3, 32, 32, generator=generator), torch.randint(0, 7, (2, 32, 32), generator=generator),
             torch.rand(2, 1, 32, 32, generator=generator) + 0.1)
    before = {name: parameter.detach().clone() for name, parameter in parts.model.named_parameters()}
    total, terms = engine.train_step(parts, batch, CPU)
    assert total.item() == pytest.approx(terms.groups().sum().item(), rel=1e-6)
    shares = parts.balancer.weights()
    assert set(shares) == {"w_segmentation", "w_depth"} and sum(shares.values()) == pytest.approx(1.0)
    assert all(0 < share < 1 for share in shares.values())
    changed = {name.split(".")[0] for name, parameter in parts.model.named_parameters()
               if not torch.equal(before[name], parameter)}
    assert {"encoder_blocks", "bottleneck", "segmentation_decoder", "depth_decoder"} <= changed
    assert all(bool(torch.isfinite(parameter).all()) for parameter in parts.model.parameters())
