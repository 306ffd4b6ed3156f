"""The DARTS family of candidate ops as Keras layers, and its op sets
(docs/spaces/darts.md#candidate-operations).

Layer definitions follow the DARTS reference exactly (layer order, strides,
dilation, no conv bias, BatchNorm affine only outside the supernet).  Every op
maps C -> C channels.  Ops whose first layer is a ReLU set
`starts_with_relu = True` and expect an already rectified input: the cell
computes ReLU(state) once and shares it among all edges and ops that use it.
"""

import numpy as np
import tensorflow as tf

from keras_darts.ops import layers
from keras_darts.ops.layers import (BatchNorm, CandidateOp, Conv, ReLU, Sequential, TorchUniform,
                                    pad_spatial, weighted)
from keras_darts.ops.registry import register_family, register_op, register_op_set

register_family("darts")


class Zero(CandidateOp):
    """`none`: an all-zero output of the strided shape."""

    fuses_weight = True
    is_zero = True

    def call(self, x, training=False, weight=None):
        if self.stride > 1:
            x = x[:, ::self.stride, ::self.stride, :]
        return tf.zeros_like(x)


class Identity(CandidateOp):
    fuses_weight = True
    is_identity = True

    def call(self, x, training=False, weight=None):
        return weighted(x, weight)


class Pool(CandidateOp):
    """3x3 max or average pool, pad 1; DARTS's average excludes padding
    (count_include_pad=False), `count_padding=True` includes it (sharpDARTS).

    Inside the supernet (`bn_after=True`) a BatchNorm(affine=False) follows.
    """

    fuses_weight = True

    def __init__(self, channels, stride, affine=False, kind="max", bn_after=False,
                 count_padding=False, **kwargs):
        super().__init__(channels, stride, affine, **kwargs)
        self.kind = kind
        self.count_padding = count_padding
        # oneDNN's max-pool gradient needs the forward's workspace in the same
        # graph; in a separately compiled backward function TF falls back to a
        # kernel ~20x slower (3 s of a 5.4 s search step); the fully mixed
        # supernet keeps it inline, EDAS's edge switch recomputes it
        # (`self_contained_gradients`).
        self.inline_only = kind == "max"
        self.bn = BatchNorm(channels, affine=False) if bn_after else None

    def call(self, x, training=False, weight=None):
        s = self.stride
        if self.kind == "max" and layers.gradients_self_contained():
            y = layers.max_pool_recomputing(self._max_pool, x)
        elif self.kind == "max":
            y = self._max_pool(x)
        elif self.count_padding:  # Zero pad, then every window divides by 9.
            y = tf.nn.avg_pool2d(pad_spatial(x, 1), 3, s, "VALID")
        elif s == 1:
            # TF's SAME padding at stride 1 is PyTorch's pad 1 on each side, and
            # TF pools ignore padded pixels, as count_include_pad=False does.
            y = tf.nn.avg_pool2d(x, 3, 1, "SAME")
        else:
            summed = tf.nn.avg_pool2d(pad_spatial(x, 1), 3, s, "VALID") * 9.0
            y = summed / self._valid_counts(x.shape[1], x.shape[2], s)
        if self.bn is not None:
            return self.bn(y, training=training, weight=weight)
        return weighted(y, weight)

    def _max_pool(self, x):
        if self.stride == 1:  # TF's SAME padding here = PyTorch's pad 1 with -inf.
            return tf.nn.max_pool2d(x, 3, 1, "SAME")
        return tf.nn.max_pool2d(pad_spatial(x, 1, value=-np.inf), 3, self.stride, "VALID")

    @staticmethod
    def _valid_counts(height, width, stride):
        ones = np.pad(np.ones((height, width), np.float32), 1)
        out_h, out_w = (height - 1) // stride + 1, (width - 1) // stride + 1
        counts = np.array([[ones[i * stride:i * stride + 3, j * stride:j * stride + 3].sum()
                            for j in range(out_w)] for i in range(out_h)], np.float32)
        return tf.constant(counts[None, :, :, None])


class SepConv(CandidateOp):
    """ReLU, dw kxk (stride s), pw 1x1, BN, ReLU, dw kxk, pw 1x1, BN."""

    fuses_weight = True
    starts_with_relu = True

    def __init__(self, channels, stride, affine=False, kernel_size=3, **kwargs):
        super().__init__(channels, stride, affine, **kwargs)
        c, k, p = channels, kernel_size, kernel_size // 2
        self.kernel_size = kernel_size
        self.body = Sequential([
            Conv(c, c, k, stride, p, depthwise=True), Conv(c, c, 1), BatchNorm(c, affine),
            ReLU(),
            Conv(c, c, k, 1, p, depthwise=True), Conv(c, c, 1), BatchNorm(c, affine),
        ])

    def call(self, x, training=False, weight=None):
        return self.body(x, training=training, weight=weight)


