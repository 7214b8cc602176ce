"""Loss balancing between the two group losses: one interface, one class per method.

A balancer turns the group losses [segmentation_group, depth_group] into one total (`combine`), runs the
backward pass of that total (`backward(groups)`, which returns the total, detached), and, where it has
its own update (GradNorm), makes it in `step()` after the model's optimizer step. The engine calls
`attach(model)` once after building the model and `start_epoch(epoch)` before each epoch. GradNorm
measures gradients at the shared layer the model names (`last_shared_weight`, `last_block_conv2_weight`,
`last_shared_stage`); the other balancers ignore the model. `model_parameters()` are learned by the
model's optimizer, `weights()` are logged, and learnable parameters and buffers are in the balancer's
`state_dict()`.

GradNorm has one class per form: GradNormPaper (Chen et al. 2018; the weights get only the gradient of
L_grad and the model only that of the total) and GradNormOriginal (the procedure of the original
xtask_mt code, whose L_grad also reaches the model's gradients). `GradNorm(form=...)` builds the one
that `form` (one of GRADNORM_FORMS) names.

Under torchrun the model is wrapped in DistributedDataParallel, which averages the model's gradients;
a balancer attaches to the unwrapped model and averages what is its own over the processes: the
gradients of its learnable parameters, and GradNorm's losses and per-group gradients at the shared
weight (so its norms and loss ratios are those of the global batch).
"""
import functools
import inspect
import math

import torch
from torch import nn

from utils.distributed import average_across_processes, average_gradients, unwrap_model

GROUP_NAMES = ("segmentation", "depth")


class LossBalancer(nn.Module):
    """Plain sum of the group losses; the base of every balancing method."""

    def attach(self, model):
        """Called once after the model is built (`model` may be in a DistributedDataParallel wrapper);
        the plain sum measures nothing at the model."""

    def combine(self, groups):
        """Total loss (scalar) from the group losses, groups: [2]."""
        return groups.sum()

    def model_parameters(self):
        """Parameters the model's optimizer should update alongside the model (none here)."""
        return []

    def backward(self, groups):
        """One backward pass of the total; returns the total, detached. Under torchrun the gradients of
        `model_parameters()` are then averaged over the processes (DDP averages only the model's)."""
        total = self.combine(groups)
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

    def __new__(cls, alpha=0.16, lr=1e-4, betas=(0.9, 0.999), form="paper"):
        """GradNorm(...) builds the subclass of `form` (one of GRADNORM_FORMS); a subclass builds itself."""
        if cls is GradNorm:
            if form not in GRADNORM_FORMS:
                raise ValueError(f"form {form!r}: unknown GradNorm form; expected one of {', '.join(GRADNORM_FORMS)}")
            cls = GRADNORM_CLASSES[form]
        return super().__new__(cls)

    def __init__(self, alpha=0.16, lr=1e-4, betas=(0.9, 0.999), form=None):
        """Weights W = 1 and their Adam (lr, betas); `form`, when given, must be this class's own."""
        super().__init__()
        if form not in (None, self.form):
            raise ValueError(f"form {form!r}: {type(self).__name__} is GradNorm's {self.form!r} form")
        if alpha < 0 or not math.isfinite(alpha):
            raise ValueError(f"alpha {alpha!r}: expected a finite value >= 0")
        self.alpha = alpha
        self.task_weight = nn.Parameter(torch.ones(len(GROUP_NAMES)))
        self.register_buffer("initial_losses", torch.full((len(GROUP_NAMES),), float("nan")))
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
        return {f"w_{name}": value for name, value in zip(GROUP_NAMES, values)}


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

    def backward(self, groups):
        """Gradient norms of each group at the attached shared weight, one backward pass of the total, and
        the gradient of L_grad into the weights only; returns the total, detached. The norms come from
        that one pass when the activation recorded by the attachment's hook splits this graph by group
        (see `activation_consumers`) and no weight is 0 (the pass carries w_k-weighted gradients),
        otherwise from one extra backward pass per group. Under torchrun the losses and the per-group
        gradients are averaged over the processes first, so every process computes the same weights'
        gradient, that of the global batch."""
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
            self.task_weight.mul_(len(GROUP_NAMES) / self.task_weight.sum())


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

    def __init__(self, alpha=0.16, lr=1e-4, betas=(0.9, 0.999), form=None):
        """As GradNorm, with buffers for the current epoch (L0 is refreshed during epoch 1) and the number
        of steps taken (t = W before the first)."""
        super().__init__(alpha, lr, betas, form)
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
            return (len(GROUP_NAMES) / self.task_weight.sum()) * self.task_weight
        return self.task_weight

    def backward(self, groups):
        """Backward of l_1 and of l_2 (graph kept), then the full backward of L_grad built from
        create_graph gradient norms at the attached weight, with W's gradient zeroed in between. The two
        backward passes are separate, as in the original, so that the gradients add in its order.
        Returns sum_k t_k * group_k (= 2 (l_1 + l_2)), the training total the original logged."""
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


GRADNORM_CLASSES = {"paper": GradNormPaper, "original": GradNormOriginal}
GRADNORM_FORMS = tuple(GRADNORM_CLASSES)
BALANCERS = {"none": LossBalancer, "uncertainty": UncertaintyWeights, "gradnorm": GradNorm}


def make_balancer(method, **settings):
    """The balancer registered as `method` in BALANCERS, built with those of `settings` (keyword
    arguments, e.g. alpha, form, lr, betas) that its constructor takes; the others are for other
    methods. A setting that no registered balancer takes is a TypeError."""
    if method not in BALANCERS:
        raise ValueError(f"balancing {method!r}: unknown method; expected one of {', '.join(BALANCERS)}")
    accepted = {name: set(inspect.signature(balancer).parameters) for name, balancer in BALANCERS.items()}
    unknown = set(settings) - set.union(*accepted.values())
    if unknown:
        raise TypeError(f"make_balancer: no balancing method takes {sorted(unknown)}")
    return BALANCERS[method](**{name: value for name, value in settings.items() if name in accepted[method]})
