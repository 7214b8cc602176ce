"""Loss balancing: uncertainty weights and GradNorm (both forms) against their definitions, and the
balancers' interface (attach once, then backward(groups))."""
import copy
import pickle
import weakref

import pytest
import torch

from losses import GradNorm, GradNormOriginal, GradNormPaper, LossBalancer, UncertaintyWeights, XTaskLoss, make_balancer
from losses import balancing
from losses.balancing import GRADNORM_FORMS, GroupGradientSplit, activation_consumers
from models import ResNetEncoder, XTaskTSNet


class StagelessNet(XTaskTSNet):
    """An XTaskTSNet that names no last shared stage, as a model family without one would: paper GradNorm
    then takes its per-group passes."""

    last_shared_stage = None


def tiny_step_inputs(seed=0, network=XTaskTSNet):
    torch.manual_seed(seed)
    model = network(18, 3)
    image = torch.randn(2, 3, 32, 64)
    segmentation_target = torch.randint(0, 3, (2, 32, 64))
    depth_target = torch.rand(2, 1, 32, 64) + 0.1
    criterion = XTaskLoss(3, alpha=0.2, gamma=0.3)
    return model, criterion, image, segmentation_target, depth_target


def groups_of(model, criterion, image, segmentation_target, depth_target):
    return criterion(model(image), segmentation_target, depth_target).groups()


def test_plain_sum_backward_gives_the_gradient_of_the_sum():
    balancer = make_balancer("none")
    groups = torch.tensor([1.5, 2.0], requires_grad=True)
    balancer.attach(XTaskTSNet(18, 3))
    total = balancer.backward(groups)
    assert total.item() == pytest.approx(3.5)
    torch.testing.assert_close(groups.grad, torch.ones(2))
    assert balancer.weights() == {} and list(balancer.parameters()) == []


def test_uncertainty_total_follows_the_original_form_and_is_in_the_state_dict():
    balancer = UncertaintyWeights()
    assert set(balancer.state_dict()) == {"log_variance"}
    with torch.no_grad():
        balancer.log_variance.copy_(torch.tensor([0.5, -1.0]))
    groups = torch.tensor([2.0, 3.0])
    expected = 0.5 * torch.exp(torch.tensor(-0.5)) * 2 + 0.5 + 0.5 * torch.exp(torch.tensor(1.0)) * 3 - 1.0
    assert balancer.combine(groups).item() == pytest.approx(expected.item(), rel=1e-6)
    assert balancer.weights()["sigma_segmentation"] == pytest.approx(torch.exp(torch.tensor(0.25)).item())
    assert balancer.model_parameters() == [balancer.log_variance]

    restored = UncertaintyWeights()
    restored.load_state_dict(balancer.state_dict())
    torch.testing.assert_close(restored.log_variance, balancer.log_variance)


def test_uncertainty_parameters_start_at_zero_and_receive_gradient():
    balancer = UncertaintyWeights()
    assert torch.all(balancer.log_variance == 0)
    balancer.backward(torch.tensor([2.0, 0.5], requires_grad=True))
    # d/ds (0.5 exp(-s) L + s) = 1 - 0.5 L at s = 0
    torch.testing.assert_close(balancer.log_variance.grad, torch.tensor([0.0, 0.75]))


def reference_gradnorm(model, groups, weights, initial_losses, alpha):
    """The original two-pass form: weighted group gradients with create_graph, then L_grad into w only."""
    shared = model.last_shared_weight
    w = weights.clone().requires_grad_(True)
    norms = torch.stack([
        torch.linalg.vector_norm(torch.autograd.grad(w[k] * groups[k], shared, retain_graph=True,
                                                     create_graph=True)[0]) for k in range(2)])
    model.zero_grad(set_to_none=True)
    (weights * groups).sum().backward(retain_graph=True)
    model_grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    ratio = groups.detach() / initial_losses
    target = (norms.mean() * (ratio / ratio.mean()) ** alpha).detach()
    weight_grad = torch.autograd.grad((norms - target).abs().sum(), w)[0]
    return model_grads, weight_grad


