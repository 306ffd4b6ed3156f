"""The DARTS search network (supernet): stem, stacked search cells, classifier.

Architecture parameters (one [num_edges, num_ops] alpha per cell type of the
space: alpha_normal, alpha_reduce) are variables of this model but are kept
apart from the network weights: `arch_variables` and `weight_variables`
partition `trainable_variables`, so each optimizer only ever sees its own set
(docs/spaces/darts.md#supernet).  How a forward pass runs its edges is its
`plan` (keras_darts/space/plans.py).
"""

import keras
import numpy as np
import tensorflow as tf

from keras_darts import ops
from keras_darts.ops.layers import Linear
from keras_darts.space import darts_cell, plans
from keras_darts.space import mixing as mixing_lib
from keras_darts.space.cells import SearchCell

RECOMPUTE_POLICIES = ("all", "first_stage", "none")  # See SearchNetwork.recompute.


def reduction_layers(num_layers):
    """Indices of reduction cells: at 1/3 and 2/3 of the depth."""
    return sorted({num_layers // 3, 2 * num_layers // 3})


class SearchNetwork(keras.Model):
    """DARTS supernet.

    Args:
      num_classes: classifier outputs.
      channels: C, the channel count of the first cells (doubles at each reduction).
      num_layers: number of cells (reductions at num_layers//3 and 2*num_layers//3).
      num_nodes: intermediate nodes per cell (when `space` is not given).
      primitives: name of a registered op set, or a sequence of op names (when
        `space` is not given).
      input_shape: (H, W, channels) of the images.
      stem_multiplier: the stem outputs stem_multiplier * C channels.
      recompute: which cells' edges backprop recomputes instead of keeping their
        intermediates in memory: "all", "first_stage" (the cells up to the first
        reduction, which read full-resolution inputs and hold most of the
        activations) or "none".  Only affects memory and speed, not results.
      space: a `SearchSpace` (keras_darts/space/search_space.py); default: the
        DARTS cell over `primitives` with `num_nodes` nodes.
      mixing: the mixing rule (keras_darts/space/mixing.py) that turns an edge's
        alphas into its ops' coefficients: "softmax" (DARTS) or "max_w"
        (sharpDARTS).  Every search step that mixes ops reads `mixing_rule`.

    Example:
      net = SearchNetwork(10)                              # the paper's default supernet
      logits = net(images, training=True)                  # all edges mixed by softmax(alpha)
      logits = net(images, plan=plans.Discrete(genotype))  # one discrete architecture

    `weight_grads=False` in `call` promises that no gradient w.r.t. the network
    weights is wanted (the architecture step): the edges then skip that work.
    """

    def __init__(self, num_classes, channels=16, num_layers=8, num_nodes=4,
                 primitives="darts", input_shape=(32, 32, 3), stem_multiplier=3,
                 recompute="all", space=None, mixing="softmax", **kwargs):
        super().__init__(**kwargs)
        if recompute not in RECOMPUTE_POLICIES:
            raise ValueError(f"recompute must be one of {RECOMPUTE_POLICIES}, got {recompute!r}")
        if space is None:
            space = darts_cell.darts_cell(primitives, num_nodes)
        self.space = space
        self.num_classes = num_classes
        self.channels = channels
        self.num_layers = num_layers
        self.num_nodes = space.num_nodes
        self.primitives = space.primitives
        self.image_shape = tuple(input_shape)
        self.stem_multiplier = stem_multiplier
        self.recompute = recompute
        self.mixing = mixing
        self.mixing_rule = mixing_lib.get(mixing)

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
            cell = SearchCell(self.num_nodes, prev_prev, prev, current, reduction,
                              reduction_prev, self.primitives, recompute=checkpointed,
                              edges=space.edges, op_family=space.op_family, name=f"cell_{i}")
            self.search_cells.append(cell)
            reduction_prev = reduction
            prev_prev, prev = prev, cell.out_channels
        self.classifier = Linear(prev, num_classes)

        alpha_init = ops.NumpyNormal(stddev=1e-3)  # Independent draws (reference).
        self._alphas = [self.add_weight(shape=space.alpha_shape, initializer=alpha_init,
                                        name=f"alpha_{cell_type}")
                        for cell_type in space.cell_types]
        self.built = True  # Every variable exists now (see ops.BuiltLayer).

    # -- variables -----------------------------------------------------------
    @property
    def alphas(self):
        """{cell_type: its alpha variable [num_edges, num_ops]}, in the space's order."""
        return dict(zip(self.space.cell_types, self._alphas))

    @property
    def alpha_normal(self):
        return self.alphas["normal"]

    @property
    def alpha_reduce(self):
        return self.alphas["reduce"]

    @property
    def arch_dtype(self):
        return self._alphas[0].dtype

    @property
    def arch_variables(self):
        return list(self._alphas)

    @property
    def weight_variables(self):
        arch = {id(v) for v in self.arch_variables}
        return [v for v in self.trainable_variables if id(v) not in arch]

    def count_weight_params(self):
        """Number of network weights (excluding alphas and BN moving statistics)."""
        return int(sum(np.prod(v.shape) for v in self.weight_variables))

    def arch_weight_variables(self, genotype):
        """The network weights `self(images, plan=plans.Discrete(genotype))` uses:
        the stem, every cell's input preprocessing, the chosen op of each chosen
        edge and the classifier (no alphas, no BN statistics).  A pair listed
        twice runs the same layer twice and its weights count once."""
        plans.check_genotype(self, genotype)
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

    def default_mixing(self, alpha):
        """The coefficients an edge mixes its ops by when the plan gives none."""
        return self.mixing_rule(alpha)

    def arch_probabilities(self):
        """softmax(alpha) per cell type, as numpy arrays [num_edges, num_ops]
        (what the selection criteria read, whatever the mixing rule)."""
        return {cell_type: mixing_lib.softmax(alpha).numpy()
                for cell_type, alpha in self.alphas.items()}

    # -- forward -------------------------------------------------------------
    def call(self, images, training=False, plan=None, weight_grads=True):
        """Logits.  `plan` (keras_darts/space/plans.py) says how every edge runs;
        default: `plans.Mix()`, every edge mixed by softmax(alpha)."""
        cell_plans = (plans.Mix() if plan is None else plan).cell_plans(self)
        s0 = s1 = self.stem_bn(self.stem_conv(images), training=training)
        for cell, cell_plan in zip(self.search_cells, cell_plans):
            out = cell(s0, s1, plan=cell_plan, training=training, weight_grads=weight_grads)
            s0, s1 = s1, out
        pooled = tf.reduce_mean(s1, axis=(1, 2))
        return self.classifier(pooled)
