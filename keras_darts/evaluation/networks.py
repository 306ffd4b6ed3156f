"""The evaluation network built from a genotype (docs/evaluation.md).

`NetworkCIFAR` and `NetworkImageNet` stack `EvalCell`s, each running exactly
its genotype cell (two ops per node, affine BatchNorm, the genotype's concat
list), with per-sample drop path in training and an auxiliary head after the
second reduction.  `network_loss` is the loss the evaluation recipe trains
with (cross entropy, optional label smoothing, + 0.4 x the auxiliary loss).

Everything a training step changes lives in variables (BatchNorm statistics,
the drop-path probability and seed), so `call` has no Python-side state and
the model can be exported as it is.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_darts import ops
from keras_darts.errors import ConfigError, GenotypeError
from keras_darts.evaluation.chain_network import ChainNetwork
from keras_darts.ops.layers import Linear
from keras_darts.space import genotype as genotype_lib
from keras_darts.space import hypercuboid
from keras_darts.space.supernet import reduction_layers

AUX_WEIGHT = 0.4                  # Loss = CE(logits) + 0.4 * CE(aux_logits).
DROP_PATH_MAX_PROB = 0.2          # CIFAR recipe; ImageNet trains without drop path.
IMAGENET_LABEL_SMOOTHING = 0.1    # ImageNet recipe, main and auxiliary loss.
_AUX_CHANNELS = (128, 768)        # The auxiliary head's 1x1 and 2x2 conv outputs.


# ---------------------------------------------------------------------------
# Drop path and loss
# ---------------------------------------------------------------------------

def drop_path_prob_for_epoch(epoch, epochs, max_prob=DROP_PATH_MAX_PROB):
    """The recipe's schedule: max_prob * epoch / epochs (epoch 0-based, so 0 at first)."""
    return max_prob * epoch / epochs


def drop_path(x, drop_prob, seed):
    """Zeroes whole examples of `x` with probability `drop_prob`, scales the rest by 1/(1-p).

    `seed`: a [2] integer tensor (stateless sampling: the same seed gives the same mask).
    """
    keep = 1.0 - tf.cast(drop_prob, x.dtype)
    uniform = tf.random.stateless_uniform([tf.shape(x)[0], 1, 1, 1], seed, dtype=x.dtype)
    mask = tf.floor(keep + uniform)  # 1 with probability keep, else 0.
    return x / keep * mask


def smoothed_cross_entropy(labels, logits, label_smoothing=0.0):
    """Per-example cross entropy against (1 - eps) * one_hot + eps / num_classes.

    labels: integer class ids [N]; logits [N, num_classes].
    """
    num_classes = logits.shape[-1]
    targets = tf.one_hot(tf.cast(labels, tf.int32), num_classes, dtype=logits.dtype)
    if label_smoothing:
        targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
    return -tf.reduce_sum(targets * tf.nn.log_softmax(logits), axis=-1)


def network_loss(labels, outputs, label_smoothing=0.0, aux_weight=AUX_WEIGHT):
    """Per-example training loss of an evaluation network's output.

    `outputs` is what the network returns: logits, or (logits, aux_logits) in
    training with the auxiliary head, which adds aux_weight * CE(aux_logits).
    Per example, so that a distributed trainer can scale by the global batch.
    """
    if isinstance(outputs, (tuple, list)):
        logits, aux_logits = outputs
        return (smoothed_cross_entropy(labels, logits, label_smoothing)
                + aux_weight * smoothed_cross_entropy(labels, aux_logits, label_smoothing))
    return smoothed_cross_entropy(labels, outputs, label_smoothing)


class _NumpySeed(keras.initializers.Initializer):
    """A random int64 seed pair from NumPy's global RNG (seeded by keras.utils.set_random_seed)."""

    def __call__(self, shape, dtype=None):
        return np.random.randint(0, 2**31 - 1, size=shape).astype("int64")


# ---------------------------------------------------------------------------
# Cell and auxiliary head
# ---------------------------------------------------------------------------

