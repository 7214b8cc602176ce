"""Loss balancing between the group losses: one interface, one class per method.

A balancer turns the group losses (a 1-D tensor: [segmentation_group, depth_group] today) into one total
(`combine`), runs the backward pass of that total (`backward(groups, extra=None)`, which returns the total,
detached; `extra`, KD4MTL's distillation loss, is added unweighted by the balancers whose total is a sum of
per-group terms and refused by those that work on per-group gradients: `refuse_extra_loss`),
and, where it has its own update (GradNorm), makes it in `step()` after the model's optimizer step. The
engine calls `attach(model)` once after building the model and `start_epoch(epoch)` before each epoch.
GradNorm measures gradients at the shared layer the model names (`last_shared_weight`,
`last_block_conv2_weight`, `last_shared_stage`); PCGrad takes per-group gradients of the model's
parameters (its paper form projects those of `model.shared_parameters()`); AdaLSP reads each task's
decoder (`decoder_first_layer_weight(task)`, `decoder_parameters(task)`); the other balancers ignore the
model. `model_parameters()` are learned by the model's optimizer, `weights()` are logged, and learnable
parameters and buffers are in the balancer's `state_dict()`. Where a total is a sum of per-group terms,
`terms(groups)` gives them (`training_terms` in a training step: DWA records the training losses there).

The methods with two forms (BALANCING_FORMS: "paper", the published method, and "original", the
procedure of the original xtask_mt code) have one class per form behind one constructor: GradNorm
(GradNormPaper / GradNormOriginal: Chen et al. 2018; the original's L_grad also reaches the model's
gradients), DWA (DWAPaper / DWAOriginal: Liu et al. 2019; the original's weights sum to 3) and PCGrad
(PCGradPaper / PCGradOriginal: Yu et al. 2020; the original projects the whole flattened gradient) and
AdaLSP (AdaLSPPaper / AdaLSPOriginal: Jha et al. 2020, AdaMT-Net's weighting; the original scales the
depth decoder by the segmentation share and gives the encoder accumulated gradients).
`GradNorm(form=...)`, `DWA(form=...)`, `PCGrad(form=...)` and `AdaLSP(form=...)` build the class that
`form` names.

Under torchrun the model is wrapped in DistributedDataParallel, which averages the model's gradients;
a balancer attaches to the unwrapped model and averages what is its own over the processes: the
gradients of its learnable parameters, GradNorm's losses and per-group gradients at the shared
weight (so its norms and loss ratios are those of the global batch), DWA's epoch means, PCGrad's
per-group gradients (PCGrad writes the model's gradients itself: see `PCGrad`) and AdaLSP's (whose
model gradients come from one backward pass that DDP averages: see `AdaLSP`).
"""
import functools
import inspect
import math
from typing import NamedTuple

import torch
from torch import nn

from utils.distributed import average_across_processes, average_gradients, unwrap_model

GROUP_NAMES = ("segmentation", "depth", "normal")  # the groups' names by position (normal: a third task)
CROSS_TASK_GROUPS = 2  # the cross-task loss's groups, one per decoder; GradNorm here balances these two
BALANCING_FORMS = ("paper", "original")
ADALSP_GROUP_COUNTS = (2, 3)  # AdaLSP's groups: segmentation and depth, with or without surface normals


def group_names(count):
    """Names of `count` groups: those of GROUP_NAMES, then group4, group5, ... beyond them."""
    return tuple(GROUP_NAMES[:count]) + tuple(f"group{index + 1}" for index in range(len(GROUP_NAMES), count))


def form_class(method, classes, form):
    """The class of `method` (its name, for the message) that `form` names in `classes`."""
    if form not in classes:
        raise ValueError(f"form {form!r}: unknown {method} form; expected one of {', '.join(classes)}")
    return classes[form]


def refuse_extra_loss(balancer, extra):
    """A ValueError when `extra` (a loss outside the groups, such as KD4MTL's distillation) is given to a
    balancer that measures or projects per-group gradients and has no place for it."""
    if extra is not None:
        raise ValueError(f"extra: {type(balancer).__name__} balances the group losses' gradients; it takes no "
                         f"loss outside the groups (use --balancing none, uncertainty or dwa)")


def check_own_form(balancer, form, method):
    """A ValueError unless `form` is None or the form of `balancer`'s class (one of `method`'s)."""
    if form not in (None, balancer.form):
        raise ValueError(f"form {form!r}: {type(balancer).__name__} is {method}'s {balancer.form!r} form")


class LossBalancer(nn.Module):
    """Plain sum of the group losses; the base of every balancing method."""

    def attach(self, model):
        """Called once after the model is built (`model` may be in a DistributedDataParallel wrapper);
        the plain sum measures nothing at the model."""

    #: Whether `backward` writes the model's gradients itself, with per-group autograd.grad passes that
    #: DistributedDataParallel's reducer does not see (PCGrad): under torchrun the engine must then run
    #: the step's forward inside the wrapper's `no_sync()`; the balancer averages the gradients itself.
    averages_model_gradients = False

    def combine(self, groups):
        """Total loss (scalar) from the group losses, groups: [K]."""
        return groups.sum()

    def terms(self, groups):
        """The per-group terms whose sum is the total (the groups themselves here)."""
        return groups

    def training_terms(self, groups):
        """The per-group terms of a training step's total; a balancer that follows the training losses
        (DWA) records them here. PCGrad weights the groups with its weighting's `training_terms`."""
        return self.terms(groups)

    def model_parameters(self):
        """Parameters the model's optimizer should update alongside the model (none here)."""
        return []

    def backward(self, groups, extra=None):
        """One backward pass of the training total, plus `extra` (a scalar loss outside the groups, added
        unweighted: KD4MTL's distillation) when given; returns that total, detached. Under torchrun the
        gradients of `model_parameters()` are then averaged over the processes (DDP averages only the
        model's)."""
        total = self.training_terms(groups).sum()
        if extra is not None:
            total = total + extra
        total.backward()
        average_gradients(self.model_parameters())
        return total.detach()

    def step(self):
        """The balancer's own update after the model's optimizer step (none here)."""

    def start_epoch(self, epoch):
        """Called by the engine before each training epoch (1-based); nothing to do here."""

    def weights(self):
        """Current balancing weights for logging, as {name: float}."""
        return {}


