"""Building-block layers every network here is made of: PyTorch-semantics
BatchNorm and convolution on raw `tf.nn` kernels, PyTorch's initialisers, the
base classes of layers and candidate ops.

Ops are written with raw `tf.nn` kernels on weights made by `add_weight`:
Keras' own Conv/BatchNorm layers made tracing of the 1,100-op supernet several
times slower (docs/tensorflow_notes.md#tracing-and-graph-size), and PyTorch's
symmetric padding needs explicit pads anyway (Keras 'same' pads stride-2 convs
on the bottom/right only).
"""

import contextlib
import functools
import math
import threading

import keras
import numpy as np
import tensorflow as tf

BN_EPSILON = 1e-5  # PyTorch default.
BN_MOMENTUM = 0.1  # PyTorch convention: new = (1 - m) * old + m * batch.

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


def gradients_self_contained():
    """True inside `self_contained_gradients()`."""
    return getattr(_PAIRED, "enabled", False)


def with_local_inputs(gradient_fn, *inputs):
    """gradient_fn (a `tf.custom_gradient` function) on copies of its inputs made
    in the graph being built.  An input may be captured from an enclosing graph
    (a `tf.switch_case` branch's); a gradient closing over the captured tensor
    itself trips cond_v2's gradient code."""
    return gradient_fn(*(tf.identity(t) for t in inputs))


def max_pool_recomputing(pool, x):
    """pool(x), whose gradient re-runs pool(x) next to the gradient kernel."""

    @tf.custom_gradient
    def forward(x):
        def grad(upstream):
            with tf.GradientTape() as tape:
                tape.watch(x)
                again = pool(x)
            return tape.gradient(again, x, output_gradients=upstream)
        return pool(x), grad

    return with_local_inputs(forward, x)


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


def pad_spatial(x, amount, value=0.0):
    if amount == 0:
        return x
    return tf.pad(x, [[0, 0], [amount, amount], [amount, amount], [0, 0]],
                  constant_values=value)