class EvalCell(ops.BuiltLayer):
    """One cell of a genotype: node i = op_2i(state) + op_2i+1(state); out = concat.

    Args:
      pairs: the genotype cell's (op_name, input_index) pairs, two per node.
      concat: the states whose channel concatenation is the output.
      prev_prev_channels, prev_channels: channels of the two cell inputs.
      channels: C of this cell (every node has C channels).
      reduction: ops reading the cell inputs (index < 2) use stride 2.
      reduction_prev: the previous cell halved the size, so input 0 is reduced too.
      op_family: the op family of the op names (keras_darts/ops/registry.py).
      op_options: options of that family (e.g. sharpDARTS's `mid_channels`).
    """

    def __init__(self, pairs, concat, prev_prev_channels, prev_channels, channels, reduction,
                 reduction_prev, op_family=ops.DEFAULT_FAMILY, op_options=None, **kwargs):
        super().__init__(**kwargs)
        self.pairs = tuple((op, int(j)) for op, j in pairs)
        self.concat = tuple(int(i) for i in concat)
        self.channels = channels
        self.reduction = reduction
        self._check_concat()
        self.preprocess0, self.preprocess1 = self._make_preprocessing(
            prev_prev_channels, prev_channels, reduction_prev)
        self.cell_ops = [ops.make_op(op, channels, 2 if reduction and j < 2 else 1, affine=True,
                                     family=op_family, **(op_options or {}))
                         for op, j in self.pairs]

    def _check_concat(self):
        if self.reduction and any(i < 2 for i in self.concat):
            raise GenotypeError(
                f"genotype: 'reduce_concat' {list(self.concat)} includes a cell input "
                "(0 or 1), which a reduction cell does not downsample; use node indices >= 2")

    def _make_preprocessing(self, prev_prev_channels, prev_channels, reduction_prev):
        """The layers that bring the two inputs to C channels and one size (applied
        after a ReLU): always a 1x1 ReLUConvBN, FactorizedReduce for input 0 after
        a reduction."""
        c = self.channels
        if reduction_prev:
            first = ops.FactorizedReduce(c, affine=True, in_channels=prev_prev_channels)
        else:
            first = ops.ReLUConvBN(c, affine=True, in_channels=prev_prev_channels)
        return first, ops.ReLUConvBN(c, affine=True, in_channels=prev_channels)

    @property
    def num_nodes(self):
        return len(self.pairs) // 2

    @property
    def out_channels(self):
        return len(self.concat) * self.channels

    def call(self, s0, s1, drop_prob=None, seed=None, training=False):
        """Cell output.  In training, `drop_prob` (scalar tensor) and `seed` ([2]
        integers) apply drop path to every op output except identities."""
        states = [self._preprocess(self.preprocess0, s0, training),
                  self._preprocess(self.preprocess1, s1, training)]
        relu_states = {}  # ReLU(state) once per state, for the ops that start with it.
        for node in range(self.num_nodes):
            terms = []
            for k in (2 * node, 2 * node + 1):
                op, j = self.cell_ops[k], self.pairs[k][1]
                if op.starts_with_relu:
                    if j not in relu_states:
                        relu_states[j] = tf.nn.relu(states[j])
                    y = op(relu_states[j], training=training)
                else:
                    y = op(states[j], training=training)
                if training and drop_prob is not None and not op.is_identity:
                    y = drop_path(y, drop_prob, tf.random.experimental.stateless_fold_in(seed, k))
                terms.append(y)
            states.append(terms[0] + terms[1])
        return self._output(states, training)

    @staticmethod
    def _preprocess(layer, state, training):
        """ReLU and `layer` (the cell's preprocessing of one input); a cell
        input that needs none (layer None, NAO cells) is used as it is."""
        if layer is None:
            return state
        return layer(tf.nn.relu(state), training=training)

    def _output(self, states, training):
        """The channel concat of the `concat` states."""
        del training
        return tf.concat([states[i] for i in self.concat], axis=-1)


