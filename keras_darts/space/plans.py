"""The forward contract of the supernet: a plan says how every edge of every
cell runs in one forward pass.

    logits = net(images, plan=Mix({"normal": w_n, "reduce": w_r}))  # all edges mixed
    logits = net(images, plan=Discrete(genotype))                   # one architecture

| plan | every edge ... | used by |
|---|---|---|
| `Mix(weights)` | sums all its ops by its row of `weights` (softmax(alpha)) | DARTS, DARTS-PT |
| `MixPerCell(weights)` | the same with one weight matrix per cell | MSR-DARTS |
| `Clamp(modes, weights)` | runs one op alone, all ops mixed, or nothing, as `modes` says | EDAS |
| `Discrete(genotype)` | runs only the genotype's ops on its edges | a genotype in the supernet |

A network plan resolves into one *cell plan* per cell (`cell_plans`); a cell
plan's `terms(cell, states, relu_of, training, weight_grads)` returns
`terms_of(node)`, the outputs that node sums.  The supernet and its cells never
ask which plan they run: a new way of running edges (e.g. NAO's sampled single
path) is a new plan class here.

A plan can also cross a `tf.function` boundary without retracing for new
values (`BilevelSearch.evaluate_plan`): `tensors()` are its tensor inputs,
`trace_key()` what else determines the trace, and `with_tensors(t)` the same
plan over the traced tensors.
"""

import tensorflow as tf

from keras_darts.errors import GenotypeError
from keras_darts.space import genotype as genotype_lib


# -- cell plans: how the edges of one cell run (SearchCell.call's `plan`) ---------
class MixedCell:
    """Every edge: sum_k weights[e, k] * op_k(x) (docs/spaces/darts.md#mixing-formula)."""

    def __init__(self, weights):
        self.weights = weights  # [edges, ops]

    def terms(self, cell, states, relu_of, training, weight_grads):
        rows = tf.unstack(self.weights)  # One op instead of a slice per edge.

        def terms_of(node):
            for e, (n, j) in enumerate(cell.edge_inputs):
                if n == node:
                    edge = cell.edges[e]
                    relu_x = relu_of(j) if edge.needs_relu else None
                    yield edge(states[j], relu_x, rows[e], training=training,
                               weight_grads=weight_grads)
        return terms_of


class ClampedCell:
    """Every edge as its mode says: an op index k runs candidate k alone with
    coefficient 1, cells.EDGE_MIXED mixes all ops by `weights`, cells.EDGE_OFF
    computes nothing (docs/methods/edas.md#clamping)."""

    def __init__(self, modes, weights):
        self.modes, self.weights = modes, weights

    def terms(self, cell, states, relu_of, training, weight_grads):
        modes = tf.convert_to_tensor(self.modes, tf.int32)
        if tuple(modes.shape) != (len(cell.edges),):
            raise ValueError(f"edge modes of shape {tuple(modes.shape)} for "
                             f"{len(cell.edges)} edges")
        rows, modes = tf.unstack(self.weights), tf.unstack(modes)

        def terms_of(node):
            for e, (n, j) in enumerate(cell.edge_inputs):
                if n == node:
                    yield cell.edges[e].run_mode(modes[e], states[j], relu_of(j), rows[e],
                                                 training, weight_grads)
        return terms_of


class DiscreteCell:
    """Only the chosen op of each chosen edge, coefficient 1."""

    def __init__(self, pairs):
        self.pairs = pairs

    def terms(self, cell, states, relu_of, training, weight_grads):
        chosen = cell.chosen_ops(self.pairs)

        def terms_of(node):
            for n, j, edge, k in chosen:
                if n == node:
                    yield edge.run_op(k, states[j], relu_of(j), training)
        return terms_of


# -- network plans -------------------------------------------------------------
def _as_weights(value, network, what):
    weights = tf.convert_to_tensor(value, network.arch_dtype)
    expected = tuple(network.space.alpha_shape)
    if tuple(weights.shape) != expected:
        raise ValueError(f"{what} shape {tuple(weights.shape)} != alpha shape {expected}")
    return weights


