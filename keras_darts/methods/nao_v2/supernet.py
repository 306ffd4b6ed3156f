"""NAO-V2's weight-sharing supernet (docs/spaces/nao.md#weight-sharing-supernet).

The architecture is an input TENSOR (int32 [40], keras_darts/space/nao_arch.py),
and a forward pass computes only its path: per node branch the input state is
picked by its index and the op runs alone through one `tf.switch_case`, with the
copy of its weights that belongs to that input (`tf.gather`); the cell output
combines only the loose ends.  A traced step therefore serves every
architecture without retracing (docs/spaces/nao.md#single-path-step).

Under several replicas a BatchNorm all-reduces its statistics, and an
all-reduce cannot run inside a `tf.switch_case` (MirroredStrategy's merge_call):
there every op of a branch runs and the sampled one is kept by a one-hot
weight, which gives the same outputs and gradients at more kernel time.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_darts.methods.nao_v2 import ws_ops
from keras_darts.ops import layers
from keras_darts.space import nao_arch

SEP_CONV_3X3, SEP_CONV_5X5, AVG_POOL_3X3, MAX_POOL_3X3, IDENTITY = range(len(nao_arch.OPS))
NUM_OPS = len(nao_arch.OPS)


def _identity_blocks(channels):
    """Layout of the weights of a stride-2 identity (a FactorizedReduce)."""
    return tuple(ws_ops.factorized_reduce_blocks("", channels, channels))


def reduction_cells(cells_per_stage):
    """Indices of the two reduction cells among 3N + 2: N and 2N + 1."""
    return (cells_per_stage, 2 * cells_per_stage + 1)


def drop_path_keep(cell, num_cells, keep_prob, progress):
    """Keep probability of cell `cell`'s branches (spec: NAO's schedule):
    keep_l = 1 - (cell + 1) / num_cells * (1 - keep_prob), then
    keep = 1 - progress * (1 - keep_l) with progress = (step + 1) / total_steps."""
    keep_layer = 1.0 - (cell + 1) / num_cells * (1.0 - keep_prob)
    return 1.0 - progress * (1.0 - keep_layer)


def drop_path(x, keep, uniform):
    """Keeps example n of `x` where uniform[n] >= 1 - keep (probability keep),
    divided by keep; zeroes the others."""
    mask = tf.floor(tf.cast(keep, x.dtype) + uniform)
    return x * tf.reshape(mask, [-1, 1, 1, 1]) / tf.cast(keep, x.dtype)


def run_op(op, x, weights, stride):
    """Op `op` (a Python int) on `x`; weights: (blocks, row of the branch's
    input, row of the stride-2 identity or None), see `NodeBranch.rows`."""
    blocks, row, identity_row = weights
    if op in (SEP_CONV_3X3, SEP_CONV_5X5):
        prefix = "sep_3x3/" if op == SEP_CONV_3X3 else "sep_5x5/"
        unpacked = ws_ops.unpack(row, blocks, prefix)
        return ws_ops.sep_conv(x, ws_ops.sep_conv_weights(unpacked), stride)
    if op == AVG_POOL_3X3:
        return ws_ops.avg_pool(x, stride)
    if op == MAX_POOL_3X3:
        return ws_ops.max_pool(x, stride)
    if stride == 1:
        return x
    unpacked = ws_ops.unpack(identity_row, _identity_blocks(x.shape[-1]))
    return ws_ops.factorized_reduce(x, ws_ops.factorized_reduce_weights(unpacked))


def branch_candidates(high, low, weights, reduction):
    """Thunks of every (stride, op) a branch can run: the ops on `high` (stride 2
    in a reduction cell), then, if `low` is given (a reduction cell's node
    reading a node), the ops on `low` at stride 1."""
    stride = 2 if reduction else 1
    thunks = [lambda k=k: run_op(k, high, weights, stride) for k in range(NUM_OPS)]
    if low is not None:
        thunks += [lambda k=k: run_op(k, low, weights, 1) for k in range(NUM_OPS)]
    return thunks


def _select(states, index):
    """states[index] as one `tf.switch_case` (no copy of the states)."""
    return tf.switch_case(index, [lambda s=s: s for s in states])


def _run_branch(high, low, branch, weights, reduction):
    """Only candidate `branch` runs (`tf.switch_case`)."""
    with layers.self_contained_gradients():  # Max-pool gradients inside a branch.
        return tf.switch_case(branch, branch_candidates(high, low, weights, reduction))


class SharedTraces:
    """The two functions every branch calls, traced once per signature (shapes,
    reduction) and not inlined, so the step graph holds one call per branch and
    each function's gradient is built once (keras_darts/infra/tracing.py does
    the same for DARTS edges).  They take no variables: the weights of the
    branch's input come in as tensors.  One replica only: under several,
    branches run inline and masked (`NodeBranch.call`)."""

    def __init__(self):
        options = dict(autograph=False, experimental_attributes={"_noinline": True})
        self.select = tf.function(_select, **options)
        self.run_branch = tf.function(_run_branch, **options)


class NodeBranch(layers.BuiltLayer):
    """One (input, op) branch of a node that may read `num_inputs` states: every
    op with its own weights per input index.  In a reduction cell ops reading
    states 0 / 1 have stride 2 (identity: a FactorizedReduce per input), ops
    reading nodes stride 1."""

    def __init__(self, channels, num_inputs, reduction, shared, **kwargs):
        super().__init__(**kwargs)
        self.channels, self.num_inputs, self.reduction = channels, num_inputs, reduction
        self.shared = shared
        self.blocks = tuple(ws_ops.sep_conv_blocks("sep_3x3/", channels, 3)
                            + ws_ops.sep_conv_blocks("sep_5x5/", channels, 5))
        # Both separable convs of every input, one row per input.
        self.sep_convs = ws_ops.Packed(self.blocks, num_inputs, name="sep_convs")
        # The identity at stride 2 (a FactorizedReduce) of inputs 0 and 1.
        self.reduce_identity = (ws_ops.Packed(_identity_blocks(channels), 2, name="identity_s2")
                                if reduction else None)

    def rows(self, index):
        """The op weights of input `index`: (layout, its row, identity row)."""
        identity = (self.reduce_identity.row(tf.minimum(index, 1)) if self.reduction else None)
        return self.blocks, self.sep_convs.row(index), identity

    def call(self, states, index, op):
        """The branch's op on states[index]; `states`: the cell's states 0 .. num_inputs-1."""
        weights = self.rows(index)
        masked = ws_ops.multi_replica()
        pick = _gather_select if masked else self.shared.select
        if not self.reduction:
            high, low, branch = pick(states, index), None, op
        else:
            high = pick(states[:2], tf.minimum(index, 1))
            low, branch = None, op
            if self.num_inputs > 2:
                low = pick(states[2:], tf.maximum(index - 2, 0))
                branch = op + NUM_OPS * tf.cast(index >= 2, tf.int32)
        if masked:  # No all-reduce (BatchNorm) may sit inside a switch: mask instead.
            thunks = branch_candidates(high, low, weights, self.reduction)
            coefficients = tf.unstack(tf.one_hot(branch, len(thunks)))
            return tf.add_n([c * run() for c, run in zip(coefficients, thunks)])
        return self.shared.run_branch(high, low, branch, weights, self.reduction)


def _gather_select(states, index):
    return states[0] if len(states) == 1 else tf.gather(tf.stack(states), index)


class NAOCell(layers.BuiltLayer):
    """A supernet cell: calibrate the two inputs where their shape differs from
    the cell's, NUM_NODES nodes of two branches, then ReLU -> 1x1 conv over the
    loose ends (per state a slice of one kernel) -> BN: `channels` outputs.

    `inputs`: ((size, channels) of state 0, (size, channels) of state 1).
    """

    def __init__(self, inputs, channels, reduction, shared, **kwargs):
        super().__init__(**kwargs)
        (size_0, channels_0), (size_1, channels_1) = inputs
        self.channels, self.reduction = channels, reduction
        self.input_size = size_1
        self.output_size = size_1 // 2 if reduction else size_1
        if size_0 != size_1:
            self.calibrate_0 = ws_ops.FactorizedReduce(channels_0, channels, name="calibrate_0")
        elif channels_0 != channels:
            self.calibrate_0 = ws_ops.ConvBN(channels_0, channels, name="calibrate_0")
        else:
            self.calibrate_0 = None
        self.calibrate_1 = (ws_ops.ConvBN(channels_1, channels, name="calibrate_1")
                            if channels_1 != channels else None)
        self.branches = [NodeBranch(channels, nao_arch.num_inputs(node), reduction, shared,
                                    name=f"node_{node}_{side}")
                         for node in range(nao_arch.NUM_NODES) for side in ("x", "y")]
        c, n = channels, nao_arch.NUM_STATES
        self.combine_kernel = self.add_weight(shape=(n, c, c), name="combine_kernel",
                                              initializer=ws_ops.kaiming_normal(n * c))
        self.combine_gamma = self.add_weight(shape=(c,), initializer="ones", name="combine_gamma")
        self.combine_beta = self.add_weight(shape=(c,), initializer="zeros", name="combine_beta")
        # A reduction cell's loose states 0 / 1 are reduced before the combine.
        self.reduce_loose = (ws_ops.FactorizedReduce(c, c, copies=2, name="reduce_loose")
                             if reduction else None)

    def call(self, s0, s1, cell_arch, drop=None):
        """cell_arch: int32 [20]; drop: None or (keep, uniform [NUM_NODES, 2, batch])."""
        if self.calibrate_0 is not None:
            s0 = (tf.nn.relu(s0) if isinstance(self.calibrate_0, ws_ops.FactorizedReduce)
                  else s0)
            s0 = self.calibrate_0(s0)
        if self.calibrate_1 is not None:
            s1 = self.calibrate_1(s1)
        states = [s0, s1]
        for node in range(nao_arch.NUM_NODES):
            terms = []
            for side in range(2):
                at = nao_arch.INTS_PER_NODE * node + 2 * side
                y = self.branches[2 * node + side](states, cell_arch[at], cell_arch[at + 1])
                if drop is not None:
                    y = drop_path(y, drop[0], drop[1][node, side])
                terms.append(y)
            states.append(terms[0] + terms[1])
        return self.combine(states, cell_arch)

    def combine(self, states, cell_arch):
        """BN(1x1 conv of ReLU(concat of the loose ends)): only the loose states and
        their slices of the kernel are gathered (L of NUM_STATES, L dynamic)."""
        used = tf.reduce_max(tf.one_hot(cell_arch[0::2], nao_arch.NUM_STATES, dtype=tf.int32),
                             axis=0)
        loose = tf.reshape(tf.where(tf.equal(used, 0)), [-1])
        states = list(states)
        if self.reduction:  # 1x1 stride-2 convs: cheap enough to run even if not loose.
            states[:2] = [self.reduce_loose(states[s], index=s) for s in (0, 1)]
        x = tf.nn.relu(tf.gather(tf.stack(states), loose))
        kernel = tf.gather(self.combine_kernel.value, loose)
        y = tf.einsum("lnhwc,lcd->nhwd", x, kernel)
        return ws_ops.batch_norm(y, self.combine_gamma, self.combine_beta)


class NAOSupernet(keras.Model):
    """NAO's weight-sharing supernet, run one architecture at a time.

    Args:
      num_classes: classifier outputs.
      channels: C of the first stage (doubled at each reduction cell); 20 in NAO-V2.
      cells_per_stage: N; 3N + 2 cells, reductions at N and 2N + 1.
      input_shape: (H, W, channels) of the images.
      drop_path_keep_prob: the final keep probability of the last cell's branches.
      stem_multiplier: the stem conv 3x3 outputs stem_multiplier * C channels.

    Example:
      net = NAOSupernet(10)
      logits = net(images, tf.constant(arch, tf.int32))   # arch: 40 ints (nao_arch)
      logits = net(images, arch, drop_path=(progress, uniform))   # training

    Every BatchNorm uses batch statistics (there are no running statistics:
    docs/spaces/nao.md#batch-normalisation).
    """

    def __init__(self, num_classes, channels=20, cells_per_stage=3, input_shape=(32, 32, 3),
                 drop_path_keep_prob=0.9, stem_multiplier=3, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.channels = num_classes, channels
        self.cells_per_stage = cells_per_stage
        self.image_shape = tuple(input_shape)
        self.drop_path_keep_prob = drop_path_keep_prob
        self.stem_multiplier = stem_multiplier
        self.num_cells = 3 * cells_per_stage + 2
        self.reductions = reduction_cells(cells_per_stage)
        stem_channels = stem_multiplier * channels
        self.stem = ws_ops.ConvBN(self.image_shape[-1], stem_channels, 3, relu=False, name="stem")
        size, current = self.image_shape[0], channels
        inputs = [(size, stem_channels), (size, stem_channels)]
        self.shared = SharedTraces()
        self.cells = []
        for i in range(self.num_cells):
            reduction = i in self.reductions
            current = current * 2 if reduction else current
            cell = NAOCell(tuple(inputs), current, reduction, self.shared, name=f"cell_{i}")
            self.cells.append(cell)
            inputs = [inputs[1], (cell.output_size, current)]
        self.classifier_kernel = self.add_weight(
            shape=(current, num_classes), initializer=ws_ops.kaiming_normal(current),
            name="classifier_kernel")
        self.classifier_bias = self.add_weight(shape=(num_classes,), name="classifier_bias",
                                               initializer=layers.TorchUniform(current))
        self.built = True  # Every variable exists now (see layers.BuiltLayer).

    def count_weight_params(self):
        """Trainable parameters (every per-input copy counted)."""
        return int(sum(np.prod(v.shape) for v in self.trainable_variables))

    def drop_path_keep(self, cell, progress):
        return drop_path_keep(cell, self.num_cells, self.drop_path_keep_prob, progress)

    def call(self, images, arch, drop_path=None):
        """Logits of `images` under architecture `arch` (int32 [40]).

        drop_path: None (off: scoring) or (progress, uniform): progress =
        (step + 1) / total_steps of the round, uniform [num_cells, NUM_NODES, 2,
        batch] in [0, 1), one draw per example and branch.
        """
        arch = tf.cast(arch, tf.int32)
        cell_archs = {False: arch[:nao_arch.CELL_LENGTH], True: arch[nao_arch.CELL_LENGTH:]}
        s0 = s1 = self.stem(images)
        for i, cell in enumerate(self.cells):
            drop = None
            if drop_path is not None:
                progress, uniform = drop_path
                drop = (self.drop_path_keep(i, progress), uniform[i])
            s0, s1 = s1, cell(s0, s1, cell_archs[cell.reduction], drop)
        pooled = tf.reduce_mean(s1, axis=(1, 2))
        return tf.matmul(pooled, self.classifier_kernel) + self.classifier_bias

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "channels": self.channels, "cells_per_stage": self.cells_per_stage,
                "input_shape": list(self.image_shape),
                "drop_path_keep_prob": self.drop_path_keep_prob,
                "stem_multiplier": self.stem_multiplier}
