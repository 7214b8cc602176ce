"""DWA and PCGrad (both forms each) against hand-computed values and an independent transcription of the
original code's pcgrad.py procedure; their state, make_balancer and the forms' errors."""
import copy
import math

import pytest
import torch
from torch import nn

from losses import (BALANCING_FORMS, DWA, GRADNORM_FORMS, DWAOriginal, DWAPaper, LossBalancer, PCGrad, PCGradOriginal,
                    PCGradPaper, UncertaintyWeights, make_balancer)


def train_epoch(balancer, epoch, steps):
    """start_epoch(epoch), then one backward per group-loss list in `steps`; returns the totals."""
    balancer.start_epoch(epoch)
    return [balancer.backward(torch.tensor(groups, requires_grad=True)).item() for groups in steps]


def dwa_weights(balancer):
    return list(balancer.weights().values())


# Epoch means: epoch 1 [3, 6, 2] (two steps), epoch 2 [1.5, 6, 3] (three steps): r = [0.5, 1.0, 1.5].
EPOCH_1 = [[2.0, 4.0, 1.0], [4.0, 8.0, 3.0]]
EPOCH_2 = [[1.0, 5.0, 3.0], [2.0, 7.0, 2.0], [1.5, 6.0, 4.0]]
RATIOS = [0.5, 1.0, 1.5]


def two_groups(steps):
    return [groups[:2] for groups in steps]


def run_two_epochs(balancer, count):
    pick = (lambda steps: steps) if count == 3 else two_groups
    train_epoch(balancer, 1, pick(EPOCH_1))
    assert dwa_weights(balancer) == [1.0] * count
    train_epoch(balancer, 2, pick(EPOCH_2))
    assert dwa_weights(balancer) == [1.0] * count
    balancer.start_epoch(3)
    return dwa_weights(balancer)


def state_is_finite(state):
    """As the recorder requires of a saved state: every floating-point tensor finite."""
    return all(bool(torch.isfinite(value).all()) for value in state.values()
               if torch.is_tensor(value) and value.is_floating_point())


def softmax_by_hand(ratios, temperature):
    exponentials = [math.exp(ratio / temperature) for ratio in ratios]
    return [value / sum(exponentials) for value in exponentials]


@pytest.mark.parametrize("temperature", [2.0, 0.5])
def test_dwa_paper_weights_are_k_times_the_softmax_of_the_loss_ratios(temperature):
    for count in (2, 3):
        weights = run_two_epochs(DWA(temperature=temperature), count)
        expected = [count * value for value in softmax_by_hand(RATIOS[:count], temperature)]
        assert weights == pytest.approx(expected, rel=1e-6)
        assert sum(weights) == pytest.approx(count)


def test_dwa_original_two_groups_multiplies_by_three():
    weights = run_two_epochs(DWA(form="original"), 2)
    # utils.py lines 146-147: 3 * exp(w_k / T) / (exp(w_1 / T) + exp(w_2 / T))
    e1, e2 = math.exp(0.5 / 2), math.exp(1.0 / 2)
    assert weights == pytest.approx([3 * e1 / (e1 + e2), 3 * e2 / (e1 + e2)], rel=1e-6)
    assert sum(weights) == pytest.approx(3.0)


def test_dwa_original_three_groups_leaves_the_third_weight_at_one_and_validates_on_two():
    balancer = DWA(form="original")
    weights = run_two_epochs(balancer, 3)
    # lines 149-153: w_3 enters the denominator, lambda_weight[2] stays 1
    e1, e2, e3 = (math.exp(ratio / 2) for ratio in RATIOS)
    assert weights == pytest.approx([3 * e1 / (e1 + e2 + e3), 3 * e2 / (e1 + e2 + e3), 1.0], rel=1e-6)
    groups = torch.tensor([1.0, 2.0, 4.0])
    with torch.inference_mode():
        # line 305: the validation total sums the first two weighted groups only
        assert balancer.combine(groups).item() == pytest.approx(weights[0] + 2 * weights[1], rel=1e-6)
    # line 264: the training total sums all three
    total = balancer.backward(groups.clone().requires_grad_(True)).item()
    assert total == pytest.approx(weights[0] + 2 * weights[1] + 4 * weights[2], rel=1e-6)
    paper = DWA(form="paper")
    run_two_epochs(paper, 3)
    assert paper.combine(groups).item() == pytest.approx((paper.weight * groups).sum().item())


