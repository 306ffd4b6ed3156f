"""Candidate operations of the DARTS search space as Keras layers, and their registry.

Layer definitions follow specs/darts.md sect. 1 exactly (layer order, strides,
dilation, no conv bias, BatchNorm affine only outside the supernet).  Ops are
written with raw `tf.nn` kernels on weights made by `add_weight`: Keras' own
Conv/BatchNorm layers made tracing of the 1,100-op supernet several times
slower (see NOTES_TF.md), and PyTorch's symmetric padding needs explicit pads
anyway (Keras 'same' pads stride-2 convs on the bottom/right only).

Every op maps C -> C channels.  Ops whose first layer is a ReLU set
`starts_with_relu = True` and expect an already rectified input: the cell
computes ReLU(state) once and shares it among all edges and ops that use it.

New op sets (sharpDARTS, NAO) add entries with `@register_op(name)` and a list
of names with `register_op_set(name, names)`.
"""

import contextlib
import math
import threading

import keras
import numpy as np
import tensorflow as tf

BN_EPSILON = 1e-5  # PyTorch default.
BN_MOMENTUM = 0.1  # PyTorch convention: new = (1 - m) * old + m * batch.

_OPS = {}
_OP_SETS = {}
_PAIRED = threading.local()


@contextlib.contextmanager
def self_contained_gradients():
    """Max pools traced in here recompute the pool inside their gradient, so the
    forward kernel and its gradient kernel sit in one graph.  oneDNN's max-pool
    gradient needs the forward's workspace from the same graph; a gradient in a
    separately compiled function (a `tf.switch_case` branch's) falls back to a
    kernel ~20x slower.  The extra pool costs ~0.3 ms at the default size."""
    previous = getattr(_PAIRED, "enabled", False)
    _PAIRED.enabled = True
    try:
        yield
    finally:
        _PAIRED.enabled = previous


def _max_pool_recomputing(pool, x):
    """pool(x), whose gradient re-runs pool(x) next to the gradient kernel."""

    @tf.custom_gradient
    def forward(x):
        def grad(upstream):
            with tf.GradientTape() as tape:
                tape.watch(x)
                again = pool(x)
            return tape.gradient(again, x, output_gradients=upstream)
        return pool(x), grad

    # A tensor of the graph being built (x may be captured from an enclosing
    # one), so that the gradient refers to this graph's value.
    return forward(tf.identity(x))


def register_op(name):
    """Class/function decorator: `factory(channels, stride, affine) -> Layer` under `name`."""

    def decorate(factory):
        if name in _OPS:
            raise ValueError(f"op '{name}' is already registered")
        _OPS[name] = factory
        return factory

    return decorate


def register_op_set(name, op_names):
    """Registers an ordered list of candidate ops (= alpha column order)."""
    if name in _OP_SETS:
        raise ValueError(f"op set '{name}' is already registered")
    unknown = [op for op in op_names if op not in _OPS]
    if unknown:
        raise ValueError(f"op set '{name}' uses unregistered ops {unknown}")
    _OP_SETS[name] = tuple(op_names)


def registered_ops():
    return tuple(_OPS)


def op_set(name):
    """Returns the op names of a registered op set, in alpha column order."""
    if name not in _OP_SETS:
        raise KeyError(f"unknown op set '{name}'; registered: {sorted(_OP_SETS)}")
    return _OP_SETS[name]


def op_sets():
    return tuple(_OP_SETS)


def make_op(name, channels, stride, affine):
    if name not in _OPS:
        raise KeyError(f"unknown op '{name}'; registered: {sorted(_OPS)}")
    return _OPS[name](channels, stride, affine)


class TorchUniform(keras.initializers.Initializer):
    """PyTorch's default conv/linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    Drawn with NumPy's global RNG (seeded by `keras.utils.set_random_seed`):
    Keras' seeded initializers cost ~3 ms per variable, ~25 s for the supernet.
    """

    def __init__(self, fan_in):
        self.fan_in = fan_in

    def __call__(self, shape, dtype=None):
        limit = 1.0 / math.sqrt(self.fan_in)
        return np.random.uniform(-limit, limit, size=shape).astype(dtype or "float32")

    def get_config(self):
        return {"fan_in": self.fan_in}


