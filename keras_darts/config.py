"""Run configurations (search, training of a genotype): frozen records, saved as
JSON beside the results.

A search config has the settings every search shares as fields, and two
nested sections owned by plug-ins: `method_settings` (the dataclass the
method declares, keras_darts/methods/) and `selection_settings` (the
criterion's, keras_darts/selection/).  A field whose change on `--resume`
would alter what the run computes is marked with `...`; the same mark
(`fixed_on_resume`) exists for plug-in settings (keras_darts/settings.py).
"""

import dataclasses
import json
import math
import os

from keras_darts import settings as settings_lib
from keras_darts.errors import ConfigError
from keras_darts.evaluation.train_step import TrainHParams
from keras_darts.infra import fileio
from keras_darts.infra.fileio import atomic_write_text
from keras_darts.methods.bilevel import SearchHParams

_FREE = {"free_on_resume": True}


def _free(default):
    """A field `--resume` lets change: it cannot change what the run computes
    (docs/resume.md#what-may-change)."""
    return dataclasses.field(default=default, metadata=_FREE)


def _at_least(low):
    return lambda v: v >= low, f">= {low}"


def _in_range(low, high, closed_high=True):
    if closed_high:
        return lambda v: low <= v <= high, f"in [{low}, {high}]"
    return lambda v: low <= v < high, f"in [{low}, {high})"


def profile_range(text):
    """--profile_steps "FIRST,LAST" -> (FIRST, LAST), 1-based inclusive step
    numbers; "" -> None.  Raises ValueError for anything else."""
    if not text:
        return None
    first, last = (int(part) for part in text.split(","))
    if not 1 <= first <= last:
        raise ValueError(text)
    return first, last


def _profile_steps_ok(text):
    try:
        profile_range(text)
    except ValueError:
        return False
    return True


# The real domain of every numeric field (the flags' own bounds are a subset):
# {field: (test, what it must be)}.  Floats must also be finite (`_check_domain`).
DOMAINS = {
    "image_size": _at_least(0),
    "crop_padding": _at_least(-1),      # The upper bound needs the image: data/.
    "cutout": _at_least(0),             # Idem.
    "channels": _at_least(2),
    # Fewer than 3 cells make every cell a reduction cell (at 1/3 and 2/3 of the depth).
    "layers": _at_least(3),
    "nodes": _at_least(1),
    "stem_multiplier": _at_least(1),
    "epochs": _at_least(1),
    "batch_size": _at_least(1),
    "eval_batch_size": _at_least(0),
    "steps_per_epoch": _at_least(0),
    "train_portion": (lambda v: 0.0 < v < 1.0, "strictly between 0 and 1"),
    "validation_portion": _in_range(0.0, 0.9),
    "seed": _in_range(0, 2 ** 32 - 1),  # numpy's seed range.
    "w_lr": _at_least(0.0), "w_lr_min": _at_least(0.0), "lr": _at_least(0.0),
    "lr_min": _at_least(0.0), "a_lr": _at_least(0.0),
    "w_lr_power": _at_least(1.0), "lr_power": _at_least(1.0),
    "w_lr_warmup_epochs": _at_least(0), "lr_warmup_epochs": _at_least(0),
    "lr_decay": (lambda v: 0.0 < v <= 1.0, "in (0, 1]"),
    "w_momentum": _in_range(0.0, 1.0, closed_high=False),
    "momentum": _in_range(0.0, 1.0, closed_high=False),
    # Adam divides by 1 - beta ** t: beta = 1 turns the alphas into NaN.
    "a_beta_1": _in_range(0.0, 1.0, closed_high=False),
    "a_beta_2": _in_range(0.0, 1.0, closed_high=False),
    "w_weight_decay": _at_least(0.0), "a_weight_decay": _at_least(0.0),
    "weight_decay": _at_least(0.0),
    "w_grad_clip": _at_least(0.0), "grad_clip": _at_least(0.0),
    "auxiliary_weight": _at_least(0.0),
    "drop_path_prob": _in_range(0.0, 1.0, closed_high=False),
    "dropout_rate": _in_range(0.0, 1.0, closed_high=False),
    "label_smoothing": _in_range(0.0, 1.0, closed_high=False),
    "mid_channels": _at_least(0),
    "eval_every": _at_least(0),
    "log_every": _at_least(0),
    "keep_checkpoints": _at_least(1),
    "profile_steps": (_profile_steps_ok, 'empty or "FIRST,LAST" with 1 <= FIRST <= LAST'),
}