def test_dwa_temperature_flattens_the_weights():
    spreads = []
    for temperature in (0.25, 2.0, 1000.0):
        weights = run_two_epochs(DWA(temperature=temperature), 2)
        assert weights[1] > weights[0]  # the group whose loss fell less gets more weight
        spreads.append(weights[1] - weights[0])
    assert spreads[0] > spreads[1] > spreads[2] and spreads[2] == pytest.approx(0.0, abs=1e-3)
    with pytest.raises(ValueError, match="^temperature 0"):
        DWA(temperature=0)


def test_dwa_validation_records_nothing_and_uses_the_current_weights():
    balancer = DWA()
    run_two_epochs(balancer, 2)
    weights = balancer.weight.clone()
    before = balancer.loss_sums.clone()
    with torch.inference_mode():
        total = balancer.combine(torch.tensor([2.0, 3.0]))
    assert total.item() == pytest.approx((weights * torch.tensor([2.0, 3.0])).sum().item())
    assert balancer.steps == 0 and torch.equal(balancer.loss_sums, before)


def test_dwa_without_two_known_epochs_keeps_weights_at_one():
    balancer = DWA()
    train_epoch(balancer, 5, two_groups(EPOCH_1))  # a jump: no history
    assert dwa_weights(balancer) == [1.0, 1.0]
    train_epoch(balancer, 6, [])  # an epoch without training steps
    train_epoch(balancer, 7, two_groups(EPOCH_1))
    assert dwa_weights(balancer) == [1.0, 1.0]
    train_epoch(balancer, 8, two_groups(EPOCH_2))
    assert dwa_weights(balancer) == [1.0, 1.0]
    balancer.start_epoch(9)
    assert dwa_weights(balancer) == pytest.approx([2 * value for value in softmax_by_hand(RATIOS[:2], 2.0)])
    balancer.start_epoch(9)  # again: nothing changes
    assert dwa_weights(balancer) == pytest.approx([2 * value for value in softmax_by_hand(RATIOS[:2], 2.0)])


@pytest.mark.parametrize("form", BALANCING_FORMS)
def test_dwa_state_round_trip_resumes_identically(form):
    generator = torch.Generator().manual_seed(3)
    epochs = {epoch: (torch.rand(4, 3, generator=generator) + 0.5).tolist() for epoch in range(1, 6)}
    running, saved = DWA(temperature=1.5, form=form), None
    log = []
    for epoch in range(1, 6):
        if epoch == 4:
            saved = copy.deepcopy(running.state_dict())  # written at the end of epoch 3 (last.pt)
        totals = train_epoch(running, epoch, epochs[epoch])
        log.append((dwa_weights(running), totals))
    assert log[3][0] != [1.0, 1.0, 1.0]
    assert state_is_finite(saved)

    resumed = DWA(temperature=1.5, form=form)  # two groups until the state says three
    resumed.load_state_dict(saved)
    for epoch in (4, 5):
        totals = train_epoch(resumed, epoch, epochs[epoch])
        assert (dwa_weights(resumed), totals) == log[epoch - 1]
    expected, actual = running.state_dict(), resumed.state_dict()
    assert expected.keys() == actual.keys() and expected["_extra_state"] == actual["_extra_state"]
    assert all(torch.equal(expected[name], actual[name]) for name in expected if name != "_extra_state")


def test_dwa_keeps_its_number_of_groups_once_losses_are_recorded():
    balancer = DWA()
    train_epoch(balancer, 1, EPOCH_1)
    assert balancer.weight.shape == (3,) and list(balancer.weights()) == ["w_segmentation", "w_depth", "w_normal"]
    with pytest.raises(ValueError, match="^2 groups"):
        balancer.combine(torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="original DWA needs two groups"):
        DWA(form="original").combine(torch.tensor([1.0]))


# ---- PCGrad ---------------------------------------------------------------------------------------------

class LinearTasks(nn.Module):
    """Known gradients: loss_k = a_k . theta + c_k * phi_k (+ offset), theta shared, phi task-specific."""

    def __init__(self, shared_directions, specific_scales, offset=0.0):
        super().__init__()
        self.directions = torch.tensor(shared_directions)
        self.scales = torch.tensor(specific_scales)
        self.offset = offset
        self.theta = nn.Parameter(torch.zeros(self.directions.shape[1]))
        self.phi = nn.Parameter(torch.zeros(len(specific_scales)))
        self.unused = nn.Parameter(torch.zeros(3))

    def shared_parameters(self):
        return [self.theta]

    def forward(self):
        return self.directions @ self.theta + self.scales * self.phi + self.offset


def pcgrad_step(balancer, model):
    balancer.attach(model)
    model.zero_grad(set_to_none=True)
    for parameter in balancer.model_parameters():
        parameter.grad = None
    return balancer.backward(model())