class AuxiliaryHead(ops.BuiltLayer):
    """ReLU, 5x5 avg pool, 1x1 conv -> 128, BN, ReLU, 2x2 conv -> 768, [BN], ReLU, linear.

    The CIFAR head pools with stride 3 and has a BN after the 2x2 conv; the
    ImageNet head pools with stride 2 and has none (kept as in the reference).
    The input must pool to 2x2, so that the 2x2 conv leaves 1x1 x 768.
    """

    def __init__(self, in_channels, num_classes, pool_stride, bn_after_expand, **kwargs):
        super().__init__(**kwargs)
        mid, out = _AUX_CHANNELS
        self.pool_stride = pool_stride
        self.conv_reduce = ops.Conv(in_channels, mid, 1)
        self.bn_reduce = ops.BatchNorm(mid, affine=True)
        self.conv_expand = ops.Conv(mid, out, 2)
        self.bn_expand = ops.BatchNorm(out, affine=True) if bn_after_expand else None
        self.classifier = Linear(out, num_classes)

    def call(self, x, training=False):
        # No padding, so PyTorch's count_include_pad makes no difference.
        x = tf.nn.avg_pool2d(tf.nn.relu(x), 5, self.pool_stride, "VALID")
        x = tf.nn.relu(self.bn_reduce(self.conv_reduce(x), training=training))
        x = self.conv_expand(x)
        if self.bn_expand is not None:
            x = self.bn_expand(x, training=training)
        x = tf.nn.relu(x)
        return self.classifier(tf.reshape(x, [-1, _AUX_CHANNELS[1]]))


# ---------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------

def _as_genotype(genotype):
    """A Genotype from a Genotype, a registered name / JSON path, or a JSON dict; validated."""
    if isinstance(genotype, str):
        genotype = genotype_lib.load_genotype(genotype)
    data = genotype if isinstance(genotype, dict) else genotype.to_json_dict()
    return genotype_lib.from_json_dict(data, where="genotype")


def _halved(size):
    return (size + 1) // 2  # Stride-2 conv/pool with pad k//2 (FactorizedReduce needs even).