def test_gradnorm_matches_the_two_pass_reference_and_leaves_model_gradients_untouched():
    model, criterion, *batch = tiny_step_inputs(1, StagelessNet)
    balancer = GradNorm(alpha=0.16, lr=1e-2)
    balancer.attach(model)
    with torch.no_grad():
        balancer.task_weight.copy_(torch.tensor([1.3, 0.7]))
        balancer.initial_losses.copy_(torch.tensor([2.0, 0.9]))

    groups = groups_of(model, criterion, *batch)
    reference_model_grads, reference_weight_grad = reference_gradnorm(
        model, groups, balancer.task_weight.detach(), balancer.initial_losses, 0.16)

    model.zero_grad(set_to_none=True)
    groups = groups_of(model, criterion, *batch)
    total = balancer.backward(groups)
    assert total.item() == pytest.approx((torch.tensor([1.3, 0.7]) * groups.detach()).sum().item(), rel=1e-6)
    for name, parameter in model.named_parameters():
        if name in reference_model_grads:
            torch.testing.assert_close(parameter.grad, reference_model_grads[name], rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(balancer.task_weight.grad, reference_weight_grad, rtol=1e-4, atol=1e-7)
    assert torch.count_nonzero(balancer.task_weight.grad) > 0


def test_gradnorm_weights_sum_to_two_and_initial_losses_are_fixed_after_the_first_step():
    model, criterion, *batch = tiny_step_inputs(2)
    balancer = GradNorm(alpha=0.16, lr=0.05)
    balancer.attach(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    assert torch.isnan(balancer.initial_losses).all()
    first_groups = None
    for step in range(3):
        optimizer.zero_grad(set_to_none=True)
        groups = groups_of(model, criterion, *batch)
        if step == 0:
            first_groups = groups.detach().clone()
        balancer.backward(groups)
        optimizer.step()
        balancer.step()
        assert balancer.task_weight.sum().item() == pytest.approx(2.0, rel=1e-6)
        torch.testing.assert_close(balancer.initial_losses, first_groups)
    assert not torch.allclose(balancer.task_weight.detach(), torch.ones(2))
    assert set(balancer.weights()) == {"w_segmentation", "w_depth"}


def test_gradnorm_state_round_trips_weights_initial_losses_and_its_adam():
    model, criterion, *batch = tiny_step_inputs(3)
    balancer = GradNorm(lr=0.05)
    balancer.attach(model)
    balancer.backward(groups_of(model, criterion, *batch))
    balancer.step()
    state = balancer.state_dict()
    assert {"task_weight", "initial_losses"} <= set(state)
    restored = GradNorm(lr=0.05)
    restored.load_state_dict(state)
    torch.testing.assert_close(restored.task_weight, balancer.task_weight)
    torch.testing.assert_close(restored.initial_losses, balancer.initial_losses)
    saved_adam = balancer.optimizer.state_dict()["state"][0]
    restored_adam = restored.optimizer.state_dict()["state"][0]
    torch.testing.assert_close(restored_adam["exp_avg"], saved_adam["exp_avg"])
    assert restored_adam["step"] == saved_adam["step"] == 1


def test_gradnorm_weights_are_not_in_the_model_optimizer():
    assert GradNorm().model_parameters() == []
    assert isinstance(make_balancer("gradnorm"), GradNorm)
    assert type(make_balancer("none")) is LossBalancer


def test_unknown_balancing_method_is_a_clear_error():
    with pytest.raises(ValueError, match="^balancing 'bogus'.*none, uncertainty, gradnorm, dwa, pcgrad"):
        make_balancer("bogus")
    with pytest.raises(ValueError, match="^alpha -1"):
        GradNorm(alpha=-1)


ORIGINAL_LR = 1e-3
ORIGINAL_SCHEDULE = (1, 1, 2)  # the epoch of each training step: two in epoch 1, one in epoch 2


def original_batches(seed=10):
    """One small batch per step of ORIGINAL_SCHEDULE: (image, segmentation_target, depth_target)."""
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(2, 3, 32, 64, generator=generator),
             torch.randint(0, 7, (2, 32, 64), generator=generator),
             torch.rand(2, 1, 32, 64, generator=generator) + 0.1) for _ in ORIGINAL_SCHEDULE]


def original_model():
    """The ResNet-18 XTaskTSNet every original-form test starts from (seeded)."""
    torch.manual_seed(11)
    return XTaskTSNet(18, 7)


