"""Spectral normalisation of a convolution, as MSR-DARTS trains its candidate ops.

docs/methods/msr.md#spectral-normalisation: every conv inside a candidate op divides its kernel W
by sigma, the largest singular value of the convolution seen as a linear map
on a zero-padded input of a fixed size (H, W) (stride and dilation included).
sigma is estimated by power iterations that alternate the conv F and its
transpose T (TF's conv2d / conv2d_transpose and their depthwise forms):

    v = T(u) / |T(u)|,  u = F(v) / |F(v)|          (5 times)
    sigma = u . F(v; W)        (u, v constants, differentiable w.r.t. W)
    kernel used = W / (sigma + 1e-5)     (an exact rescale, not a clip)

The vectors are layer state (checkpointed).  Pointwise convs continue from
the stored u; depthwise convs restart from a fresh random u in every call, as
the reference does, drawn with a stateless RNG keyed by a per-conv seed and
draw counter that are state too, so a resumed run draws the same numbers.

Eval mode (the reference only defines train mode; our choice,
docs/methods/msr.md#train-and-eval-mode): the
kernel is normalised too (the ops were trained with normalised kernels), by
the same iterations started from the stored u, but nothing is stored and no
random numbers are drawn: evaluating changes no state.
"""

import numpy as np
import tensorflow as tf

from keras_darts.infra import tracing
from keras_darts.ops import layers as ops

POWER_ITERATIONS = 5
SIGMA_EPSILON = 1e-5