class _JsonRecord:
    """JSON save/load and the resume check of a frozen config dataclass;
    subclasses name their kind ("search") in KIND."""

    KIND = ""

    def _check_domain(self):
        """Refuses a value outside its field's domain (DOMAINS), a non-finite
        float and a value of the wrong type, naming the flag."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type in (int, float, "int", "float"):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ConfigError(f"--{field.name} must be a number, got {value!r}")
                if not math.isfinite(value):
                    raise ConfigError(f"--{field.name} must be a finite number, got {value!r}")
            if field.name in DOMAINS:
                test, what = DOMAINS[field.name]
                if not test(value):
                    raise ConfigError(f"--{field.name} must be {what}, got {value!r}")

    def profiled_steps(self):
        """--profile_steps as (first, last) step numbers, or None."""
        return profile_range(self.profile_steps)

    def to_json_dict(self):
        return dataclasses.asdict(self)

    def to_json(self):
        return json.dumps(self.to_json_dict(), indent=1, sort_keys=True)

    def save(self, path):
        atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def from_json_dict(cls, data):
        return cls(**data)

    @classmethod
    def load(cls, path):
        try:
            return cls.from_json_dict(fileio.read_json(path))
        except (OSError, json.JSONDecodeError, TypeError) as e:
            raise ConfigError(f"cannot read {cls.KIND} config {path}: {e}") from None

    def changed_fields(self, names):
        """{name: default} for those of the fields `names` whose value differs from
        the field's default (i.e. the user set them)."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        return {name: defaults[name] for name in names
                if getattr(self, name) != defaults[name]}

    # Fields compared by a subclass's `resume_changes` (plug-in sections).
    SECTIONS = ()

    def resume_changes(self, saved):
        """[(flag, saved value, new value, free_on_resume)] of every field that
        differs from the `saved` config."""
        return [(f.name, getattr(saved, f.name), getattr(self, f.name),
                 bool(f.metadata.get("free_on_resume")))
                for f in dataclasses.fields(self)
                if f.name not in self.SECTIONS and getattr(saved, f.name) != getattr(self, f.name)]

    def check_resumable_from(self, saved, also_fixed=()):
        """Refuses a change that alters the run (every field not free on resume,
        plus `also_fixed`, e.g. a method's); returns {flag: [saved, new]} of the
        allowed changes (what resume_history.json records)."""
        changes = self.resume_changes(saved)
        refused = [f"--{flag}: saved {old!r}, now {new!r}" for flag, old, new, free in changes
                   if not free or flag in also_fixed]
        if refused:
            raise ConfigError(f"cannot --resume {self.output_dir} with settings that change "
                              "what it computes (start a new --output_dir, or resume with "
                              "the saved values): " + "; ".join(refused))
        return {flag: [old, new] for flag, old, new, _ in changes}


