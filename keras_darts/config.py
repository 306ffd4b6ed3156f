"""The search configuration: one frozen record, saved as JSON beside the results."""

import dataclasses
import json
import os

from keras_darts.errors import ConfigError
from keras_darts.fileio import atomic_write_text
from keras_darts.search_step import SearchHParams


@dataclasses.dataclass(frozen=True)
class SearchConfig:
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
    EDAS_KEYS = ("edas_clamp", "edas_edges_per_step", "edas_edge_sampling", "edas_tau0",
                 "edas_eps")

    def hparams(self):
        """The optimiser settings as the search step takes them (fields without a
        flag, such as Adam's epsilon, keep SearchHParams' defaults)."""
        return SearchHParams(**{f.name: getattr(self, f.name)
                                for f in dataclasses.fields(SearchHParams)
                                if f.name in self.__dataclass_fields__})

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
            raise ConfigError(f"cannot read search config {path}: {e}") from None

    @classmethod
    def load_from_run(cls, run_dir):
        """The config a search saved in its output directory `run_dir`."""
        path = os.path.join(run_dir, "config.json")
        if not os.path.isfile(path):
            raise ConfigError(f"{run_dir} is not a keras_darts.search output directory "
                              "(no config.json)")
        return cls.load(path)

    def check_resumable_from(self, saved):
        diffs = [f"--{k}: saved {getattr(saved, k)!r}, now {getattr(self, k)!r}"
                 for k in self.RESUME_KEYS if getattr(saved, k) != getattr(self, k)]
        if diffs:
            raise ConfigError("cannot --resume with settings that differ from the saved run "
                              f"in {self.output_dir}: " + "; ".join(diffs))
