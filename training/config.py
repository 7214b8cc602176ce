"""The run's configuration: one frozen, typed object, `RunConfig`, made by training.options from argv.

It has sections (data, model, loss, balancing, optimization, speed, run). Each setting is declared once,
here, as a field whose metadata says what the setting is for (`ROLES`); every list of settings that
some part of the repository needs (what `--resume` may change, the columns of results.csv, what a
process other than rank 0 turns off, what `--infer_only` takes from a checkpoint, what does not change
what a run learns) is derived from those declarations. A setting's `key` is its flag's name (the field
name unless declared otherwise) and is unique over all sections.

A change after parsing is a new configuration (`RunConfig.replace(key=value)`); config.json is
`RunConfig.to_json()` and is read back with `RunConfig.from_json`.
"""
import dataclasses
import re
from dataclasses import dataclass, field
from typing import Optional

AUTO = "auto"  # a speed switch given neither way: on with CUDA, off on the CPU
TWO_TASKS = ("segmentation", "depth")
THREE_TASKS = ("segmentation", "depth", "normal")  # NYUv2 with surface normals, for models with a normals head
CONFIG_FORMAT = 2  # config.json of format 1 held the flags flat under "options"
# Balancer constructor parameters whose setting has another key; every other parameter is spelled like its key.
BALANCER_FLAGS = {"alpha": "gradnorm_alpha", "form": "balancing_form", "temperature": "dwa_temperature",
                  "weighting": "pcgrad_weighting", "group_count": "tasks"}
# Where the GradNorm weights' own Adam takes its betas in the original form (torch's defaults).
ORIGINAL_GRADNORM_BETAS = (0.9, 0.999)

RESUMABLE = "resumable"            # may change on --resume (how the run is watched, where data sits, a longer schedule)
SUMMARISED = "summarised"          # a column of {save_path}/results.csv
RESTORED = "restored"              # --infer_only takes it from the checkpoint's data settings
RESTORED_UNLESS_GIVEN = "restored_unless_given"  # ... unless given on the command line
NOT_COMPARED = "not_compared"      # how the run ran, not what it learned: the report does not split rows by it
RANK_ZERO_ONLY = "rank_zero_only"  # under torchrun, processes other than rank 0 run with `off_value`
KIND_OF_RUN = "kind_of_run"        # names the kind of run: the report names it first whenever it is set
BASELINE_MATCH = "baseline_match"  # a single-task baseline must share it with the multi-task runs it serves
CROSS_TASK_ONLY = "cross_task_only"  # a setting of the cross-task model (its transfer nets or their losses)
COMPARED_BY_PRESENCE = "compared_by_presence"  # the report compares whether it is set, not its value (paths)
ROLES = (RESUMABLE, SUMMARISED, RESTORED, RESTORED_UNLESS_GIVEN, NOT_COMPARED, RANK_ZERO_ONLY, KIND_OF_RUN,
         BASELINE_MATCH, CROSS_TASK_ONLY, COMPARED_BY_PRESENCE)