@dataclasses.dataclass(frozen=True)
class SearchConfig(_JsonRecord):
    """Everything that defines a search run (defaults: the DARTS paper, CIFAR-10)."""

    output_dir: str = dataclasses.field(metadata=_FREE)
    # Data.
    dataset: str = "digits"
    data_dir: str = ""
    image_size: int = 0          # 0 = the dataset's own size.
    crop_padding: int = -1               # -1 = max(1, image_size // 8).
    resize: str = "crop"         # Other aspect ratios: "crop" (centre) or "squash".
    # Search space and supernet.
    space: str = "darts"
    channels: int = 16
    layers: int = 8
    nodes: int = 4
    primitives: str = "darts"
    stem_multiplier: int = 3
    weighting: str = "softmax"   # Mixing rule of the supernet's edges (space/mixing.py).
    # Search method (keras_darts/methods/) and its own settings.
    method: str = "darts"
    method_settings: object = None       # The method's Settings; None = its defaults.
    epochs: int = _free(50)
    batch_size: int = 64
    eval_batch_size: int = _free(0)      # 0 = batch_size.
    steps_per_epoch: int = 0     # 0 = a full pass over search-train.
    train_portion: float = 0.5   # First part of the train split: search-train.
    seed: int = 2
    # Selection criterion (keras_darts/selection/) and its settings.
    selection: str = "magnitude"
    selection_settings: object = None    # The criterion's Settings; None = its defaults.
    # Optimisers: defaults are SearchHParams' (the reference values).
    w_lr: float = SearchHParams.w_lr
    w_lr_min: float = SearchHParams.w_lr_min
    w_lr_schedule: str = "cosine"        # Or cosine_power (docs/schedules.md).
    w_lr_power: float = 2.0              # cosine_power's power (>= 1).
    w_lr_warmup_epochs: int = 5          # cosine_power's linear warmup; 0 = none.
    w_momentum: float = SearchHParams.w_momentum
    w_weight_decay: float = SearchHParams.w_weight_decay
    w_grad_clip: float = SearchHParams.w_grad_clip
    a_lr: float = SearchHParams.a_lr
    a_beta_1: float = SearchHParams.a_beta_1
    a_beta_2: float = SearchHParams.a_beta_2
    a_weight_decay: float = SearchHParams.a_weight_decay
    # Runtime.
    strategy: str = _free("default")
    recompute: str = _free("all")
    graph_optimizer: str = "auto"
    log_every: int = _free(50)
    keep_checkpoints: int = _free(3)
    profile_steps: str = _free("")

    KIND = "search"

    def __post_init__(self):
        from keras_darts import methods, selection  # They build on this module's imports.

        self._check_domain()
        method = methods.get(self.method)
        object.__setattr__(self, "method_settings", settings_lib.from_dict(
            method.Settings, self.method_settings or {}, f"settings of --method={self.method}"))
        try:
            criterion_settings = selection.make_settings(self.selection, self.selection_settings)
        except KeyError as e:
            raise ConfigError(e.args[0]) from None
        object.__setattr__(self, "selection_settings", criterion_settings)

    def to_json_dict(self):
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["method_settings"] = settings_lib.to_dict(self.method_settings)
        data["selection_settings"] = settings_lib.to_dict(self.selection_settings)
        return data

    @classmethod
    def from_json_dict(cls, data):
        if "method_settings" not in data:  # Written before plug-in sections existed.
            data = _from_flat(data)
        return cls(**data)

    SECTIONS = ("method_settings", "selection_settings")

    def resume_changes(self, saved):
        changes = super().resume_changes(saved)
        if saved.method == self.method:  # Else --method itself is the refused change.
            changes += settings_lib.resume_changes(saved.method_settings, self.method_settings)
        if saved.selection == self.selection:
            changes += settings_lib.resume_changes(saved.selection_settings,
                                                   self.selection_settings)
        return changes

    def search_space(self):
        """The `SearchSpace` this config searches (keras_darts/space/)."""
        from keras_darts.space import search_space

        return search_space.get(self.space, primitives=self.primitives, num_nodes=self.nodes)

    def hparams(self):
        """The optimiser settings as the search step takes them (fields without a
        flag, such as Adam's epsilon, keep SearchHParams' defaults)."""
        return SearchHParams(**{f.name: getattr(self, f.name)
                                for f in dataclasses.fields(SearchHParams)
                                if f.name in self.__dataclass_fields__})

    @classmethod
    def load_from_run(cls, run_dir):
        """The config a search saved in its output directory `run_dir`."""
        path = os.path.join(run_dir, "config.json")
        if not fileio.isfile(path):
            raise ConfigError(f"{run_dir} is not a keras_darts.search output directory "
                              "(no config.json)")
        return cls.load(path)


