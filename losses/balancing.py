"""Loss balancing between the two group losses: one interface, one class per method.

A balancer turns the group losses [segmentation_group, depth_group] into one total, runs the single
backward pass of that total, and, where it has its own update (GradNorm), makes it in `step()` after
the model's optimizer step. Its learnable parameters and buffers are in its `state_dict()`.
"""
import math

import torch
from torch import nn

from utils.errors import UserInputError

GROUP_NAMES = ("segmentation", "depth")
BALANCING_METHODS = ("none", "uncertainty", "gradnorm")


class LossBalancer(nn.Module):
    """Plain sum of the group losses; the base of every balancing method."""

    def combine(self, groups):
        """Total loss (scalar) from the group losses, groups: [2]."""
        return groups.sum()

    def model_parameters(self):
        """Parameters the model's optimizer should update alongside the model (none here)."""
        return []

    def backward(self, groups, shared_weight):
        """One backward pass of the total; returns the total, detached. `shared_weight` is the last shared
        layer's weight (used by GradNorm only)."""
        total = self.combine(groups)
        total.backward()
        return total.detach()

    def step(self):
        """The balancer's own update after the model's optimizer step (none here)."""

    def weights(self):
        """Current balancing weights for logging, as {name: float}."""
        return {}


class UncertaintyWeights(LossBalancer):
    """Kendall et al. 2018, in the original code's form: total = sum_k 0.5 * exp(-s_k) * group_k + s_k,
    with learnable log-variances s_k = log sigma_k^2 starting at 0, updated by the model's optimizer."""

    def __init__(self):
        super().__init__()
        self.log_variance = nn.Parameter(torch.zeros(len(GROUP_NAMES)))

    def combine(self, groups):
        """0.5 * exp(-s) * group + s, summed over the two groups."""
        return (0.5 * torch.exp(-self.log_variance) * groups + self.log_variance).sum()

    def model_parameters(self):
        """The log-variances: the model's optimizer learns them."""
        return [self.log_variance]

    def weights(self):
        """sigma_k = exp(s_k / 2) for each group."""
        sigma = torch.exp(0.5 * self.log_variance.detach()).tolist()
        return {f"sigma_{name}": value for name, value in zip(GROUP_NAMES, sigma)}


class GradNorm(LossBalancer):
    """Chen et al. 2018. total = sum_k w_k * group_k, w_k starting at 1.

    Per step: G_k = ||d(w_k * group_k) / d W|| at the shared weight W; L(0) = the unweighted group losses
    of the first training step (kept in a buffer); r_k = (L_k / L_k(0)) / mean_j(L_j / L_j(0));
    target_k = mean(G) * r_k ** alpha, detached; L_grad = sum_k |G_k - target_k|. The weights get only the
    gradient of L_grad (their own Adam), the model only that of the total; after each update the
    weights are rescaled to sum to the number of groups (2).
    """

    def __init__(self, alpha=0.16, lr=1e-4, betas=(0.9, 0.999)):
        super().__init__()
        if alpha < 0 or not math.isfinite(alpha):
            raise UserInputError(f"--gradnorm_alpha: expected a finite value >= 0, got {alpha!r}")
        self.alpha = alpha
        self.task_weight = nn.Parameter(torch.ones(len(GROUP_NAMES)))
        self.register_buffer("initial_losses", torch.full((len(GROUP_NAMES),), float("nan")))
        self.optimizer = torch.optim.Adam([self.task_weight], lr=lr, betas=betas)

    def combine(self, groups):
        """sum_k w_k * group_k with the weights detached: the model's gradient only."""
        return (self.task_weight.detach() * groups).sum()

    def backward(self, groups, shared_weight):
        """Gradient norms of each group at `shared_weight`, one backward pass of the total, and the
        gradient of L_grad into the weights (applied in `step()`)."""
        detached_groups = groups.detach()
        if torch.isnan(self.initial_losses).any():
            self.initial_losses.copy_(detached_groups)
        gradient_norms = torch.stack([
            torch.linalg.vector_norm(torch.autograd.grad(group, shared_weight, retain_graph=True)[0])
            for group in groups])
        total = self.combine(groups)
        total.backward()
        weighted_norms = self.task_weight * gradient_norms
        loss_ratio = detached_groups / self.initial_losses
        relative_rate = loss_ratio / loss_ratio.mean()
        target = (weighted_norms.mean() * relative_rate ** self.alpha).detach()
        gradnorm_loss = (weighted_norms - target).abs().sum()
        self.task_weight.grad = torch.autograd.grad(gradnorm_loss, self.task_weight)[0]
        return total.detach()

    def step(self):
        """Adam step on the weights, then rescale them to sum to the number of groups."""
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            self.task_weight.mul_(len(GROUP_NAMES) / self.task_weight.sum())

    def get_extra_state(self):
        """The weights' own Adam state, saved inside `state_dict()`."""
        return {"optimizer": self.optimizer.state_dict()}

    def set_extra_state(self, state):
        """Restore the weights' Adam state from `state_dict()`."""
        self.optimizer.load_state_dict(state["optimizer"])

    def weights(self):
        """w_k for each group."""
        return {f"w_{name}": value for name, value in zip(GROUP_NAMES, self.task_weight.detach().tolist())}


def make_balancer(method, gradnorm_alpha=0.16, lr=1e-4, betas=(0.9, 0.999)):
    """The balancer for `method` (none, uncertainty or gradnorm); GradNorm's own Adam uses lr and betas."""
    if method == "none":
        return LossBalancer()
    if method == "uncertainty":
        return UncertaintyWeights()
    if method == "gradnorm":
        return GradNorm(alpha=gradnorm_alpha, lr=lr, betas=betas)
    raise UserInputError(f"loss balancing: unknown method {method!r}; expected one of {BALANCING_METHODS}")