def test_pcgrad_paper_projects_two_conflicting_shared_gradients_by_hand():
    # a = (1, 0), b = (-1, 1): a.b = -1 < 0; a' = a - (a.b)/|b|^2 b = (0.5, 0.5), b' = b - (b.a)/|a|^2 a = (0, 1)
    model = LinearTasks([[1.0, 0.0], [-1.0, 1.0]], [1.0, 2.0])
    total = pcgrad_step(PCGrad(), model)
    torch.testing.assert_close(model.theta.grad, torch.tensor([0.5, 1.5]))
    torch.testing.assert_close(model.phi.grad, torch.tensor([1.0, 2.0]))  # task-specific: unchanged
    assert model.unused.grad is None and total.item() == 0.0


def test_pcgrad_original_projects_the_whole_flattened_gradient_by_hand():
    # g1 = (1, 0 | 1, 0), g2 = (-1, 1 | 0, 2): g1.g2 = -1, |g1|^2 = 2, |g2|^2 = 6
    # g1' = g1 + g2 / 6 = (5/6, 1/6 | 1, 1/3), g2' = g2 + g1 / 2 = (-1/2, 1 | 1/2, 2)
    model = LinearTasks([[1.0, 0.0], [-1.0, 1.0]], [1.0, 2.0])
    pcgrad_step(PCGrad(form="original"), model)
    torch.testing.assert_close(model.theta.grad, torch.tensor([1 / 3, 7 / 6]))
    torch.testing.assert_close(model.phi.grad, torch.tensor([3 / 2, 7 / 3]))
    assert model.unused.grad is None


@pytest.mark.parametrize("form", BALANCING_FORMS)
@pytest.mark.parametrize("directions", [[[1.0, 0.0], [1.0, 1.0]], [[1.0, 0.0], [0.0, 3.0]]])
def test_pcgrad_leaves_non_conflicting_gradients_unchanged(form, directions):
    model = LinearTasks(directions, [1.0, 2.0])
    pcgrad_step(PCGrad(form=form), model)
    torch.testing.assert_close(model.theta.grad, torch.tensor(directions).sum(0))
    torch.testing.assert_close(model.phi.grad, torch.tensor([1.0, 2.0]))


class SmallNet(nn.Module):
    """A shared layer and one head per task, with conflicting task losses (seed 4: every pair of the three
    conflicts at the shared layer, so the order of the projections matters)."""

    def __init__(self, tasks=3, seed=4):
        super().__init__()
        torch.manual_seed(seed)
        self.shared = nn.Linear(4, 5)
        self.heads = nn.ModuleList(nn.Linear(5, 2) for _ in range(tasks))
        self.inputs = torch.randn(6, 4)
        self.targets = [torch.randn(6, 2) * 3 for _ in range(tasks)]

    def shared_parameters(self):
        return self.shared.parameters()

    def forward(self):
        features = torch.tanh(self.shared(self.inputs))
        return torch.stack([((head(features) - target) ** 2).mean() for head, target in zip(self.heads, self.targets)])


def original_pcgrad_reference(parameters, objectives, order):
    """Transcription of model/mtan/pcgrad.py's pc_backward (the original's procedure, run on torch 1.7,
    whose zero_grad zeroes the gradients in place): pack, shuffle into `order`, project, set."""
    grads = []
    for objective in objectives:  # _pack_grad
        for parameter in parameters:
            if parameter.grad is not None:
                parameter.grad.zero_()
        objective.backward(retain_graph=True)
        grads.append(torch.cat([parameter.grad.clone().flatten() if parameter.grad is not None
                                else torch.zeros(parameter.numel()) for parameter in parameters]))
    grads = [grads[index] for index in order]  # random.shuffle(grads)
    stacked = torch.stack(grads, dim=0)
    pc_grad = stacked.clone()

    def proj_grad(grad):
        for k in range(len(grads)):
            inner_product = torch.sum(grad * stacked[k])
            proj_direction = inner_product / (torch.sum(stacked[k] * stacked[k]) + 1e-12)
            grad -= torch.min(proj_direction, torch.zeros_like(proj_direction)) * stacked[k]
        return grad

    pc_grad = torch.sum(torch.stack(list(map(proj_grad, list(pc_grad)))), dim=0)
    start = 0
    for parameter in parameters:  # _set_grad
        if parameter.grad is not None:
            parameter.grad[...] = pc_grad[start:start + parameter.numel()].view(parameter.shape)
        start += parameter.numel()
    return {id(parameter): parameter.grad.clone() for parameter in parameters}