class UncertaintyWeights(LossBalancer):
    """Kendall et al. 2018, in the original code's form: total = sum_k 0.5 * exp(-s_k) * group_k + s_k,
    with learnable log-variances s_k = log sigma_k^2 starting at 0, updated by the model's optimizer."""

    def __init__(self, group_count=CROSS_TASK_GROUPS):
        """One log-variance per group, `group_count` of them."""
        super().__init__()
        if group_count < 1:
            raise ValueError(f"group_count {group_count!r}: expected at least one group")
        self.log_variance = nn.Parameter(torch.zeros(group_count))

    def terms(self, groups):
        """0.5 * exp(-s_k) * group_k + s_k for each group."""
        return 0.5 * torch.exp(-self.log_variance) * groups + self.log_variance

    def combine(self, groups):
        """0.5 * exp(-s) * group + s, summed over the groups."""
        return self.terms(groups).sum()

    def model_parameters(self):
        """The log-variances: the model's optimizer learns them."""
        return [self.log_variance]

    def weights(self):
        """sigma_k = exp(s_k / 2) for each group."""
        sigma = torch.exp(0.5 * self.log_variance.detach()).tolist()
        return {f"sigma_{name}": value for name, value in zip(group_names(len(sigma)), sigma)}


class GradNorm(LossBalancer):
    """Chen et al. 2018: learnable weights of the group losses (`task_weight`, W, starting at 1), with
    their own Adam, that `step()` updates from the gradient of L_grad = sum_k |G_k - target_k|, G_k being
    the norm of group k's gradient at the model's shared weight and target_k = mean(G) * r_k ** alpha for
    the relative inverse training rates r_k.

    One subclass per form: `GradNorm(alpha, lr, betas, form)` builds GradNormPaper (form="paper", the
    default) or GradNormOriginal (form="original"). This base holds what both share: the weights and
    their Adam (saved as extra state), the initial losses L0, the attachment to the model, the validation
    total and the logged weights. A subclass names its `form` and defines `attachment_to(model)` (where
    it measures), `effective_weights()` (the weights applied to the groups) and `backward(groups)`.
    """

    def __new__(cls, alpha=0.16, lr=1e-4, betas=(0.9, 0.999), form="paper", group_count=CROSS_TASK_GROUPS):
        """GradNorm(...) builds the subclass of `form` (one of GRADNORM_FORMS); a subclass builds itself."""
        if cls is GradNorm:
            cls = form_class("GradNorm", GRADNORM_CLASSES, form)
        return super().__new__(cls)

    def __init__(self, alpha=0.16, lr=1e-4, betas=(0.9, 0.999), form=None, group_count=CROSS_TASK_GROUPS):
        """Weights W = 1 and their Adam (lr, betas); `form`, when given, must be this class's own;
        group_count: the two groups of the cross-task loss (the only count implemented)."""
        super().__init__()
        check_own_form(self, form, "GradNorm")
        if group_count != CROSS_TASK_GROUPS:
            raise ValueError(f"group_count {group_count!r}: GradNorm is implemented for the {CROSS_TASK_GROUPS} "
                             "groups of segmentation and depth")
        if alpha < 0 or not math.isfinite(alpha):
            raise ValueError(f"alpha {alpha!r}: expected a finite value >= 0")
        self.alpha = alpha
        self.task_weight = nn.Parameter(torch.ones(CROSS_TASK_GROUPS))
        self.register_buffer("initial_losses", torch.full((CROSS_TASK_GROUPS,), float("nan")))
        self.optimizer = torch.optim.Adam([self.task_weight], lr=lr, betas=betas)
        self.attachment = None

    def attach(self, model):
        """Measure at `model` from now on (at the model inside a DistributedDataParallel wrapper): keep its
        shared weight and, for the paper form, put a forward hook on its last shared stage. Call once
        after the model is built; a later call replaces the earlier attachment, hook included."""
        self.release()
        self.attachment = self.attachment_to(unwrap_model(model))

    def release(self):
        """Undo `attach`: take the forward hook off the attached model and forget its shared weight."""
        if self.attachment is not None:
            self.attachment.remove()
            self.attachment = None

    def attached(self):
        """The Attachment that `attach` made; a RuntimeError when there is none."""
        if self.attachment is None:
            raise RuntimeError(f"{type(self).__name__} measures gradients at the model's shared layer: call "
                               f"attach(model) once after building the model, before backward(groups)")
        return self.attachment

    def __getstate__(self):
        """State for copy and pickle, without the attachment (its forward hook belongs to the model): a
        copy measures from its own `attach(model)` on."""
        return {**super().__getstate__(), "attachment": None}

    def combine(self, groups):
        """sum_k e_k * group_k with the effective weights e detached (the validation total)."""
        return (self.effective_weights().detach() * groups).sum()

    def step(self):
        """Adam step on the weights, from the gradient `backward` left them."""
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def get_extra_state(self):
        """The weights' own Adam state, saved inside `state_dict()`."""
        return {"optimizer": self.optimizer.state_dict()}

    def set_extra_state(self, state):
        """Restore the weights' Adam state from `state_dict()`."""
        self.optimizer.load_state_dict(state["optimizer"])

    def weights(self):
        """The effective weight applied to each group."""
        values = self.effective_weights().detach().tolist()
        return {f"w_{name}": value for name, value in zip(group_names(CROSS_TASK_GROUPS), values)}


class GradNormPaper(GradNorm):
    """GradNorm as in the paper: total = sum_k w_k * group_k, w = W. Per step:
    G_k = ||d(w_k * group_k) / d S|| at the shared weight S; L(0) = the unweighted group losses of the first
    training step (kept in a buffer); r_k = (L_k / L_k(0)) / mean_j(L_j / L_j(0));
    target_k = mean(G) * r_k ** alpha, detached; L_grad = sum_k |G_k - target_k|. The weights get only the
    gradient of L_grad (their own Adam), the model only that of the total; after each update the
    weights are rescaled to sum to the number of groups (2).
    """

    form = "paper"

    def attachment_to(self, model):
        """The model's last shared weight, with a forward hook on its last shared stage when it names one:
        then `backward` splits the gradient by group at that stage's output instead of traversing each
        group's decoder once more."""
        return Attachment(model.last_shared_weight, model.last_shared_stage)

    def effective_weights(self):
        """w = W, with its graph to `task_weight`."""
        return self.task_weight

    def backward(self, groups, extra=None):
        """Gradient norms of each group at the attached shared weight, one backward pass of the total, and
        the gradient of L_grad into the weights only; returns the total, detached. The norms come from
        that one pass when the activation recorded by the attachment's hook splits this graph by group
        (see `activation_consumers`) and no weight is 0 (the pass carries w_k-weighted gradients),
        otherwise from one extra backward pass per group. Under torchrun the losses and the per-group
        gradients are averaged over the processes first, so every process computes the same weights'
        gradient, that of the global batch."""
        refuse_extra_loss(self, extra)
        attachment = self.attached()
        shared_weight = attachment.shared_weight
        detached_groups = average_across_processes(groups.detach().clone())
        self.initial_losses.copy_(torch.where(torch.isnan(self.initial_losses), detached_groups, self.initial_losses))
        activation = attachment.take_activation()
        consumers_per_group = activation_consumers(groups, activation, shared_weight)
        total = self.combine(groups)
        if consumers_per_group is not None and bool(torch.all(self.task_weight != 0)):
            split = GroupGradientSplit(activation, consumers_per_group, shared_weight)
            split.backward(total)
            gradient_norms = split.shared_weight_norms() / self.task_weight.detach().abs()
        else:
            gradient_norms = torch.stack([
                torch.linalg.vector_norm(average_across_processes(
                    torch.autograd.grad(group, shared_weight, retain_graph=True)[0]))
                for group in groups])
            total.backward()
        weighted_norms = self.task_weight * gradient_norms
        loss_ratio = detached_groups / self.initial_losses
        relative_rate = loss_ratio / loss_ratio.mean()
        target = (weighted_norms.mean() * relative_rate ** self.alpha).detach()
        gradnorm_loss = (weighted_norms - target).abs().sum()
        self.task_weight.grad = torch.autograd.grad(gradnorm_loss, self.task_weight)[0]
        return total.detach()

    def step(self):
        """Adam step on the weights, then their rescaling to sum to the number of groups."""
        super().step()
        with torch.no_grad():
            self.task_weight.mul_(CROSS_TASK_GROUPS / self.task_weight.sum())


