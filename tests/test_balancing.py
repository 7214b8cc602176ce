"""Loss balancing: uncertainty weights and GradNorm against their definitions."""
import pytest
import torch

from losses import GradNorm, LossBalancer, UncertaintyWeights, XTaskLoss, make_balancer
from models import XTaskTSNet
from utils.errors import UserInputError


def tiny_step_inputs(seed=0):
    torch.manual_seed(seed)
    model = XTaskTSNet(18, 3)
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
    total = balancer.backward(groups, shared_weight=None)
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
    balancer.backward(torch.tensor([2.0, 0.5], requires_grad=True), shared_weight=None)
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
    model, criterion, *batch = tiny_step_inputs(1)
    balancer = GradNorm(alpha=0.16, lr=1e-2)
    with torch.no_grad():
        balancer.task_weight.copy_(torch.tensor([1.3, 0.7]))
        balancer.initial_losses.copy_(torch.tensor([2.0, 0.9]))

    groups = groups_of(model, criterion, *batch)
    reference_model_grads, reference_weight_grad = reference_gradnorm(
        model, groups, balancer.task_weight.detach(), balancer.initial_losses, 0.16)

    model.zero_grad(set_to_none=True)
    groups = groups_of(model, criterion, *batch)
    total = balancer.backward(groups, model.last_shared_weight)
    assert total.item() == pytest.approx((torch.tensor([1.3, 0.7]) * groups.detach()).sum().item(), rel=1e-6)
    for name, parameter in model.named_parameters():
        if name in reference_model_grads:
            torch.testing.assert_close(parameter.grad, reference_model_grads[name], rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(balancer.task_weight.grad, reference_weight_grad, rtol=1e-4, atol=1e-7)
    assert torch.count_nonzero(balancer.task_weight.grad) > 0


def test_gradnorm_weights_sum_to_two_and_initial_losses_are_fixed_after_the_first_step():
    model, criterion, *batch = tiny_step_inputs(2)
    balancer = GradNorm(alpha=0.16, lr=0.05)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    assert torch.isnan(balancer.initial_losses).all()
    first_groups = None
    for step in range(3):
        optimizer.zero_grad(set_to_none=True)
        groups = groups_of(model, criterion, *batch)
        if step == 0:
            first_groups = groups.detach().clone()
        balancer.backward(groups, model.last_shared_weight)
        optimizer.step()
        balancer.step()
        assert balancer.task_weight.sum().item() == pytest.approx(2.0, rel=1e-6)
        torch.testing.assert_close(balancer.initial_losses, first_groups)
    assert not torch.allclose(balancer.task_weight.detach(), torch.ones(2))
    assert set(balancer.weights()) == {"w_segmentation", "w_depth"}


def test_gradnorm_state_round_trips_weights_initial_losses_and_its_adam():
    model, criterion, *batch = tiny_step_inputs(3)
    balancer = GradNorm(lr=0.05)
    balancer.backward(groups_of(model, criterion, *batch), model.last_shared_weight)
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
    with pytest.raises(UserInputError, match="none, uncertainty, gradnorm|'none', 'uncertainty', 'gradnorm'"):
        make_balancer("dwa")
    with pytest.raises(UserInputError, match="--gradnorm_alpha"):
        GradNorm(alpha=-1)