class NumpyNormal(keras.initializers.Initializer):
    """N(0, stddev^2) from NumPy's global RNG: a fresh draw on every call (an
    unseeded Keras initializer repeats its values when reused)."""

    def __init__(self, stddev):
        self.stddev = stddev

    def __call__(self, shape, dtype=None):
        return np.random.normal(0.0, self.stddev, size=shape).astype(dtype or "float32")

    def get_config(self):
        return {"stddev": self.stddev}


class BuiltLayer(keras.layers.Layer):
    """Base of every layer here: weights are created in `__init__` (all shapes
    follow from the channel counts), so the layer is built from the start and
    Keras never runs its symbolic build pass, which re-traces every nested layer
    and made the first supernet call take ~55 s."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.built = True


def _pad(x, amount, value=0.0):
    if amount == 0:
        return x
    return tf.pad(x, [[0, 0], [amount, amount], [amount, amount], [0, 0]],
                  constant_values=value)


def _dilate_kernel(kernel, rate):
    """Inserts rate-1 zeros between the taps of a HW.. kernel (k -> rate*(k-1)+1).

    TF refuses dilation together with stride 2; convolving with the zero-expanded
    kernel at stride 2 is the same map and ~25 % cheaper than a stride-1 dilated
    conv followed by subsampling.
    """
    k = kernel.shape[0]
    size = rate * (k - 1) + 1
    for axis in (0, 1):
        # Append rate-1 zero taps after every tap along `axis`, then drop the trailing ones.
        spaced = tf.expand_dims(kernel, axis + 1)
        pad = [[0, 0]] * len(spaced.shape)
        pad[axis + 1] = [0, rate - 1]
        shape = list(kernel.shape)
        shape[axis] = k * rate
        spaced = tf.reshape(tf.pad(spaced, pad), shape)
        kernel = spaced[:size] if axis == 0 else spaced[:, :size]
    return kernel


def _weighted(y, weight):
    return y if weight is None else y * weight


# ---------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------

class BatchNorm(BuiltLayer):
    """BatchNorm with PyTorch semantics (eps 1e-5, momentum 0.1, unbiased running var).

    In training it normalises with batch statistics.  Under a multi-replica
    tf.distribute strategy the statistics are all-reduced across replicas, so a
    step on N replicas equals a step on one device with the same global batch.
    """

    def __init__(self, channels, affine, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.affine = affine
        c = channels
        if affine:
            self.gamma = self.add_weight(shape=(c,), initializer="ones", name="gamma")
            self.beta = self.add_weight(shape=(c,), initializer="zeros", name="beta")
        # Replicas compute identical (synchronised) statistics: keep the first copy.
        self.moving_mean = self.add_weight(shape=(c,), initializer="zeros", trainable=False,
                                           name="moving_mean", aggregation="only_first_replica")
        self.moving_var = self.add_weight(shape=(c,), initializer="ones", trainable=False,
                                          name="moving_var", aggregation="only_first_replica")

    def _scale_offset(self, dtype, weight):
        """BN's affine scale and offset, times `weight` (None: 1)."""
        if self.affine:
            scale, offset = tf.convert_to_tensor(self.gamma), tf.convert_to_tensor(self.beta)
            if weight is not None:
                scale, offset = scale * weight, offset * weight
            return scale, offset
        scale = tf.ones((self.channels,), dtype)
        return (scale if weight is None else scale * weight), tf.zeros((self.channels,), dtype)

    def call(self, x, training=False, weight=None):
        """BN(x) * weight; `weight` (a scalar, e.g. an edge's softmax(alpha)) rides in
        the fused kernel's scale, so the supernet needs no separate multiply and
        backprop keeps no copy of the normalised output."""
        scale, offset = self._scale_offset(x.dtype, weight)
        if not training:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x, scale, offset, mean=self.moving_mean, variance=self.moving_var,
                epsilon=BN_EPSILON, is_training=False)
            return y
        replica_ctx = tf.distribute.get_replica_context()
        if replica_ctx is not None and replica_ctx.num_replicas_in_sync > 1:
            return self._synchronised(x, scale, offset, replica_ctx)
        # One fused kernel normalises and returns the updated running averages
        # (variance Bessel-corrected, as PyTorch stores it).
        y, new_mean, new_var = tf.compat.v1.nn.fused_batch_norm(
            x, scale, offset, mean=self.moving_mean, variance=self.moving_var,
            epsilon=BN_EPSILON, is_training=True, exponential_avg_factor=BN_MOMENTUM)
        self.moving_mean.assign(new_mean)
        self.moving_var.assign(new_var)
        return y

    def _synchronised(self, x, scale, offset, replica_ctx):
        """Batch statistics over the global batch (all replicas)."""
        local_count = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), x.dtype)
        sums = tf.concat([tf.reduce_sum(x, axis=(0, 1, 2)),
                          tf.reduce_sum(tf.square(x), axis=(0, 1, 2)),
                          tf.reshape(local_count, (1,))], axis=0)
        sums = replica_ctx.all_reduce(tf.distribute.ReduceOp.SUM, sums)
        c = self.channels
        count = sums[2 * c]
        mean = sums[:c] / count
        var = tf.maximum(sums[c:2 * c] / count - tf.square(mean), 0.0)
        y = tf.nn.batch_normalization(x, mean, var, offset, scale, BN_EPSILON)
        unbiased_var = var * count / tf.maximum(count - 1.0, 1.0)
        self.moving_mean.assign_sub(BN_MOMENTUM * (self.moving_mean - mean))
        self.moving_var.assign_sub(BN_MOMENTUM * (self.moving_var - unbiased_var))
        return y


