"""Discrete cell architectures (genotypes): the result of a search.

A genotype lists, for the normal and the reduction cell, two (op, input) pairs
per intermediate node.  Input 0 and 1 are the two cell inputs, 2 + i is
intermediate node i.  On disk it is JSON of exactly this shape::

    {"normal": [["sep_conv_3x3", 0], ...], "normal_concat": [2, 3, 4, 5],
     "reduce": [["max_pool_3x3", 0], ...], "reduce_concat": [2, 3, 4, 5]}

plus, for ops of another op family than DARTS's (keras_darts/ops/registry.py),
`"op_family": "sharp"`: the same op names are other layers there (sharpDARTS's
`sep_conv_3x3` is a SharpSepConv).  Files without the key are DARTS genotypes.
A file holding only integers is NAO's text form of an architecture (40
integers, keras_darts/space/nao_arch.py): it loads as the "nao" genotype.
"""

import dataclasses
import json
import os
import re

from keras_darts.errors import GenotypeError
from keras_darts.infra import fileio
from keras_darts.infra.fileio import atomic_write_text

EDGES_PER_NODE = 2
_KEYS = ("normal", "normal_concat", "reduce", "reduce_concat")
_FAMILY_KEY = "op_family"
DEFAULT_FAMILY = "darts"  # = keras_darts.ops.DEFAULT_FAMILY (not imported: no TensorFlow here).


@dataclasses.dataclass(frozen=True)
class Genotype:
    """A normal and a reduction cell, each as (op_name, input_index) pairs, of
    ops of the op family `op_family`."""

    normal: tuple
    normal_concat: tuple
    reduce: tuple
    reduce_concat: tuple
    op_family: str = DEFAULT_FAMILY

    def __post_init__(self):
        # Normalise lists from JSON into hashable tuples.
        for key in _KEYS:
            value = getattr(self, key)
            if key.endswith("concat"):
                value = tuple(value)
            else:
                value = tuple(tuple(pair) for pair in value)
            object.__setattr__(self, key, value)

    @property
    def num_nodes(self):
        return len(self.normal) // EDGES_PER_NODE

    def cell(self, reduction):
        """Returns (pairs, concat) of the reduction or the normal cell."""
        if reduction:
            return self.reduce, self.reduce_concat
        return self.normal, self.normal_concat

    def to_json_dict(self):
        data = {
            "normal": [[op, int(i)] for op, i in self.normal],
            "normal_concat": [int(i) for i in self.normal_concat],
            "reduce": [[op, int(i)] for op, i in self.reduce],
            "reduce_concat": [int(i) for i in self.reduce_concat],
        }
        if self.op_family != DEFAULT_FAMILY:  # DARTS files keep their exact bytes.
            data[_FAMILY_KEY] = self.op_family
        return data

    def to_text(self):
        """One line, e.g. "normal [sep_conv_3x3:0 skip_connect:1 ...] reduce [...]";
        a cell's concat is appended only when it is not every intermediate node."""
        parts = []
        for name, reduction in (("normal", False), ("reduce", True)):
            pairs, concat = self.cell(reduction)
            parts.append(f"{name} [{' '.join(f'{op}:{i}' for op, i in pairs)}]")
            if tuple(concat) != tuple(range(2, 2 + self.num_nodes)):
                parts.append(f"{name}_concat {list(concat)}")
        if self.op_family != DEFAULT_FAMILY:
            parts.append(f"ops {self.op_family}")
        return " ".join(parts)

    def to_json(self):
        """Compact, diff-friendly JSON: one line per cell list."""
        items = self.to_json_dict().items()
        return "{\n" + ",\n".join(f' "{k}": {json.dumps(v)}' for k, v in items) + "\n}\n"


def _known_ops(op_family, where):
    from keras_darts import ops  # Imported late: ops pulls in TensorFlow.

    if op_family not in ops.op_families():
        raise GenotypeError(f"{where}: unknown op family {op_family!r}; known: "
                            f"{list(ops.op_families())}")
    return set(ops.registered_ops(op_family))


