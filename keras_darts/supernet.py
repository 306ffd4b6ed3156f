"""The DARTS search network (supernet): stem, stacked search cells, classifier.

Architecture parameters (alpha_normal, alpha_reduce: [num_edges, num_ops]) are
variables of this model but are kept apart from the network weights:
`arch_variables` and `weight_variables` partition `trainable_variables`, so
each optimizer only ever sees its own set (specs/darts.md sect. 2).
"""

import keras
import numpy as np
import tensorflow as tf

from keras_darts import genotype as genotype_lib
from keras_darts import ops
from keras_darts.cells import SearchCell, edge_inputs
from keras_darts.errors import GenotypeError


RECOMPUTE_POLICIES = ("all", "first_stage", "none")  # See SearchNetwork.recompute.


def reduction_layers(num_layers):
    """Indices of reduction cells: at 1/3 and 2/3 of the depth."""
    return sorted({num_layers // 3, 2 * num_layers // 3})


class Linear(ops.BuiltLayer):
    """Dense layer with PyTorch's default init (weights and bias U(+-1/sqrt(fan_in)))."""

    def __init__(self, in_features, out_features, **kwargs):
        super().__init__(**kwargs)
        self.in_features = in_features
        self.out_features = out_features
        init = ops.TorchUniform(in_features)
        self.kernel = self.add_weight(shape=(in_features, out_features),
                                      initializer=init, name="kernel")
        self.bias = self.add_weight(shape=(out_features,), initializer=init, name="bias")

    def call(self, x):
        return tf.matmul(x, self.kernel) + self.bias


class SearchNetwork(keras.Model):
    """DARTS supernet.

    Args:
      num_classes: classifier outputs.
      channels: C, the channel count of the first cells (doubles at each reduction).
      num_layers: number of cells (reductions at num_layers//3 and 2*num_layers//3).
      num_nodes: intermediate nodes per cell.
      primitives: name of a registered op set, or a sequence of op names.
      input_shape: (H, W, channels) of the images.
      stem_multiplier: the stem outputs stem_multiplier * C channels.
      recompute: which cells' edges backprop recomputes instead of keeping their
        intermediates in memory: "all", "first_stage" (the cells up to the first
        reduction, which read full-resolution inputs and hold most of the
        activations) or "none".  Only affects memory and speed, not results.

    Example:
      net = SearchNetwork(10)                       # the paper's default supernet
      logits = net(images, training=True)           # all edges mixed by softmax(alpha)
      logits = net(images, arch=genotype)           # one discrete architecture

    `weight_grads=False` in `call` promises that no gradient w.r.t. the network
    weights is wanted (the architecture step): the edges then skip that work.
    """

    def __init__(self, num_classes, channels=16, num_layers=8, num_nodes=4,
                 primitives="darts", input_shape=(32, 32, 3), stem_multiplier=3,
                 recompute="all", **kwargs):
        super().__init__(**kwargs)
        if recompute not in RECOMPUTE_POLICIES:
            raise ValueError(f"recompute must be one of {RECOMPUTE_POLICIES}, got {recompute!r}")
        if isinstance(primitives, str):
            primitives = ops.op_set(primitives)
        self.num_classes = num_classes
        self.channels = channels
        self.num_layers = num_layers
        self.num_nodes = num_nodes
        self.primitives = tuple(primitives)
        self.image_shape = tuple(input_shape)
        self.stem_multiplier = stem_multiplier
        self.recompute = recompute

        stem_channels = stem_multiplier * channels
        self.stem_conv = ops.Conv(self.image_shape[-1], stem_channels, 3, padding=1)
        self.stem_bn = ops.BatchNorm(stem_channels, affine=True)
        reductions = reduction_layers(num_layers)
        prev_prev, prev, current = stem_channels, stem_channels, channels
        self.search_cells = []
        reduction_prev = False
        for i in range(num_layers):
            reduction = i in reductions
            if reduction:
                current *= 2
            checkpointed = recompute == "all" or (recompute == "first_stage"
                                                   and i <= reductions[0])
            cell = SearchCell(num_nodes, prev_prev, prev, current, reduction, reduction_prev,
                              self.primitives, recompute=checkpointed, name=f"cell_{i}")
            self.search_cells.append(cell)
            reduction_prev = reduction
            prev_prev, prev = prev, cell.out_channels
        self.classifier = Linear(prev, num_classes)

        shape = (len(edge_inputs(num_nodes)), len(self.primitives))
        alpha_init = ops.NumpyNormal(stddev=1e-3)  # Two independent draws (reference).
        self.alpha_normal = self.add_weight(shape=shape, initializer=alpha_init,
                                            name="alpha_normal")
        self.alpha_reduce = self.add_weight(shape=shape, initializer=alpha_init,
                                            name="alpha_reduce")
        self.built = True  # Every variable exists now (see ops.BuiltLayer).

    # -- variables -----------------------------------------------------------
    @property
    def arch_variables(self):
        return [self.alpha_normal, self.alpha_reduce]

    @property
    def weight_variables(self):
        arch = {id(v) for v in self.arch_variables}
        return [v for v in self.trainable_variables if id(v) not in arch]

    def count_weight_params(self):
        """Number of network weights (excluding alphas and BN moving statistics)."""
        return int(sum(np.prod(v.shape) for v in self.weight_variables))

    def arch_weight_variables(self, genotype):
        """The network weights `self(images, arch=genotype)` uses: the stem, every
        cell's input preprocessing, the chosen op of each chosen edge and the
        classifier (no alphas, no BN statistics).  A pair listed twice runs the
        same layer twice and its weights count once."""
        self._check_arch(genotype)
        layers = [self.stem_conv, self.stem_bn]
        for cell in self.search_cells:
            pairs, _ = genotype.cell(cell.reduction)
            layers += [cell.preprocess0, cell.preprocess1]
            layers += [edge.candidates[k] for _, _, edge, k in cell.chosen_ops(pairs)]
        layers.append(self.classifier)
        unique = {}
        for layer in layers:
            for v in layer.trainable_weights:
                unique.setdefault(id(v), v)
        return list(unique.values())

    def count_arch_params(self, genotype):
        """Number of weights of the discrete architecture `genotype` inside this
        supernet (see `arch_weight_variables`)."""
        return int(sum(np.prod(v.shape) for v in self.arch_weight_variables(genotype)))

    def build_variables(self):
        """Creates every variable with one tiny eager forward pass (eval mode)."""
        self(tf.zeros((1,) + self.image_shape), training=False)

    def arch_probabilities(self):
        """softmax(alpha) per cell type, as numpy arrays [num_edges, num_ops]."""
        return {"normal": tf.nn.softmax(self.alpha_normal, axis=-1).numpy(),
                "reduce": tf.nn.softmax(self.alpha_reduce, axis=-1).numpy()}

    # -- forward -------------------------------------------------------------
    def call(self, images, training=False, arch=None, weight_grads=True, edge_weights=None,
             edge_modes=None, cell_weights=None):
        """Logits. `edge_weights` = {"normal": [E, K], "reduce": [E, K]} (either
        key optional) replaces softmax(alpha) as the mixing weights of that cell
        type, e.g. projected or masked weights in perturbation-based selection.
        `cell_weights` ([num_cells, E, K]) gives every cell its own mixing
        weights instead (MSR-DARTS's per-cell softmax(-srank)).
        `edge_modes` = {"normal": [E] ints, "reduce": [E] ints} clamps the edges
        (cells.EDGE_MIXED / EDGE_OFF / an op index; EDAS): only mixed edges use
        the mixing weights."""
        if arch is not None:
            self._check_arch(arch)
        if cell_weights is not None:
            cell_weights = self._check_cell_weights(cell_weights, edge_weights)
        edge_weights = edge_weights or {}
        unknown = set(edge_weights) - {"normal", "reduce"}
        if unknown:
            raise ValueError(f"edge_weights keys must be 'normal'/'reduce', got {sorted(unknown)}")
        weights = {False: edge_weights.get("normal"), True: edge_weights.get("reduce")}
        for reduction, alpha in ((False, self.alpha_normal), (True, self.alpha_reduce)):
            if weights[reduction] is None:
                weights[reduction] = tf.nn.softmax(alpha, axis=-1)
            else:
                weights[reduction] = tf.convert_to_tensor(weights[reduction], alpha.dtype)
                if tuple(weights[reduction].shape) != tuple(alpha.shape):
                    raise ValueError(f"edge_weights shape {tuple(weights[reduction].shape)} "
                                     f"!= alpha shape {tuple(alpha.shape)}")
        s0 = s1 = self.stem_bn(self.stem_conv(images), training=training)
        for i, cell in enumerate(self.search_cells):
            cell_arch = None if arch is None else arch.cell(cell.reduction)
            mixing = weights[cell.reduction] if cell_weights is None else cell_weights[i]
            modes = None if edge_modes is None else edge_modes["reduce" if cell.reduction
                                                               else "normal"]
            out = cell(s0, s1, weights=mixing, arch=cell_arch, training=training,
                       weight_grads=weight_grads, modes=modes)
            s0, s1 = s1, out
        pooled = tf.reduce_mean(s1, axis=(1, 2))
        return self.classifier(pooled)

    def _check_cell_weights(self, cell_weights, edge_weights):
        """`cell_weights` as one tensor per cell; ValueError if it cannot be used."""
        if edge_weights:
            raise ValueError("pass either edge_weights (per cell type) or cell_weights "
                             "(per cell), not both")
        cell_weights = tf.convert_to_tensor(cell_weights, self.alpha_normal.dtype)
        expected = (len(self.search_cells),) + tuple(self.alpha_normal.shape)
        if tuple(cell_weights.shape) != expected:
            raise ValueError(f"cell_weights shape {tuple(cell_weights.shape)} != "
                             f"(num_cells, num_edges, num_ops) {expected}")
        return tf.unstack(cell_weights)

    def _check_arch(self, genotype):
        """Raises GenotypeError unless this supernet can run `genotype` as it is."""
        if genotype.num_nodes != self.num_nodes:
            raise GenotypeError(f"genotype has {genotype.num_nodes} nodes, supernet has "
                                f"{self.num_nodes}")
        # Same checks as a genotype file (input indices, op names), against our ops.
        genotype_lib.from_json_dict(genotype.to_json_dict(), known_ops=self.primitives,
                                    where="genotype for this supernet")
        for reduction in (False, True):
            _, concat = genotype.cell(reduction)
            if tuple(concat) != tuple(range(2, 2 + self.num_nodes)):
                raise GenotypeError("a supernet can only run genotypes that concat every "
                                    f"intermediate node, got concat {list(concat)}")