class GradNormOriginal(GradNorm):
    """GradNorm as the original code runs it. Raw weights W (starting at 1, never rescaled) give
    t_k = 2 W_k / sum(W), except at the first training step, where t = W. Per step:
    l_k = 0.5 * t_k * group_k; L0 = l.detach() at every step of epoch 1, then kept; the model gets the
    gradient of l_1 + l_2; G_k = ||d l_k / d S|| (create_graph) at S = conv2 of the encoder's last block;
    r_k = (l_k / L0_k) / mean_j(l_j / L0_j); C_k = mean(G) * r_k ** alpha, detached;
    L_grad = sum_k |G_k - C_k| is backpropagated in full: W gets only its gradient (W's earlier gradient
    is dropped) and the model gets its second-order term on top of that of l_1 + l_2. The validation
    total is sum_k t_k * group_k, the logged weights are t.
    """

    form = "original"

    def __init__(self, alpha=0.16, lr=1e-4, betas=(0.9, 0.999), form=None, group_count=CROSS_TASK_GROUPS):
        """As GradNorm, with buffers for the current epoch (L0 is refreshed during epoch 1) and the number
        of steps taken (t = W before the first)."""
        super().__init__(alpha, lr, betas, form, group_count)
        self.register_buffer("current_epoch", torch.ones((), dtype=torch.long))
        self.register_buffer("steps_taken", torch.zeros((), dtype=torch.long))

    def attachment_to(self, model):
        """conv2 of the model's last block, where the original code measures; no hook."""
        return Attachment(model.last_block_conv2_weight)

    def start_epoch(self, epoch):
        """Record the epoch (1-based): L0 is refreshed only during epoch 1."""
        self.current_epoch.fill_(epoch)

    def effective_weights(self):
        """t, with its graph to `task_weight`: W before the first training step, 2 W / sum(W) after it."""
        if self.steps_taken.item() > 0:
            return (CROSS_TASK_GROUPS / self.task_weight.sum()) * self.task_weight
        return self.task_weight

    def backward(self, groups, extra=None):
        """Backward of l_1 and of l_2 (graph kept), then the full backward of L_grad built from
        create_graph gradient norms at the attached weight, with W's gradient zeroed in between. The two
        backward passes are separate, as in the original, so that the gradients add in its order.
        Returns sum_k t_k * group_k (= 2 (l_1 + l_2)), the training total the original logged."""
        refuse_extra_loss(self, extra)
        shared_weight = self.attached().shared_weight
        is_first_step = self.steps_taken.item() == 0
        weighted_losses = self.effective_weights() * groups * 0.5
        detached_losses = weighted_losses.detach()
        if is_first_step or self.current_epoch.item() == 1:
            self.initial_losses.copy_(detached_losses)
        for weighted_loss in weighted_losses:
            weighted_loss.backward(retain_graph=True)
        gradient_norms = torch.stack([
            torch.linalg.vector_norm(torch.autograd.grad(loss, shared_weight, retain_graph=True,
                                                         create_graph=True)[0])
            for loss in weighted_losses])
        loss_ratio = detached_losses / self.initial_losses
        relative_rate = loss_ratio / loss_ratio.mean()
        target = (gradient_norms.mean() * relative_rate ** self.alpha).detach()
        self.task_weight.grad = None
        gradnorm_loss = (gradient_norms - target).abs().sum()
        gradnorm_loss.backward()
        self.steps_taken += 1
        return 2 * detached_losses.sum()


class Attachment:
    """What a GradNorm keeps of the model it measures: the shared weight (held here, outside the
    balancer's parameters) and, when given a stage, an ActivationRecorder forward hook on that stage."""

    def __init__(self, shared_weight, stage=None):
        self.shared_weight = shared_weight
        self.recorder = None if stage is None else ActivationRecorder(stage)

    def take_activation(self):
        """The activation the hook recorded (no longer kept), or None (always None without a hook)."""
        return None if self.recorder is None else self.recorder.take()

    def remove(self):
        """Take the forward hook, if any, off its stage."""
        if self.recorder is not None:
            self.recorder.remove()


class ActivationRecorder:
    """Forward hook that keeps the latest output of one module while that output requires grad; the
    module's hooks hold this recorder, the recorder holds no reference to the module."""

    def __init__(self, module):
        self.activation = None
        self.handle = module.register_forward_hook(self)

    def __call__(self, module, inputs, output):
        """Keep `output` when autograd records it (training), otherwise nothing."""
        self.activation = output if isinstance(output, torch.Tensor) and output.requires_grad else None

    def take(self):
        """The recorded activation (or None), no longer kept here."""
        activation, self.activation = self.activation, None
        return activation

    def remove(self):
        """Take the hook off the module and drop the recorded activation."""
        self.handle.remove()
        self.activation = None


