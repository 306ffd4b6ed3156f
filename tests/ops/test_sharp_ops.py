"""Tests for keras_darts.ops.sharp_ops: sharpDARTS's op family "sharp" (SharpSepConv,
its op table and op sets) against NumPy references and the sharpDARTS spec."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import n_non_trainable, n_trainable, rand

from keras_darts import ops
from keras_darts.infra import tracing
from keras_darts.space.cells import MixedOp
from keras_darts.space.supernet import SearchNetwork

EPS = ops.BN_EPSILON
SHARP = "sharp"

# The spec's table of SharpSepConv ops: name -> (kernel, dilation, c_mid(C, mid_channels)).
SEP_SPEC = {
    "sep_conv_3x3": (3, 1, lambda c, m: c),
    "sep_conv_5x5": (5, 1, lambda c, m: c),
    "sep_conv_7x7": (7, 1, lambda c, m: c),
    "dil_conv_3x3": (3, 2, lambda c, m: c),
    "dil_conv_5x5": (5, 2, lambda c, m: c),
    "flood_conv_3x3": (3, 1, lambda c, m: 4 * c),
    "flood_conv_5x5": (5, 1, lambda c, m: 4 * c),
    "dil_flood_conv_3x3": (3, 2, lambda c, m: 4 * c),
    "choke_conv_3x3": (3, 1, lambda c, m: m),
    "dil_choke_conv_3x3": (3, 2, lambda c, m: m),
}
OTHER_OPS = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "conv_7x1_1x7")
SHARP_OPS = OTHER_OPS + tuple(SEP_SPEC)
DEFAULT_CHOKE = 32  # The reference search's fixed choke width.

SET_ORDERS = {
    "sharpsep_darts": ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
                       "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"),
    "sharp": ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3",
              "flood_conv_3x3", "dil_flood_conv_3x3", "choke_conv_3x3",
              "dil_choke_conv_3x3"),
    "sharper": ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
                "sep_conv_5x5", "sep_conv_7x7", "dil_conv_3x3", "dil_conv_5x5",
                "flood_conv_3x3", "flood_conv_5x5", "dil_flood_conv_3x3"),
}


def relu(x):
    return np.maximum(x, 0.0)


def op_input(op, x):
    return tf.nn.relu(x) if op.starts_with_relu else x


# --------------------------------------------------------------------------
# NumPy references


def np_conv(x, w, stride=1, pad=0, dilation=1, depthwise=False):
    """PyTorch-semantics conv (symmetric zero padding) on NHWC input, TF-layout kernel."""
    xp = np.pad(x.astype(np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh, kw = w.shape[:2]
    _, h, wd, _ = xp.shape
    oh = (h - dilation * (kh - 1) - 1) // stride + 1
    ow = (wd - dilation * (kw - 1) - 1) // stride + 1
    out = 0.0
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, i * dilation:i * dilation + stride * (oh - 1) + 1:stride,
                       j * dilation:j * dilation + stride * (ow - 1) + 1:stride, :]
            if depthwise:
                out = out + patch * w[i, j, :, 0].astype(np.float64)
            else:
                out = out + np.einsum("nhwc,cd->nhwd", patch, w[i, j].astype(np.float64))
    return out


def np_bn(y, training, gamma=None, beta=None, eps=EPS):
    """BatchNorm: batch statistics (biased variance) in training, else the initial
    moving statistics (mean 0, var 1)."""
    if training:
        mean, var = y.mean(axis=(0, 1, 2)), y.var(axis=(0, 1, 2))
    else:
        mean, var = 0.0, 1.0
    out = (y - mean) / np.sqrt(var + eps)
    if gamma is not None:
        out = out * gamma + beta
    return out


def np_sharp_sep(x, kernels, k, stride, dilation, training, bns=(None, None)):
    """The spec's SharpSepConv after its leading ReLU: dw kxk (stride, dilation,
    pad d(k-1)/2), pw 1x1 -> c_mid, BN, ReLU, dw kxk (stride 1, dilation 1,
    pad (k-1)/2), pw 1x1 -> C_out, BN."""
    dw1, pw1, dw2, pw2 = kernels
    (g1, b1), (g2, b2) = [(None, None) if bn is None else bn for bn in bns]
    h = np_conv(x, dw1, stride, dilation * (k - 1) // 2, dilation, depthwise=True)
    h = np_bn(np_conv(h, pw1), training, g1, b1)
    h = relu(h)
    h = np_conv(h, dw2, 1, (k - 1) // 2, 1, depthwise=True)
    return np_bn(np_conv(h, pw2), training, g2, b2)


def np_avg_pool_counting_pad(x, stride):
    """3x3 average pool, zero pad 1, every window divided by 9."""
    xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    n, h, w, c = x.shape
    oh, ow = (h - 1) // stride + 1, (w - 1) // stride + 1
    out = np.zeros((n, oh, ow, c))
    for i in range(oh):
        for j in range(ow):
            out[:, i, j] = xp[:, i * stride:i * stride + 3, j * stride:j * stride + 3].sum(
                axis=(1, 2)) / 9.0
    return out


def np_max_pool(x, stride):
    xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)),
                constant_values=-np.inf)
    n, h, w, c = x.shape
    oh, ow = (h - 1) // stride + 1, (w - 1) // stride + 1
    out = np.zeros((n, oh, ow, c))
    for i in range(oh):
        for j in range(ow):
            out[:, i, j] = xp[:, i * stride:i * stride + 3, j * stride:j * stride + 3].max(
                axis=(1, 2))
    return out


def sep_kernels(op):
    """The four conv kernels of a SharpSepConv's chain, in order."""
    convs = [layer for layer in op.body.chain if isinstance(layer, ops.Conv)]
    assert len(convs) == 4
    return [conv.kernel.numpy() for conv in convs]