class Conv(BuiltLayer):
    """Bias-free 2-D convolution with PyTorch-style symmetric zero padding.

    `depthwise=True` is a per-channel conv (PyTorch groups=C, one filter each).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, depthwise=False, **kwargs):
        super().__init__(**kwargs)
        if depthwise and in_channels != out_channels:
            raise ValueError("a depthwise conv keeps the channel count")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.depthwise = depthwise
        k = kernel_size
        if depthwise:
            shape, fan_in = (k, k, in_channels, 1), k * k
        else:
            shape, fan_in = (k, k, in_channels, out_channels), k * k * in_channels
        self.kernel = self.add_weight(shape=shape, initializer=TorchUniform(fan_in), name="kernel")
        # Optional layer that rescales the kernel in every call (MSR-DARTS's
        # spectral normalisation, keras_darts.spectral_norm); None: W as it is.
        self.spectral_norm = None

    def call(self, x, training=False):
        kernel = tf.convert_to_tensor(self.kernel)
        if self.spectral_norm is not None:
            kernel = self.spectral_norm(kernel, training=training)
        k, dilation, p = self.kernel_size, self.dilation, self.padding
        if self.stride == 1 and k % 2 == 1 and p == dilation * (k - 1) // 2:
            # Symmetric "same" padding is TF's SAME at stride 1.  Explicit padding
            # would send depthwise gradients to a generic kernel 2-3x slower than oneDNN's.
            padding = "SAME"
        else:
            if dilation > 1:
                kernel, dilation = _dilate_kernel(kernel, dilation), 1
            x, padding = _pad(x, p), "VALID"  # Measured faster than explicit padding.
        strides = [1, self.stride, self.stride, 1]
        if self.depthwise:
            return tf.nn.depthwise_conv2d(x, kernel, strides, padding,
                                          dilations=[dilation, dilation])
        return tf.nn.conv2d(x, kernel, strides, padding, dilations=dilation)


class Sequential(BuiltLayer):
    """A plain chain of layers; `training` is passed to those that take it."""

    def __init__(self, layers, **kwargs):
        super().__init__(**kwargs)
        self.chain = list(layers)

    def call(self, x, training=False, weight=None):
        """Runs the chain; returns weight * output (fused into a final BatchNorm)."""
        for i, layer in enumerate(self.chain):
            last = i == len(self.chain) - 1
            if isinstance(layer, BatchNorm):
                x = layer(x, training=training, weight=weight if last else None)
            elif isinstance(layer, Conv):
                x = layer(x, training=training)
            else:
                x = layer(x)
        if not isinstance(self.chain[-1], BatchNorm):
            x = _weighted(x, weight)
        return x


class ReLU(BuiltLayer):
    def call(self, x):
        return tf.nn.relu(x)


# ---------------------------------------------------------------------------
# Candidate ops (specs/darts.md sect. 1)
# ---------------------------------------------------------------------------

class CandidateOp(BuiltLayer):
    """Base of all candidate ops.

    `call(x, training=False)` maps [N,H,W,C] -> [N,H/s,W/s,C].  Ops that set
    `fuses_weight = True` also take `weight` (a scalar tensor, None for 1) and
    return weight * op(x): the supernet passes each op its softmax(alpha), and
    ops that end with a BatchNorm fold it into the BN scale (no separate
    multiply, and backprop keeps no copy of the output).  For other ops the
    edge multiplies.
    """

    starts_with_relu = False
    fuses_weight = False
    inline_only = False  # Never traced into a function shared by many edges (see MixedOp).
    is_identity = False  # Drop path skips identity ops (eval network).
    is_zero = False      # `none`: the supernet never computes it.

    def __init__(self, channels, stride, affine=False, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.stride = stride
        self.affine = affine


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
        return _weighted(x, weight)


class Pool(CandidateOp):
    """3x3 max or average pool, pad 1; average excludes padding (count_include_pad=False).

    Inside the supernet (`bn_after=True`) a BatchNorm(affine=False) follows.
    """

    fuses_weight = True

    def __init__(self, channels, stride, affine=False, kind="max", bn_after=False, **kwargs):
        super().__init__(channels, stride, affine, **kwargs)
        self.kind = kind
        # oneDNN's max-pool gradient needs the forward's workspace in the same
        # graph; in a separately compiled backward function TF falls back to a
        # kernel ~20x slower (3 s of a 5.4 s search step); the fully mixed
        # supernet keeps it inline, EDAS's edge switch recomputes it
        # (`self_contained_gradients`).
        self.inline_only = kind == "max"
        self.bn = BatchNorm(channels, affine=False) if bn_after else None

    def call(self, x, training=False, weight=None):
        s = self.stride
        if self.kind == "max" and getattr(_PAIRED, "enabled", False):
            y = _max_pool_recomputing(self._max_pool, x)
        elif self.kind == "max":
            y = self._max_pool(x)
        elif s == 1:
            # TF's SAME padding at stride 1 is PyTorch's pad 1 on each side, and
            # TF pools ignore padded pixels, as count_include_pad=False does.
            y = tf.nn.avg_pool2d(x, 3, 1, "SAME")
        else:
            summed = tf.nn.avg_pool2d(_pad(x, 1), 3, s, "VALID") * 9.0
            y = summed / self._valid_counts(x.shape[1], x.shape[2], s)
        if self.bn is not None:
            return self.bn(y, training=training, weight=weight)
        return _weighted(y, weight)

    def _max_pool(self, x):
        if self.stride == 1:  # TF's SAME padding here = PyTorch's pad 1 with -inf.
            return tf.nn.max_pool2d(x, 3, 1, "SAME")
        return tf.nn.max_pool2d(_pad(x, 1, value=-np.inf), 3, self.stride, "VALID")

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

    def __init__(self, channels, stride, affine=False, **kwargs):
        super().__init__(channels, stride, affine, **kwargs)
        self.bn = BatchNorm(channels, affine)
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


def _skip(channels, stride, affine):
    if stride == 1:
        return Identity(channels, stride, affine)
    return FactorizedReduce(channels, stride, affine)


_FACTORIES = {
    "none": lambda c, s, a: Zero(c, s, a),
    # Pools are followed by BN(affine=False) in the supernet (affine=False) only.
    "max_pool_3x3": lambda c, s, a: Pool(c, s, a, kind="max", bn_after=not a),
    "avg_pool_3x3": lambda c, s, a: Pool(c, s, a, kind="avg", bn_after=not a),
    "skip_connect": _skip,
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
# DARTS-PT's space "s5": the DARTS ops without `none` (specs/selection.md 2.1).
register_op_set("darts_pt", DARTS_PRIMITIVES[1:])
# MSR-DARTS's `PRIMITIVES_SPECTRAL`: only the parameterised ops (specs/selection.md 3.3).
register_op_set("msr", DARTS_PRIMITIVES[4:])