def conflicts(model, objectives):
    shared = list(model.shared_parameters())
    flat = [torch.cat([g.flatten() for g in torch.autograd.grad(objective, shared, retain_graph=True)])
            for objective in objectives]
    return sum(bool(flat[i] @ flat[j] < 0) for i in range(len(flat)) for j in range(i + 1, len(flat)))


@pytest.mark.parametrize("seed", [0, 1, 5])
def test_pcgrad_original_equals_the_transcription_of_pcgrad_py(seed):
    model = SmallNet()
    assert conflicts(model, list(model())) == 3
    order = torch.randperm(3, generator=torch.Generator().manual_seed(seed)).tolist()
    reference = original_pcgrad_reference(list(model.parameters()), list(model()), order)
    reversed_order = original_pcgrad_reference(list(model.parameters()), list(model()), order[::-1])
    assert max((reference[key] - reversed_order[key]).abs().max() for key in reference) > 1e-3  # the order matters

    pcgrad_step(PCGrad(form="original", seed=seed), model)
    for parameter in model.parameters():
        torch.testing.assert_close(parameter.grad, reference[id(parameter)], rtol=1e-5, atol=1e-7)


def test_pcgrad_original_with_uncertainty_weighting_equals_the_transcription():
    # the original's pc_backward objectives are the uncertainty terms, and the log-variances are parameters
    model = SmallNet(tasks=2, seed=1)
    weighting = UncertaintyWeights()
    with torch.no_grad():
        weighting.log_variance.copy_(torch.tensor([0.3, -0.4]))
    assert conflicts(model, list(weighting.terms(model()))) == 1
    parameters = list(model.parameters()) + [weighting.log_variance]
    order = torch.randperm(2, generator=torch.Generator().manual_seed(0)).tolist()
    reference = original_pcgrad_reference(parameters, list(weighting.terms(model())), order)

    total = pcgrad_step(PCGrad(form="original", weighting=weighting), model)
    for parameter in parameters:
        torch.testing.assert_close(parameter.grad, reference[id(parameter)], rtol=1e-5, atol=1e-7)
    assert total.item() == pytest.approx(weighting.combine(model()).item(), rel=1e-6)


def paper_pcgrad_reference(per_group, generator):
    """Algorithm 1 of Yu et al. 2020 on per-group gradients [K, n], each group's others in a random order
    drawn (one permutation per group) from `generator`."""
    count = per_group.shape[0]
    summed = torch.zeros(per_group.shape[1])
    for i in range(count):
        others = [j for j in range(count) if j != i]
        g = per_group[i].clone()
        for position in torch.randperm(count - 1, generator=generator).tolist():
            j = others[position]
            if torch.dot(g, per_group[j]) < 0:
                g = g - torch.dot(g, per_group[j]) / per_group[j].norm() ** 2 * per_group[j]
        summed += g
    return summed


