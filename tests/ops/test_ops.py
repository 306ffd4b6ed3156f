"""Tests for keras_darts.ops: shapes, parameter counts, numerics vs NumPy, BatchNorm, registry."""

import math

import numpy as np
import pytest
import tensorflow as tf
from conftest import n_non_trainable, n_trainable, rand

from keras_darts import ops
from keras_darts.space.cells import MixedOp
from keras_darts.space.supernet import SearchNetwork

EPS = ops.BN_EPSILON
ALL_OPS = ops.op_set("darts") + ("sep_conv_7x7", "conv_7x1_1x7")


def np_conv(x, w, stride=(1, 1), pad=(0, 0), dilation=1, depthwise=False):
    """PyTorch-semantics conv (symmetric zero padding) on NHWC input, TF-layout kernel."""
    sh, sw = stride
    ph, pw = pad
    xp = np.pad(x.astype(np.float64), ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    kh, kw = w.shape[:2]
    n, h, wd, _ = xp.shape
    oh = (h - dilation * (kh - 1) - 1) // sh + 1
    ow = (wd - dilation * (kw - 1) - 1) // sw + 1
    out = 0.0
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, i * dilation:i * dilation + sh * (oh - 1) + 1:sh,
                       j * dilation:j * dilation + sw * (ow - 1) + 1:sw, :]
            if depthwise:
                out = out + patch * w[i, j, :, 0]
            else:
                out = out + np.einsum("nhwc,cd->nhwd", patch, w[i, j].astype(np.float64))
    return out


def bn_eval_init(y):
    """BatchNorm in eval mode with freshly initialised statistics (mean 0, var 1)."""
    return y / np.sqrt(1.0 + EPS)


def relu(x):
    return np.maximum(x, 0.0)


def op_input(op, x):
    return tf.nn.relu(x) if op.starts_with_relu else x


# --------------------------------------------------------------------------
# shapes


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", ALL_OPS)
def test_op_output_shape(name, stride, affine):
    c = 4
    op = ops.make_op(name, c, stride, affine)
    x = tf.constant(rand(2, 8, 8, c))
    for training in (True, False):
        y = op(op_input(op, x), training=training)
        assert tuple(y.shape) == (2, 8 // stride, 8 // stride, c), (name, stride, training)
        assert np.all(np.isfinite(y.numpy()))


def test_darts_op_set_order():
    assert ops.op_set("darts") == ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
                                   "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3",
                                   "dil_conv_5x5")


# --------------------------------------------------------------------------
# parameter counts (PyTorch formulas, docs/spaces/darts.md#parameter-counts)