class EvalNetwork(keras.Model):
    """Stem, cells from a genotype, auxiliary head, global pool and classifier.

    Subclasses define the stem (`_make_stem`, `_stem`) and the auxiliary head's
    pooling (`AUX_POOL_STRIDE`, `AUX_BN_AFTER_EXPAND`); `CELL` is the cell class
    (an `EvalCell` or a subclass with the same constructor, e.g. NAO's cell in
    keras_darts/evaluation/nao_network.py), `check_genotype` what it accepts.
    """

    AUX_POOL_STRIDE = None
    AUX_BN_AFTER_EXPAND = None
    DEFAULT_INPUT_SHAPE = None
    CELL = EvalCell

    @classmethod
    def check_genotype(cls, genotype):
        """Raises GenotypeError for a (well-formed) genotype this network cannot build."""
        del genotype  # DARTS cells take any genotype; EvalCell checks its concat.

    def __init__(self, genotype, num_classes, channels, num_layers, auxiliary=True,
                 input_shape=None, op_options=None, dropout_rate=0.0, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= dropout_rate < 1.0:
            raise ConfigError(f"dropout rate must be in [0, 1), got {dropout_rate}")
        # Dropout on the pooled features in training (NAO's recipe: 0.4; DARTS's: none).
        self.dropout_rate = float(dropout_rate)
        self.genotype = _as_genotype(genotype)
        self.check_genotype(self.genotype)
        # Options of the genotype's op family, e.g. {"mid_channels": 96} (sharpDARTS).
        self.op_options = dict(op_options or {})
        try:
            ops.family(self.genotype.op_family).resolve_options(self.op_options)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self.num_classes = num_classes
        self.channels = channels
        self.num_layers = num_layers
        self.auxiliary = auxiliary
        self.image_shape = tuple(input_shape or self.DEFAULT_INPUT_SHAPE)
        if channels % 2:
            raise ConfigError(f"channels must be even (FactorizedReduce halves them), "
                              f"got {channels}")
        if num_layers < 3:
            raise ConfigError(f"num_layers must be >= 3 (two reduction cells), got {num_layers}")

        prev_prev, prev, reduction_prev, size = self._make_stem(channels)
        reductions = reduction_layers(num_layers)
        self.aux_position = 2 * num_layers // 3  # The auxiliary head reads this cell's output.
        current = channels
        self.eval_cells = []
        self.aux_head = None
        for i in range(num_layers):
            reduction = i in reductions
            if reduction:
                current *= 2
                size = _halved(size)
            pairs, concat = self.genotype.cell(reduction)
            cell = self.CELL(pairs, concat, prev_prev, prev, current, reduction, reduction_prev,
                             op_family=self.genotype.op_family, op_options=self.op_options,
                             name=f"cell_{i}")
            self.eval_cells.append(cell)
            reduction_prev = reduction
            prev_prev, prev = prev, cell.out_channels
            if auxiliary and i == self.aux_position:
                self._check_aux_input_size(size, i)
                self.aux_head = AuxiliaryHead(prev, num_classes, self.AUX_POOL_STRIDE,
                                              self.AUX_BN_AFTER_EXPAND, name="auxiliary_head")
        self.classifier = Linear(prev, num_classes, name="classifier")
        # Set by the trainer each epoch (`set_drop_path_prob`); read in the graph.
        self.drop_path_prob = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                              name="drop_path_prob")
        # Advanced once per training forward; replicas fold in their id (different masks).
        self.drop_path_seed = self.add_weight(shape=(2,), initializer=_NumpySeed(),
                                              dtype="int64", trainable=False,
                                              name="drop_path_seed",
                                              aggregation="only_first_replica")
        self.built = True  # Every variable exists now (see ops.BuiltLayer).

    def _check_aux_input_size(self, size, cell_index):
        pooled = (size - 5) // self.AUX_POOL_STRIDE + 1
        if pooled != 2:
            raise ConfigError(
                f"auxiliary head: cell {cell_index} outputs {size}x{size}, which its 5x5 pool "
                f"(stride {self.AUX_POOL_STRIDE}) and 2x2 conv do not reduce to 1x1; use the "
                f"paper's input size {self.DEFAULT_INPUT_SHAPE[:2]} or auxiliary=False")

    # -- settings and counts ---------------------------------------------------
    def set_drop_path_prob(self, prob):
        """Drop-path probability of the following training steps (0 <= prob < 1)."""
        if not 0.0 <= prob < 1.0:
            raise ConfigError(f"drop path probability must be in [0, 1), got {prob}")
        self.drop_path_prob.assign(prob)

    def count_weight_params(self, include_auxiliary=False):
        """Trainable weights (as the papers count: no BN moving statistics), aux head optional."""
        excluded = set()
        if self.aux_head is not None and not include_auxiliary:
            excluded = {id(v) for v in self.aux_head.trainable_variables}
        return int(sum(np.prod(v.shape) for v in self.trainable_variables
                       if id(v) not in excluded))

    def get_config(self):
        return {**super().get_config(), "genotype": self.genotype.to_json_dict(),
                "num_classes": self.num_classes, "channels": self.channels,
                "num_layers": self.num_layers, "auxiliary": self.auxiliary,
                "input_shape": list(self.image_shape), "op_options": dict(self.op_options),
                "dropout_rate": self.dropout_rate}

    # -- forward ---------------------------------------------------------------
    def call(self, images, training=False):
        """Logits; in training with the auxiliary head, (logits, aux_logits)."""
        training = bool(training)
        drop_prob = seed = None
        if training:
            drop_prob = tf.convert_to_tensor(self.drop_path_prob)
            seed = self._next_seed()
        pooled, aux_logits = self._forward(images, training, drop_prob, seed)
        if training and self.dropout_rate:  # Its seed: after the cells' (0..L-1).
            pooled = tf.nn.experimental.stateless_dropout(
                pooled, self.dropout_rate,
                tf.random.experimental.stateless_fold_in(seed, len(self.eval_cells)))
        logits = self.classifier(pooled)
        return logits if aux_logits is None else (logits, aux_logits)

    def features(self, images, training=False):
        """The globally pooled output of the last cell [N, channels]: the network
        without its classifier and without the training-only parts (no drop path,
        no auxiliary head; `training` only switches BatchNorm to batch statistics).
        What the exported feature extractor runs."""
        return self._forward(images, bool(training), None, None, auxiliary=False)[0]

    def _forward(self, images, training, drop_prob, seed, auxiliary=True):
        """(pooled features, aux logits or None); drop path when `drop_prob` is given."""
        s0, s1 = self._stem(images, training)
        aux_logits = None
        for i, cell in enumerate(self.eval_cells):
            cell_seed = None if seed is None else tf.random.experimental.stateless_fold_in(seed, i)
            s0, s1 = s1, cell(s0, s1, drop_prob, cell_seed, training=training)
            if (auxiliary and training and self.aux_head is not None
                    and i == self.aux_position):
                aux_logits = self.aux_head(s1, training=training)
        return tf.reduce_mean(s1, axis=(1, 2)), aux_logits

    def _next_seed(self):
        """This forward's drop-path seed; each replica folds in its id."""
        seed = tf.convert_to_tensor(self.drop_path_seed)
        self.drop_path_seed.assign_add(tf.constant([0, 1], tf.int64))
        replica_ctx = tf.distribute.get_replica_context()
        replica = 0 if replica_ctx is None else replica_ctx.replica_id_in_sync_group
        return tf.random.experimental.stateless_fold_in(seed, replica)