def activation_consumers(groups, activation, shared_weight):
    """For each group, the autograd nodes that take `activation` as an input, as {node: input positions}.

    None unless the graph splits by group at `activation`: `groups` is a torch.stack of the group losses,
    every path from them to `shared_weight` passes through `activation`, each group reaches `activation`
    and no node reaching it is shared by two groups. Then group k's gradient at `activation` is what its
    nodes send there, and its gradient at `shared_weight` follows from that through the layers between.
    """
    stack = groups.grad_fn
    if (activation is None or activation.grad_fn is None or not shared_weight.requires_grad
            or stack is None or stack.name() != "StackBackward0"):
        return None
    consumers_per_group = [consumers_within(root, activation, shared_weight) for root, _ in stack.next_functions]
    if not all(consumers_per_group):
        return None
    nodes = [node for consumers in consumers_per_group for node in consumers]
    if len(set(nodes)) != len(nodes):
        return None
    return consumers_per_group


def consumers_within(root, activation, shared_weight):
    """The nodes of the graph under `root` (not crossing `activation`) that take `activation` as an
    input, as {node: input positions}; None when that graph reaches `shared_weight` other than through
    `activation`, or takes another output of the node that made it."""
    producer, output_index = activation.grad_fn, activation.output_nr
    if root is None or root is producer or getattr(root, "variable", None) is shared_weight:
        return None
    consumers = {}
    pending, reached = [root], {root}
    while pending:
        node = pending.pop()
        for position, (child, child_output) in enumerate(node.next_functions):
            if child is producer:
                if child_output != output_index:
                    return None
                consumers.setdefault(node, []).append(position)
            elif getattr(child, "variable", None) is shared_weight:
                return None
            elif child is not None and child not in reached:
                reached.add(child)
                pending.append(child)
    return consumers


class GroupGradientSplit:
    """One backward pass that also yields each group's gradient at the shared weight.

    Hooks on each group's consumers of `activation` (from `activation_consumers`) add up that group's share
    of the gradient there, w_k d group_k / d activation. When the pass reaches `activation`, a pre-hook
    carries each share on to `shared_weight` through the layers in between (nested passes that keep the
    graph for the outer one) before the outer pass frees those layers' saved tensors."""

    def __init__(self, activation, consumers_per_group, shared_weight):
        self.activation = activation
        self.consumers_per_group = consumers_per_group
        self.shared_weight = shared_weight
        self.shares = [None] * len(consumers_per_group)
        self.shared_weight_gradients = None

    def backward(self, total):
        """Backward pass of `total` with the hooks on; they are removed afterwards."""
        handles = [node.register_hook(functools.partial(self._add_share, group_index, positions))
                   for group_index, consumers in enumerate(self.consumers_per_group)
                   for node, positions in consumers.items()]
        handles.append(self.activation.grad_fn.register_prehook(self._carry_shares))
        try:
            total.backward()
        finally:
            for handle in handles:
                handle.remove()

    def shared_weight_norms(self):
        """||w_k d group_k / d shared_weight|| for each group, after `backward`; under torchrun of the
        gradients averaged over the processes."""
        return torch.stack([torch.linalg.vector_norm(average_across_processes(gradient))
                            for gradient in self.shared_weight_gradients])

    def _add_share(self, group_index, positions, grad_inputs, grad_outputs):
        """Post-hook of a consumer node: add what it sends to `activation` to its group's share."""
        for position in positions:
            share = self.shares[group_index]
            self.shares[group_index] = grad_inputs[position] if share is None else share + grad_inputs[position]

    def _carry_shares(self, grad_outputs):
        """Pre-hook of the node that made `activation`: carry every share on to `shared_weight`, once (the
        nested passes start at this node too)."""
        if self.shared_weight_gradients is not None:
            return
        self.shared_weight_gradients = []
        for share in self.shares:
            self.shared_weight_gradients.append(torch.autograd.grad(
                self.activation, self.shared_weight, grad_outputs=share, retain_graph=True)[0])


class DWA(LossBalancer):
    """Dynamic Weight Average (Liu et al., CVPR 2019, the MTAN paper): total = sum_k w_k * group_k with
    weights fixed for an epoch. In epochs 1 and 2, w = 1; from epoch t = 3 on, w follows the ratios
    r_k = Lbar_k(t-1) / Lbar_k(t-2) of the mean training losses of the two previous epochs, with the
    temperature T: a group whose loss fell more slowly gets more weight, and T -> infinity gives w -> 1.

    Lbar_k(e) is the mean over the training steps of epoch e of the group losses given to `backward` (or
    to `training_terms`, by PCGrad): the balancer adds them up on their device (no host sync per step) and
    takes the means when `start_epoch(e + 1)` rolls the epoch (under torchrun the means of every process's
    steps: one collective). The running sums, the last two means and the current weights are buffers, the
    epoch and step counts extra state, so `state_dict()` saved after an epoch continues identically.
    When the means of epochs t-1 and t-2 are not both known (an epoch without training steps, or a jump in
    the epochs given to `start_epoch`), w = 1 until they are. The validation total (`combine`) uses the
    current weights. Works for any number of groups K = len(groups) (fixed once losses are recorded; the
    buffers take the size of the first groups or of a loaded state).

    One subclass per form: `DWA(temperature, form)` builds DWAPaper (form="paper", the default:
    w = K * softmax(r / T)) or DWAOriginal (form="original": the original code's weights). A subclass
    names its `form` and defines `weights_from_ratios(ratios)`.
    """

    def __new__(cls, temperature=2.0, form="paper"):
        """DWA(...) builds the subclass of `form` (one of DWA_FORMS); a subclass builds itself."""
        if cls is DWA:
            cls = form_class("DWA", DWA_CLASSES, form)
        return super().__new__(cls)

    def __init__(self, temperature=2.0, form=None):
        """Weights 1 for CROSS_TASK_GROUPS groups and no loss history yet; `form`, when given, must be this
        class's own."""
        super().__init__()
        check_own_form(self, form, "DWA")
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature {temperature!r}: expected a finite value > 0")
        self.temperature = temperature
        self.epoch = 0
        self.steps = 0
        self.known_means = 0
        self.allocate(CROSS_TASK_GROUPS, device=None)

    def allocate(self, count, device):
        """Fresh buffers for `count` groups: weights 1, no sums, no means."""
        self.register_buffer("weight", torch.ones(count, device=device))
        self.register_buffer("loss_sums", torch.zeros(count, dtype=torch.float64, device=device))
        self.register_buffer("epoch_means", torch.zeros(2, count, dtype=torch.float64, device=device))

    def fit(self, groups):
        """Check `groups` (1-D), bring the buffers to its device and size them to it while nothing is
        recorded; a ValueError when a recorded history has another number of groups."""
        if groups.dim() != 1:
            raise ValueError(f"groups of shape {tuple(groups.shape)}: expected a 1-D tensor of group losses")
        if self.weight.device != groups.device:
            self.to(groups.device)
        count = groups.shape[0]
        if count != self.weight.shape[0]:
            if self.steps or self.known_means:
                raise ValueError(f"{count} groups: this DWA has recorded the losses of {self.weight.shape[0]}")
            self.allocate(count, self.weight.device)

    def terms(self, groups):
        """w_k * group_k for each group, with the current weights."""
        self.fit(groups)
        return self.weight.to(groups.dtype) * groups

    def training_terms(self, groups):
        """The terms of a training step; adds the (detached) group losses to the epoch's sums."""
        terms = self.terms(groups)
        self.loss_sums += groups.detach()
        self.steps += 1
        return terms

    def combine(self, groups):
        """sum_k w_k * group_k with the current weights (the validation total); records nothing."""
        return self.terms(groups).sum()

    def start_epoch(self, epoch):
        """Before training epoch `epoch` (1-based): when it follows the epoch of the recorded losses, their
        means (over every process) become those of epoch t-1 and the former t-1 those of t-2; then the
        weights of `epoch`. Calling it again with the same epoch changes nothing."""
        if epoch == self.epoch:
            return
        rolled = False
        if epoch == self.epoch + 1:
            totals = torch.cat((self.loss_sums, self.loss_sums.new_full((1,), float(self.steps))))
            totals = average_across_processes(totals)
            if totals[-1].item() > 0:
                self.epoch_means.copy_(torch.stack((totals[:-1] / totals[-1], self.epoch_means[0])))
                self.known_means = min(self.known_means + 1, 2)
                rolled = True
        if not rolled:
            self.known_means = 0
        self.loss_sums.zero_()
        self.steps = 0
        self.epoch = epoch
        if epoch > 2 and self.known_means == 2:
            ratios = self.epoch_means[0] / self.epoch_means[1]
            self.weight.copy_(self.weights_from_ratios(ratios))
        else:
            self.weight.fill_(1.0)

    def weights(self):
        """The current weight of each group."""
        names = group_names(self.weight.shape[0])
        return {f"w_{name}": value for name, value in zip(names, self.weight.tolist())}

    def get_extra_state(self):
        """The epoch of the recorded losses, their number of steps and how many epoch means are known."""
        return {"epoch": self.epoch, "steps": self.steps, "known_means": self.known_means}

    def set_extra_state(self, state):
        """Restore the counts of `get_extra_state`."""
        self.epoch, self.steps, self.known_means = state["epoch"], state["steps"], state["known_means"]

    def _load_from_state_dict(self, state_dict, prefix, *arguments):
        """Size the buffers to the loaded state's number of groups, then load it."""
        loaded = state_dict.get(prefix + "weight")
        if loaded is not None and loaded.dim() == 1 and loaded.shape != self.weight.shape:
            self.allocate(loaded.shape[0], self.weight.device)
        super()._load_from_state_dict(state_dict, prefix, *arguments)