def sep_bns(op):
    bns = [layer for layer in op.body.chain if isinstance(layer, ops.BatchNorm)]
    assert len(bns) == 2
    return bns


# --------------------------------------------------------------------------
# SharpSepConv numerics


# (k, stride, dilation, c_in, c_out, c_mid)
SEP_CASES = [
    (3, 1, 1, 4, 4, 6),
    (3, 2, 1, 4, 4, 2),
    (3, 1, 2, 3, 5, 8),
    (5, 2, 2, 4, 4, 7),
    (5, 1, 1, 2, 6, 3),
]


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("k,stride,dilation,c_in,c_out,c_mid", SEP_CASES)
def test_sharp_sep_conv_matches_numpy(k, stride, dilation, c_in, c_out, c_mid, training):
    op = ops.SharpSepConv(c_out, stride, affine=False, kernel_size=k, dilation=dilation,
                          mid_channels=c_mid, in_channels=c_in)
    assert op.starts_with_relu  # The cell rectifies the input once for all such ops.
    # An unrectified input: the op itself starts at the depthwise conv.
    x = rand(3, 8, 8, c_in, shift=0.3)
    y = op(tf.constant(x), training=training).numpy()
    assert y.shape == (3, 8 // stride, 8 // stride, c_out)
    ref = np_sharp_sep(x, sep_kernels(op), k, stride, dilation, training)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=2e-4 if training else 1e-5)


@pytest.mark.parametrize("k,stride,dilation", [(3, 2, 2), (5, 1, 2)])
def test_sharp_sep_conv_affine_eval_matches_numpy(k, stride, dilation):
    c, c_mid = 4, 6
    op = ops.SharpSepConv(c, stride, affine=True, kernel_size=k, dilation=dilation,
                          mid_channels=c_mid)
    bn_params = []
    for bn in sep_bns(op):
        gamma, beta = rand(bn.channels, shift=1.0), rand(bn.channels)
        bn.gamma.assign(gamma)
        bn.beta.assign(beta)
        bn_params.append((gamma, beta))
    x = rand(2, 8, 8, c)
    y = op(tf.constant(x), training=False).numpy()
    ref = np_sharp_sep(x, sep_kernels(op), k, stride, dilation, False, bns=bn_params)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)