@keras.saving.register_keras_serializable(package="keras_darts")
class NetworkCIFAR(EvalNetwork):
    """DARTS evaluation network for 32x32 images (docs/evaluation.md).

    Args:
      genotype: a `Genotype`, a registered name (e.g. "DARTS_V2") or a JSON path.
      num_classes: classifier outputs.
      channels: C of the first cells (36 in the paper); the stem has 3C.
      num_layers: cells (20); reductions at num_layers//3 and 2*num_layers//3.
      auxiliary: build the auxiliary head on the output of cell 2*num_layers//3.
      input_shape: (H, W, channels) of the images.

    Example:
      net = NetworkCIFAR("DARTS_V2", num_classes=10)  # 3,349,342 weights without aux
      net.set_drop_path_prob(drop_path_prob_for_epoch(epoch, 600))
      logits, aux_logits = net(images, training=True)
      loss = network_loss(labels, (logits, aux_logits))
    """

    AUX_POOL_STRIDE = 3
    AUX_BN_AFTER_EXPAND = True
    DEFAULT_INPUT_SHAPE = (32, 32, 3)
    STEM_MULTIPLIER = 3  # The stem outputs 3C channels.

    def __init__(self, genotype, num_classes=10, channels=36, num_layers=20, auxiliary=True,
                 input_shape=None, **kwargs):
        super().__init__(genotype, num_classes, channels, num_layers, auxiliary, input_shape,
                         **kwargs)

    def _make_stem(self, channels):
        """Creates the stem; returns (C_pp, C_p, reduction_prev, spatial size of its output)."""
        stem_channels = self.STEM_MULTIPLIER * channels
        self.stem = ops.Sequential([ops.Conv(self.image_shape[-1], stem_channels, 3, padding=1),
                                    ops.BatchNorm(stem_channels, affine=True)], name="stem")
        return stem_channels, stem_channels, False, self.image_shape[0]

    def _stem(self, images, training):
        s = self.stem(images, training=training)
        return s, s