def conv_output_size(size, conv):
    """(H, W) that `conv` (an ops.Conv) outputs for an input of `size`."""
    span = conv.dilation * (conv.kernel_size - 1) + 1
    return tuple((n + 2 * conv.padding - span) // conv.stride + 1 for n in size)


class SpectralNorm(ops.BuiltLayer):
    """Divides a conv's kernel by the conv's largest singular value.

    Args:
      conv: the `ops.Conv` to normalise (only its geometry is read; the conv
        calls this layer with its kernel, see `ops.Conv.spectral_norm`).
      input_size: (H, W) of the zero-padded input the power iteration runs on.
      rerandomise: restart every train-mode call from a random vector (the
        reference does so for depthwise convs) instead of the stored one.

    Example:
      conv.spectral_norm = SpectralNorm(conv, (32, 32), rerandomise=conv.depthwise)
      y = conv(x, training=True)        # conv with W / sigma(W)
    """

    def __init__(self, conv, input_size, rerandomise=False, **kwargs):
        super().__init__(**kwargs)
        self.in_channels = conv.in_channels
        self.depthwise = conv.depthwise
        self.kernel_size = conv.kernel_size
        self.stride = conv.stride
        self.padding = conv.padding
        self.dilation = conv.dilation
        self.input_size = tuple(int(n) for n in input_size)
        self.rerandomise = rerandomise
        output_size = conv_output_size(self.input_size, conv)
        if min(output_size) < 1:
            raise ValueError(f"input size {self.input_size} is too small for {conv.name}")
        # Replicas compute identical values (same kernel, same seed): keep one copy.
        state = dict(trainable=False, aggregation="only_first_replica")
        self.u = self.add_weight(shape=(1,) + output_size + (conv.out_channels,),
                                 initializer=ops.NumpyNormal(1.0), name="u", **state)
        self.v = self.add_weight(shape=(1,) + self.input_size + (conv.in_channels,),
                                 initializer="zeros", name="v", **state)
        if rerandomise:
            seed = np.array([np.random.randint(2**31 - 1), 0], np.int64)
            # [seed, number of random draws so far]: the key of the next draw.
            self.rng_state = self.add_weight(shape=(2,), dtype="int64", name="rng_state",
                                             initializer=lambda shape, dtype=None: seed,
                                             **state)

    def call(self, kernel, training=False):
        """W / (sigma + 1e-5) after the power iteration; only train mode stores the
        vectors (and draws the random start of depthwise convs)."""
        random_start = training and self.rerandomise
        if random_start:
            start = tf.convert_to_tensor(self.rng_state)
            self.rng_state.assign(start + tf.constant([0, 1], tf.int64))
        else:
            start = tf.convert_to_tensor(self.u)
        # u, v are constants for backprop (only the kernel is differentiated):
        # with its inputs and outputs stopped, the iteration never enters a
        # gradient graph.
        u, v, sigma_grad = [tf.stop_gradient(t) for t in self._shared_iterate(
            tf.stop_gradient(kernel), tf.stop_gradient(start), random_start)]
        if training:
            self.u.assign(u)
            self.v.assign(v)
        # sigma = u . F(v; W) is linear in W: the sum of W times its gradient.
        sigma = tf.reduce_sum(kernel * sigma_grad)
        return kernel / (sigma + SIGMA_EPSILON)

    # -- the linear map and its transpose -------------------------------------
    def power_iteration(self, kernel, u):
        """(u, v) after POWER_ITERATIONS steps from the output-space vector u."""
        u, v, _ = self._iterate(kernel, u, random_start=False)
        return u, v

    def sigma(self, kernel, u, v):
        """u . F(v; kernel): the estimate of the largest singular value."""
        return tf.reduce_sum(u * self.apply(v, kernel))

    def apply(self, x, kernel):
        """F: the conv on x [N, H, W, C_in], zero padding as the op runs it."""
        return self._apply(x, self._expanded(kernel))

    def transpose(self, y, kernel):
        """T = F^T: maps an output-space y back to the [N, H, W, C_in] input space."""
        return self._transpose(y, self._expanded(kernel))

    def _shared_iterate(self, kernel, start, random_start):
        """`_iterate` through one traced function per conv geometry: a supernet
        edge holds ~12 normalised convs, and the graph's size, not the kernels,
        sets the time to the first step (keras_darts/infra/tracing.py)."""
        if not tracing.can_share():
            return self._iterate(kernel, start, random_start)
        key = (SpectralNorm, self.in_channels, tuple(self.u.shape), self.depthwise,
               self.kernel_size, self.stride, self.padding, self.dilation, self.input_size,
               random_start)
        return tracing.call_shared(self, key, SpectralNorm._iterate, kernel, start,
                                   random_start, constant_variables=True)

    def _iterate(self, kernel, start, random_start):
        """(u, v, d sigma / d kernel) after POWER_ITERATIONS steps from `start`:
        the output-space u, or with `random_start` the seed of a random one."""
        if random_start:
            u = tf.random.stateless_normal(self.u.shape, seed=start)
        else:
            u = start
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(kernel)
            expanded = self._expanded(kernel)
        for _ in range(POWER_ITERATIONS):
            v = tf.math.l2_normalize(self._transpose(u, expanded))
            u = tf.math.l2_normalize(self._apply(v, expanded))
        with tape:
            sigma = tf.reduce_sum(u * self._apply(v, expanded))
        return u, v, tape.gradient(sigma, kernel)

    # Below, dilated kernels come already zero-expanded (`_expanded`).
    def _apply(self, x, kernel):
        strides = [1, self.stride, self.stride, 1]
        x = ops.pad_spatial(x, self.padding)
        if self.depthwise:
            return tf.nn.depthwise_conv2d(x, kernel, strides, "VALID")
        return tf.nn.conv2d(x, kernel, strides, "VALID")

    def _transpose(self, y, kernel):
        strides = [1, self.stride, self.stride, 1]
        (h, w), p = self.input_size, self.padding
        padded = [y.shape[0], h + 2 * p, w + 2 * p, self.in_channels]
        if self.depthwise:
            x = tf.nn.depthwise_conv2d_backprop_input(padded, kernel, y, strides, "VALID")
        else:
            x = tf.nn.conv2d_transpose(y, kernel, padded, strides, "VALID")
        return x[:, p:p + h, p:p + w, :]  # The adjoint of zero padding crops.

    def _expanded(self, kernel):
        return ops.dilate_kernel(kernel, self.dilation) if self.dilation > 1 else kernel