class Mix:
    """All edges mixed; `weights` = {cell_type: [edges, ops]}, each optional
    (a missing cell type mixes by the network's softmax(alpha))."""

    def __init__(self, weights=None):
        self.weights = dict(weights or {})

    def weights_by_type(self, network):
        """{cell_type: the [edges, ops] weights} this plan mixes `network` by."""
        unknown = set(self.weights) - set(network.space.cell_types)
        if unknown:
            raise ValueError(f"edge_weights keys must be {list(network.space.cell_types)}, "
                             f"got {sorted(unknown)}")
        by_type = {}
        for cell_type, alpha in network.alphas.items():
            given = self.weights.get(cell_type)
            by_type[cell_type] = (network.default_mixing(alpha) if given is None
                                  else _as_weights(given, network, "edge_weights"))
        return by_type

    def cell_plans(self, network):
        by_type = self.weights_by_type(network)
        return [MixedCell(by_type[cell.cell_type]) for cell in network.search_cells]

    def trace_key(self):
        return ("mix", tuple(sorted(self.weights)))

    def tensors(self):
        return {k: tf.convert_to_tensor(v, tf.float32) for k, v in self.weights.items()}

    def with_tensors(self, tensors):
        return Mix(tensors)


class MixPerCell:
    """All edges mixed, every cell by its own weights [num_cells, edges, ops]."""

    def __init__(self, weights):
        self.weights = weights

    def cell_plans(self, network):
        weights = tf.convert_to_tensor(self.weights, network.arch_dtype)
        expected = (len(network.search_cells),) + tuple(network.space.alpha_shape)
        if tuple(weights.shape) != expected:
            raise ValueError(f"cell_weights shape {tuple(weights.shape)} != "
                             f"(num_cells, num_edges, num_ops) {expected}")
        return [MixedCell(w) for w in tf.unstack(weights)]

    def trace_key(self):
        return ("per_cell",)

    def tensors(self):
        return tf.convert_to_tensor(self.weights, tf.float32)

    def with_tensors(self, tensors):
        return MixPerCell(tensors)


class Clamp:
    """Edges clamped per cell type: `modes` = {cell_type: [edges] ints} (see
    `ClampedCell`), mixed edges weighted by `weights` (as `Mix`'s)."""

    def __init__(self, modes, weights=None):
        self.modes = dict(modes)
        self.weights = dict(weights or {})

    def cell_plans(self, network):
        weights = Mix(self.weights).cell_plans(network)
        return [ClampedCell(self.modes[cell.cell_type], w.weights)
                for cell, w in zip(network.search_cells, weights)]

    def trace_key(self):
        return ("clamp", tuple(sorted(self.weights)))

    def tensors(self):
        return {"modes": {k: tf.convert_to_tensor(v, tf.int32) for k, v in self.modes.items()},
                "weights": Mix(self.weights).tensors()}

    def with_tensors(self, tensors):
        return Clamp(tensors["modes"], tensors["weights"])


class Discrete:
    """One discrete architecture (a Genotype) inside the supernet: only its ops
    on its edges run.  The genotype must fit the supernet exactly."""

    def __init__(self, genotype):
        self.genotype = genotype

    def cell_plans(self, network):
        check_genotype(network, self.genotype)
        return [DiscreteCell(self.genotype.cell(cell.reduction)[0])
                for cell in network.search_cells]

    def trace_key(self):
        return ("discrete", self.genotype)

    def tensors(self):
        return ()

    def with_tensors(self, tensors):
        return self


def check_genotype(network, genotype):
    """Raises GenotypeError unless the supernet `network` can run `genotype` as it is."""
    space = network.space
    if genotype.num_nodes != space.num_nodes:
        raise GenotypeError(f"genotype has {genotype.num_nodes} nodes, supernet has "
                            f"{space.num_nodes}")
    if genotype.op_family != space.op_family:
        raise GenotypeError(f"genotype of op family '{genotype.op_family}', supernet of "
                            f"'{space.op_family}'")
    # Same checks as a genotype file (input indices, op names), against our ops.
    genotype_lib.from_json_dict(genotype.to_json_dict(), known_ops=space.primitives,
                                where="genotype for this supernet")
    for reduction in (False, True):
        pairs, concat = genotype.cell(reduction)
        if tuple(concat) != tuple(space.concat_of(pairs)):
            raise GenotypeError("a supernet can only run genotypes that concat every "
                                f"intermediate node, got concat {list(concat)}")