# (name, stride, mid_channels option or None)
MADE_CASES = [
    ("sep_conv_3x3", 2, None),
    ("sep_conv_7x7", 1, None),
    ("dil_conv_3x3", 2, None),
    ("dil_conv_5x5", 1, None),
    ("flood_conv_5x5", 2, None),
    ("dil_flood_conv_3x3", 2, None),
    ("choke_conv_3x3", 1, 6),
    ("dil_choke_conv_3x3", 2, 3),
]


@pytest.mark.parametrize("name,stride,mid", MADE_CASES)
def test_sharp_family_ops_match_spec_numpy(name, stride, mid):
    """Each op of the table computes the spec's SharpSepConv with its (k, d, c_mid)."""
    c = 4
    options = {} if mid is None else {"mid_channels": mid}
    op = ops.make_op(name, c, stride, False, family=SHARP, **options)
    k, dilation, c_mid = SEP_SPEC[name]
    c_mid = c_mid(c, DEFAULT_CHOKE if mid is None else mid)
    kernels = sep_kernels(op)
    assert kernels[1].shape == (1, 1, c, c_mid)
    x = relu(rand(2, 8, 8, c))
    y = op(tf.constant(x), training=True).numpy()
    ref = np_sharp_sep(x, kernels, k, stride, dilation, True)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=2e-4)


# --------------------------------------------------------------------------
# every op of the family: shapes, parameter counts, layer structure


