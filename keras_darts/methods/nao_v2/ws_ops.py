"""Layers of NAO's weight-sharing supernet (docs/spaces/nao.md#weight-sharing-supernet):
convolutions and BatchNorm affines held in one copy per input index and picked
by a (tensor) index, and the train-mode BatchNorm all of them use.

Raw `tf.nn` kernels on `add_weight` variables, for the reasons in
keras_darts/ops/layers.py.  Every weight with two or more dimensions starts
Kaiming-normal (PyTorch's `kaiming_normal_`: fan_in, gain sqrt(2)); BatchNorm
scales start at 1, offsets at 0.

No BatchNorm here keeps running statistics: NAO trains and scores the
supernet with batch statistics only, so they would never be read
(docs/spaces/nao.md#batch-normalisation).
"""

import math

import numpy as np
import tensorflow as tf

from keras_darts.ops import layers

BN_EPSILON = layers.BN_EPSILON


def kaiming_normal(fan_in):
    """N(0, 2 / fan_in), drawn with NumPy's global RNG (see layers.NumpyNormal)."""
    return layers.NumpyNormal(math.sqrt(2.0 / fan_in))


def multi_replica():
    """True inside a replica context of several replicas (BN statistics are
    then all-reduced, and no BatchNorm may run inside a tf.cond)."""
    context = tf.distribute.get_replica_context()
    return context is not None and context.num_replicas_in_sync > 1


