"""sharpDARTS's HyperCuboid: a grid of layer x stride stage x input width x
output width x op, searched like alphas, whose result is a path through the
grid (docs/methods/hypercuboid.md).

This module holds what needs no TensorFlow: the grid's widths and alpha rows
(`GridSpace`), the result (`GridPath`, written as `path.json`), and the
read-out (`longest_path`, the heaviest path through the grid's DAG).  The
supernet is `keras_darts/space/grid_network.py`, the chain network a path
trains as is `keras_darts/evaluation/chain_network.py`.
"""

import dataclasses
import json
import math

import numpy as np

from keras_darts.errors import GenotypeError
from keras_darts.infra import fileio
from keras_darts.infra.fileio import atomic_write_text

# The grid's two ops, in alpha column order (the reference's MULTICHANNELNET_PRIMITIVES).
GRID_OPS = ("resizable_pool", "sharp_sep_conv")
STRIDES = (1, 2)  # Every layer: a stride-1 stage, then a stride-2 stage.
KIND = "hypercuboid_path"  # The "kind" key that marks a path.json.
CELL_TYPE = "grid"  # The grid's one row group of alphas (see GridSpace).


def grid_widths(channels, count=4):
    """The grid's widths: 2^(floor(log2 C) + i) for i < count (C = 32 or 36:
    32, 64, 128, 256)."""
    if channels < 1 or count < 1:
        raise ValueError(f"channels and count must be positive, got {channels}, {count}")
    base = 2 ** int(math.floor(math.log2(channels)))
    return tuple(base * 2 ** i for i in range(count))


@dataclasses.dataclass(frozen=True)
class GridSpace:
    """The grid's shape and how its alphas are laid out.

    One alpha row per (layer, stride stage), rows in stage order (layer 0
    stride 1, layer 0 stride 2, layer 1 stride 1, ...); a row holds every
    (c_in, c_out, op) of its stage, c_in-major, so the mixing rule, applied
    along a row, takes one softmax (and Max-W one max) over a whole cuboid.
    """

    widths: tuple
    num_layers: int
    cell_types: tuple = (CELL_TYPE,)
    op_family: str = "sharp"

    def __post_init__(self):
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if self.num_layers < 1:
            raise ValueError(f"a grid needs at least one layer, got {self.num_layers}")

    @property
    def stages(self):
        """(layer, stride) of every stage, in order."""
        return tuple((layer, stride) for layer in range(self.num_layers) for stride in STRIDES)

    @property
    def alpha_shape(self):
        n = len(self.widths)
        return (len(self.stages), n * n * len(GRID_OPS))

    def cuboid(self, row):
        """An alpha row [n * n * ops] as an array [c_in, c_out, op]."""
        n = len(self.widths)
        return np.asarray(row).reshape(n, n, len(GRID_OPS))

    def derive_genotype(self, scores_by_cell, candidates=None):
        """The heaviest path for per-stage weights {"grid": [stages, n*n*ops]}
        (the read-out every criterion of magnitudes uses)."""
        del candidates  # Both grid ops are always candidates.
        scores = np.asarray(scores_by_cell[CELL_TYPE])
        if scores.shape != self.alpha_shape:
            raise ValueError(f"scores of shape {scores.shape}, expected {self.alpha_shape}")
        return longest_path([self.cuboid(row) for row in scores], self.widths, self.stages)

    def candidate_ops(self, exclude=None):
        del exclude
        return list(range(len(GRID_OPS)))


@dataclasses.dataclass(frozen=True)
class GridStage:
    """One stage of a path: the op from width c_in to c_out at `stride`."""

    layer: int
    stride: int
    c_in: int
    c_out: int
    op: str

    def to_json_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class GridPath:
    """A chain network: a stem of width `stem`, then one op per stage.

    On disk (`path.json`)::

        {"kind": "hypercuboid_path", "stem": 32,
         "stages": [{"layer": 0, "stride": 1, "c_in": 32, "c_out": 32,
                     "op": "sharp_sep_conv"}, ...]}
    """

    stem: int
    stages: tuple
    kind = KIND
    op_family = "sharp"

    def __post_init__(self):
        stages = tuple(s if isinstance(s, GridStage) else GridStage(**s) for s in self.stages)
        object.__setattr__(self, "stages", stages)
        _check_chain(self.stem, stages, "path")

    @property
    def out_channels(self):
        return self.stages[-1].c_out

    def to_json_dict(self):
        return {"kind": KIND, "stem": int(self.stem),
                "stages": [s.to_json_dict() for s in self.stages]}

    def to_json(self):
        """One stage per line (diff-friendly)."""
        stages = ",\n".join(f"  {json.dumps(s.to_json_dict())}" for s in self.stages)
        return (f'{{\n "kind": "{KIND}",\n "stem": {int(self.stem)},\n'
                f' "stages": [\n{stages}\n ]\n}}\n')

    def to_text(self):
        """One line, e.g. "stem 32 | l0 s1 sharp_sep_conv 32->32 | l0 s2 ..."."""
        return " | ".join([f"stem {self.stem}"] + [
            f"l{s.layer} s{s.stride} {s.op} {s.c_in}->{s.c_out}" for s in self.stages])