def from_json_dict(data, known_ops=None, where="genotype"):
    """Validates `data` (parsed JSON) and returns a `Genotype`.

    Raises GenotypeError naming the first problem found.
    """
    if not isinstance(data, dict):
        raise GenotypeError(f"{where}: expected a JSON object, got {type(data).__name__}")
    missing = [k for k in _KEYS if k not in data]
    if missing:
        raise GenotypeError(f"{where}: missing key(s) {missing}; need {list(_KEYS)}")
    extra = sorted(set(data) - set(_KEYS) - {_FAMILY_KEY})
    if extra:
        raise GenotypeError(f"{where}: unknown key(s) {extra}; allowed "
                            f"{list(_KEYS) + [_FAMILY_KEY]}")
    op_family = data.get(_FAMILY_KEY, DEFAULT_FAMILY)
    if not isinstance(op_family, str):
        raise GenotypeError(f"{where}: '{_FAMILY_KEY}' must be a string, got {op_family!r}")
    known_ops = _known_ops(op_family, where) if known_ops is None else set(known_ops)
    lengths = set()
    for cell in ("normal", "reduce"):
        pairs = data[cell]
        if not isinstance(pairs, list) or not pairs or len(pairs) % EDGES_PER_NODE:
            raise GenotypeError(
                f"{where}: '{cell}' must be a non-empty list with {EDGES_PER_NODE} "
                f"[op, input] pairs per node, got {pairs!r}")
        lengths.add(len(pairs))
        for position, pair in enumerate(pairs):
            node = position // EDGES_PER_NODE
            if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                    or not isinstance(pair[0], str) or isinstance(pair[1], bool)
                    or not isinstance(pair[1], int)):
                raise GenotypeError(
                    f"{where}: {cell}[{position}] must be [op_name, input_index], got {pair!r}")
            op, index = pair
            if op not in known_ops:
                raise GenotypeError(
                    f"{where}: {cell}[{position}] uses unknown op '{op}'; "
                    f"known ops: {sorted(known_ops)}")
            if not 0 <= index < 2 + node:
                raise GenotypeError(
                    f"{where}: {cell}[{position}] (node {node}) has input {index}; it must be "
                    f"0..{1 + node} (0/1 = cell inputs, 2+i = an earlier node i)")
        concat = data[f"{cell}_concat"]
        num_states = 2 + len(pairs) // EDGES_PER_NODE
        if (not isinstance(concat, list) or not concat
                or any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < num_states
                       for i in concat)):
            raise GenotypeError(
                f"{where}: '{cell}_concat' must be a non-empty list of state indices in "
                f"0..{num_states - 1}, got {concat!r}")
        if len(set(concat)) != len(concat):  # A state concatenated twice: a wider cell.
            raise GenotypeError(f"{where}: '{cell}_concat' repeats a state index: {concat!r}")
    if len(lengths) != 1:
        raise GenotypeError(f"{where}: 'normal' and 'reduce' have different numbers of nodes")
    return Genotype(**{k: data[k] for k in _KEYS}, op_family=op_family)


# Only integers (signs allowed, for a clear range error), whitespace and commas.
_NAO_TEXT = re.compile(r"[\s,]*-?\d[-\d\s,]*")


def load(path, known_ops=None):
    """Reads a genotype JSON file (or a HyperCuboid path.json: a
    `keras_darts.space.hypercuboid.GridPath`, or NAO's 40-integer text form: a
    "nao" genotype); raises GenotypeError with the path on any problem."""
    if not fileio.isfile(path):
        raise GenotypeError(f"genotype file not found: {path}")
    try:
        text = fileio.read_text(path)
    except UnicodeDecodeError as e:
        raise GenotypeError(f"{path}: not valid JSON ({e})") from None
    except OSError as e:  # E.g. no read permission.
        raise GenotypeError(f"cannot read genotype file {path}: {e.strerror or e}") from None
    if _NAO_TEXT.fullmatch(text):
        genotype = _nao_genotype(text, where=path)
        if known_ops is not None:  # E.g. a network with a restricted op set.
            from_json_dict(genotype.to_json_dict(), known_ops, where=path)
        return genotype
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise GenotypeError(f"{path}: not valid JSON ({e}) nor NAO's 40 integers") from None
    return parse(data, known_ops=known_ops, where=path)


def _nao_genotype(text, where):
    from keras_darts.space import nao_arch  # It builds on this module.

    return nao_arch.to_genotype(nao_arch.parse_text(text, where=where))


def save_nao_text(genotype, path):
    """Writes a NAO-space genotype as NAO's 40 integers (one line), atomically;
    GenotypeError if it is not one (`nao_arch.from_genotype`)."""
    from keras_darts.space import nao_arch

    arch = nao_arch.from_genotype(genotype, where=f"genotype for {path}")
    atomic_write_text(path, nao_arch.to_text(arch) + "\n")


def parse(data, known_ops=None, where="genotype"):
    """A `Genotype` from parsed JSON, or the `GridPath` of a HyperCuboid
    path.json (`"kind": "hypercuboid_path"`); validated either way."""
    from keras_darts.space import hypercuboid

    if hypercuboid.is_path_json(data):
        return hypercuboid.from_json_dict(data, where=where)
    return from_json_dict(data, known_ops=known_ops, where=where)


def save(genotype, path):
    """Writes `genotype` as JSON atomically (a crash never leaves half a file)."""
    atomic_write_text(path, genotype.to_json())


def load_genotype(path_or_name, known_ops=None):
    """A published genotype by registered name (e.g. "DARTS_V2"), or a genotype JSON file.

    Raises GenotypeError for an unknown name (listing the known ones), a missing
    file or a malformed genotype.
    """
    from keras_darts.space import hypercuboid
    from keras_darts.space import published as genotypes_published  # It builds on this module.

    if path_or_name in hypercuboid.PUBLISHED:
        return hypercuboid.PUBLISHED[path_or_name]
    if path_or_name in genotypes_published.REGISTRY:
        genotype = genotypes_published.REGISTRY[path_or_name].genotype
        if known_ops is not None:  # E.g. a network with a restricted op set.
            from_json_dict(genotype.to_json_dict(), known_ops, where=f"genotype {path_or_name}")
        return genotype
    if (fileio.exists(path_or_name) or path_or_name.endswith((".json", ".txt"))
            or os.sep in path_or_name):
        return load(path_or_name, known_ops=known_ops)
    raise GenotypeError(
        f"unknown genotype name '{path_or_name}'; known names: "
        f"{', '.join(genotypes_published.names() + sorted(hypercuboid.PUBLISHED))} (or give "
        "the path of a genotype JSON file or of NAO's 40 integers)")


def __getattr__(name):
    """DARTS_V1, DARTS_V2 and PUBLISHED live in genotypes_published (kept importable here)."""
    if name in ("DARTS_V1", "DARTS_V2", "PUBLISHED"):
        from keras_darts.space import published as genotypes_published

        return getattr(genotypes_published, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