def expected_params(name, c, stride, affine):
    bn = 2 * c if affine else 0
    if name in ("none", "max_pool_3x3", "avg_pool_3x3"):
        return 0
    if name == "skip_connect":
        return 0 if stride == 1 else 2 * (c * (c // 2)) + bn
    if name.startswith("sep_conv_"):
        k = int(name[-1])
        return 2 * (k * k * c + c * c) + 2 * bn
    if name.startswith("dil_conv_"):
        k = int(name[-1])
        return k * k * c + c * c + bn
    if name == "conv_7x1_1x7":
        return 2 * 7 * c * c + bn
    raise AssertionError(name)


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", ALL_OPS)
def test_op_param_count(name, stride, affine):
    c = 6
    op = ops.make_op(name, c, stride, affine)
    assert n_trainable(op) == expected_params(name, c, stride, affine)


def test_pool_bn_in_supernet_has_only_moving_stats():
    c = 6
    for name in ("max_pool_3x3", "avg_pool_3x3"):
        search_op = ops.make_op(name, c, 1, affine=False)
        assert n_trainable(search_op) == 0
        assert n_non_trainable(search_op) == 2 * c  # BN(affine=False) moving mean/var
        eval_op = ops.make_op(name, c, 1, affine=True)
        assert len(eval_op.weights) == 0  # no BN after pooling in the eval network


@pytest.mark.parametrize("affine", [False, True])
def test_preprocess_param_counts(affine):
    cin, c = 10, 6
    bn = 2 * c if affine else 0
    fr = ops.FactorizedReduce(c, affine=affine, in_channels=cin)
    assert n_trainable(fr) == 2 * (cin * c // 2) + bn
    rcb = ops.ReLUConvBN(c, affine=affine, in_channels=cin)
    assert n_trainable(rcb) == cin * c + bn
    x = tf.nn.relu(rand(2, 8, 8, cin))
    assert tuple(fr(x).shape) == (2, 4, 4, c)
    assert tuple(rcb(x).shape) == (2, 8, 8, c)


def test_factorized_reduce_rejects_odd_channels():
    with pytest.raises(ValueError):
        ops.FactorizedReduce(5)


# --------------------------------------------------------------------------
# numerics vs hand-written NumPy references


def np_pool_ref(x, stride, kind):
    n, h, w, c = x.shape
    oh, ow = (h - 1) // stride + 1, (w - 1) // stride + 1
    out = np.zeros((n, oh, ow, c), np.float64)
    for i in range(oh):
        for j in range(ow):
            r0, c0 = i * stride - 1, j * stride - 1
            window = x[:, max(r0, 0):r0 + 3, max(c0, 0):c0 + 3, :]  # real pixels only
            out[:, i, j, :] = (window.max(axis=(1, 2)) if kind == "max"
                               else window.mean(axis=(1, 2)))
    return out


@pytest.mark.parametrize("stride", [1, 2])
def test_avg_pool_count_include_pad_false(stride):
    x = rand(2, 8, 8, 3, shift=2.0)
    op = ops.make_op("avg_pool_3x3", 3, stride, affine=True)  # affine=True: no BN after
    y = op(x).numpy()
    np.testing.assert_allclose(y, np_pool_ref(x, stride, "avg"), rtol=1e-5, atol=1e-5)
    # Corner of a stride-2 pool sees a 2x2 block of real pixels: divided by 4, not 9.
    if stride == 2:
        np.testing.assert_allclose(y[:, 0, 0, :], x[:, :2, :2, :].mean(axis=(1, 2)),
                                   rtol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_max_pool_pads_with_minus_inf(stride):
    x = rand(2, 8, 8, 3, shift=-10.0)  # all negative
    assert x.max() < 0
    op = ops.make_op("max_pool_3x3", 3, stride, affine=True)
    y = op(x).numpy()
    np.testing.assert_array_equal(y, np_pool_ref(x, stride, "max").astype(np.float32))
    assert y.max() < 0  # a zero pad would have produced 0 on the border


def test_search_pool_is_followed_by_batch_norm():
    x = rand(4, 8, 8, 3, scale=3.0, shift=5.0)
    op = ops.make_op("avg_pool_3x3", 3, 2, affine=False)
    y = op(x, training=True).numpy()
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(y.var(axis=(0, 1, 2)), 1.0, atol=1e-3)


@pytest.mark.parametrize("depthwise", [True, False])
@pytest.mark.parametrize("k,size", [(3, 8), (5, 8), (3, 7), (5, 9), (3, 1), (5, 2)])
def test_dilated_conv_stride2_equals_subsampled_stride1(k, size, depthwise):
    """A stride-2 conv dilated by 2 runs as a plain conv of the subsampled input:
    same values and gradients as TF's stride-1 dilated conv subsampled, odd sizes
    included, and the layer's graph holds no dilated or zero-expanded kernel."""
    c = 4
    pad = k - 1  # dilation 2: pad 2 for 3x3, 4 for 5x5
    conv = ops.Conv(c, c, k, stride=2, padding=pad, dilation=2, depthwise=depthwise)
    x = tf.constant(rand(2, size, size, c))
    dy = tf.constant(rand(2, (size + 1) // 2, (size + 1) // 2, c))
    conv(x)

    def reference(x):
        xp = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        full = (tf.nn.depthwise_conv2d(xp, conv.kernel, [1, 1, 1, 1], "VALID", dilations=[2, 2])
                if depthwise else tf.nn.conv2d(xp, conv.kernel, 1, "VALID", dilations=2))
        return full[:, ::2, ::2, :]

    results = []
    for fn in (conv, reference):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(fn(x) * dy)
        results.append([fn(x)] + tape.gradient(loss, [x, conv.kernel]))
    assert results[0][0].shape == dy.shape
    for ours, tfs in zip(*results):
        np.testing.assert_allclose(ours, tfs, rtol=1e-5, atol=1e-4)
    ref = np_conv(x.numpy(), conv.kernel.numpy(), (2, 2), (pad, pad), dilation=2,
                  depthwise=depthwise)
    np.testing.assert_allclose(results[0][0], ref, rtol=1e-5, atol=1e-5)
    graph = tf.function(conv).get_concrete_function(tf.TensorSpec(x.shape)).graph
    ops_in = graph.get_operations()
    assert not {"SpaceToBatchND", "Pad"} & {op.type for op in ops_in}
    assert all(op.get_attr("dilations") == [1, 1, 1, 1] for op in ops_in
               if op.type in ("DepthwiseConv2dNative", "Conv2D"))


@pytest.mark.parametrize("k,size", [(3, 8), (5, 8), (3, 7), (5, 5), (5, 2), (3, 1)])
def test_native_dilated_depthwise_and_its_gradients_equal_tensorflows(k, size):
    """The stride-1 dilated depthwise conv on oneDNN's native kernel, with the
    gradients built from kernels that are right (its own backprop kernels ignore
    the dilation): same values and gradients as TF's SpaceToBatch route, odd
    sizes included (the polyphase split pads them)."""
    from keras_darts.ops.layers import dilated_depthwise_same, native_dilated_depthwise

    if not native_dilated_depthwise():
        pytest.skip("no oneDNN CPU kernels here: Conv takes TF's own route")
    c = 4
    x = tf.constant(rand(2, size, size, c))
    kernel = tf.constant(rand(k, k, c, 1))
    dy = tf.constant(rand(2, size, size, c))
    results = []
    for conv in (dilated_depthwise_same,
                 lambda x, w, rate: tf.nn.depthwise_conv2d(x, w, [1, 1, 1, 1], "SAME",
                                                           dilations=[rate, rate])):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            y = conv(x, kernel, 2)
            loss = tf.reduce_sum(y * dy)
        results.append([y] + tape.gradient(loss, [x, kernel]))
    for ours, tfs in zip(*results):
        np.testing.assert_allclose(ours, tfs, rtol=1e-5, atol=1e-4)
    ref = np_conv(x.numpy(), kernel.numpy(), (1, 1), (k - 1, k - 1), dilation=2, depthwise=True)
    np.testing.assert_allclose(results[0][0], ref, rtol=1e-5, atol=1e-5)
    if size < 5:
        return  # Taps mostly in the padding: the native kernel's error may not show.
    # The check that makes this route necessary: oneDNN's own input gradient is wrong.
    native_grad = tf.raw_ops.DepthwiseConv2dNativeBackpropInput(
        input_sizes=x.shape, filter=kernel, out_backprop=dy, strides=[1, 1, 1, 1],
        padding="SAME", dilations=[1, 2, 2, 1])
    assert not np.allclose(native_grad, results[1][1], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("k,stride,padding,size", [
    (5, 1, "SAME", 8), (5, 1, "SAME", 2), (7, 1, "SAME", 9), (5, 2, "VALID", 12),
    (5, 2, "VALID", 11), (9, 2, "VALID", 13), (3, 1, "SAME", 8)])
def test_depthwise_filter_gradient_from_3x3_blocks_equals_tensorflows(k, stride, padding, size):
    """Kernels above 3x3 get their filter gradient from 3x3 blocks (oneDNN has
    a fast depthwise kernel for 3x3 only): same values, same input gradient."""
    from keras_darts.ops.layers import depthwise_conv

    x = tf.constant(rand(2, size, size, 4))
    kernel = tf.constant(rand(k, k, 4, 1))
    results = []
    for conv in (depthwise_conv, lambda x, w, s, p: tf.nn.depthwise_conv2d(x, w, [1, s, s, 1], p)):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            y = conv(x, kernel, stride, padding)
            loss = tf.reduce_sum(y * tf.sin(y))
        results.append([y] + tape.gradient(loss, [x, kernel]))
    for ours, tfs in zip(*results):
        np.testing.assert_allclose(ours, tfs, rtol=1e-5, atol=1e-4)


def test_depthwise_conv_refuses_same_padding_at_stride_2():
    """SAME at stride 2 pads bottom/right only (not PyTorch's symmetric pad): the
    layers pad explicitly there, and the kernel refuses what it would get wrong."""
    from keras_darts.ops.layers import depthwise_conv

    with pytest.raises(ValueError, match="SAME padding is for stride 1"):
        depthwise_conv(tf.zeros((1, 8, 8, 2)), tf.zeros((5, 5, 2, 1)), 2, "SAME")


def test_pointwise_conv_is_a_matrix_product_with_conv2ds_values():
    from keras_darts.ops.layers import pointwise

    x = tf.constant(rand(2, 5, 5, 6))
    kernel = tf.constant(rand(1, 1, 6, 3))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, kernel])
        ours, theirs = pointwise(x, kernel), tf.nn.conv2d(x, kernel, 1, "VALID")
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    for a, b in zip(tape.gradient(ours, [x, kernel]), tape.gradient(theirs, [x, kernel])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_dilated_conv_layer_uses_the_native_route_where_it_may():
    from keras_darts.ops.layers import native_dilated_depthwise

    conv = ops.Conv(4, 4, 3, stride=1, padding=2, dilation=2, depthwise=True)
    graph = tf.function(conv).get_concrete_function(tf.TensorSpec((2, 8, 8, 4))).graph
    types = {op.type for op in graph.get_operations()}
    assert ("SpaceToBatchND" not in types) == native_dilated_depthwise()


def test_zero_op():
    x = rand(2, 8, 8, 4, shift=3.0)
    for stride in (1, 2):
        op = ops.make_op("none", 4, stride, False)
        y = op(x).numpy()
        assert y.shape == (2, 8 // stride, 8 // stride, 4)
        assert not y.any()
        assert op.is_zero


def test_identity_op():
    x = rand(2, 8, 8, 4)
    op = ops.make_op("skip_connect", 4, 1, False)
    assert op.is_identity
    np.testing.assert_array_equal(op(x).numpy(), x)


@pytest.mark.parametrize("affine", [False, True])
def test_factorized_reduce_numerics(affine):
    cin, c = 5, 4
    fr = ops.FactorizedReduce(c, affine=affine, in_channels=cin)
    x = relu(rand(2, 8, 8, cin))
    y = fr(x, training=False).numpy()
    assert y.shape == (2, 4, 4, c)
    a = np_conv(x, fr.conv_a.kernel.numpy(), (2, 2))
    b = np_conv(x[:, 1:, 1:, :], fr.conv_b.kernel.numpy(), (2, 2))
    assert a.shape == b.shape == (2, 4, 4, c // 2)
    ref = bn_eval_init(np.concatenate([a, b], axis=-1))
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("k", [3, 5])
def test_sep_conv_numerics(k, stride):
    c = 4
    op = ops.make_op(f"sep_conv_{k}x{k}", c, stride, affine=False)
    x = relu(rand(2, 8, 8, c))
    y = op(x, training=False).numpy()
    dw1, pw1, _, _, dw2, pw2, _ = [getattr(layer, "kernel", None) for layer in op.body.chain]
    p = k // 2
    h = np_conv(x, dw1.numpy(), (stride, stride), (p, p), depthwise=True)
    h = bn_eval_init(np_conv(h, pw1.numpy()))
    h = relu(h)
    h = np_conv(h, dw2.numpy(), (1, 1), (p, p), depthwise=True)
    ref = bn_eval_init(np_conv(h, pw2.numpy()))
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("k", [3, 5])
def test_dil_conv_numerics(k, stride):
    c = 4
    op = ops.make_op(f"dil_conv_{k}x{k}", c, stride, affine=False)
    x = relu(rand(2, 8, 8, c))
    y = op(x, training=False).numpy()
    dw, pw, _ = op.body.chain
    h = np_conv(x, dw.kernel.numpy(), (stride, stride), (k - 1, k - 1), dilation=2,
                depthwise=True)
    ref = bn_eval_init(np_conv(h, pw.kernel.numpy()))
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_7x1_1x7_numerics(stride):
    c = 4
    op = ops.make_op("conv_7x1_1x7", c, stride, affine=True)
    x = relu(rand(2, 8, 8, c))
    y = op(x, training=False).numpy()
    h = np_conv(x, op.kernel_a.numpy(), (1, stride), (0, 3))
    h = np_conv(h, op.kernel_b.numpy(), (stride, 1), (3, 0))
    np.testing.assert_allclose(y, bn_eval_init(h), rtol=1e-4, atol=1e-5)


def test_torch_uniform_init_bounds():
    conv = ops.Conv(8, 16, 3)
    bound = 1.0 / math.sqrt(3 * 3 * 8)
    w = conv.kernel.numpy()
    assert np.abs(w).max() <= bound
    assert np.abs(w).max() > 0.8 * bound  # actually spread over the range


# --------------------------------------------------------------------------
# BatchNorm (PyTorch semantics)


def test_batch_norm_training_normalises_with_batch_stats():
    bn = ops.BatchNorm(3, affine=False)
    assert bn.trainable_variables == []
    x = rand(4, 4, 4, 3, scale=2.0, shift=3.0)
    y = bn(x, training=True).numpy()
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=(0, 1, 2)), 1.0, atol=1e-3)
    mean = x.astype(np.float64).mean(axis=(0, 1, 2))
    var = x.astype(np.float64).var(axis=(0, 1, 2))
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + EPS), rtol=1e-4, atol=1e-4)


def test_batch_norm_moving_stats_follow_pytorch():
    bn = ops.BatchNorm(3, affine=False)
    x = rand(4, 4, 4, 3, scale=2.0, shift=3.0)
    bn(x, training=True)
    x64 = x.astype(np.float64)
    batch_mean = x64.mean(axis=(0, 1, 2))
    unbiased_var = x64.reshape(-1, 3).var(axis=0, ddof=1)
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.1 * batch_mean, rtol=1e-5)
    np.testing.assert_allclose(bn.moving_var.numpy(), 0.9 + 0.1 * unbiased_var, rtol=1e-5)
    # A second call: new = 0.9 * old + 0.1 * batch.
    old_mean, old_var = bn.moving_mean.numpy().copy(), bn.moving_var.numpy().copy()
    x2 = rand(4, 4, 4, 3, scale=0.5, shift=-1.0)
    bn(x2, training=True)
    x2 = x2.astype(np.float64)
    np.testing.assert_allclose(bn.moving_mean.numpy(),
                               0.9 * old_mean + 0.1 * x2.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(bn.moving_var.numpy(),
                               0.9 * old_var + 0.1 * x2.reshape(-1, 3).var(axis=0, ddof=1),
                               rtol=1e-5)


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("affine", [False, True])
def test_batch_norm_weight_is_folded_into_scale(affine, training):
    x = rand(4, 3, 3, 3, scale=2.0, shift=1.0)
    plain, weighted = ops.BatchNorm(3, affine), ops.BatchNorm(3, affine)
    if affine:
        for bn in (plain, weighted):
            bn.gamma.assign([2.0, 1.0, -1.0])
            bn.beta.assign([0.5, 1.0, 3.0])
    y = plain(x, training=training).numpy()
    y_w = weighted(x, training=training, weight=tf.constant(0.3)).numpy()
    np.testing.assert_allclose(y_w, 0.3 * y, rtol=1e-5, atol=1e-6)
    # The weight never touches the running statistics.
    np.testing.assert_allclose(weighted.moving_mean.numpy(), plain.moving_mean.numpy())
    np.testing.assert_allclose(weighted.moving_var.numpy(), plain.moving_var.numpy())


def test_factorized_reduce_rejects_odd_sizes():
    fr = ops.FactorizedReduce(4, in_channels=4)
    with pytest.raises(ValueError, match="even height and width"):
        fr(rand(1, 7, 8, 4))


def test_batch_norm_eval_uses_moving_stats_and_does_not_update():
    bn = ops.BatchNorm(3, affine=True)
    assert len(bn.trainable_variables) == 2
    bn.moving_mean.assign([1.0, -2.0, 0.5])
    bn.moving_var.assign([4.0, 0.25, 1.0])
    bn.gamma.assign([2.0, 1.0, -1.0])
    bn.beta.assign([0.0, 1.0, 3.0])
    x = rand(2, 4, 4, 3, shift=1.0)
    y = bn(x, training=False).numpy()
    ref = (x - np.array([1.0, -2.0, 0.5])) / np.sqrt(np.array([4.0, 0.25, 1.0]) + EPS)
    ref = ref * np.array([2.0, 1.0, -1.0]) + np.array([0.0, 1.0, 3.0])
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), np.float32([1.0, -2.0, 0.5]))
    np.testing.assert_array_equal(bn.moving_var.numpy(), np.float32([4.0, 0.25, 1.0]))


# --------------------------------------------------------------------------
# registry


class DoubleOp(ops.CandidateOp):
    """Test op: 2 * x (subsampled at stride 2)."""

    def call(self, x, training=False):
        return 2.0 * x[:, ::self.stride, ::self.stride, :]


TEST_OP = "test_ops_double"
TEST_SET = "test_ops_double_set"
TEST_PRIMITIVES = ("none", "skip_connect", TEST_OP)
if TEST_OP not in ops.registered_ops():
    ops.register_op(TEST_OP)(lambda c, s, a: DoubleOp(c, s, a))
if TEST_SET not in ops.op_sets():
    ops.register_op_set(TEST_SET, TEST_PRIMITIVES)


def test_register_duplicate_op_raises():
    with pytest.raises(ValueError, match="sep_conv_3x3"):
        ops.register_op("sep_conv_3x3")(lambda c, s, a: None)
    with pytest.raises(ValueError):
        ops.register_op(TEST_OP)(lambda c, s, a: None)


def test_register_op_set_errors():
    with pytest.raises(ValueError):
        ops.register_op_set("darts", ("none",))
    with pytest.raises(ValueError, match="not_an_op"):
        ops.register_op_set("test_ops_bad_set", ("none", "not_an_op"))
    assert "test_ops_bad_set" not in ops.op_sets()
    with pytest.raises(KeyError, match="nope_set"):
        ops.op_set("nope_set")


def test_make_unknown_op_raises_key_error():
    with pytest.raises(KeyError, match="nope"):
        ops.make_op("nope", 4, 1, False)


def test_registered_test_op_and_set():
    assert TEST_OP in ops.registered_ops()
    assert ops.op_set(TEST_SET) == TEST_PRIMITIVES
    x = rand(2, 8, 8, 4)
    op = ops.make_op(TEST_OP, 4, 2, False)
    np.testing.assert_array_equal(op(x).numpy(), 2.0 * x[:, ::2, ::2, :])
    mixed = MixedOp(4, 1, TEST_PRIMITIVES)
    y = mixed(tf.constant(x), tf.nn.relu(x), tf.constant([0.2, 0.5, 0.25])).numpy()
    np.testing.assert_allclose(y, 0.5 * x + 0.5 * x, rtol=1e-6)


@pytest.mark.parametrize("primitives", [TEST_SET, TEST_PRIMITIVES])
def test_search_network_with_custom_op_set(primitives):
    net = SearchNetwork(5, channels=4, num_layers=3, num_nodes=2, primitives=primitives,
                        input_shape=(8, 8, 3))
    assert net.primitives == TEST_PRIMITIVES
    assert tuple(net.alpha_normal.shape) == (5, 3)
    assert tuple(net.alpha_reduce.shape) == (5, 3)
    logits = net(tf.constant(rand(2, 8, 8, 3)), training=True)
    assert tuple(logits.shape) == (2, 5)
    assert np.all(np.isfinite(logits.numpy()))