def gradients_of(model):
    """Copies of the model's parameter gradients, by name."""
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def parameters_of(model):
    """Copies of the model's parameters, by name."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


class OriginalGradNormTranscript:
    """The original code's GradNorm training step written out line by line, independent of
    losses.balancing: two scalar leaf weights with their own Adam (torch's default betas), t = W until the
    first update and t = 2 W / (W_1 + W_2) after each, L0 taken at every step of epoch 1."""

    def __init__(self, model, lr, alpha=0.16):
        """W = (1, 1) and t = W; Adam for W and, with the same lr, for the model."""
        self.model = model
        self.alpha = alpha
        self.w_segmentation = torch.tensor(1.0, requires_grad=True)
        self.w_depth = torch.tensor(1.0, requires_grad=True)
        self.task_weights = [self.w_segmentation, self.w_depth]
        self.weight_optimizer = torch.optim.Adam([self.w_segmentation, self.w_depth], lr=lr)
        self.model_optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        self.l0_segmentation = self.l0_depth = None

    def renormalise(self):
        """t = 2 W / (W_1 + W_2), as the original forms it after every training step."""
        coefficient = 2 / (self.w_segmentation + self.w_depth)
        self.task_weights = [coefficient * self.w_segmentation, coefficient * self.w_depth]

    def train_step(self, criterion, batch, epoch):
        """One training batch; returns the model's gradients before and after L_grad's backward and W's."""
        image, segmentation_target, depth_target = batch
        terms = criterion(self.model(image), segmentation_target, depth_target)
        l_segmentation = self.task_weights[0] * terms.segmentation_group * 0.5
        l_depth = self.task_weights[1] * terms.depth_group * 0.5
        if epoch == 1:
            self.l0_segmentation, self.l0_depth = l_segmentation.detach(), l_depth.detach()
        self.model_optimizer.zero_grad()
        l_segmentation.backward(retain_graph=True)
        l_depth.backward(retain_graph=True)
        first_order_gradients = gradients_of(self.model)
        shared = self.model.encoder.stage4[-1].conv2.weight
        g_segmentation = torch.norm(torch.autograd.grad(l_segmentation, shared, retain_graph=True,
                                                        create_graph=True)[0], 2)
        g_depth = torch.norm(torch.autograd.grad(l_depth, shared, retain_graph=True, create_graph=True)[0], 2)
        g_average = (g_segmentation + g_depth) / 2
        ratio_segmentation = l_segmentation / self.l0_segmentation
        ratio_depth = l_depth / self.l0_depth
        ratio_average = (ratio_segmentation + ratio_depth) / 2
        target_segmentation = (g_average * (ratio_segmentation / ratio_average) ** self.alpha).detach()
        target_depth = (g_average * (ratio_depth / ratio_average) ** self.alpha).detach()
        self.weight_optimizer.zero_grad()
        gradnorm_loss = torch.abs(g_segmentation - target_segmentation) + torch.abs(g_depth - target_depth)
        gradnorm_loss.backward()
        record = {"first_order_gradients": first_order_gradients, "gradients": gradients_of(self.model),
                  "weight_gradient": torch.stack([self.w_segmentation.grad, self.w_depth.grad]),
                  "initial_losses": torch.stack([self.l0_segmentation, self.l0_depth])}
        self.weight_optimizer.step()
        self.model_optimizer.step()
        self.renormalise()
        record["parameters"] = parameters_of(self.model)
        record["weights"] = torch.stack([t.detach() for t in self.task_weights])
        return record


def engine_driven_original_steps(model, criterion, batches, balancer):
    """ORIGINAL_SCHEDULE driven as the engine drives a balancer; one record per step."""
    balancer.attach(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=ORIGINAL_LR)
    records = []
    for step, (epoch, (image, segmentation_target, depth_target)) in enumerate(zip(ORIGINAL_SCHEDULE, batches)):
        if step == 0 or epoch != ORIGINAL_SCHEDULE[step - 1]:
            balancer.start_epoch(epoch)
        weights_before = torch.tensor(list(balancer.weights().values()))
        terms = criterion(model(image), segmentation_target, depth_target)
        optimizer.zero_grad(set_to_none=True)
        total = balancer.backward(terms.groups())
        record = {"gradients": gradients_of(model), "weight_gradient": balancer.task_weight.grad.clone(),
                  "initial_losses": balancer.initial_losses.clone(), "total": total,
                  "expected_losses": 0.5 * weights_before * terms.groups().detach()}
        optimizer.step()
        balancer.step()
        record["parameters"] = parameters_of(model)
        record["weights"] = torch.tensor([balancer.weights()["w_segmentation"], balancer.weights()["w_depth"]])
        records.append(record)
    return records


@pytest.fixture(scope="module")
def original_runs():
    """The three steps of ORIGINAL_SCHEDULE from identical weights and batches: through
    GradNorm(form="original") as the engine drives it, and through the transcript."""
    model, criterion, batches = original_model(), XTaskLoss(7, 0.01, 0.01), original_batches()
    transcript = OriginalGradNormTranscript(copy.deepcopy(model), ORIGINAL_LR)
    transcribed = [transcript.train_step(criterion, batch, epoch) for epoch, batch in zip(ORIGINAL_SCHEDULE, batches)]
    balancer = GradNorm(alpha=0.16, lr=ORIGINAL_LR, betas=(0.9, 0.999), form="original")
    driven = engine_driven_original_steps(model, criterion, batches, balancer)
    return driven, transcribed


def assert_same_tensors(actual, expected):
    """Same names and, name by name, equal tensors within float32 tolerance."""
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.xdist_group("original_gradnorm_runs")  # one worker builds the module fixture once
def test_original_gradnorm_matches_a_step_by_step_transcript_of_the_original_code(original_runs):
    driven, transcribed = original_runs
    for ours, theirs in zip(driven, transcribed):
        assert_same_tensors(ours["gradients"], theirs["gradients"])
        torch.testing.assert_close(ours["weight_gradient"], theirs["weight_gradient"], rtol=1e-5, atol=1e-6)
        assert_same_tensors(ours["parameters"], theirs["parameters"])
        torch.testing.assert_close(ours["weights"], theirs["weights"], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(driven[-1]["weights"], torch.ones(2))


@pytest.mark.xdist_group("original_gradnorm_runs")  # one worker builds the module fixture once
def test_original_gradnorm_adds_the_second_order_term_to_the_model_gradients(original_runs):
    driven, transcribed = original_runs
    first_order = transcribed[0]["first_order_gradients"]
    differences = [(driven[0]["gradients"][name] - gradient).abs().max() / gradient.abs().max()
                   for name, gradient in first_order.items() if gradient.abs().max() > 0]
    assert max(differences) > 1e-3
    shared_name = "encoder.stage4.1.conv2.weight"
    assert not torch.allclose(driven[0]["gradients"][shared_name], first_order[shared_name], rtol=1e-4, atol=0)


@pytest.mark.xdist_group("original_gradnorm_runs")  # one worker builds the module fixture once
def test_original_gradnorm_returns_the_training_total_the_original_logged(original_runs):
    """sum_k t_k L_k, i.e. twice the back-propagated l_1 + l_2 (comparable with the validation total)."""
    driven, _ = original_runs
    for record in driven:
        torch.testing.assert_close(record["total"], 2 * record["expected_losses"].sum())


@pytest.mark.xdist_group("original_gradnorm_runs")  # one worker builds the module fixture once
def test_original_gradnorm_refreshes_initial_losses_during_epoch_1_and_freezes_them_after(original_runs):
    driven, transcribed = original_runs
    first, second, third = (record["initial_losses"] for record in driven)
    torch.testing.assert_close(first, driven[0]["expected_losses"])
    torch.testing.assert_close(second, driven[1]["expected_losses"])
    assert not torch.allclose(first, second)
    assert torch.equal(third, second)
    assert not torch.allclose(third, driven[2]["expected_losses"])
    for ours, theirs in zip(driven, transcribed):
        torch.testing.assert_close(ours["initial_losses"], theirs["initial_losses"], rtol=1e-5, atol=1e-7)


def test_original_gradnorm_first_step_uses_the_raw_weights():
    model, criterion, batches = original_model(), XTaskLoss(7, 0.01, 0.01), original_batches()
    with_raw_weights = OriginalGradNormTranscript(copy.deepcopy(model), ORIGINAL_LR)
    with_renormalised_weights = OriginalGradNormTranscript(copy.deepcopy(model), ORIGINAL_LR)
    with_renormalised_weights.renormalise()
    raw = with_raw_weights.train_step(criterion, batches[0], epoch=1)["weight_gradient"]
    renormalised = with_renormalised_weights.train_step(criterion, batches[0], epoch=1)["weight_gradient"]

    balancer = GradNorm(lr=ORIGINAL_LR, form="original")
    image, segmentation_target, depth_target = batches[0]
    balancer.attach(model)
    balancer.backward(criterion(model(image), segmentation_target, depth_target).groups())
    torch.testing.assert_close(balancer.task_weight.grad, raw, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(raw, renormalised, rtol=1e-3, atol=0)
    assert int(balancer.steps_taken) == 1


def test_original_gradnorm_validation_total_uses_t_without_the_half_and_no_weight_gradient():
    balancer = GradNorm(lr=0.05, form="original")
    with torch.no_grad():
        balancer.task_weight.copy_(torch.tensor([3.0, 1.0]))
    assert balancer.weights() == {"w_segmentation": 3.0, "w_depth": 1.0}
    balancer.steps_taken.fill_(1)
    assert balancer.weights() == {"w_segmentation": pytest.approx(1.5), "w_depth": pytest.approx(0.5)}
    groups = torch.tensor([2.0, 4.0], requires_grad=True)
    total = balancer.combine(groups)
    assert total.item() == pytest.approx(1.5 * 2.0 + 0.5 * 4.0)
    total.backward()
    assert balancer.task_weight.grad is None
    torch.testing.assert_close(groups.grad, torch.tensor([1.5, 0.5]))


def test_original_gradnorm_state_round_trips_and_a_restored_balancer_continues_identically():
    model, criterion, batches = original_model(), XTaskLoss(7, 0.01, 0.01), original_batches()
    balancer = GradNorm(lr=ORIGINAL_LR, form="original")
    engine_driven_original_steps(model, criterion, batches[:2], balancer)
    balancer.start_epoch(2)
    state = copy.deepcopy(balancer.state_dict())
    assert {"task_weight", "initial_losses", "current_epoch", "steps_taken"} <= set(state)

    restored = GradNorm(lr=ORIGINAL_LR, form="original")
    restored.load_state_dict(state)
    for name in ("task_weight", "initial_losses", "current_epoch", "steps_taken"):
        assert torch.equal(restored.state_dict()[name], state[name])
    assert int(restored.current_epoch) == 2 and int(restored.steps_taken) == 2
    saved_adam = balancer.optimizer.state_dict()["state"][0]
    restored_adam = restored.optimizer.state_dict()["state"][0]
    assert torch.equal(restored_adam["exp_avg_sq"], saved_adam["exp_avg_sq"]) and restored_adam["step"] == 2

    restored_model = copy.deepcopy(model)
    image, segmentation_target, depth_target = batches[2]
    for continuing_model, continuing in ((model, balancer), (restored_model, restored)):
        continuing_model.zero_grad(set_to_none=True)
        groups = criterion(continuing_model(image), segmentation_target, depth_target).groups()
        continuing.attach(continuing_model)
        continuing.backward(groups)
        continuing.step()
    assert torch.equal(restored.task_weight, balancer.task_weight)
    assert torch.equal(restored.initial_losses, balancer.initial_losses)
    assert restored.weights() == balancer.weights()
    assert_same_tensors(gradients_of(restored_model), gradients_of(model))
    assert not torch.equal(balancer.task_weight.detach(), state["task_weight"])


def test_unknown_gradnorm_form_is_a_clear_error():
    assert GRADNORM_FORMS == ("paper", "original")
    with pytest.raises(ValueError, match=r"^form .*paper, original"):
        GradNorm(form="chen")
    assert GradNorm().form == "paper"


def test_start_epoch_changes_nothing_for_the_sum_uncertainty_weights_and_paper_gradnorm():
    for balancer in (LossBalancer(), UncertaintyWeights(), GradNorm()):
        before = copy.deepcopy(balancer.state_dict())
        assert balancer.start_epoch(2) is None
        after = balancer.state_dict()
        assert after.keys() == before.keys()
        for name, value in before.items():
            if isinstance(value, torch.Tensor):
                torch.testing.assert_close(after[name], value, rtol=0, atol=0, equal_nan=True)
            else:
                assert after[name] == value
    assert set(GradNorm().state_dict()) == {"task_weight", "initial_losses", "_extra_state"}


def attached_weight(balancer, model):
    """The shared weight `balancer` measures at once attached to `model`."""
    balancer.attach(model)
    return balancer.attachment.shared_weight


def test_shared_weight_is_conv2_of_the_last_block_on_resnet18_for_both_gradnorm_forms():
    model = XTaskTSNet(18, 3)
    last_conv2 = model.encoder.stage4[-1].conv2.weight
    assert model.last_block_conv2_weight is last_conv2
    assert model.last_shared_weight is last_conv2
    assert attached_weight(GradNorm(form="paper"), model) is last_conv2
    assert attached_weight(GradNorm(form="original"), model) is last_conv2


def test_shared_weight_on_resnet50_is_conv3_for_the_paper_form_and_conv2_for_the_original():
    encoder = ResNetEncoder(50)
    assert attached_weight(GradNorm(form="paper"), encoder) is encoder.stage4[-1].conv3.weight
    assert attached_weight(GradNorm(form="original"), encoder) is encoder.stage4[-1].conv2.weight
    assert encoder.last_block_conv2_weight is encoder.stage4[-1].conv2.weight


def test_attach_measures_inside_a_distributed_data_parallel_wrapper():
    """A DistributedDataParallel around the model (built without a process group: only its `module`)."""
    model = XTaskTSNet(18, 3)
    wrapped = torch.nn.parallel.DistributedDataParallel.__new__(torch.nn.parallel.DistributedDataParallel)
    torch.nn.Module.__init__(wrapped)
    wrapped.module = model
    paper = GradNorm()
    assert attached_weight(paper, wrapped) is model.last_shared_weight
    assert len(model.encoder.stage4._forward_hooks) == 1
    assert attached_weight(GradNorm(form="original"), wrapped) is model.last_block_conv2_weight


def test_gradnorm_form_builds_one_class_per_algorithm():
    paper, original = GradNorm(), GradNorm(0.2, 1e-3, (0.9, 0.99), "original")
    assert type(paper) is GradNormPaper and type(original) is GradNormOriginal
    assert isinstance(paper, GradNorm) and isinstance(original, GradNorm)
    assert (paper.form, original.form) == ("paper", "original")
    assert original.alpha == 0.2 and original.optimizer.param_groups[0]["betas"] == (0.9, 0.99)
    assert type(make_balancer("gradnorm", alpha=0.3, form="original", lr=1e-3, betas=(0.8, 0.9))) is GradNormOriginal
    assert type(GradNormPaper()) is GradNormPaper and type(GradNormOriginal(form="original")) is GradNormOriginal
    with pytest.raises(ValueError, match="^form 'original': GradNormPaper is GradNorm's 'paper' form"):
        GradNormPaper(form="original")
    assert type(copy.deepcopy(original)) is GradNormOriginal
    assert type(pickle.loads(pickle.dumps(paper))) is GradNormPaper


def test_neither_gradnorm_class_holds_the_other_form_s_state():
    assert set(GradNormPaper().state_dict()) == {"task_weight", "initial_losses", "_extra_state"}
    assert not hasattr(GradNormPaper(), "current_epoch") and not hasattr(GradNormPaper(), "steps_taken")
    assert set(GradNormOriginal().state_dict()) == {"task_weight", "initial_losses", "current_epoch", "steps_taken",
                                                    "_extra_state"}
    for method in ("attachment_to", "effective_weights", "backward"):
        assert method in vars(GradNormPaper) and method in vars(GradNormOriginal)
    assert "start_epoch" not in vars(GradNormPaper) and "step" not in vars(GradNormOriginal)


@pytest.mark.parametrize("form", GRADNORM_FORMS)
def test_gradnorm_backward_without_attach_is_a_clear_error(form):
    model, criterion, *batch = tiny_step_inputs(7)
    balancer = GradNorm(form=form)
    with pytest.raises(RuntimeError, match=r"call attach\(model\)"):
        balancer.backward(groups_of(model, criterion, *batch))
    assert all(parameter.grad is None for parameter in model.parameters())
    balancer.attach(model)
    balancer.release()
    with pytest.raises(RuntimeError, match=r"call attach\(model\)"):
        balancer.backward(groups_of(model, criterion, *batch))


def split_batch(seed):
    """One 64x64 image and its targets: small enough for a ResNet-50 step on the CPU."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(1, 3, 64, 64, generator=generator), torch.randint(0, 3, (1, 64, 64), generator=generator),
            torch.rand(1, 1, 64, 64, generator=generator) + 0.1)


def count_split_passes(monkeypatch):
    """A list that gets one entry per backward pass GradNorm splits by group (the one-pass path)."""
    passes = []
    split_backward = balancing.GroupGradientSplit.backward

    def counted(split, total):
        passes.append(total)
        return split_backward(split, total)

    monkeypatch.setattr(balancing.GroupGradientSplit, "backward", counted)
    return passes


def paper_gradnorm_steps(model, balancer, batches):
    """Engine-ordered steps (balancer attached once, then forward, balancer backward, Adam, balancer step);
    per step the model's and the weights' gradients and the total."""
    balancer.attach(model)
    criterion = XTaskLoss(3, alpha=0.2, gamma=0.3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    records = []
    for image, segmentation_target, depth_target in batches:
        groups = criterion(model(image), segmentation_target, depth_target).groups()
        optimizer.zero_grad(set_to_none=True)
        total = balancer.backward(groups)
        records.append({"gradients": gradients_of(model), "weight_gradient": balancer.task_weight.grad.clone(),
                        "total": total})
        optimizer.step()
        balancer.step()
    return records


@pytest.mark.parametrize("enc_layers", [18, 50])
def test_paper_gradnorm_one_pass_split_matches_the_per_group_passes_over_two_steps(enc_layers, monkeypatch):
    """The recorded activation (forward hook placed by attach) gives the same model gradients, weight
    gradients and totals as the per-group passes taken without it (a model naming no last shared stage),
    step after step."""
    torch.manual_seed(20)
    model = XTaskTSNet(enc_layers, 3)
    stageless_model = StagelessNet(enc_layers, 3)
    stageless_model.load_state_dict(model.state_dict())
    batches = [split_batch(21), split_batch(22)]
    passes = count_split_passes(monkeypatch)
    split = paper_gradnorm_steps(model, GradNorm(alpha=0.16, lr=1e-2), batches)
    assert len(passes) == 2
    per_group = paper_gradnorm_steps(stageless_model, GradNorm(alpha=0.16, lr=1e-2), batches)
    assert len(passes) == 2
    for ours, reference in zip(split, per_group):
        assert_same_tensors(ours["gradients"], reference["gradients"])
        torch.testing.assert_close(ours["weight_gradient"], reference["weight_gradient"], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(ours["total"], reference["total"])
    assert torch.count_nonzero(split[-1]["weight_gradient"]) > 0


def test_paper_gradnorm_one_pass_split_matches_the_two_pass_reference(monkeypatch):
    """The create_graph reference of the first GradNorm test, met through the recorded activation."""
    model, criterion, *batch = tiny_step_inputs(1)
    balancer = GradNorm(alpha=0.16, lr=1e-2)
    with torch.no_grad():
        balancer.task_weight.copy_(torch.tensor([1.3, 0.7]))
        balancer.initial_losses.copy_(torch.tensor([2.0, 0.9]))
    reference_model_grads, reference_weight_grad = reference_gradnorm(
        model, groups_of(model, criterion, *batch), balancer.task_weight.detach(), balancer.initial_losses, 0.16)

    passes = count_split_passes(monkeypatch)
    model.zero_grad(set_to_none=True)
    balancer.attach(model)
    balancer.backward(groups_of(model, criterion, *batch))
    assert len(passes) == 1
    for name, parameter in model.named_parameters():
        if name in reference_model_grads:
            torch.testing.assert_close(parameter.grad, reference_model_grads[name], rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(balancer.task_weight.grad, reference_weight_grad, rtol=1e-4, atol=1e-7)


def test_group_gradient_split_adds_every_consumer_and_input_position_of_a_group():
    """Group 0 reaches the activation through two nodes, group 1 through one node that takes it twice."""
    generator = torch.Generator().manual_seed(7)
    shared_weight = torch.randn(4, 4, generator=generator, requires_grad=True)
    head, scale = torch.randn(4, 2, generator=generator, requires_grad=True), torch.randn(4, requires_grad=True)
    activation = torch.tanh(torch.randn(3, 4, generator=generator) @ shared_weight)
    groups = torch.stack(((activation @ head).pow(2).sum() + (activation * scale).sum(),
                          (activation * activation).sum() * 0.5))
    weights = torch.tensor([1.5, 0.25])
    expected = torch.stack([torch.linalg.vector_norm(torch.autograd.grad(weight * group, shared_weight,
                                                                         retain_graph=True)[0])
                            for weight, group in zip(weights, groups)])
    consumers = activation_consumers(groups, activation, shared_weight)
    assert sorted(len(node_positions) for node_positions in consumers[0].values()) == [1, 1]
    assert list(consumers[1].values()) == [[0, 1]]
    split = GroupGradientSplit(activation, consumers, shared_weight)
    split.backward((weights * groups).sum())
    torch.testing.assert_close(split.shared_weight_norms(), expected)
    assert head.grad is not None and shared_weight.grad is not None


def test_paper_gradnorm_takes_the_per_group_passes_when_the_activation_does_not_split_the_graph(monkeypatch):
    model, criterion, *batch = tiny_step_inputs(4)
    balancer = GradNorm()
    passes = count_split_passes(monkeypatch)
    balancer.attach(model)
    earlier_groups = groups_of(model, criterion, *batch)
    model(batch[0])
    balancer.backward(earlier_groups)
    assert passes == [] and balancer.attachment.recorder.activation is None

    groups = groups_of(model, criterion, *batch)
    activation = balancer.attachment.recorder.activation
    consumers = activation_consumers(groups, activation, model.last_shared_weight)
    assert [len(group_consumers) for group_consumers in consumers] == [1, 1]
    assert activation_consumers(groups, activation, model.encoder.stage3[-1].conv2.weight) is None
    assert activation_consumers(groups.sum() * torch.ones(2), activation, model.last_shared_weight) is None
    assert activation_consumers(torch.stack((groups.sum(), groups[1])), activation, model.last_shared_weight) is None
    assert activation_consumers(groups, None, model.last_shared_weight) is None

    with torch.no_grad():
        balancer.task_weight.copy_(torch.tensor([0.0, 2.0]))
    balancer.backward(groups)
    assert passes == []


def test_paper_gradnorm_keeps_one_hook_and_releases_each_step_s_activation():
    """Reference counting alone frees each step's activation (no cycle through the graph's hooks); attach
    with another model moves the hook there."""
    model, criterion, *batch = tiny_step_inputs(5)
    balancer = GradNorm(lr=1e-2)
    stage = model.last_shared_stage
    for _ in range(3):
        balancer.attach(model)
        assert balancer.attachment.shared_weight is model.last_shared_weight
    assert len(stage._forward_hooks) == 1
    activations = []
    watcher = stage.register_forward_hook(lambda module, inputs, output: activations.append(weakref.ref(output)))
    for _ in range(3):
        groups = groups_of(model, criterion, *batch)
        model.zero_grad(set_to_none=True)
        balancer.backward(groups)
        balancer.step()
        del groups
        assert balancer.attachment.recorder.activation is None
        assert activations[-1]() is None, "the step's activation outlived it (a reference cycle or a kept reference)"
        assert len(stage._forward_hooks) == 2
    watcher.remove()

    other_model = XTaskTSNet(18, 3)
    balancer.attach(other_model)
    assert len(stage._forward_hooks) == 0 and len(other_model.last_shared_stage._forward_hooks) == 1
    assert balancer.attachment.shared_weight is other_model.last_shared_weight
    balancer.release()
    assert len(other_model.last_shared_stage._forward_hooks) == 0 and balancer.attachment is None
    original_form = GradNorm(form="original")
    original_form.attach(model)
    assert len(stage._forward_hooks) == 0 and original_form.attachment.recorder is None


def test_a_copy_of_paper_gradnorm_places_its_own_hook_and_the_balancer_pickles():
    model, _, image, _, _ = tiny_step_inputs(6)
    balancer = GradNorm(lr=1e-2)
    balancer.attach(model)
    model(image)
    copied = copy.deepcopy(balancer)
    assert copied.attachment is None and balancer.attachment.recorder.activation is not None
    assert len(model.last_shared_stage._forward_hooks) == 1
    assert pickle.loads(pickle.dumps(balancer)).attachment is None
    copied.attach(model)
    assert len(model.last_shared_stage._forward_hooks) == 2
    assert copied.attachment.shared_weight is balancer.attachment.shared_weight is model.last_shared_weight
