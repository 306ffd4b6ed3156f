"""NAO's cell space as integers (docs/spaces/nao.md#encoding): the 40-integer
architecture, its controller tokens, and its genotype.

A cell has two inputs (states 0, 1) and NUM_NODES = 5 nodes (states 2..6).
Node i adds two branches, each an (input, op) pair: the input is any earlier
state 0..i+1 (both branches may read the same one), the op one of OPS.  The
cell outputs the channel concat of its "loose ends", the states no node reads.

An architecture is 40 integers: the normal cell's 20, then the reduction
cell's 20, each cell [x_input, x_op, y_input, y_op] per node.  The NAO
controller reads it as 40 tokens: an input becomes input + 1 (1..6), an op
becomes op + 7 (7..11); 0 is the start (and end) token, so the vocabulary has
12 entries.  As a `Genotype` (the JSON every tool reads), node i's pairs are
(OPS[x_op], x_input), (OPS[y_op], y_input) with the loose ends as the concat,
in the op family "nao" (keras_darts/ops/nao_ops.py).

Pure NumPy: no TensorFlow is imported here.
"""

import numpy as np

from keras_darts.errors import GenotypeError
from keras_darts.space.genotype import Genotype

NUM_NODES = 5
NUM_CELL_INPUTS = 2
NUM_STATES = NUM_CELL_INPUTS + NUM_NODES
# Op ids 0..4 in NAO's order ("small" space); names in the op family "nao".
OPS = ("sep_conv_3x3", "sep_conv_5x5", "avg_pool_3x3", "max_pool_3x3", "identity")
OP_FAMILY = "nao"
CELL_TYPES = ("normal", "reduce")
INTS_PER_NODE = 4
CELL_LENGTH = INTS_PER_NODE * NUM_NODES       # 20
ARCH_LENGTH = CELL_LENGTH * len(CELL_TYPES)   # 40

# Controller tokens.
SOS = 0                                       # Start token, also the end token.
INPUT_TOKEN_OFFSET = 1                        # input j -> token j + 1 (1..6)
OP_TOKEN_OFFSET = INPUT_TOKEN_OFFSET + NUM_STATES - 1   # op k -> token k + 7 (7..11)
VOCAB_SIZE = OP_TOKEN_OFFSET + len(OPS)       # 12


def num_inputs(node):
    """States node `node` (0-based) may read: 0 .. node + 1."""
    return node + NUM_CELL_INPUTS


def node_of_position(position):
    """(cell index, node, is_op) of position 0..39 of an architecture."""
    cell, within = divmod(position, CELL_LENGTH)
    node, slot = divmod(within, INTS_PER_NODE)
    return cell, node, slot % 2 == 1


def validate(arch, where="NAO architecture"):
    """`arch` as an int array of ARCH_LENGTH; raises GenotypeError naming the
    first bad position."""
    values = np.asarray(arch)
    if values.shape != (ARCH_LENGTH,) or not np.issubdtype(values.dtype, np.integer):
        raise GenotypeError(f"{where}: expected {ARCH_LENGTH} integers, got {arch!r}")
    for position, value in enumerate(values.tolist()):
        cell, node, is_op = node_of_position(position)
        upper = len(OPS) if is_op else num_inputs(node)
        if not 0 <= value < upper:
            what = "op" if is_op else "input"
            raise GenotypeError(f"{where}: position {position} ({CELL_TYPES[cell]} node {node} "
                                f"{what}) is {value}; it must be 0..{upper - 1}")
    return values.astype(np.int32)


def random_arch(rng):
    """A uniformly random architecture (inputs and ops per branch uniform,
    normal and reduction cells independent), `rng`: a numpy Generator."""
    arch = np.zeros(ARCH_LENGTH, np.int32)
    for position in range(ARCH_LENGTH):
        _, node, is_op = node_of_position(position)
        arch[position] = rng.integers(len(OPS) if is_op else num_inputs(node))
    return arch


def key(arch):
    """A hashable identity of an architecture (for pools without duplicates)."""
    return tuple(int(v) for v in arch)


def random_pool(rng, size, exclude=()):
    """`size` distinct random architectures [size, 40], none of them in `exclude`
    (keys or arrays)."""
    seen = {key(a) if not isinstance(a, tuple) else a for a in exclude}
    pool = []
    while len(pool) < size:
        arch = random_arch(rng)
        if key(arch) not in seen:
            seen.add(key(arch))
            pool.append(arch)
    return np.stack(pool) if pool else np.zeros((0, ARCH_LENGTH), np.int32)