class DWAPaper(DWA):
    """DWA as in the paper: w = K * softmax(r / T), so the weights sum to the number of groups K."""

    form = "paper"

    def weights_from_ratios(self, ratios):
        """K * softmax(r / T)."""
        return ratios.numel() * torch.softmax(ratios / self.temperature, dim=0)


class DWAOriginal(DWA):
    """DWA as the original code's trainer (model/mtan/utils.py, multi_task_trainer) computes it:
    w = 1 in epochs 1 and 2 (lines 140-141); with two groups w_k = 3 exp(r_k / T) / sum_j exp(r_j / T),
    the factor 3 where the paper has K = 2 (lines 146-147: the weights sum to 3); with three groups
    w_1, w_2 = 3 exp(r_k / T) / (exp(r_1 / T) + exp(r_2 / T) + exp(r_3 / T)) while w_3, computed into the
    denominator (line 151), is never assigned and stays 1 (lines 125, 152-153); beyond three groups, as
    there, only the first three ratios are read and the others' weights stay 1. The three-task validation
    total adds only the first two weighted groups (line 305; the training total, line 264, adds all
    three): `combine` does the same when there are three groups or more. One group is not defined there
    (a ValueError)."""

    form = "original"

    def fit(self, groups):
        """As DWA, with at least two groups."""
        if groups.dim() == 1 and groups.shape[0] < 2:
            raise ValueError(f"{groups.shape[0]} group: the original DWA needs two groups or more")
        super().fit(groups)

    def weights_from_ratios(self, ratios):
        """3 exp(r_k / T) / sum_j exp(r_j / T) over the first min(K, 3) ratios for the first two groups,
        1 for the others."""
        weights = torch.ones_like(ratios)
        weights[:2] = 3 * torch.softmax(ratios[:3] / self.temperature, dim=0)[:2]
        return weights

    def combine(self, groups):
        """The original's validation total: sum_k w_k * group_k over the first two groups only when there
        are three or more, over both when there are two."""
        return self.terms(groups)[:2].sum()