def batch_norm(x, gamma, beta):
    """Train-mode BatchNorm of `x` [N, H, W, C] with the statistics of the
    global batch: on one replica one fused kernel; on several the sums are
    all-reduced, so N replicas normalise as one device would."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        y, _, _ = tf.compat.v1.nn.fused_batch_norm(x, gamma, beta, epsilon=BN_EPSILON,
                                                   is_training=True)
        return y
    c = x.shape[-1]
    count = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), x.dtype)
    sums = tf.concat([tf.reduce_sum(x, axis=(0, 1, 2)), tf.reduce_sum(tf.square(x), axis=(0, 1, 2)),
                      tf.reshape(count, (1,))], axis=0)
    sums = context.all_reduce(tf.distribute.ReduceOp.SUM, sums)
    mean = sums[:c] / sums[2 * c]
    var = tf.maximum(sums[c:2 * c] / sums[2 * c] - tf.square(mean), 0.0)
    return tf.nn.batch_normalization(x, mean, var, beta, gamma, BN_EPSILON)


def depthwise(x, kernel, stride):
    """Depthwise kxk conv, PyTorch padding k // 2 (TF's SAME at stride 1)."""
    if stride == 1:
        return tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "SAME")
    x = layers.pad_spatial(x, kernel.shape[0] // 2)
    return tf.nn.depthwise_conv2d(x, kernel, [1, stride, stride, 1], "VALID")


def pointwise(x, kernel):
    return tf.nn.conv2d(x, kernel, 1, "VALID")


class Copies(layers.BuiltLayer):
    """A layer whose every weight has a leading axis of `copies` (one per input
    index of a node: weight sharing in NAO's supernet is per input); `pick`
    reads one copy, so its gradient touches only that row."""

    def __init__(self, copies, **kwargs):
        super().__init__(**kwargs)
        self.copies = copies

    def _kernel(self, name, shape, fan_in):
        return self.add_weight(shape=(self.copies,) + tuple(shape),
                               initializer=kaiming_normal(fan_in), name=name)

    def _affine(self, name, channels):
        return (self.add_weight(shape=(self.copies, channels), initializer="ones",
                                name=f"{name}_gamma"),
                self.add_weight(shape=(self.copies, channels), initializer="zeros",
                                name=f"{name}_beta"))

    def pick(self, variable, index):
        if self.copies == 1:
            return tf.reshape(variable, variable.shape[1:])
        return tf.gather(variable.value, index)


def sep_conv(x, weights, stride):
    """NAO's (= DARTS's) separable conv on `x`: [ReLU, dw kxk (stride s), pw 1x1,
    BN], then the same at stride 1.  weights: `SepConv.weights_at` of one input."""
    dw_1, pw_1, gamma_1, beta_1, dw_2, pw_2, gamma_2, beta_2 = weights
    y = batch_norm(pointwise(depthwise(tf.nn.relu(x), dw_1, stride), pw_1), gamma_1, beta_1)
    return batch_norm(pointwise(depthwise(tf.nn.relu(y), dw_2, 1), pw_2), gamma_2, beta_2)


def factorized_reduce(x, weights):
    """NAO's FactorizedReduce: two 1x1 stride-2 convs in -> out/2 (the second on
    x shifted by one pixel), concat, BN; no ReLU of its own."""
    conv_a, conv_b, gamma, beta = weights
    if x.shape[1] % 2 or x.shape[2] % 2:
        raise ValueError(f"FactorizedReduce needs an even height and width, got {x.shape}")
    # One 2x2 stride-2 conv: conv_a at tap (0, 0) for the first half of the
    # outputs, conv_b at tap (1, 1) (x shifted by one pixel) for the second, as
    # keras_darts/ops/darts_ops.py does (no slice, whose gradient is slow).
    half = conv_a.shape[-1]
    kernel = (tf.pad(conv_a, [[0, 1], [0, 1], [0, 0], [0, half]])
              + tf.pad(conv_b, [[1, 0], [1, 0], [0, 0], [half, 0]]))
    return batch_norm(tf.nn.conv2d(x, kernel, 2, "VALID"), gamma, beta)


def avg_pool(x, stride):
    """3x3 average pool, pad 1, count_include_pad=False."""
    if stride == 1:  # TF's SAME pools ignore the padded pixels.
        return tf.nn.avg_pool2d(x, 3, 1, "SAME")
    height, width = x.shape[1], x.shape[2]
    ones = np.pad(np.ones((height, width), np.float32), 1)
    counts = np.array([[ones[i:i + 3, j:j + 3].sum() for j in range(0, width, stride)]
                       for i in range(0, height, stride)], np.float32)
    summed = tf.nn.avg_pool2d(layers.pad_spatial(x, 1), 3, stride, "VALID") * 9.0
    return summed / counts[None, :, :, None]


def max_pool(x, stride):
    """3x3 max pool, pad 1 (with -inf).  Inside `layers.self_contained_gradients()`
    its gradient recomputes the pool (oneDNN's fast gradient kernel needs that)."""
    def pool(x):
        if stride == 1:
            return tf.nn.max_pool2d(x, 3, 1, "SAME")
        return tf.nn.max_pool2d(layers.pad_spatial(x, 1, value=-np.inf), 3, stride, "VALID")
    if layers.gradients_self_contained():
        return layers.max_pool_recomputing(pool, x)
    return pool(x)


class PackedInit:
    """Initial rows of a `Packed` variable: every block drawn as its own weight
    (Kaiming-normal with its fan_in, or ones / zeros for BN affines)."""

    def __init__(self, blocks):
        self.blocks = blocks

    def __call__(self, shape, dtype=None):
        rows = []
        for _ in range(shape[0]):
            parts = []
            for _, block_shape, init in self.blocks:
                if init in ("ones", "zeros"):
                    values = (np.ones if init == "ones" else np.zeros)(block_shape, np.float32)
                else:
                    values = kaiming_normal(init)(block_shape, "float32")
                parts.append(values.reshape(-1))
            rows.append(np.concatenate(parts))
        return np.stack(rows).astype(dtype or "float32")


def sep_conv_blocks(prefix, channels, kernel_size):
    """(name, shape, init) of `sep_conv`'s weights in its order (init: fan_in or
    "ones" / "zeros")."""
    c, k = channels, kernel_size
    blocks = []
    for i in (1, 2):
        blocks += [(f"{prefix}dw_{i}", (k, k, c, 1), k * k), (f"{prefix}pw_{i}", (1, 1, c, c), c),
                   (f"{prefix}gamma_{i}", (c,), "ones"), (f"{prefix}beta_{i}", (c,), "zeros")]
    return blocks


def factorized_reduce_blocks(prefix, in_channels, out_channels):
    half = out_channels // 2
    return [(f"{prefix}conv_a", (1, 1, in_channels, half), in_channels),
            (f"{prefix}conv_b", (1, 1, in_channels, half), in_channels),
            (f"{prefix}gamma", (out_channels,), "ones"),
            (f"{prefix}beta", (out_channels,), "zeros")]


class Packed(Copies):
    """All weights of several ops in ONE variable [copies, P], a row per input
    index: a branch reads its input's row with one gather (a thousand small
    gathers and their gradients made the step's trace ~3x longer).
    `blocks`: (name, shape, init) of every weight, in row order."""

    def __init__(self, blocks, copies, **kwargs):
        super().__init__(copies, **kwargs)
        self.blocks = tuple(blocks)
        size = sum(int(np.prod(shape)) for _, shape, _ in self.blocks)
        self.packed = self.add_weight(shape=(copies, size), name="packed",
                                      initializer=PackedInit(self.blocks))

    def row(self, index):
        return self.pick(self.packed, index)

def unpack(row, blocks, prefix=""):
    """{name without `prefix`: tensor} of the blocks whose name starts with
    `prefix`, cut out of one row of a `Packed` variable laid out by `blocks`."""
    out, start = {}, 0
    for name, shape, _ in blocks:
        end = start + int(np.prod(shape))
        if name.startswith(prefix):
            out[name[len(prefix):]] = tf.reshape(row[start:end], shape)
        start = end
    return out


def sep_conv_weights(unpacked):
    return tuple(unpacked[f"{kind}_{i}"] for i in (1, 2)
                 for kind in ("dw", "pw", "gamma", "beta"))


def factorized_reduce_weights(unpacked):
    return tuple(unpacked[k] for k in ("conv_a", "conv_b", "gamma", "beta"))


class FactorizedReduce(Copies):
    """The weights of `factorized_reduce` (in -> out channels), `copies` copies."""

    def __init__(self, in_channels, out_channels, copies=1, **kwargs):
        super().__init__(copies, **kwargs)
        if out_channels % 2:
            raise ValueError(f"FactorizedReduce needs an even channel count, got {out_channels}")
        self.in_channels, self.out_channels = in_channels, out_channels
        half = out_channels // 2
        self.conv_a = self._kernel("conv_a", (1, 1, in_channels, half), in_channels)
        self.conv_b = self._kernel("conv_b", (1, 1, in_channels, half), in_channels)
        self.gamma, self.beta = self._affine("bn", out_channels)

    def weights_at(self, index):
        return tuple(self.pick(v, index) for v in (self.conv_a, self.conv_b, self.gamma,
                                                   self.beta))

    def call(self, x, index=0):
        return factorized_reduce(x, self.weights_at(index))


class ConvBN(Copies):
    """[ReLU], kxk conv (stride 1, pad k // 2), BN: the stem (no ReLU) and the
    1x1 ReLUConvBN that calibrates a cell input's channels."""

    def __init__(self, in_channels, out_channels, kernel_size=1, relu=True, **kwargs):
        super().__init__(1, **kwargs)
        k = kernel_size
        self.relu = relu
        self.kernel = self._kernel("kernel", (k, k, in_channels, out_channels),
                                   k * k * in_channels)
        self.gamma, self.beta = self._affine("bn", out_channels)

    def call(self, x):
        x = tf.nn.relu(x) if self.relu else x
        y = tf.nn.conv2d(x, self.pick(self.kernel, 0), 1, "SAME")
        return batch_norm(y, self.pick(self.gamma, 0), self.pick(self.beta, 0))