@keras.saving.register_keras_serializable(package="keras_darts")
class NetworkImageNet(EvalNetwork):
    """DARTS ImageNet mobile network (224x224, C=48, 14 cells; docs/evaluation.md#networkimagenet).

    Two stems: stem0 (two stride-2 3x3 convs, 3 -> C/2 -> C) gives input 0 of
    the first cell, stem1 (a third one) input 1; the first cell therefore
    reduces input 0.  The reference's final 7x7 average pool is the global
    average at 224x224 (used at any size here).  Arguments as `NetworkCIFAR`.
    """

    AUX_POOL_STRIDE = 2
    AUX_BN_AFTER_EXPAND = False
    DEFAULT_INPUT_SHAPE = (224, 224, 3)

    def __init__(self, genotype, num_classes=1000, channels=48, num_layers=14, auxiliary=True,
                 input_shape=None, **kwargs):
        super().__init__(genotype, num_classes, channels, num_layers, auxiliary, input_shape,
                         **kwargs)

    def _make_stem(self, channels):
        half = channels // 2
        self.stem0 = ops.Sequential([
            ops.Conv(self.image_shape[-1], half, 3, stride=2, padding=1),
            ops.BatchNorm(half, affine=True), ops.ReLU(),
            ops.Conv(half, channels, 3, stride=2, padding=1), ops.BatchNorm(channels, affine=True),
        ], name="stem0")
        self.stem1 = ops.Sequential([
            ops.ReLU(), ops.Conv(channels, channels, 3, stride=2, padding=1),
            ops.BatchNorm(channels, affine=True),
        ], name="stem1")
        return channels, channels, True, _halved(_halved(_halved(self.image_shape[0])))

    def _stem(self, images, training):
        s0 = self.stem0(images, training=training)
        return s0, self.stem1(s0, training=training)


# Network classes by kind (`--network`) for DARTS-rule cells: every op family's
# genotype builds with these unless its family registers its own below.
NETWORKS = {"cifar": NetworkCIFAR, "imagenet": NetworkImageNet}
# Op family -> {kind: network class} for families whose cells follow another rule
# (NAO: keras_darts/evaluation/nao_network.py).  Keyed by op family because the
# family is what a genotype file carries, and a family's op names mean its cells.
_FAMILY_NETWORKS = {}


def register_networks(op_family, networks):
    """Genotypes of `op_family` build with `networks` ({kind: EvalNetwork subclass})."""
    if op_family in _FAMILY_NETWORKS:
        raise ValueError(f"networks of op family '{op_family}' are already registered")
    unknown = sorted(set(networks) - set(NETWORKS))
    if unknown:
        raise ValueError(f"unknown network kind(s) {unknown}; known: {sorted(NETWORKS)}")
    _FAMILY_NETWORKS[op_family] = dict(networks)


def network_class(genotype, kind="cifar"):
    """The network class building `genotype` (a Genotype) as a `kind` network."""
    if kind not in NETWORKS:
        raise ConfigError(f"unknown network kind '{kind}'; known: {sorted(NETWORKS)}")
    networks = _FAMILY_NETWORKS.get(genotype.op_family, NETWORKS)
    if kind not in networks:
        raise ConfigError(f"genotypes of op family '{genotype.op_family}' have no '{kind}' "
                          f"network; known: {sorted(networks)}")
    return networks[kind]


def build_network(genotype, kind="cifar", **kwargs):
    """`NetworkCIFAR` (kind "cifar") or `NetworkImageNet` ("imagenet") from a genotype,
    or the network its op family registered (`register_networks`); a HyperCuboid
    path builds its `ChainNetwork` (of `num_classes`, `input_shape`)."""
    if hypercuboid.is_path(genotype):
        return ChainNetwork(genotype, num_classes=kwargs.get("num_classes", 10),
                            input_shape=kwargs.get("input_shape") or (32, 32, 3))
    genotype = _as_genotype(genotype)
    return network_class(genotype, kind)(genotype, **kwargs)


# Families with networks of their own register them on import (new ones: below).
from keras_darts.evaluation import nao_network  # noqa: E402,F401,I001