def expected_params(name, c, stride, mid=DEFAULT_CHOKE):
    """Trainable parameters with affine=True (spec formulas)."""
    if name in ("none", "max_pool_3x3", "avg_pool_3x3"):
        return 0
    if name == "skip_connect":
        return 0 if stride == 1 else 2 * c * (c // 2) + 2 * c
    if name == "conv_7x1_1x7":
        return 2 * 7 * c * c + 2 * c
    k, _, c_mid = SEP_SPEC[name]
    m = c_mid(c, mid)
    return k * k * c + c * m + 2 * m + k * k * m + m * c + 2 * c


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", SHARP_OPS)
def test_sharp_op_shape_and_param_count(name, stride):
    c = 4
    x = tf.constant(rand(2, 8, 8, c))
    for affine in (True, False):
        op = ops.make_op(name, c, stride, affine, family=SHARP)
        for training in (True, False):
            y = op(op_input(op, x), training=training)
            assert tuple(y.shape) == (2, 8 // stride, 8 // stride, c), (name, affine, training)
            assert np.all(np.isfinite(y.numpy()))
        expected = (expected_params if affine else _no_bn_params)(name, c, stride)
        assert n_trainable(op) == expected, (name, affine)


def _no_bn_params(name, c, stride, mid=DEFAULT_CHOKE):
    """The trainable parameters without BN's affine scale/offset."""
    if name in ("none", "max_pool_3x3", "avg_pool_3x3"):
        return 0
    if name == "skip_connect":
        return 0 if stride == 1 else 2 * c * (c // 2)
    if name == "conv_7x1_1x7":
        return 2 * 7 * c * c
    k, _, c_mid = SEP_SPEC[name]
    m = c_mid(c, mid)
    return k * k * c + c * m + k * k * m + m * c


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", tuple(SEP_SPEC))
def test_sharp_sep_layer_structure(name, stride):
    """Two depthwise-separable stages; only the first depthwise conv is strided and
    dilated; no conv has a bias (every op's weights are the kernels and BN's)."""
    c = 4
    k, dilation, c_mid = SEP_SPEC[name]
    m = c_mid(c, DEFAULT_CHOKE)
    op = ops.make_op(name, c, stride, True, family=SHARP)
    assert isinstance(op, ops.SharpSepConv)
    chain = op.body.chain
    kinds = [type(layer) for layer in chain]
    assert kinds == [ops.Conv, ops.Conv, ops.BatchNorm, ops.ReLU, ops.Conv, ops.Conv,
                     ops.BatchNorm]
    dw1, pw1, bn1, _, dw2, pw2, bn2 = chain
    assert (dw1.depthwise, dw1.kernel.shape, dw1.stride, dw1.dilation, dw1.padding) == (
        True, (k, k, c, 1), stride, dilation, dilation * (k - 1) // 2)
    assert (pw1.depthwise, pw1.kernel.shape, pw1.stride) == (False, (1, 1, c, m), 1)
    assert bn1.channels == m
    assert (dw2.depthwise, dw2.kernel.shape, dw2.stride, dw2.dilation, dw2.padding) == (
        True, (k, k, m, 1), 1, 1, (k - 1) // 2)
    assert (pw2.depthwise, pw2.kernel.shape, pw2.stride) == (False, (1, 1, m, c), 1)
    assert bn2.channels == c
    # Kernels and BN scale/offset only: no bias anywhere.
    assert len(op.trainable_variables) == 4 + 2 * 2


@pytest.mark.parametrize("stride", [1, 2])
def test_skip_none_and_conv7x1_of_sharp_family(stride):
    c = 4
    x = rand(2, 8, 8, c)
    skip = ops.make_op("skip_connect", c, stride, True, family=SHARP)
    if stride == 1:
        assert skip.is_identity
        np.testing.assert_array_equal(skip(x).numpy(), x)
    else:
        assert isinstance(skip, ops.FactorizedReduce)
    none = ops.make_op("none", c, stride, True, family=SHARP)
    assert none.is_zero
    y = none(x).numpy()
    assert y.shape == (2, 8 // stride, 8 // stride, c) and not y.any()

    conv = ops.make_op("conv_7x1_1x7", c, stride, True, family=SHARP)
    assert conv.bn.epsilon == pytest.approx(1e-3)
    assert ops.make_op("conv_7x1_1x7", c, stride, True).bn.epsilon == pytest.approx(EPS)
    xr = relu(x)
    # 1x7 with stride (1, s), pad (0, 3); then 7x1 with stride (s, 1), pad (3, 0).
    xp = np.pad(xr.astype(np.float64), ((0, 0), (0, 0), (3, 3), (0, 0)))
    h = sum(np.einsum("nhwc,cd->nhwd", xp[:, :, j:j + 8:1, :], conv.kernel_a.numpy()[0, j])
            for j in range(7))[:, :, ::stride]
    hp = np.pad(h, ((0, 0), (3, 3), (0, 0), (0, 0)))
    h = sum(np.einsum("nhwc,cd->nhwd", hp[:, i:i + 8, :, :], conv.kernel_b.numpy()[i, 0])
            for i in range(7))[:, ::stride]
    y = conv(tf.constant(xr), training=False).numpy()
    np.testing.assert_allclose(y, h / np.sqrt(1.0 + 1e-3), rtol=1e-4, atol=1e-5)
    assert not np.allclose(y, h / np.sqrt(1.0 + EPS), rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------
# pools


@pytest.mark.parametrize("stride", [1, 2])
def test_sharp_avg_pool_counts_padding(stride):
    ones = np.ones((1, 8, 8, 2), np.float32)
    sharp = ops.make_op("avg_pool_3x3", 2, stride, True, family=SHARP)
    y = sharp(ones).numpy()[0, :, :, 0]
    n = 8 // stride
    assert y.shape == (n, n)
    # Stride 1: all four borders pad; stride 2: only the top and left ones.
    corners = [(0, 0)] + ([(0, n - 1), (n - 1, 0), (n - 1, n - 1)] if stride == 1 else [])
    for i, j in corners:
        np.testing.assert_allclose(y[i, j], 4.0 / 9.0, rtol=1e-6)
    np.testing.assert_allclose(y[0, 1:n - 1], 6.0 / 9.0, rtol=1e-6)
    np.testing.assert_allclose(y[1:n - 1, 0], 6.0 / 9.0, rtol=1e-6)
    np.testing.assert_allclose(y[1:n - 1, 1:n - 1], 1.0, rtol=1e-6)
    # The DARTS family's excludes the padding: 1 everywhere.
    darts = ops.make_op("avg_pool_3x3", 2, stride, True)
    np.testing.assert_allclose(darts(ones).numpy(), 1.0, rtol=1e-6)
    # A random image against the NumPy reference.
    x = rand(2, 8, 8, 3, shift=1.0)
    op = ops.make_op("avg_pool_3x3", 3, stride, True, family=SHARP)
    np.testing.assert_allclose(op(x).numpy(), np_avg_pool_counting_pad(x, stride),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("stride", [1, 2])
def test_sharp_max_pool_matches_numpy(stride):
    x = rand(2, 8, 8, 3, shift=-10.0)  # All negative: a zero pad would show.
    op = ops.make_op("max_pool_3x3", 3, stride, True, family=SHARP)
    np.testing.assert_array_equal(op(x).numpy(), np_max_pool(x, stride).astype(np.float32))


@pytest.mark.parametrize("name", ["max_pool_3x3", "avg_pool_3x3"])
def test_sharp_pools_have_bn_only_in_supernet(name):
    c = 3
    search_op = ops.make_op(name, c, 1, False, family=SHARP)
    assert isinstance(search_op.bn, ops.BatchNorm) and not search_op.bn.affine
    assert n_trainable(search_op) == 0
    assert n_non_trainable(search_op) == 2 * c
    x = rand(4, 8, 8, c, scale=3.0, shift=5.0)
    y = search_op(x, training=True).numpy()
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(y.var(axis=(0, 1, 2)), 1.0, atol=1e-3)
    eval_op = ops.make_op(name, c, 1, True, family=SHARP)
    assert eval_op.bn is None
    assert len(eval_op.weights) == 0


# --------------------------------------------------------------------------
# the family's registry entries and options


def test_sharp_family_registered_ops():
    assert SHARP in ops.op_families()
    assert set(ops.registered_ops(SHARP)) == set(SHARP_OPS)
    assert "dil_flood_conv_5x5" not in ops.registered_ops(SHARP)
    with pytest.raises(KeyError, match="dil_flood_conv_5x5"):
        ops.make_op("dil_flood_conv_5x5", 4, 1, True, family=SHARP)
    assert ops.family(SHARP).options == {"mid_channels": DEFAULT_CHOKE}


@pytest.mark.parametrize("name", ["choke_conv_3x3", "dil_choke_conv_3x3"])
def test_choke_ops_honour_mid_channels(name):
    c = 8
    default = ops.make_op(name, c, 1, True, family=SHARP)
    assert default.mid_channels == DEFAULT_CHOKE
    assert n_trainable(default) == expected_params(name, c, 1, DEFAULT_CHOKE)
    op = ops.make_op(name, c, 1, True, family=SHARP, mid_channels=16)
    assert op.mid_channels == 16
    assert sep_kernels(op)[1].shape == (1, 1, c, 16)
    assert n_trainable(op) == expected_params(name, c, 1, 16)
    # Only choke ops take the option; the others keep their own middle width.
    flood = ops.make_op("flood_conv_3x3", c, 1, True, family=SHARP, mid_channels=16)
    assert flood.mid_channels == 4 * c
    sep = ops.make_op("sep_conv_3x3", c, 1, True, family=SHARP, mid_channels=16)
    assert sep.mid_channels == c


def test_unknown_family_option_raises():
    with pytest.raises(ValueError, match="mid_channels"):
        ops.make_op("sep_conv_3x3", 4, 1, True, family="darts", mid_channels=8)
    with pytest.raises(ValueError, match="width"):
        ops.make_op("choke_conv_3x3", 4, 1, True, family=SHARP, width=8)


def test_same_name_builds_different_layers_per_family():
    c = 4
    darts_sep = ops.make_op("sep_conv_3x3", c, 1, True)
    sharp_sep = ops.make_op("sep_conv_3x3", c, 1, True, family=SHARP)
    assert isinstance(darts_sep, ops.SepConv) and not isinstance(darts_sep, ops.SharpSepConv)
    assert isinstance(sharp_sep, ops.SharpSepConv)
    darts_dil = ops.make_op("dil_conv_3x3", c, 1, True)
    sharp_dil = ops.make_op("dil_conv_3x3", c, 1, True, family=SHARP)
    assert isinstance(darts_dil, ops.DilConv)
    assert isinstance(sharp_dil, ops.SharpSepConv)

    def depthwise(op):
        return [layer for layer in op.body.chain if isinstance(layer, ops.Conv)
                and layer.depthwise]

    assert len(depthwise(darts_dil)) == 1
    assert len(depthwise(sharp_dil)) == 2
    assert n_trainable(darts_dil) == 9 * c + c * c + 2 * c
    assert n_trainable(sharp_dil) == expected_params("dil_conv_3x3", c, 1)
    assert ops.make_op("avg_pool_3x3", c, 2, True).count_padding is False
    assert ops.make_op("avg_pool_3x3", c, 2, True, family=SHARP).count_padding is True


# --------------------------------------------------------------------------
# op sets and the supernet


@pytest.mark.parametrize("name", list(SET_ORDERS))
def test_sharp_op_sets(name):
    assert ops.op_set(name) == SET_ORDERS[name]
    assert ops.op_set_family(name) == SHARP
    assert name in ops.op_sets()


@pytest.mark.parametrize("name", list(SET_ORDERS))
def test_search_network_over_sharp_op_set(name):
    net = SearchNetwork(5, channels=4, num_layers=3, num_nodes=2, primitives=name,
                        input_shape=(8, 8, 1))
    assert net.space.op_family == SHARP
    assert net.primitives == SET_ORDERS[name]
    assert tuple(net.alpha_normal.shape) == (5, len(SET_ORDERS[name]))
    edge = net.search_cells[0].edges[0]
    assert edge.op_family == SHARP
    k = SET_ORDERS[name].index("sep_conv_3x3")
    assert isinstance(edge.candidates[k], ops.SharpSepConv)
    logits = net(tf.constant(rand(2, 8, 8, 1)), training=True)
    assert tuple(logits.shape) == (2, 5)
    assert np.all(np.isfinite(logits.numpy()))


def test_edges_of_two_families_do_not_share_traces():
    """Same channels, stride, op names and variable shapes: only the family tells the
    two edges apart, and each must run its own family's ops in a shared trace."""
    c = 3  # A kind of edge no other test builds.
    primitives = ("none", "avg_pool_3x3", "sep_conv_3x3")
    keras.utils.set_random_seed(0)
    darts_edge = MixedOp(c, 1, primitives, op_family="darts")
    sharp_edge = MixedOp(c, 1, primitives, op_family=SHARP)
    shapes = [tuple(v.shape) for v in darts_edge.variables]
    assert shapes == [tuple(v.shape) for v in sharp_edge.variables]
    for a, b in zip(sharp_edge.variables, darts_edge.variables):  # Identical weights.
        a.assign(b.numpy())
    x = tf.constant(rand(2, 8, 8, c, shift=0.5))
    w = tf.constant([0.2, 0.5, 0.3])

    def both():
        return [edge(x, tf.nn.relu(x), w, training=True) for edge in (darts_edge, sharp_edge)]

    eager = [y.numpy() for y in both()]
    assert not tracing.can_share()
    # The families differ (the sharp average pool counts its padding).
    assert not np.allclose(eager[0], eager[1], atol=1e-3)
    traced = [y.numpy() for y in tf.function(both)()]
    for got, want in zip(traced, eager):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    darts_template = darts_edge.__dict__["_shared_template"]
    sharp_template = sharp_edge.__dict__["_shared_template"]
    assert darts_template is not sharp_template
    assert sharp_template.op_family == SHARP and darts_template.op_family == "darts"
    for template in (darts_template, sharp_template):
        functions = template.__dict__["_shared_functions"]
        assert [f.experimental_get_tracing_count() for f in functions.values()] == [1]