class PCGrad(LossBalancer):
    """Gradient surgery (Yu et al., NeurIPS 2020): the gradient g_k of each group's term is projected off
    the other groups' gradients g_j where they conflict (g_k . g_j < 0), one after the other in a random
    order, g_k <- g_k - (g_k . g_j) / |g_j|^2 g_j (g_j unprojected), and the projected gradients are summed.

    The terms are those of a weighting, `weighting`: a balancer whose total is a sum of per-group terms
    (a LossBalancer, UncertaintyWeights or DWA, or its name in BALANCERS, then built by make_balancer with
    this PCGrad's form), by default the plain sum (the terms are the groups). Its learnable parameters
    get the gradients of their terms (by PCGrad's form: summed, or projected with the rest), the model's
    optimizer learns them (`model_parameters()`), and its `start_epoch`, `step`, `weights`, validation
    total (`combine`) and state are PCGrad's. Neither GradNorm nor PCGrad can be the weighting.

    `backward(groups)` takes one torch.autograd.grad pass per group over the parameters it got at
    `attach(model)` (the graph kept until the last), projects, and adds the result to their `.grad` (only
    to parameters that some group reaches); it returns the weighting's training total, detached. The
    random order comes from a torch.Generator of the balancer seeded with `seed` (its state is in
    `state_dict()`; every process draws the same order). Under torchrun, DistributedDataParallel's reducer
    does not see these passes: the engine must run the step's forward inside the wrapper's `no_sync()`
    (`averages_model_gradients`); PCGrad averages the per-group gradients over the processes before
    projecting, so it projects the gradients of the global batch.

    One subclass per form: `PCGrad(form, weighting, seed)` builds PCGradPaper (form="paper", the default:
    the projection on the gradients of the model's shared parameters, `model.shared_parameters()`) or
    PCGradOriginal (form="original": as the original code's pcgrad.py, on the whole flattened gradient).
    A subclass names its `form` and defines `split_parameters(model)` and `project(gradients)`.
    """

    averages_model_gradients = True

    def __new__(cls, form="paper", weighting="none", seed=0, group_count=CROSS_TASK_GROUPS):
        """PCGrad(...) builds the subclass of `form` (one of PCGRAD_FORMS); a subclass builds itself."""
        if cls is PCGrad:
            cls = form_class("PCGrad", PCGRAD_CLASSES, form)
        return super().__new__(cls)

    def __init__(self, form=None, weighting="none", seed=0, group_count=CROSS_TASK_GROUPS):
        """The weighting (a balancer, or its name, then built for `group_count` groups), the seeded generator
        of the random orders; `form`, when given, must be this class's own."""
        super().__init__()
        check_own_form(self, form, "PCGrad")
        if isinstance(weighting, str):
            weighting = make_balancer(weighting, form=self.form, group_count=group_count)
        if not isinstance(weighting, LossBalancer) or isinstance(weighting, (GradNorm, PCGrad)):
            raise ValueError(f"weighting {weighting!r}: expected a balancer whose total is a sum of per-group "
                             f"terms (none, uncertainty, dwa)")
        self.weighting = weighting
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.attachment = None

    def attach(self, model):
        """Take the gradients of `model`'s parameters (of the model inside a DistributedDataParallel
        wrapper) from now on, split as the form says; the weighting attaches too."""
        model = unwrap_model(model)
        self.weighting.attach(model)
        self.attachment = self.split_parameters(model)

    def attached(self):
        """(projected, summed): the model's parameters that `attach` kept; a RuntimeError without one."""
        if self.attachment is None:
            raise RuntimeError(f"{type(self).__name__} takes the gradients of the model's parameters: call "
                               f"attach(model) once after building the model, before backward(groups)")
        return self.attachment

    def __getstate__(self):
        """State for copy and pickle, without the model's parameters: a copy takes them at its own
        `attach(model)`."""
        return {**super().__getstate__(), "attachment": None}

    def terms(self, groups):
        """The weighting's terms."""
        return self.weighting.terms(groups)

    def combine(self, groups):
        """The weighting's total (the validation total)."""
        return self.weighting.combine(groups)

    def model_parameters(self):
        """The weighting's learnable parameters."""
        return self.weighting.model_parameters()

    def step(self):
        """The weighting's own update."""
        self.weighting.step()

    def start_epoch(self, epoch):
        """The weighting's start of epoch."""
        self.weighting.start_epoch(epoch)

    def weights(self):
        """The weighting's logged weights."""
        return self.weighting.weights()

    def backward(self, groups, extra=None):
        """Per-group gradients of the weighting's training terms, the projection, the gradients added to
        the parameters; returns the training total, detached."""
        refuse_extra_loss(self, extra)
        model_projected, model_summed = self.attached()
        projected, summed = self.with_weighting_parameters(model_projected, model_summed)
        terms = self.weighting.training_terms(groups)
        parameters = projected + summed
        count = terms.shape[0]
        gradients = [torch.autograd.grad(terms[index], parameters, retain_graph=index < count - 1, allow_unused=True)
                     for index in range(count)]
        reached = [any(gradient[position] is not None for gradient in gradients) for position in range(len(parameters))]
        result = []
        if projected:
            per_group = torch.stack([flatten(gradient[:len(projected)], projected) for gradient in gradients])
            result.append(self.project(average_across_processes(per_group)))
        if summed:
            result.append(average_across_processes(sum(flatten(gradient[len(projected):], summed)
                                                       for gradient in gradients)))
        if result:
            write_gradients(parameters, reached, torch.cat(result))
        return terms.detach().sum()

    def with_weighting_parameters(self, projected, summed):
        """(projected, summed) of the model with the weighting's parameters (where the form puts them)."""
        return projected, summed + list(self.weighting.model_parameters())

    def get_extra_state(self):
        """The state of the random orders' generator."""
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state):
        """Restore the generator's state."""
        self.generator.set_state(state["generator"].cpu())


class PCGradPaper(PCGrad):
    """PCGrad as in the paper, applied as in its multi-task experiments: the projection acts on the
    gradients of the shared parameters (those of `model.shared_parameters()`, which the model must
    provide); each group's gradient g_k is projected off the others in its own random order (a fresh
    permutation of the other groups per group), a conflict being g_k^PC . g_j < 0 for the gradient
    projected so far. The other parameters (the task-specific ones, and the weighting's) get the plain sum
    of the groups' gradients, unprojected: their own task's gradient where one group reaches them."""

    form = "paper"

    def split_parameters(self, model):
        """(the model's shared parameters, its other parameters), of those that require grad."""
        shared_parameters = getattr(model, "shared_parameters", None)
        if shared_parameters is None:
            raise TypeError(f"PCGrad's paper form projects the gradients of the shared parameters: "
                            f"{type(model).__name__} must name them with a shared_parameters() method")
        shared = {id(parameter) for parameter in shared_parameters()}
        parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
        return ([parameter for parameter in parameters if id(parameter) in shared],
                [parameter for parameter in parameters if id(parameter) not in shared])

    def project(self, gradients):
        """sum_k g_k^PC for the per-group gradients [K, n]."""
        count = gradients.shape[0]
        squared_norms = (gradients * gradients).sum(dim=1)
        safe_norms = torch.where(squared_norms > 0, squared_norms, torch.ones_like(squared_norms))
        result = torch.zeros_like(gradients[0])
        for index in range(count):
            others = [other for other in range(count) if other != index]
            projected = gradients[index].clone()
            for position in torch.randperm(len(others), generator=self.generator).tolist():
                other = others[position]
                inner = torch.dot(projected, gradients[other])
                projected -= torch.clamp(inner, max=0) / safe_norms[other] * gradients[other]
            result += projected
        return result


class PCGradOriginal(PCGrad):
    """PCGrad as the original code's pcgrad.py runs it (model/mtan/pcgrad.py): the gradients are those of
    every parameter its optimizer holds, flattened into one vector per group with zeros where a group
    does not reach a parameter (lines 61-82): here the model's parameters and the weighting's (in the
    original the uncertainty log-variances are model parameters), so the projection coefficients include
    the task-specific parameters. The groups are shuffled once (line 43: one order for all); each g_i^PC,
    in that order, is projected against every g_k in that order, itself included (a no-op unless it was
    made to conflict), with coeff = (g_i^PC . g_k) / (|g_k|^2 + 1e-12) and g_i^PC -= min(coeff, 0) g_k
    (lines 34-39); the sum over the shuffled groups is written to the parameters (lines 49, 53-59)."""

    form = "original"

    def split_parameters(self, model):
        """(every parameter of the model that requires grad, none)."""
        return [parameter for parameter in model.parameters() if parameter.requires_grad], []

    def with_weighting_parameters(self, projected, summed):
        """The weighting's parameters are projected with the model's."""
        return projected + list(self.weighting.model_parameters()), summed

    def project(self, gradients):
        """sum_i g_i^PC over the shuffled per-group gradients [K, n]."""
        order = torch.randperm(gradients.shape[0], generator=self.generator).tolist()
        gradients = gradients[order]
        squared_norms = (gradients * gradients).sum(dim=1)
        result = gradients.clone()
        for index in range(gradients.shape[0]):
            for other in range(gradients.shape[0]):
                inner = torch.sum(result[index] * gradients[other])
                coefficient = inner / (squared_norms[other] + 1e-12)
                result[index] -= torch.clamp(coefficient, max=0) * gradients[other]
        return result.sum(dim=0)