def cell_of(arch, cell_type):
    """The 20 integers of one cell ("normal" or "reduce")."""
    start = CELL_TYPES.index(cell_type) * CELL_LENGTH
    return np.asarray(arch)[start:start + CELL_LENGTH]


def loose_ends(cell):
    """States of a 20-integer cell that no node reads, ascending."""
    used = {int(cell[i]) for i in range(0, CELL_LENGTH, 2)}
    return tuple(s for s in range(NUM_STATES) if s not in used)


# -- tokens ---------------------------------------------------------------------
def to_tokens(arch):
    """Controller tokens [40] of an architecture."""
    arch = np.asarray(arch, np.int32)
    tokens = arch + INPUT_TOKEN_OFFSET
    tokens[1::2] = arch[1::2] + OP_TOKEN_OFFSET
    return tokens


def from_tokens(tokens):
    """The architecture of controller tokens (validated)."""
    tokens = np.asarray(tokens, np.int64)
    arch = tokens - INPUT_TOKEN_OFFSET
    arch[1::2] = tokens[1::2] - OP_TOKEN_OFFSET
    return validate(arch, where="decoded tokens")


def token_range(position):
    """[low, high) of the tokens valid at position 0..39 (constrained decoding)."""
    _, node, is_op = node_of_position(position)
    if is_op:
        return OP_TOKEN_OFFSET, OP_TOKEN_OFFSET + len(OPS)
    return INPUT_TOKEN_OFFSET, INPUT_TOKEN_OFFSET + num_inputs(node)


# -- augmentation -----------------------------------------------------------------
def swap_branches(arch, normal_node, reduce_node):
    """A copy of `arch` with node `normal_node` of the normal cell and node
    `reduce_node` of the reduction cell each having their two (input, op)
    pairs swapped: the same network (a node is a sum of its branches)."""
    arch = np.array(arch, np.int32)
    for cell, node in enumerate((normal_node, reduce_node)):
        start = cell * CELL_LENGTH + node * INTS_PER_NODE
        x = arch[start:start + 2].copy()
        arch[start:start + 2] = arch[start + 2:start + 4]
        arch[start + 2:start + 4] = x
    return arch


def symmetric_copy(arch, rng):
    """`swap_branches` at one random node per cell."""
    return swap_branches(arch, rng.integers(NUM_NODES), rng.integers(NUM_NODES))


# -- genotypes and text -------------------------------------------------------------
def to_genotype(arch):
    """The `Genotype` (op family "nao", loose-end concats) of an architecture."""
    arch = validate(arch)
    values = {}
    for cell_type in CELL_TYPES:
        cell = cell_of(arch, cell_type)
        values[cell_type] = [(OPS[cell[i + 1]], int(cell[i])) for i in range(0, CELL_LENGTH, 2)]
        values[f"{cell_type}_concat"] = loose_ends(cell)
    return Genotype(**values, op_family=OP_FAMILY)


def from_genotype(genotype, where="genotype"):
    """The 40 integers of a NAO-space genotype; GenotypeError if it is not one
    (another op family, node count or op, or a concat other than the loose ends)."""
    if genotype.op_family != OP_FAMILY:
        raise GenotypeError(f"{where}: op family {genotype.op_family!r} is not NAO's "
                            f"{OP_FAMILY!r}")
    arch = []
    for cell_type in CELL_TYPES:
        pairs, concat = genotype.cell(cell_type == "reduce")
        if len(pairs) != 2 * NUM_NODES:
            raise GenotypeError(f"{where}: the {cell_type} cell has {len(pairs) // 2} nodes; "
                                f"NAO's has {NUM_NODES}")
        for op, index in pairs:
            if op not in OPS:
                raise GenotypeError(f"{where}: op {op!r} is not in NAO's space {list(OPS)}")
            arch += [index, OPS.index(op)]
    arch = validate(np.asarray(arch), where)
    for cell_type in CELL_TYPES:
        _, concat = genotype.cell(cell_type == "reduce")
        expected = loose_ends(cell_of(arch, cell_type))
        if tuple(concat) != expected:
            raise GenotypeError(f"{where}: {cell_type}_concat {list(concat)} is not the cell's "
                                f"loose ends {list(expected)}")
    return arch


def to_text(arch):
    """NAO's text form: 40 space-separated integers."""
    return " ".join(str(int(v)) for v in validate(arch))


def parse_text(text, where="NAO architecture"):
    """An architecture from NAO's text form (whitespace- or comma-separated)."""
    parts = text.replace(",", " ").split()
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise GenotypeError(f"{where}: expected {ARCH_LENGTH} integers, got {text!r}") from None
    return validate(np.asarray(values, np.int64), where)