def _from_flat(data):
    """A config.json of the flat layout (one key per flag, before plug-in sections):
    the chosen method's and criterion's flags move into their sections, and a
    `relaxation` that stands for a method selects it."""
    from keras_darts import methods, selection

    data = dict(data)
    alias = methods.by_relaxation(data.pop("relaxation", "full"))
    if alias is not None:
        data["method"] = alias
    method = methods.get(data.get("method", "darts"))
    criterion = selection.get(data.get("selection", "magnitude"))
    flat = {}
    for key in set(_flag_keys(methods.get(m).Settings for m in methods.names())) | set(
            _flag_keys(selection.get(c).Settings for c in selection.names())):
        if key in data:
            flat[key] = data.pop(key)
    data["method_settings"] = _section(method.Settings, flat)
    data["selection_settings"] = _section(criterion.Settings, flat)
    return data


def _flag_keys(settings_classes):
    return [settings_lib.flag_name(f) for cls in settings_classes
            for f in settings_lib.flagged_fields(cls)]


def _section(settings_cls, flat):
    return {f.name: flat[settings_lib.flag_name(f)]
            for f in settings_lib.flagged_fields(settings_cls) if settings_lib.flag_name(f) in flat}


@dataclasses.dataclass(frozen=True)
class TrainConfig(_JsonRecord):
    """Everything that defines the training of a genotype from scratch (defaults:
    the DARTS CIFAR-10 evaluation recipe, docs/evaluation.md#cifar-10-recipe)."""

    output_dir: str = dataclasses.field(metadata=_FREE)
    genotype: str = "DARTS_V2"   # A registered name or a genotype JSON path.
    # Data.
    dataset: str = "digits"
    data_dir: str = ""
    image_size: int = 0          # 0 = the dataset's own size.
    crop_padding: int = -1               # -1 = max(1, image_size // 8).
    resize: str = "crop"         # Other aspect ratios: "crop" (centre) or "squash".
    cutout: int = 16                     # Side of the cutout square in pixels; 0 = no cutout.
    augmentation: str = "crop_flip"  # Or "imagenet", "autoaugment": data/.
    # > 0: train on the rest of the train split, evaluate on this last part of it.
    validation_portion: float = 0.0
    # Network (keras_darts/evaluation/networks.py).
    network: str = "cifar"
    channels: int = 36
    layers: int = 20
    mid_channels: int = 0        # Choke ops' middle width (sharpDARTS); 0 = family default.
    auxiliary: bool = True
    auxiliary_weight: float = TrainHParams.auxiliary_weight
    drop_path_prob: float = 0.2  # Final value of the linear drop-path schedule.
    dropout_rate: float = 0.0  # Dropout on the pooled features (NAO's recipe: 0.4).
    # Recipe.
    epochs: int = _free(600)
    batch_size: int = 96
    eval_batch_size: int = _free(0)     # 0 = batch_size.
    steps_per_epoch: int = 0     # 0 = a full pass over the train split.
    lr: float = 0.025
    lr_schedule: str = "cosine"  # cosine or cosine_power (to lr_min), or exponential (x lr_decay
    lr_min: float = 0.0          # per epoch): docs/schedules.md.
    lr_decay: float = 0.97
    lr_power: float = 2.0        # cosine_power's power (>= 1).
    lr_warmup_epochs: int = 0    # cosine_power's linear warmup; 0 = none.
    momentum: float = TrainHParams.momentum
    weight_decay: float = TrainHParams.weight_decay
    grad_clip: float = TrainHParams.grad_clip
    label_smoothing: float = TrainHParams.label_smoothing
    seed: int = 0
    # Runtime.
    eval_every: int = _free(1)   # Test accuracy every N epochs (and always after the last).
    export_dir: str = _free("")
    strategy: str = _free("default")
    graph_optimizer: str = "auto"
    log_every: int = _free(50)
    keep_checkpoints: int = _free(3)
    profile_steps: str = _free("")

    KIND = "train"

    def __post_init__(self):
        self._check_domain()

    def op_options(self):
        """Options of the genotype's op family (keras_darts/ops/registry.py)."""
        return {"mid_channels": self.mid_channels} if self.mid_channels else {}

    def hparams(self):
        """The step's settings (the learning rate is set per epoch)."""
        return TrainHParams(**{f.name: getattr(self, f.name)
                               for f in dataclasses.fields(TrainHParams)})
