"""Run configurations (search, training of a genotype): frozen records, saved as
JSON beside the results."""

import dataclasses
import json
import os

from keras_darts.errors import ConfigError
from keras_darts.fileio import atomic_write_text
from keras_darts.search_step import SearchHParams
from keras_darts.train_step import TrainHParams


class _JsonRecord:
    """JSON save/load and the resume check of a frozen config dataclass.

    Subclasses name the fields that must not change on --resume in RESUME_KEYS
    and their kind ("search") in KIND.
    """

    RESUME_KEYS = ()
    KIND = ""

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True)

    def save(self, path):
        atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path):
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            return cls(**data)
        except (OSError, json.JSONDecodeError, TypeError) as e:
            raise ConfigError(f"cannot read {cls.KIND} config {path}: {e}") from None

    def check_resumable_from(self, saved):
        diffs = [f"--{k}: saved {getattr(saved, k)!r}, now {getattr(self, k)!r}"
                 for k in self.RESUME_KEYS if getattr(saved, k) != getattr(self, k)]
        if diffs:
            raise ConfigError("cannot --resume with settings that differ from the saved run "
                              f"in {self.output_dir}: " + "; ".join(diffs))


@dataclasses.dataclass(frozen=True)
class SearchConfig(_JsonRecord):
    """Everything that defines a search run (defaults: the DARTS paper, CIFAR-10)."""

    output_dir: str
    # Data.
    dataset: str = "digits"
    data_dir: str = ""
    image_size: int = 0          # 0 = the dataset's own size.
    crop_padding: int = -1       # -1 = max(1, image_size // 8).
    train_portion: float = 0.5   # First part of the train split: search-train.
    # Supernet.
    channels: int = 16
    layers: int = 8
    nodes: int = 4
    primitives: str = "darts"
    stem_multiplier: int = 3
    # Search.
    method: str = "darts"        # "darts" or "msr" (MSR-DARTS, keras_darts.msr).
    epochs: int = 50
    batch_size: int = 64
    eval_batch_size: int = 0     # 0 = batch_size.
    steps_per_epoch: int = 0     # 0 = a full pass over search-train.
    order: str = "first"
    relaxation: str = "full"     # full = DARTS; single_edge = EDAS (keras_darts/edas.py).
    edas_clamp: str = "derived"
    edas_edges_per_step: str = "per_cell_type"
    edas_edge_sampling: str = "uniform"
    edas_tau0: float = 1.0
    edas_eps: float = 0.0
    selection: str = "magnitude"
    seed: int = 2
    # Optimisers: defaults are SearchHParams' (the reference values).
    w_lr: float = SearchHParams.w_lr
    w_lr_min: float = SearchHParams.w_lr_min
    w_momentum: float = SearchHParams.w_momentum
    w_weight_decay: float = SearchHParams.w_weight_decay
    w_grad_clip: float = SearchHParams.w_grad_clip
    a_lr: float = SearchHParams.a_lr
    a_beta_1: float = SearchHParams.a_beta_1
    a_beta_2: float = SearchHParams.a_beta_2
    a_weight_decay: float = SearchHParams.a_weight_decay
    # Runtime.
    msr_shapes: str = "code"
    pt_proj_intv: int = 5
    pt_crit_normal: str = "acc"
    pt_crit_reduce: str = "acc"
    strategy: str = "default"
    recompute: str = "all"
    graph_optimizer: str = "auto"
    log_every: int = 50
    keep_checkpoints: int = 3

    # Fields that must match when resuming: they shape the model or the data.
    # (--epochs may grow: resuming with more epochs extends a finished search.)
    RESUME_KEYS = ("dataset", "data_dir", "image_size", "channels", "layers", "nodes",
                   "primitives", "stem_multiplier", "batch_size", "steps_per_epoch", "order",
                   "relaxation", "edas_clamp", "edas_edges_per_step", "edas_edge_sampling",
                   "method", "train_portion", "seed")
    KIND = "search"
    EDAS_KEYS = ("edas_clamp", "edas_edges_per_step", "edas_edge_sampling", "edas_tau0",
                 "edas_eps")

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
        if not os.path.isfile(path):
            raise ConfigError(f"{run_dir} is not a keras_darts.search output directory "
                              "(no config.json)")
        return cls.load(path)


@dataclasses.dataclass(frozen=True)
class TrainConfig(_JsonRecord):
    """Everything that defines the training of a genotype from scratch (defaults:
    the DARTS CIFAR-10 evaluation recipe, specs/darts.md sect. 5)."""

    output_dir: str
    genotype: str = "DARTS_V2"   # A registered name or a genotype JSON path.
    # Data.
    dataset: str = "digits"
    data_dir: str = ""
    image_size: int = 0          # 0 = the dataset's own size.
    crop_padding: int = -1       # -1 = max(1, image_size // 8).
    cutout: int = 16             # Side of the cutout square in pixels; 0 = no cutout.
    augmentation: str = "crop_flip"  # Or "imagenet" (the ImageNet recipe), data.py.
    # Network (keras_darts.eval_net).
    network: str = "cifar"
    channels: int = 36
    layers: int = 20
    auxiliary: bool = True
    auxiliary_weight: float = TrainHParams.auxiliary_weight
    drop_path_prob: float = 0.2  # Final value of the linear drop-path schedule.
    # Recipe.
    epochs: int = 600
    batch_size: int = 96
    eval_batch_size: int = 0     # 0 = batch_size.
    steps_per_epoch: int = 0     # 0 = a full pass over the train split.
    lr: float = 0.025
    lr_schedule: str = "cosine"  # cosine (to lr_min) or exponential (x lr_decay per epoch).
    lr_min: float = 0.0
    lr_decay: float = 0.97
    momentum: float = TrainHParams.momentum
    weight_decay: float = TrainHParams.weight_decay
    grad_clip: float = TrainHParams.grad_clip
    label_smoothing: float = TrainHParams.label_smoothing
    seed: int = 0
    # Runtime.
    eval_every: int = 1          # Test accuracy every N epochs (and always after the last).
    export_dir: str = ""
    strategy: str = "default"
    graph_optimizer: str = "auto"
    log_every: int = 50
    keep_checkpoints: int = 3

    KIND = "train"
    # They shape the model, its checkpoint or the data (--epochs may grow).
    RESUME_KEYS = ("dataset", "data_dir", "image_size", "network", "channels", "layers",
                   "auxiliary", "batch_size", "seed", "steps_per_epoch", "augmentation")

    def hparams(self):
        """The step's settings (the learning rate is set per epoch)."""
        return TrainHParams(**{f.name: getattr(self, f.name)
                               for f in dataclasses.fields(TrainHParams)})