def _check_chain(stem, stages, where):
    if isinstance(stem, bool) or not isinstance(stem, int) or stem < 1:
        raise GenotypeError(f"{where}: 'stem' must be a positive width, got {stem!r}")
    if not stages or len(stages) % len(STRIDES):
        raise GenotypeError(f"{where}: 'stages' must list a stride-1 and a stride-2 stage per "
                            f"layer, got {len(stages)} stage(s)")
    width = stem
    for i, stage in enumerate(stages):
        layer, stride = i // len(STRIDES), STRIDES[i % len(STRIDES)]
        if (stage.layer, stage.stride) != (layer, stride):
            raise GenotypeError(f"{where}: stage {i} must be layer {layer} stride {stride}, "
                                f"got layer {stage.layer} stride {stage.stride}")
        if stage.op not in GRID_OPS:
            raise GenotypeError(f"{where}: stage {i} has op {stage.op!r}; grid ops: "
                                f"{list(GRID_OPS)}")
        if stage.c_in != width:
            raise GenotypeError(f"{where}: stage {i} reads width {stage.c_in} but the "
                                f"previous {'stage' if i else 'stem'} outputs {width}")
        if isinstance(stage.c_out, bool) or not isinstance(stage.c_out, int) or stage.c_out < 1:
            raise GenotypeError(f"{where}: stage {i} has c_out {stage.c_out!r}")
        width = stage.c_out


def is_path(value):
    """True for a `GridPath` (a HyperCuboid result), False for a cell genotype."""
    return isinstance(value, GridPath)


def is_path_json(data):
    return isinstance(data, dict) and data.get("kind") == KIND


def from_json_dict(data, where="path"):
    """Validates parsed path JSON; raises GenotypeError naming the first problem."""
    if not is_path_json(data):
        raise GenotypeError(f"{where}: not a HyperCuboid path (needs \"kind\": \"{KIND}\")")
    extra = sorted(set(data) - {"kind", "stem", "stages"})
    if extra or "stem" not in data or not isinstance(data.get("stages"), list):
        raise GenotypeError(f"{where}: a path has exactly the keys kind, stem, stages (a list)"
                            f"; got {sorted(data)}")
    stages = []
    for i, stage in enumerate(data["stages"]):
        fields = {f.name for f in dataclasses.fields(GridStage)}
        if not isinstance(stage, dict) or set(stage) != fields:
            raise GenotypeError(f"{where}: stage {i} must have exactly the keys "
                                f"{sorted(fields)}, got {stage!r}")
        stages.append(GridStage(**stage))
    return GridPath(data["stem"], tuple(stages))


def load(path):
    if not fileio.isfile(path):
        raise GenotypeError(f"path file not found: {path}")
    try:
        data = fileio.read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GenotypeError(f"{path}: not valid JSON ({e})") from None
    except OSError as e:  # E.g. no read permission.
        raise GenotypeError(f"cannot read path file {path}: {e}") from None
    return from_json_dict(data, where=path)


def save(path_value, filename):
    atomic_write_text(filename, path_value.to_json())


def longest_path(cuboids, widths, stages):
    """The heaviest path through the grid: a stem width, then per stage one
    (c_in -> c_out, op) with c_in = the previous stage's c_out, maximising the
    summed weight `cuboids[stage][c_in, c_out, op]` (dynamic programming over
    the stages; ties keep the lower width / the first op)."""
    n = len(widths)
    best = np.zeros(n)  # Best total weight of a path ending at each width.
    choices = []
    for cuboid in cuboids:
        cuboid = np.asarray(cuboid, np.float64)
        total = best[:, None, None] + cuboid  # [c_in, c_out, op]
        flat = total.transpose(1, 0, 2).reshape(n, -1)  # Per c_out: (c_in, op) c_in-major.
        arg = np.argmax(flat, axis=1)  # First maximum: lower c_in, then first op.
        choices.append(arg)
        best = flat[np.arange(n), arg]
    end = int(np.argmax(best))
    picked = []
    for (layer, stride), arg in zip(reversed(stages), reversed(choices)):
        c_in, op = divmod(int(arg[end]), len(GRID_OPS))
        picked.append(GridStage(layer, stride, widths[c_in], widths[end], GRID_OPS[op]))
        end = c_in
    return GridPath(widths[end], tuple(reversed(picked)))


def _published(stem, stages):
    ops = {"pool": "resizable_pool", "sep": "sharp_sep_conv"}
    parsed = []
    for i, text in enumerate(stages.split()):
        op, c_in, c_out = text.replace("->", ":").split(":")
        parsed.append(GridStage(i // 2, STRIDES[i % 2], int(c_in), int(c_out), ops[op]))
    return GridPath(stem, tuple(parsed))


# The reference's searched Max-W path and its handmade baseline (32-256 wide grid).
MULTI_CHANNEL_MAX_W_PATH = _published(
    256, "pool:256->128 pool:128->256 pool:256->32 pool:32->256 sep:256->256 pool:256->256 "
         "pool:256->256 pool:256->256")
MULTI_CHANNEL_HANDMADE_PATH = _published(
    32, "sep:32->32 pool:32->64 sep:64->64 pool:64->128 sep:128->128 pool:128->256 "
        "sep:256->256 pool:256->256")
PUBLISHED = {"MULTI_CHANNEL_MAX_W_PATH": MULTI_CHANNEL_MAX_W_PATH,
             "MULTI_CHANNEL_HANDMADE_PATH": MULTI_CHANNEL_HANDMADE_PATH}