class DilConv(CandidateOp):
    """ReLU, dw kxk dilation 2 (stride s), pw 1x1, BN."""

    fuses_weight = True
    starts_with_relu = True

    def __init__(self, channels, stride, affine=False, kernel_size=3, dilation=2, **kwargs):
        super().__init__(channels, stride, affine, **kwargs)
        c, k = channels, kernel_size
        self.kernel_size = kernel_size
        self.body = Sequential([
            Conv(c, c, k, stride, dilation * (k - 1) // 2, dilation=dilation, depthwise=True),
            Conv(c, c, 1), BatchNorm(c, affine),
        ])

    def call(self, x, training=False, weight=None):
        return self.body(x, training=training, weight=weight)


class FactorizedReduce(CandidateOp):
    """ReLU; concat[1x1 s2 conv on x, 1x1 s2 conv on x shifted by one pixel]; BN.

    Halves the spatial size; maps in_channels -> channels (channels must be even).
    """

    fuses_weight = True
    starts_with_relu = True

    def __init__(self, channels, stride=2, affine=False, in_channels=None, **kwargs):
        super().__init__(channels, stride, affine, **kwargs)
        if channels % 2:
            raise ValueError(f"FactorizedReduce needs an even channel count, got {channels}")
        in_channels = channels if in_channels is None else in_channels
        self.in_channels = in_channels
        self.conv_a = Conv(in_channels, channels // 2, 1, stride=2)
        self.conv_b = Conv(in_channels, channels // 2, 1, stride=2)
        self.bn = BatchNorm(channels, affine)

    def call(self, x, training=False, weight=None):
        if x.shape[1] % 2 or x.shape[2] % 2:
            raise ValueError(f"FactorizedReduce needs an even height and width, got {x.shape}")
        # Both 1x1 stride-2 convs at once: a 2x2 stride-2 kernel holding conv_a's
        # weights at tap (0, 0) for the first half of the output channels and
        # conv_b's at tap (1, 1), i.e. on x shifted by one pixel, for the second.
        # One conv instead of two, a slice (whose gradient is slow) and a concat.
        half = self.channels // 2
        kernel = (tf.pad(self.conv_a.kernel, [[0, 1], [0, 1], [0, 0], [0, half]])
                  + tf.pad(self.conv_b.kernel, [[1, 0], [1, 0], [0, 0], [half, 0]]))
        y = tf.nn.conv2d(x, kernel, 2, "VALID")
        return self.bn(y, training=training, weight=weight)


class ReLUConvBN(CandidateOp):
    """ReLU, conv kxk, BN: the cells' input preprocessing (in_channels -> channels)."""

    fuses_weight = True
    starts_with_relu = True

    def __init__(self, channels, stride=1, affine=False, in_channels=None, kernel_size=1,
                 padding=0, **kwargs):
        super().__init__(channels, stride, affine, **kwargs)
        in_channels = channels if in_channels is None else in_channels
        self.in_channels = in_channels
        self.conv = Conv(in_channels, channels, kernel_size, stride, padding)
        self.bn = BatchNorm(channels, affine)

    def call(self, x, training=False, weight=None):
        return self.bn(self.conv(x), training=training, weight=weight)


class Conv7x1_1x7(CandidateOp):
    """ReLU, conv 1x7 stride (1,s), conv 7x1 stride (s,1), BN (used by some genotypes)."""

    fuses_weight = True
    starts_with_relu = True

    def __init__(self, channels, stride, affine=False, bn_epsilon=layers.BN_EPSILON, **kwargs):
        super().__init__(channels, stride, affine, **kwargs)
        self.bn = BatchNorm(channels, affine, epsilon=bn_epsilon)
        c = channels
        self.kernel_a = self.add_weight(shape=(1, 7, c, c), initializer=TorchUniform(7 * c),
                                        name="kernel_1x7")
        self.kernel_b = self.add_weight(shape=(7, 1, c, c), initializer=TorchUniform(7 * c),
                                        name="kernel_7x1")

    def call(self, x, training=False, weight=None):
        s = self.stride
        y = tf.nn.conv2d(x, self.kernel_a, [1, 1, s, 1], [[0, 0], [0, 0], [3, 3], [0, 0]])
        y = tf.nn.conv2d(y, self.kernel_b, [1, s, 1, 1], [[0, 0], [3, 3], [0, 0], [0, 0]])
        return self.bn(y, training=training, weight=weight)


def skip_op(channels, stride, affine):
    """`skip_connect`: identity, or FactorizedReduce at stride 2."""
    if stride == 1:
        return Identity(channels, stride, affine)
    return FactorizedReduce(channels, stride, affine)


_FACTORIES = {
    "none": lambda c, s, a: Zero(c, s, a),
    # Pools are followed by BN(affine=False) in the supernet (affine=False) only.
    "max_pool_3x3": lambda c, s, a: Pool(c, s, a, kind="max", bn_after=not a),
    "avg_pool_3x3": lambda c, s, a: Pool(c, s, a, kind="avg", bn_after=not a),
    "skip_connect": skip_op,
    "sep_conv_3x3": lambda c, s, a: SepConv(c, s, a, kernel_size=3),
    "sep_conv_5x5": lambda c, s, a: SepConv(c, s, a, kernel_size=5),
    "sep_conv_7x7": lambda c, s, a: SepConv(c, s, a, kernel_size=7),
    "dil_conv_3x3": lambda c, s, a: DilConv(c, s, a, kernel_size=3),
    "dil_conv_5x5": lambda c, s, a: DilConv(c, s, a, kernel_size=5),
    "conv_7x1_1x7": lambda c, s, a: Conv7x1_1x7(c, s, a),
}
for _name, _factory in _FACTORIES.items():
    register_op(_name)(_factory)

DARTS_PRIMITIVES = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
                    "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
register_op_set("darts", DARTS_PRIMITIVES)
# DARTS-PT's space "s5": the DARTS ops without `none` (docs/methods/blank.md).
register_op_set("darts_pt", DARTS_PRIMITIVES[1:])
# MSR-DARTS's `PRIMITIVES_SPECTRAL`: only the parameterised ops (docs/methods/msr.md#search-space).
register_op_set("msr", DARTS_PRIMITIVES[4:])