def setting(default, *roles, key=None, off_value=None):
    """A configuration field with its `roles` (see ROLES), its flat `key` (the flag's name; the field's
    name when None) and, for RANK_ZERO_ONLY, the value the other processes use."""
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"roles {sorted(unknown)}: expected some of {', '.join(ROLES)}")
    return field(default=default, metadata={"roles": frozenset(roles), "key": key, "off_value": off_value})


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, where, at what size, and how it is loaded."""

    dataset: str = setting("cityscapes", KIND_OF_RUN, BASELINE_MATCH)
    input_path: Optional[str] = setting(None, RESUMABLE, RESTORED_UNLESS_GIVEN, NOT_COMPARED)
    height: int = setting(128, SUMMARISED, RESTORED, BASELINE_MATCH)
    width: int = setting(256, SUMMARISED, RESTORED, BASELINE_MATCH)
    num_classes: int = setting(7, SUMMARISED, RESTORED, BASELINE_MATCH)
    ignore_index: int = setting(250, RESTORED)
    batch_size: int = setting(8, SUMMARISED, RESTORED_UNLESS_GIVEN)
    workers: int = setting(2, RESUMABLE, NOT_COMPARED)
    no_augment: bool = setting(False, SUMMARISED)
    cache_dir: Optional[str] = setting(None, RESUMABLE, NOT_COMPARED)
    no_cache: bool = setting(False, RESUMABLE, NOT_COMPARED)

    def cache(self):
        """The `cache` argument of the dataset classes: False, or the cache folder (True: the default one)."""
        return False if self.no_cache else self.cache_dir or True


@dataclass(frozen=True)
class XTaskModelConfig:
    """The constructor arguments of models.XTaskTSNet (besides num_classes and single_task)."""

    enc_layers: int = setting(34, SUMMARISED, BASELINE_MATCH, CROSS_TASK_ONLY)
    batch_norm: bool = setting(False, SUMMARISED, CROSS_TASK_ONLY)
    wider_ttnet: bool = setting(False, SUMMARISED, CROSS_TASK_ONLY)
    use_pretrain: bool = setting(False, CROSS_TASK_ONLY)
    pretrained_weights: Optional[str] = setting(None, NOT_COMPARED, CROSS_TASK_ONLY)

    def describe(self):
        """The model in a few words, for the line printed when training starts."""
        return f"cross-task network, ResNet-{self.enc_layers} encoder"

    def arguments(self, num_classes, tasks, data):
        """The constructor arguments a checkpoint stores to rebuild the network for `tasks` (both, or the
        single task's name alone); `data` (DataConfig) is not needed."""
        return dict(enc_layers=self.enc_layers, num_classes=num_classes, batch_norm=self.batch_norm,
                    wider_ttnet=self.wider_ttnet, single_task=tasks[0] if len(tasks) == 1 else None)

    def initialisation(self):
        """The constructor arguments of a new network only (a checkpoint holds trained weights)."""
        return dict(use_pretrain=self.use_pretrain, pretrained_weights=self.pretrained_weights)


@dataclass(frozen=True)
class MTANModelConfig:
    """models.MTAN has no settings of its own: its constructor arguments are the run's classes and tasks.
    KD4MTL (Li and Bilen 2020) trains it with knowledge distillation from single-task MTAN teachers:
    `distill_from` holds their experiment folders, one per trained task in task order (empty: no
    distillation), and `adaptor_lr` the learning rate of the per-task adaptors' own Adam."""

    distill_from: tuple = setting((), SUMMARISED, KIND_OF_RUN, COMPARED_BY_PRESENCE)
    adaptor_lr: float = setting(0.1, SUMMARISED)

    def arguments(self, num_classes, tasks, data):
        """The constructor arguments a checkpoint stores to rebuild the network for `tasks`; `data`
        (DataConfig) is not needed."""
        return dict(num_classes=num_classes, tasks=tuple(tasks))

    def initialisation(self):
        """Nothing: MTAN is always initialised from scratch, as in the original."""
        return {}

    def describe(self):
        """The model in a few words, for the line printed when training starts."""
        return "MTAN (SegNet with task attention)"


@dataclass(frozen=True)
class AdaMTNetModelConfig:
    """models.AdaMTNet has no settings of its own: its constructor arguments are the run's classes, tasks,
    batch size and input size (its decoder attention weights are sized by the batch and the image)."""

    def arguments(self, num_classes, tasks, data):
        """The constructor arguments a checkpoint stores to rebuild the network, from `data` (DataConfig)."""
        return dict(num_classes=num_classes, tasks=tuple(tasks), batch_size=data.batch_size, height=data.height,
                    width=data.width)

    def initialisation(self):
        """Nothing: AdaMT-Net is always initialised from scratch, as in the original."""
        return {}

    def describe(self):
        """The model in a few words, for the line printed when training starts."""
        return "AdaMT-Net (attention decoders per task)"


@dataclass(frozen=True)
class ModelConfig:
    """The model family (models.MODEL_FAMILIES, flag --model), the single-task choice, and one section per
    family holding its constructor arguments (`arguments`, `initialisation`)."""

    family: str = setting("xtask", SUMMARISED, key="model")
    tasks: tuple = setting(TWO_TASKS, SUMMARISED, RESTORED)
    single_task: Optional[str] = setting(None, SUMMARISED, KIND_OF_RUN)
    xtask: XTaskModelConfig = XTaskModelConfig()
    mtan: MTANModelConfig = MTANModelConfig()
    adamtnet: AdaMTNetModelConfig = AdaMTNetModelConfig()

    def family_section(self):
        """The section of the chosen family."""
        return getattr(self, self.family)

    def trained_tasks(self):
        """The tasks the model learns: the single task alone, or `tasks`."""
        return self.tasks if self.single_task is None else (self.single_task,)

    def arguments(self, num_classes, data=DataConfig()):
        """The chosen family's constructor arguments that a checkpoint stores to rebuild the model (`data`,
        the run's DataConfig, for a family sized by the batch or the image)."""
        return self.family_section().arguments(num_classes, self.trained_tasks(), data)

    def describe(self):
        """The chosen model in a few words."""
        return self.family_section().describe()


@dataclass(frozen=True)
class LossConfig:
    """The cross-task loss (losses.XTaskLoss) settings."""

    alpha: float = setting(0.01, SUMMARISED, CROSS_TASK_ONLY)
    gamma: float = setting(0.01, SUMMARISED, CROSS_TASK_ONLY)
    label_smoothing: float = setting(0.0, SUMMARISED, CROSS_TASK_ONLY)
    lp: str = setting("L1", SUMMARISED)
    tdep_loss: str = setting("L1", SUMMARISED, CROSS_TASK_ONLY)
    tseg_loss: str = setting("cross", SUMMARISED, CROSS_TASK_ONLY)
    consistency: str = setting("xtsc", SUMMARISED, CROSS_TASK_ONLY)

    def arguments(self, num_classes, ignore_index, single_task):
        """The keyword arguments of losses.XTaskLoss."""
        return dict(num_classes=num_classes, alpha=self.alpha, gamma=self.gamma,
                    label_smoothing=self.label_smoothing, lp=self.lp, tseg_loss=self.tseg_loss,
                    tdep_loss=self.tdep_loss, ignore_index=ignore_index, single_task=single_task,
                    consistency=self.consistency)


@dataclass(frozen=True)
class BalancingConfig:
    """How the group losses are balanced (losses.BALANCERS). `gradnorm_form` is the form of every method
    that has two (GradNorm, DWA, PCGrad, AdaLSP: "paper" or "original"); its key keeps its first name so that
    older runs read back."""

    method: str = setting("none", SUMMARISED, key="balancing")
    gradnorm_alpha: float = setting(0.16)
    gradnorm_form: str = setting("paper", SUMMARISED)
    dwa_temperature: float = setting(2.0, SUMMARISED)
    pcgrad_weighting: str = setting("none", SUMMARISED)

    def arguments(self, optimization, group_count=len(TWO_TASKS)):
        """The balancer's keyword arguments for `group_count` group losses (make_balancer gives each method
        those it takes): GradNorm's
        weights have their own Adam with the model's learning rate and betas in the paper form, torch's
        default betas in the original form (as the original code); PCGrad's random task order is seeded
        by the run's seed."""
        betas = ORIGINAL_GRADNORM_BETAS if self.gradnorm_form == "original" else (optimization.b1, optimization.b2)
        return dict(alpha=self.gradnorm_alpha, form=self.gradnorm_form, lr=optimization.lr, betas=betas,
                    temperature=self.dwa_temperature, weighting=self.pcgrad_weighting, seed=optimization.seed,
                    group_count=group_count)


@dataclass(frozen=True)
class OptimizationConfig:
    """The optimizer, its schedule, the seeds and the run's numerical determinism."""

    epochs: int = setting(250, RESUMABLE, SUMMARISED)
    optim: str = setting("adam")
    lr: float = setting(1e-4, SUMMARISED)
    b1: float = setting(0.9)
    b2: float = setting(0.99)
    momentum: float = setting(0.0)
    scheduler_step_size: int = setting(80)
    scheduler_gamma: float = setting(0.5)
    seed: int = setting(0, SUMMARISED, NOT_COMPARED)
    seeds: Optional[tuple] = setting(None, NOT_COMPARED)
    deterministic: bool = setting(False, RESUMABLE, NOT_COMPARED)
    sync_bn: bool = setting(False)


@dataclass(frozen=True)
class SpeedSettings:
    """How the engine runs a step on its device: bf16 autocast (`amp`), channels-last tensors, batched
    augmentation on the device (`gpu_augment`) and torch.compile; all off by default."""

    amp: bool = False
    channels_last: bool = False
    gpu_augment: bool = False
    compile: bool = False


@dataclass(frozen=True)
class SpeedConfig:
    """The speed switches as given: True, False or AUTO (on with CUDA, off on the CPU; every switch but
    `amp`, which changes the numbers and is off unless asked for: the paper ran float32); see `resolve`."""

    amp: bool = setting(False, RESUMABLE, NOT_COMPARED)
    channels_last: object = setting(AUTO, RESUMABLE, NOT_COMPARED)
    gpu_augment: object = setting(AUTO, RESUMABLE, NOT_COMPARED)
    compile: bool = setting(False, RESUMABLE, NOT_COMPARED)

    def resolve(self, device):
        """The SpeedSettings on `device`: each AUTO switch on with CUDA, off on the CPU; a switch asked for
        on the CPU where it only helps CUDA (amp, channels_last, compile) falls back to off with a note.
        gpu_augment works on the CPU too (batched, same results)."""
        cuda = device.type == "cuda"
        chosen = {name: cuda if getattr(self, name) == AUTO else getattr(self, name)
                  for name in ("amp", "channels_last", "gpu_augment")}
        chosen["compile"] = self.compile
        if not cuda:
            for name in ("amp", "channels_last", "compile"):
                if chosen[name]:
                    print(f"note: --{name} speeds up CUDA only; running without it on the CPU")
                    chosen[name] = False
        return SpeedSettings(**chosen)


@dataclass(frozen=True)
class RunSettings:
    """How the run is started, watched and written."""

    save_path: str = setting("./exps", RESUMABLE, NOT_COMPARED)
    resume: Optional[str] = setting(None, RESUMABLE, NOT_COMPARED)
    cpu: bool = setting(False, RESUMABLE, NOT_COMPARED)
    demo: bool = setting(False, SUMMARISED, KIND_OF_RUN)
    group: Optional[str] = setting(None, SUMMARISED, NOT_COMPARED)
    debug: bool = setting(False, NOT_COMPARED)
    infer_only: bool = setting(False, NOT_COMPARED)
    exp_num: Optional[int] = setting(None, NOT_COMPARED)
    direct_only: bool = setting(False, CROSS_TASK_ONLY)
    time_inf: bool = setting(False, RESUMABLE, NOT_COMPARED, RANK_ZERO_ONLY, off_value=False)
    notqdm: bool = setting(False, RESUMABLE, NOT_COMPARED, RANK_ZERO_ONLY, off_value=True)
    no_plots: bool = setting(False, RESUMABLE, NOT_COMPARED)
    tensorboard: bool = setting(False, RESUMABLE, NOT_COMPARED)
    show: bool = setting(False, RESUMABLE, NOT_COMPARED, RANK_ZERO_ONLY, off_value=False)
    view_only: bool = setting(False, RESUMABLE, NOT_COMPARED, RANK_ZERO_ONLY, off_value=False)
    run_only: bool = setting(False, RESUMABLE, NOT_COMPARED)
    multiple_gpu: bool = setting(False, NOT_COMPARED)
    peer_timeout: Optional[float] = setting(None, RESUMABLE, NOT_COMPARED)


SECTIONS = ("data", "model", "loss", "balancing", "optimization", "speed", "run")


@dataclass(frozen=True)
class RunConfig:
    """Everything one run is started with, in sections; `explicit` holds the keys given on the command
    line (the others are the entry script's defaults)."""

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    balancing: BalancingConfig = BalancingConfig()
    optimization: OptimizationConfig = OptimizationConfig()
    speed: SpeedConfig = SpeedConfig()
    run: RunSettings = RunSettings()
    explicit: tuple = ()

    def flat(self):
        """{key: value} of every setting (the flags' view of the configuration)."""
        return {key: value for key, _, value in settings_of(self)}

    def __getitem__(self, key):
        """The value of the setting whose key (flag name) is `key`; KeyError when there is none."""
        for setting_key, _, value in settings_of(self):
            if setting_key == key:
                return value
        raise KeyError(key)

    def replace(self, **values):
        """A new configuration with the settings named by key (flag name) set to `values`; `explicit`
        may be given too. KeyError naming an unknown key."""
        explicit = tuple(values.pop("explicit", self.explicit))
        unknown = set(values) - set(keys_with())
        if unknown:
            raise KeyError(f"no setting {sorted(unknown)}")
        return dataclasses.replace(replaced(self, values), explicit=explicit)

    def to_json(self):
        """The JSON content of config.json's "config": the sections as nested objects, and `explicit`."""
        return as_json(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, content, defaults):
        """The configuration written by `to_json` (or, for config.json of format 1, the flat options),
        with every setting the content lacks (a run of an older version) taken from `defaults`, a
        RunConfig. Unknown entries are ignored; ValueError when `content` is not a JSON object."""
        if not isinstance(content, dict):
            raise ValueError(f"expected a JSON object, found {type(content).__name__}")
        flat = flatten_sections(content) if any(isinstance(content.get(name), dict) for name in SECTIONS) else content
        known = {key: as_value(flat[key]) for key in keys_with() if key in flat}
        explicit = content.get("explicit") or ()
        return defaults.replace(**known, explicit=tuple(explicit) if isinstance(explicit, list) else ())


def settings_of(config):
    """(key, dataclasses.Field, value) of every setting of `config` (a RunConfig or one of its
    sections), nested sections walked in declaration order."""
    for item in dataclasses.fields(config):
        if item.name == "explicit":
            continue
        value = getattr(config, item.name)
        if dataclasses.is_dataclass(value):
            yield from settings_of(value)
        else:
            yield item.metadata.get("key") or item.name, item, value


def keys_with(role=None, config=RunConfig()):
    """The keys of the settings declared with `role` (every key when None), in declaration order."""
    return tuple(key for key, item, _ in settings_of(config) if role is None or role in item.metadata["roles"])


def rank_zero_only_values():
    """{key: value} a process other than torchrun's rank 0 runs with (no bars, windows or timing)."""
    return {key: item.metadata["off_value"] for key, item, _ in settings_of(RunConfig())
            if RANK_ZERO_ONLY in item.metadata["roles"]}


def replaced(section, values):
    """`section` (a dataclass) with the settings whose keys are in `values` replaced, nested sections too."""
    changes = {}
    for item in dataclasses.fields(section):
        if item.name == "explicit":
            continue
        value = getattr(section, item.name)
        if dataclasses.is_dataclass(value):
            changes[item.name] = replaced(value, values)
        elif (item.metadata.get("key") or item.name) in values:
            changes[item.name] = values[item.metadata.get("key") or item.name]
    return dataclasses.replace(section, **changes)


def flatten_sections(content):
    """{key: value} from the nested sections of `to_json`'s content (keys as declared)."""
    flat = {}

    def walk(section_content, template):
        for item in dataclasses.fields(template):
            if item.name not in section_content:
                continue
            value = getattr(template, item.name)
            if dataclasses.is_dataclass(value):
                if isinstance(section_content[item.name], dict):
                    walk(section_content[item.name], value)
            else:
                flat[item.metadata.get("key") or item.name] = section_content[item.name]

    walk(content, RunConfig())
    return flat


def as_json(content):
    """`content` (dicts, tuples, scalars) with every tuple as a list, as JSON reads it back."""
    if isinstance(content, dict):
        return {key: as_json(value) for key, value in content.items()}
    if isinstance(content, (tuple, list)):
        return [as_json(value) for value in content]
    return content


def as_value(value):
    """A JSON value as a setting holds it: lists become tuples (settings are immutable)."""
    return tuple(value) if isinstance(value, list) else value


def flag_message(error, renamed=None):
    """The message of a library's ValueError with its leading parameter name written as the flag of the
    setting (`renamed` maps a parameter to a key of another name): "lp 'L3': ..." -> "--lp 'L3': ..."."""
    message = str(error)
    match = re.match(r"([a-z_0-9]+)\b(.*)", message, re.DOTALL)
    if match is None:
        return message
    name = (renamed or {}).get(match.group(1), match.group(1))
    return f"--{name}{match.group(2)}"