def test_pcgrad_paper_three_groups_follows_algorithm_1_and_leaves_heads_alone():
    model = SmallNet()
    groups = model()
    shared = list(model.shared_parameters())
    per_group = torch.stack([torch.cat([g.flatten() for g in torch.autograd.grad(groups[k], shared, retain_graph=True)])
                             for k in range(3)])
    expected_shared = paper_pcgrad_reference(per_group, torch.Generator().manual_seed(7))
    other_orders = [paper_pcgrad_reference(per_group, torch.Generator().manual_seed(seed)) for seed in range(4)]
    assert max((expected_shared - other).abs().max() for other in other_orders) > 1e-3  # the order matters
    model.zero_grad(set_to_none=True)
    groups.sum().backward()
    expected_heads = [head.weight.grad.clone() for head in model.heads]

    total = pcgrad_step(PCGrad(seed=7), model)
    assert total.item() == pytest.approx(groups.sum().item(), rel=1e-6)
    torch.testing.assert_close(torch.cat([p.grad.flatten() for p in shared]), expected_shared, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(expected_shared, per_group.sum(0))
    for head, expected in zip(model.heads, expected_heads):
        torch.testing.assert_close(head.weight.grad, expected)


def test_pcgrad_paper_with_uncertainty_weighting_by_hand():
    model = LinearTasks([[1.0, 0.0], [-1.0, 1.0]], [1.0, 2.0], offset=3.0)
    weighting = UncertaintyWeights()
    s = torch.tensor([0.5, -1.0])
    with torch.no_grad():
        weighting.log_variance.copy_(s)
    balancer = PCGrad(weighting=weighting)
    total = pcgrad_step(balancer, model)
    w = 0.5 * torch.exp(-s)  # group k's gradient is w_k a_k: the projections are those of a and b, scaled
    torch.testing.assert_close(model.theta.grad, w[0] * torch.tensor([0.5, 0.5]) + w[1] * torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(model.phi.grad, w * torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(weighting.log_variance.grad, 1 - w * 3.0)  # d/ds (0.5 exp(-s) L + s), L = 3
    assert total.item() == pytest.approx((w * 3.0 + s).sum().item(), rel=1e-6)
    assert balancer.model_parameters() == [weighting.log_variance]
    assert balancer.weights() == weighting.weights()
    assert {"weighting.log_variance", "_extra_state"} <= set(balancer.state_dict())


def test_pcgrad_with_dwa_weighting_records_the_training_losses():
    balancer = make_balancer("pcgrad", weighting="dwa", form="original")
    assert type(balancer.weighting) is DWAOriginal
    model = LinearTasks([[1.0, 0.0], [-1.0, 1.0]], [1.0, 2.0], offset=3.0)
    balancer.start_epoch(1)
    pcgrad_step(balancer, model)
    assert balancer.weighting.steps == 1
    torch.testing.assert_close(balancer.weighting.loss_sums, torch.tensor([3.0, 3.0], dtype=torch.float64))


def test_pcgrad_generator_state_is_saved_and_restored():
    model = SmallNet()
    first = PCGrad(seed=11)
    pcgrad_step(first, model)
    state = copy.deepcopy(first.state_dict())
    pcgrad_step(first, model)
    expected = [p.grad.clone() for p in model.shared_parameters()]

    second = PCGrad(seed=99)
    second.load_state_dict(state)
    pcgrad_step(second, model)
    for parameter, gradient in zip(model.shared_parameters(), expected):
        torch.testing.assert_close(parameter.grad, gradient)
    assert copy.deepcopy(second).attachment is None


def test_pcgrad_attachment_errors():
    with pytest.raises(RuntimeError, match=r"call attach\(model\)"):
        PCGrad().backward(torch.tensor([1.0, 2.0], requires_grad=True))
    with pytest.raises(TypeError, match="shared_parameters"):
        PCGrad().attach(nn.Linear(2, 2))
    PCGrad(form="original").attach(nn.Linear(2, 2))  # the original form needs no shared parameters
    for weighting in ("gradnorm", "pcgrad", nn.Linear(2, 2)):
        with pytest.raises(ValueError, match="^weighting"):
            PCGrad(weighting=weighting)


# ---- make_balancer and forms ----------------------------------------------------------------------------

def test_make_balancer_builds_dwa_and_pcgrad_in_each_form():
    engine_settings = dict(alpha=0.16, lr=1e-4, betas=(0.9, 0.99))
    assert BALANCING_FORMS == GRADNORM_FORMS == ("paper", "original")
    dwa = make_balancer("dwa", form="original", temperature=3.0, **engine_settings)
    assert type(dwa) is DWAOriginal and isinstance(dwa, DWA) and dwa.temperature == 3.0
    assert type(make_balancer("dwa")) is DWAPaper and make_balancer("dwa").temperature == 2.0
    pcgrad = make_balancer("pcgrad", form="original", seed=4, weighting="uncertainty", **engine_settings)
    assert type(pcgrad) is PCGradOriginal and isinstance(pcgrad, PCGrad) and pcgrad.seed == 4
    assert type(pcgrad.weighting) is UncertaintyWeights
    default = make_balancer("pcgrad")
    assert type(default) is PCGradPaper and type(default.weighting) is LossBalancer
    assert type(DWAPaper()) is DWAPaper and type(PCGradOriginal(form="original")) is PCGradOriginal


@pytest.mark.parametrize("build", [lambda: DWA(form="bogus"), lambda: PCGrad(form="bogus"),
                                   lambda: make_balancer("dwa", form="bogus"),
                                   lambda: make_balancer("pcgrad", form="bogus")])
def test_unknown_form_is_a_value_error_naming_form(build):
    with pytest.raises(ValueError, match=r"^form 'bogus': unknown (DWA|PCGrad) form; expected one of paper, original"):
        build()


def test_a_form_class_refuses_the_other_form():
    with pytest.raises(ValueError, match="^form 'original': DWAPaper is DWA's 'paper' form"):
        DWAPaper(form="original")
    with pytest.raises(ValueError, match="^form 'paper': PCGradOriginal is PCGrad's 'original' form"):
        PCGradOriginal(form="paper")