def dilate_kernel(kernel, rate):
    """Inserts rate-1 zeros between the taps of a HW.. kernel (k -> rate*(k-1)+1).

    TF refuses dilation together with stride 2; convolving with the zero-expanded
    kernel at stride 2 is the same map and ~25 % cheaper than a stride-1 dilated
    conv followed by subsampling.  (`Conv` uses it only where the stride differs
    from the dilation; where they are equal, subsampling first is cheaper still.)
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


def dilated_depthwise_same(x, kernel, rate):
    """Stride-1 SAME depthwise conv with dilation `rate` (odd kernel), as
    `tf.nn.depthwise_conv2d(x, kernel, [1]*4, "SAME", dilations=[rate]*2)`.

    That call rearranges x and its result through SpaceToBatch/BatchToSpace
    (1.2 s of a 7 s search step, BUILD_NOTES.md 4.15).  oneDNN's native dilated
    forward kernel is correct and faster, but its two backprop kernels ignore
    the dilation and return wrong numbers without an error (measured on TF
    2.21), so the gradients are built here from kernels that are right: the
    input gradient is the same dilated conv of dy with the kernel rotated by
    180 degrees, the filter gradient a plain filter gradient on the 2x2
    polyphase rearrangement of x and dy.
    """

    @tf.custom_gradient
    def conv(x, kernel):
        y = tf.raw_ops.DepthwiseConv2dNative(input=x, filter=kernel, strides=[1, 1, 1, 1],
                                             padding="SAME", dilations=[1, rate, rate, 1])

        def grad(dy):
            dx = dilated_depthwise_same(dy, tf.reverse(kernel, [0, 1]), rate)
            return dx, _same_filter_grad(_polyphase(x, rate), _polyphase(dy, rate),
                                         kernel.shape[0])
        return y, grad

    return with_local_inputs(conv, x, kernel)


def pointwise(x, kernel):
    """A 1x1 stride-1 conv as one matrix product over all pixels: with oneDNN,
    forward and backward take 15-25 % less time than Conv2D's at 16-64 channels
    (BUILD_NOTES.md 4.15)."""
    shape = tf.concat([tf.shape(x)[:-1], tf.shape(kernel)[-1:]], axis=0)
    y = tf.matmul(tf.reshape(x, [-1, kernel.shape[2]]), kernel[0, 0])
    return tf.reshape(y, shape)


def depthwise_conv(x, kernel, stride, padding):
    """`tf.nn.depthwise_conv2d(x, kernel, [1, s, s, 1], padding)`, except that for
    kernels above 3x3 the filter gradient is assembled from 3x3 ones.

    oneDNN has a depthwise kernel for the 3x3 filter gradient only; a 5x5 one
    runs as a general grouped conv with each channel padded to a block of 16,
    ~10x the time of the 3x3 (9.0 vs 0.8 ms on 64x32x32x16, BUILD_NOTES.md
    4.15).  Tap block (t, u) of the gradient is a 3x3 filter gradient of x
    shifted by (t, u): four 3x3 gradients cover a 5x5 kernel.
    """
    if padding == "SAME" and stride != 1:
        raise ValueError("depthwise_conv: SAME padding is for stride 1 (pad explicitly)")
    k = kernel.shape[0]
    strides = [1, stride, stride, 1]
    if k <= 3:
        return tf.nn.depthwise_conv2d(x, kernel, strides, padding)

    @tf.custom_gradient
    def conv(x, kernel):
        y = tf.raw_ops.DepthwiseConv2dNative(input=x, filter=kernel, strides=strides,
                                             padding=padding)

        def grad(dy):
            dx = tf.raw_ops.DepthwiseConv2dNativeBackpropInput(
                input_sizes=tf.shape(x), filter=kernel, out_backprop=dy, strides=strides,
                padding=padding)
            if padding == "SAME":  # Stride 1 (checked above).
                return dx, _same_filter_grad(x, dy, k)
            return dx, _filter_grad_by_3x3(x, dy, k, stride)
        return y, grad

    return with_local_inputs(conv, x, kernel)


def _same_filter_grad(x, dy, k):
    """The kxk filter gradient of a stride-1 SAME depthwise conv."""
    if k <= 3:
        return tf.raw_ops.DepthwiseConv2dNativeBackpropFilter(
            input=x, filter_sizes=[k, k, x.shape[-1], 1], out_backprop=dy,
            strides=[1, 1, 1, 1], padding="SAME")
    return _filter_grad_by_3x3(pad_spatial(x, (k - 1) // 2), dy, k, 1)


def _filter_grad_by_3x3(padded, dy, k, stride):
    """The kxk depthwise filter gradient of a VALID conv of `padded`, from 3x3
    VALID filter gradients on shifted windows of it."""
    starts = sorted({min(t, k - 3) for t in range(0, k, 3)})  # 5x5: taps 0-2 and 2-4.
    span_h, span_w = (stride * (d - 1) + 3 for d in dy.shape[1:3])

    def pieces(blocks, axis):
        """The blocks along `axis` without the taps an earlier block already has."""
        covered, kept = 0, []
        for t, block in zip(starts, blocks):
            kept.append(block[covered - t:] if axis == 0 else block[:, covered - t:])
            covered = t + 3
        return tf.concat(kept, axis=axis)

    rows = []
    for t in starts:
        blocks = [tf.raw_ops.DepthwiseConv2dNativeBackpropFilter(
            input=padded[:, t:t + span_h, u:u + span_w], filter_sizes=[3, 3, padded.shape[-1], 1],
            out_backprop=dy, strides=[1, stride, stride, 1], padding="VALID") for u in starts]
        rows.append(pieces(blocks, axis=1))
    return pieces(rows, axis=0)


def _polyphase(x, rate):
    """x with its rate x rate phases moved into the batch (zero-padded at the end
    to a multiple of `rate`): a dilated SAME conv of x is a plain SAME conv of
    each phase."""
    end = tf.math.floormod(-tf.shape(x)[1:3], rate)
    return tf.space_to_batch(x, [rate, rate], tf.stack([tf.zeros_like(end), end], axis=1))


@functools.cache
def native_dilated_depthwise():
    """True where `dilated_depthwise_same` may run: TF's oneDNN CPU kernels
    (the default on x86), no GPU (whose depthwise kernel has no dilation)."""
    from tensorflow.python.util import _pywrap_util_port  # No public switch query.

    return _pywrap_util_port.IsMklEnabled() and not tf.config.list_physical_devices("GPU")


def weighted(y, weight):
    return y if weight is None else y * weight


# ---------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------

class BatchNorm(BuiltLayer):
    """BatchNorm with PyTorch semantics (eps 1e-5 unless given, momentum 0.1, unbiased running var).

    In training it normalises with batch statistics.  Under a multi-replica
    tf.distribute strategy the statistics are all-reduced across replicas, so a
    step on N replicas equals a step on one device with the same global batch.
    """

    def __init__(self, channels, affine, epsilon=BN_EPSILON, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.affine = affine
        self.epsilon = epsilon
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
                epsilon=self.epsilon, is_training=False)
            return y
        replica_ctx = tf.distribute.get_replica_context()
        if replica_ctx is not None and replica_ctx.num_replicas_in_sync > 1:
            return self._synchronised(x, scale, offset, replica_ctx)
        # One fused kernel normalises and returns the updated running averages
        # (variance Bessel-corrected, as PyTorch stores it).
        y, new_mean, new_var = tf.compat.v1.nn.fused_batch_norm(
            x, scale, offset, mean=self.moving_mean, variance=self.moving_var,
            epsilon=self.epsilon, is_training=True, exponential_avg_factor=BN_MOMENTUM)
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
        y = tf.nn.batch_normalization(x, mean, var, offset, scale, self.epsilon)
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
        # spectral normalisation, keras_darts/ops/spectral_norm.py); None: W as it is.
        self.spectral_norm = None

    def call(self, x, training=False):
        kernel = tf.convert_to_tensor(self.kernel)
        if self.spectral_norm is not None:
            kernel = self.spectral_norm(kernel, training=training)
        k, stride, dilation, p = self.kernel_size, self.stride, self.dilation, self.padding
        if stride > 1 and dilation == stride and k % 2 == 1 and p == dilation * (k - 1) // 2:
            # Every tap of a stride-s conv dilated by s reads a pixel whose row and
            # column are multiples of s: the same map is a plain stride-1 conv of the
            # subsampled input, with 1/s^2 of the work (BUILD_NOTES.md 4.17).
            x, stride, dilation, p = x[:, ::stride, ::stride], 1, 1, (k - 1) // 2
        if stride == 1 and k % 2 == 1 and p == dilation * (k - 1) // 2:
            # Symmetric "same" padding is TF's SAME at stride 1.  Explicit padding
            # would send depthwise gradients to a generic kernel 2-3x slower than oneDNN's.
            padding = "SAME"
        else:
            if dilation > 1:
                kernel, dilation = dilate_kernel(kernel, dilation), 1
            x, padding = pad_spatial(x, p), "VALID"  # Measured faster than explicit padding.
        if not self.depthwise and k == 1 and stride == 1 and p == 0:
            return pointwise(x, kernel)
        strides = [1, stride, stride, 1]
        if not self.depthwise:
            return tf.nn.conv2d(x, kernel, strides, padding, dilations=dilation)
        if dilation > 1 and native_dilated_depthwise():  # Stride 1, SAME.
            return dilated_depthwise_same(x, kernel, dilation)
        if dilation == 1:
            return depthwise_conv(x, kernel, stride, padding)
        return tf.nn.depthwise_conv2d(x, kernel, strides, padding, dilations=[dilation, dilation])


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
            x = weighted(x, weight)
        return x


class ReLU(BuiltLayer):
    def call(self, x):
        return tf.nn.relu(x)



class Linear(BuiltLayer):
    """Dense layer with PyTorch's default init (weights and bias U(+-1/sqrt(fan_in)))."""

    def __init__(self, in_features, out_features, **kwargs):
        super().__init__(**kwargs)
        self.in_features = in_features
        self.out_features = out_features
        init = TorchUniform(in_features)
        self.kernel = self.add_weight(shape=(in_features, out_features),
                                      initializer=init, name="kernel")
        self.bias = self.add_weight(shape=(out_features,), initializer=init, name="bias")

    def call(self, x):
        return tf.matmul(x, self.kernel) + self.bias


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

