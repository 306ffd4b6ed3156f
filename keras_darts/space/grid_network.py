"""The HyperCuboid supernet (sharpDARTS's MultiChannelNetwork,
docs/methods/hypercuboid.md#grid).

One stem (3x3 conv + BN) per grid width gives X[c].  Every layer has a
stride-1 stage and a stride-2 stage; a stage maps the states of every width
to new states of every width:

    Y[c_out] = sum over (c_in, op) of coef[c_in, c_out, op] * op(X[c_in])

with op in {ResizablePool, SharpSepConv 3x3 (middle width c_out)} and coef
the mixing rule of the stage's alpha row (one softmax, and for Max-W one max,
over the whole cuboid).  An op whose coefficient is at most `min_weight` is
not computed (`tf.cond`).  Head: SharpSepConv(c -> 768) on every final state,
summed, global average pool, linear.

It offers the search step what the DARTS supernet does (alphas apart from
the weights, `mixing_rule`, `space`), and runs `plans.Mix` plans.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_darts import ops
from keras_darts.ops.layers import Linear
from keras_darts.ops.sharp_ops import ResizablePool, SharpSepConv
from keras_darts.space import mixing as mixing_lib
from keras_darts.space import plans
from keras_darts.space.hypercuboid import CELL_TYPE, GRID_OPS

HEAD_CHANNELS = 768
DEFAULT_MIN_WEIGHT = 1.0 / 32 ** 2  # The reference's threshold.


def grid_op(name, c_in, c_out, stride, affine):
    """A grid op: `resizable_pool` or `sharp_sep_conv` (3x3, middle width c_out)."""
    if name == "resizable_pool":
        return ResizablePool(c_out, stride, affine, in_channels=c_in)
    return SharpSepConv(c_out, stride, affine, kernel_size=3, mid_channels=c_out,
                        in_channels=c_in)


def run_op(op, x, relu_x, training, weight=None):
    """weight * op(x); SharpSepConvs read the rectified input."""
    return op(relu_x if op.starts_with_relu else x, training=training, weight=weight)


class GridNetwork(keras.Model):
    """The grid supernet.

    Args:
      num_classes: classifier outputs.
      space: a `GridSpace` (widths, layers).
      input_shape: (H, W, channels) of the images.
      mixing: the mixing rule of a stage's alpha row (keras_darts/space/mixing.py).
      min_weight: ops whose coefficient is at most this are skipped (0: none).
    """

    def __init__(self, num_classes, space, input_shape=(32, 32, 3), mixing="softmax",
                 min_weight=DEFAULT_MIN_WEIGHT, **kwargs):
        super().__init__(**kwargs)
        self.space = space
        self.num_classes = num_classes
        self.image_shape = tuple(input_shape)
        self.mixing = mixing
        self.mixing_rule = mixing_lib.get(mixing)
        self.min_weight = float(min_weight)
        widths = space.widths
        in_channels = self.image_shape[-1]
        self.stems = [ops.Sequential([ops.Conv(in_channels, c, 3, padding=1),
                                      ops.BatchNorm(c, affine=True)], name=f"stem_{c}")
                      for c in widths]
        # stage_ops[stage][i_in][i_out][k]
        self.stage_ops = [[[[grid_op(name, c_in, c_out, stride, affine=False)
                             for name in GRID_OPS] for c_out in widths] for c_in in widths]
                          for _, stride in space.stages]
        self.heads = [SharpSepConv(HEAD_CHANNELS, 1, True, kernel_size=3,
                                   mid_channels=HEAD_CHANNELS, in_channels=c,
                                   name=f"head_{c}") for c in widths]
        self.classifier = Linear(HEAD_CHANNELS, num_classes)
        self._alpha = self.add_weight(shape=space.alpha_shape,
                                      initializer=ops.NumpyNormal(stddev=1e-3),
                                      name=f"alpha_{CELL_TYPE}")
        self.built = True

    # -- what the search step reads (as of SearchNetwork) ------------------------
    @property
    def alphas(self):
        return {CELL_TYPE: self._alpha}

    @property
    def arch_variables(self):
        return [self._alpha]

    @property
    def weight_variables(self):
        return [v for v in self.trainable_variables if v is not self._alpha]

    @property
    def arch_dtype(self):
        return self._alpha.dtype

    def count_weight_params(self):
        return int(sum(np.prod(v.shape) for v in self.weight_variables))

    def default_mixing(self, alpha):
        return self.mixing_rule(alpha)

    def arch_probabilities(self):
        """softmax over each stage's cuboid, {"grid": [stages, n*n*ops]} (numpy)."""
        return {CELL_TYPE: mixing_lib.softmax(self._alpha).numpy()}

    def build_variables(self):
        self(tf.zeros((1,) + self.image_shape), training=False)

    # -- forward ---------------------------------------------------------------
    def call(self, images, training=False, plan=None, weight_grads=True):
        """Logits; `plan`: a `plans.Mix` (default: every stage mixed by the rule)."""
        del weight_grads  # Every op runs inline; nothing to skip for the alpha step.
        plan = plans.Mix() if plan is None else plan
        if not isinstance(plan, plans.Mix):
            raise ValueError(f"the grid supernet runs plans.Mix plans, got {type(plan).__name__}")
        rows = tf.unstack(plan.weights_by_type(self)[CELL_TYPE])
        n = len(self.space.widths)
        states = [stem(images, training=training) for stem in self.stems]
        for stage, row in enumerate(rows):
            coefs = tf.reshape(row, (n, n, len(GRID_OPS)))
            relu_states = [tf.nn.relu(x) for x in states]
            states = [tf.add_n([self._term(self.stage_ops[stage][i][j][k], states[i],
                                           relu_states[i], coefs[i, j, k], training)
                                for i in range(n) for k in range(len(GRID_OPS))])
                      for j in range(n)]
        features = tf.add_n([head(tf.nn.relu(x), training=training)
                             for head, x in zip(self.heads, states)])
        return self.classifier(tf.reduce_mean(features, axis=(1, 2)))

    def _term(self, op, x, relu_x, coef, training):
        """coef * op(x), not computed when coef <= min_weight.  Under several
        replicas the op runs with coefficient 0 instead: a synchronised
        BatchNorm's all-reduce cannot sit inside a tf.cond (its running
        statistics then still update)."""
        def run():
            return run_op(op, x, relu_x, training, weight=coef)
        if self.min_weight <= 0.0:
            return run()
        replica_ctx = tf.distribute.get_replica_context()
        if replica_ctx is not None and replica_ctx.num_replicas_in_sync > 1:
            coef = tf.where(coef > self.min_weight, coef, tf.zeros_like(coef))
            return run()

        def skip():
            s = op.stride
            spatial = [(d + s - 1) // s for d in x.shape[1:3]]  # 3x3, pad 1.
            return tf.zeros(tf.concat([tf.shape(x)[:1], spatial, [op.channels]], 0), x.dtype)
        return tf.cond(coef > self.min_weight, run, skip)