class AdaLSP(LossBalancer):
    """AdaMT-Net's adaptive loss-specific weighting (Jha et al., CVPR Workshops 2020; the original code's
    compute_loss_with_adalsp in model/adamtnet/train_cs.py, train_nyu2tasks.py and train_nyu3tasks.py).
    At every training step, each group's gradient at the first layer of its task's decoder gives
    m_k = mean |d group_k / d W_k| (W_k: the model's `decoder_first_layer_weight(task)`), and the shares
    w_k = m_k / sum_j m_j (1/K each when every m_k is 0) weight the groups' gradients as the form says.
    The groups are the tasks in GROUP_NAMES order, 2 (segmentation, depth) or 3 (and normal). The total
    that `backward` returns and the validation total (`combine`) are the plain sum of the groups, the loss
    the original logged; `weights()` are the last training step's shares.

    The model names each task's decoder: `decoder_first_layer_weight(task)` and `decoder_parameters(task)`,
    parameters that only that task's group reaches (AdaMTNet's). The first-layer gradients (and the
    original form's decoder gradients) come from one torch.autograd.grad pass per group, the graph kept;
    every other gradient from one backward pass of a weighted total. Under torchrun the per-group
    gradients are averaged over the processes (the shares are those of the global batch) and
    DistributedDataParallel averages that backward pass, as for a plain sum.

    One subclass per form: `AdaLSP(form, group_count)` builds AdaLSPPaper (form="paper", the default) or
    AdaLSPOriginal (form="original"); a subclass names its `form` and defines `backward`.
    """

    def __new__(cls, form="paper", group_count=CROSS_TASK_GROUPS):
        """AdaLSP(...) builds the subclass of `form` (one of ADALSP_FORMS); a subclass builds itself."""
        if cls is AdaLSP:
            cls = form_class("AdaLSP", ADALSP_CLASSES, form)
        return super().__new__(cls)

    def __init__(self, form=None, group_count=CROSS_TASK_GROUPS):
        """Shares 1/K for the K = `group_count` groups until the first step; `form`, when given, must be
        this class's own."""
        super().__init__()
        check_own_form(self, form, "AdaLSP")
        if group_count not in ADALSP_GROUP_COUNTS:
            raise ValueError(f"group_count {group_count!r}: AdaLSP is implemented for the groups of segmentation "
                             "and depth, with or without surface normals (2 or 3 groups)")
        self.register_buffer("shares", torch.full((group_count,), 1.0 / group_count), persistent=False)
        self.decoders = None

    def attach(self, model):
        """Read the decoders of `model` (of the model inside a DistributedDataParallel wrapper) from now on:
        for each group's task, the weight of its decoder's first layer and its decoder's parameters that
        require grad. A TypeError when the model does not name them."""
        model = unwrap_model(model)
        if not (hasattr(model, "decoder_parameters") and hasattr(model, "decoder_first_layer_weight")):
            raise TypeError(f"AdaLSP reads the gradients of each task's decoder: {type(model).__name__} must name "
                            "them with decoder_parameters(task) and decoder_first_layer_weight(task) (AdaMTNet does)")
        decoders = []
        for task in group_names(self.shares.shape[0]):
            weight = model.decoder_first_layer_weight(task)
            parameters = [parameter for parameter in model.decoder_parameters(task) if parameter.requires_grad]
            if not any(parameter is weight for parameter in parameters):
                raise ValueError(f"decoder_first_layer_weight({task!r}): expected one of the parameters of "
                                 f"decoder_parameters({task!r}) that require grad")
            decoders.append(AttachedDecoder(weight, [weight] + [parameter for parameter in parameters
                                                                if parameter is not weight]))
        self.decoders = decoders

    def attached(self):
        """The AttachedDecoder of each group that `attach` kept; a RuntimeError without them."""
        if self.decoders is None:
            raise RuntimeError(f"{type(self).__name__} reads the gradients of the model's decoders: call "
                               f"attach(model) once after building the model, before backward(groups)")
        return self.decoders

    def __getstate__(self):
        """State for copy and pickle, without the model's parameters: a copy reads them at its own
        `attach(model)`."""
        return {**super().__getstate__(), "decoders": None}

    def group_gradients(self, groups, parameter_lists):
        """For each group k, its gradient at parameter_lists[k] (a list that starts with the first-layer
        weight of its decoder) as a GroupGradient: one vector, averaged over the processes, and which of
        the parameters autograd reached. The graph is kept; a ValueError when no group reaches a decoder's
        first layer."""
        gradients = []
        for name, group, parameters in zip(group_names(groups.shape[0]), groups, parameter_lists):
            per_parameter = torch.autograd.grad(group, parameters, retain_graph=True, allow_unused=True)
            if per_parameter[0] is None:
                raise ValueError(f"groups: no group reaches the first layer of the {name} decoder; expected the "
                                 f"losses of {', '.join(group_names(groups.shape[0]))}, in this order")
            gradients.append(GroupGradient(average_across_processes(flatten(per_parameter, parameters)),
                                           [gradient is not None for gradient in per_parameter]))
        return gradients

    def record_shares(self, gradients):
        """The shares w [K] from the groups' GroupGradients (each starting with its first-layer gradient),
        kept for `weights()`."""
        magnitudes = torch.stack([gradient.vector[:decoder.first_layer_weight.numel()].abs().mean()
                                  for gradient, decoder in zip(gradients, self.attached())])
        total = magnitudes.sum()
        shares = torch.where(total > 0, magnitudes / total, torch.full_like(magnitudes, 1.0 / magnitudes.numel()))
        self.shares.copy_(shares)
        return shares

    def weights(self):
        """The share w_k of each group at the last training step (1/K before the first)."""
        return {f"w_{name}": value for name, value in zip(group_names(self.shares.shape[0]), self.shares.tolist())}


class AdaLSPPaper(AdaLSP):
    """AdaLSP as the method is meant (the paper's text could not be consulted: this is the original code's
    procedure with its two slips corrected, see AdaLSPOriginal): one backward pass of
    sum_k w_k * group_k with the shares detached, so that decoder k gets w_k times its own group's
    gradient and the encoder sum_k w_k * g_k, g_k being group k's gradient alone."""

    form = "paper"

    def backward(self, groups, extra=None):
        """The shares from one gradient pass per group at its decoder's first layer, then one backward pass
        of sum_k w_k * group_k; returns sum_k group_k, detached."""
        refuse_extra_loss(self, extra)
        gradients = self.group_gradients(groups, [[decoder.first_layer_weight] for decoder in self.attached()])
        shares = self.record_shares(gradients)
        (shares * groups).sum().backward()
        return groups.detach().sum()


class AdaLSPOriginal(AdaLSP):
    """AdaLSP as the original's compute_loss_with_adalsp runs it. It back-propagates the groups one after
    the other into the same gradients and keeps the encoder's gradients after each pass, so the k-th copy
    holds g_1 + ... + g_k; the encoder's gradient is sum_k w_k (g_1 + ... + g_k) = sum_j e_j g_j with
    e_j = w_j + ... + w_K (e_1 = 1: the first group's whole gradient, whatever its share). The decoders'
    gradients are multiplied by d_k: with two groups d = (w_1, w_1), the depth decoder's scaled by the
    segmentation share (train_cs.py lines 76-79); with three, d = (w_1, w_2 * w_3, 1), the depth decoder
    scaled twice and the normal decoder not at all (train_nyu3tasks.py lines 81-86).

    Here: one gradient pass per group over its decoder's parameters (g_k there, first layer included),
    the shares, one backward pass of sum_j e_j * group_j, which gives the encoder (and every parameter
    outside the decoders) its gradient, then each decoder's gradient set to d_k * g_k in place of what
    that pass left there (gradients from before this step are kept and added to)."""

    form = "original"

    def decoder_weights(self, shares):
        """d [K]: the factor of each decoder's gradient, from the shares w [K]."""
        if shares.shape[0] == 2:
            return torch.stack((shares[0], shares[0]))
        return torch.stack((shares[0], shares[1] * shares[2], torch.ones_like(shares[2])))

    def backward(self, groups, extra=None):
        """The decoders' per-group gradients and the shares, one backward pass of sum_j e_j * group_j, the
        decoders' gradients set to d_k * g_k; returns sum_k group_k, detached."""
        refuse_extra_loss(self, extra)
        decoders = self.attached()
        gradients = self.group_gradients(groups, [decoder.parameters for decoder in decoders])
        shares = self.record_shares(gradients)
        encoder_weights = shares.flip(0).cumsum(0).flip(0)
        earlier = [[parameter.grad for parameter in decoder.parameters] for decoder in decoders]
        for decoder in decoders:
            for parameter in decoder.parameters:
                parameter.grad = None
        (encoder_weights * groups).sum().backward()
        for decoder, gradient, weight, previous in zip(decoders, gradients, self.decoder_weights(shares), earlier):
            set_gradients(decoder.parameters, gradient.reached, weight * gradient.vector, previous)
        return groups.detach().sum()


class AttachedDecoder(NamedTuple):
    """What AdaLSP keeps of one task's decoder: the weight of its first layer and its parameters that
    require grad, that weight first."""

    first_layer_weight: torch.Tensor
    parameters: list


class GroupGradient(NamedTuple):
    """One group's gradient at a list of parameters: `vector` [sum of their sizes], zeros where the group
    does not reach a parameter, and `reached`, one bool per parameter."""

    vector: torch.Tensor
    reached: list


def set_gradients(parameters, reached, vector, previous):
    """Make the gradient of each reached parameter its slice of `vector` plus its `previous` gradient (None:
    nothing), writing into the gradient the backward pass left (its memory format kept); a parameter not
    reached gets its `previous` gradient back."""
    start = 0
    for parameter, is_reached, before in zip(parameters, reached, previous):
        end = start + parameter.numel()
        if is_reached:
            gradient = vector[start:end].view(parameter.shape)
            parameter.grad.copy_(gradient if before is None else gradient + before)
        else:
            parameter.grad = before
        start = end


def flatten(gradients, parameters):
    """One vector of `gradients` (None: zeros of the parameter's size), in the order of `parameters`."""
    return torch.cat([torch.zeros(parameter.numel(), dtype=parameter.dtype, device=parameter.device)
                      if gradient is None else gradient.reshape(-1)
                      for gradient, parameter in zip(gradients, parameters)])


def write_gradients(parameters, reached, vector):
    """Add the slices of `vector` to the gradients of `parameters` (as backward does), skipping those no
    group reached; a new gradient keeps the parameter's memory format."""
    start = 0
    for parameter, is_reached in zip(parameters, reached):
        end = start + parameter.numel()
        if is_reached:
            gradient = vector[start:end].view(parameter.shape)
            if parameter.grad is None:
                parameter.grad = torch.empty_like(parameter).copy_(gradient)
            else:
                parameter.grad.add_(gradient)
        start = end


GRADNORM_CLASSES = {"paper": GradNormPaper, "original": GradNormOriginal}
DWA_CLASSES = {"paper": DWAPaper, "original": DWAOriginal}
PCGRAD_CLASSES = {"paper": PCGradPaper, "original": PCGradOriginal}
ADALSP_CLASSES = {"paper": AdaLSPPaper, "original": AdaLSPOriginal}
GRADNORM_FORMS = DWA_FORMS = PCGRAD_FORMS = ADALSP_FORMS = BALANCING_FORMS
BALANCERS = {"none": LossBalancer, "uncertainty": UncertaintyWeights, "gradnorm": GradNorm, "dwa": DWA,
             "pcgrad": PCGrad, "adalsp": AdaLSP}


def make_balancer(method, **settings):
    """The balancer registered as `method` in BALANCERS, built with those of `settings` (keyword
    arguments, e.g. alpha, form, lr, betas, temperature, weighting, seed) that its constructor takes; the
    others are for other methods. A setting that no registered balancer takes is a TypeError."""
    if method not in BALANCERS:
        raise ValueError(f"balancing {method!r}: unknown method; expected one of {', '.join(BALANCERS)}")
    accepted = {name: set(inspect.signature(balancer).parameters) for name, balancer in BALANCERS.items()}
    unknown = set(settings) - set.union(*accepted.values())
    if unknown:
        raise TypeError(f"make_balancer: no balancing method takes {sorted(unknown)}")
    return BALANCERS[method](**{name: value for name, value in settings.items() if name in accepted[method]})
