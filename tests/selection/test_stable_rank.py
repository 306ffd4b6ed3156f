"""Stable rank and the `stable_rank` read-out criterion (docs/selection/stable_rank.md)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_darts import ops, selection
from keras_darts.errors import ConfigError, GenotypeError
from keras_darts.selection.conv_stable_rank import (conv_singular_values, conv_stable_rank,
                                                    scored_kernel, stable_rank)
from keras_darts.selection.stable_rank import derive_cell, edge_sizes
from keras_darts.space.darts_cell import darts_cell
from keras_darts.space.supernet import SearchNetwork

WEIGHTLESS = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect")


# -- matrices ------------------------------------------------------------------

def test_stable_rank_of_rank_one_and_diagonal():
    assert stable_rank(np.outer([1.0, -2.0, 3.0], [0.5, 4.0])) == pytest.approx(1.0)
    assert stable_rank(np.diag([3.0, 1.0, 1.0])) == pytest.approx(11 / 9)


def test_zero_matrix_and_kernel_raise():
    with pytest.raises(ValueError, match="zero"):
        stable_rank(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="zero"):
        conv_stable_rank(np.zeros((3, 3, 2, 2)), 4, 4)


def test_scale_invariance():
    rng = np.random.default_rng(0)
    matrix, kernel = rng.normal(size=(4, 3)), rng.normal(size=(3, 3, 2, 3))
    assert stable_rank(7.5 * matrix) == pytest.approx(stable_rank(matrix), rel=1e-12)
    assert conv_stable_rank(0.01 * kernel, 5, 5) == pytest.approx(conv_stable_rank(kernel, 5, 5),
                                                                  rel=1e-12)


def test_pointwise_kernel_scales_with_feature_map_size():
    matrix = np.random.default_rng(1).normal(size=(4, 4))
    kernel = matrix[None, None]
    expected = 4 * 6 * stable_rank(matrix)
    assert conv_stable_rank(kernel, 4, 6) == pytest.approx(expected, rel=1e-12)


# -- convolutions against an explicitly built periodic-convolution matrix -----

def _periodic_conv_matrix(kernel, height, width, dilation=1, depthwise=False):
    """The full linear map x [H, W, C_in] -> y [H, W, C_out] of a periodic
    cross-correlation (TF's orientation): y[i,j] = sum_ab K[a,b] x[i+d*a, j+d*b]."""
    kh, kw, cin, cols = kernel.shape
    cout = cin * cols if depthwise else cols
    t = np.zeros((height, width, cout, height, width, cin))
    for i in range(height):
        for j in range(width):
            for a in range(kh):
                for b in range(kw):
                    r, c = (i + dilation * a) % height, (j + dilation * b) % width
                    if depthwise:
                        for ch in range(cin):
                            t[i, j, ch * cols:(ch + 1) * cols, r, c, ch] += kernel[a, b, ch]
                    else:
                        t[i, j, :, r, c, :] += kernel[a, b].T
    return t.reshape(height * width * cout, height * width * cin)


def _periodic_tf_conv(x, kernel, dilation, depthwise):
    """TF conv of x wrapped around the torus (checks the reference matrix's orientation)."""
    extra = dilation * (kernel.shape[0] - 1)
    wrapped = np.pad(x, ((0, 0), (0, extra), (0, extra), (0, 0)), mode="wrap")
    if depthwise:
        return tf.nn.depthwise_conv2d(wrapped, kernel, [1, 1, 1, 1], "VALID",
                                      dilations=[dilation, dilation]).numpy()
    return tf.nn.conv2d(wrapped, kernel, 1, "VALID", dilations=dilation).numpy()


CASES = [  # (kernel shape, dilation, depthwise)
    ((3, 3, 2, 3), 1, False),
    ((3, 3, 2, 3), 2, False),
    ((3, 3, 3, 1), 1, True),
    ((3, 3, 3, 1), 2, True),
    ((1, 1, 3, 2), 1, False),
]


@pytest.mark.parametrize("shape,dilation,depthwise", CASES)
def test_reference_matrix_is_tf_periodic_conv(shape, dilation, depthwise):
    rng = np.random.default_rng(2)
    kernel = rng.normal(size=shape)
    x = rng.normal(size=(1, 4, 4, shape[2]))
    expected = _periodic_tf_conv(x, kernel, dilation, depthwise)
    matrix = _periodic_conv_matrix(kernel, 4, 4, dilation, depthwise)
    np.testing.assert_allclose((matrix @ x.ravel()).reshape(expected.shape), expected,
                               atol=1e-10)


@pytest.mark.parametrize("shape,dilation,depthwise", CASES)
def test_conv_singular_values_match_explicit_matrix(shape, dilation, depthwise):
    kernel = np.random.default_rng(3).normal(size=shape)
    got = np.sort(conv_singular_values(kernel, 4, 4, dilation, depthwise))
    matrix = _periodic_conv_matrix(kernel, 4, 4, dilation, depthwise)
    expected = np.sort(np.linalg.svd(matrix, compute_uv=False))
    np.testing.assert_allclose(got, expected, atol=1e-10)
    assert conv_stable_rank(kernel, 4, 4, dilation, depthwise) == pytest.approx(
        stable_rank(matrix), rel=1e-10)


def test_dilation_changes_the_spectrum():
    kernel = np.random.default_rng(4).normal(size=(3, 3, 2, 2))
    assert not np.allclose(np.sort(conv_singular_values(kernel, 6, 6, dilation=1)),
                           np.sort(conv_singular_values(kernel, 6, 6, dilation=2)))


# -- scored kernel ---------------------------------------------------------------

def test_scored_kernel_is_last_pointwise_conv():
    sep = ops.make_op("sep_conv_5x5", 4, 2, False)
    dil = ops.make_op("dil_conv_3x3", 4, 1, False)
    assert scored_kernel(sep) is sep.body.chain[5].kernel
    assert scored_kernel(dil) is dil.body.chain[1].kernel
    assert tuple(scored_kernel(sep).shape) == (1, 1, 4, 4)


@pytest.mark.parametrize("name", WEIGHTLESS)
@pytest.mark.parametrize("stride", [1, 2])
def test_weightless_ops_have_no_scored_kernel(name, stride):
    assert scored_kernel(ops.make_op(name, 4, stride, False)) is None


# -- edge/op rule ----------------------------------------------------------------

def test_derive_cell_smallest_edges_argmin_op_and_ties():
    prims = ("none", "sep_conv_3x3", "dil_conv_3x3")
    s = np.full((14, 3), 10.0)
    s[0] = [np.inf, 5.0, 4.0]            # node0: input 0 (min 4, dil), input 1 (10, first op)
    s[2] = [np.inf, 9.0, 3.0]            # node1: input 2 (min 2, sep) before input 0 (3, dil);
    s[3] = np.inf                        #        input 1 has only weightless ops
    s[4] = [np.inf, 2.0, 8.0]
    s[9:14] = 7.0                        # node2 (10s) and node3 (7s): all tied -> inputs 0, 1
    s[:, 0] = np.inf
    pairs = derive_cell(s, darts_cell(prims, 4))
    assert pairs == [
        ("dil_conv_3x3", 0), ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 2), ("dil_conv_3x3", 0),
        ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
    ]


def test_derive_cell_needs_two_finite_edges_per_node():
    s = np.full((14, 2), 1.0)
    s[5:9] = np.inf
    s[6] = 1.0  # node2 has a single finite edge.
    with pytest.raises(GenotypeError, match="node 2 has 1 incoming"):
        derive_cell(s, darts_cell(("none", "sep_conv_3x3"), 4))


# -- the criterion on a tiny supernet ---------------------------------------------

# One worker builds the module fixture below for all of this module's tests.
pytestmark = pytest.mark.xdist_group("test_stable_rank")


@pytest.fixture(scope="module")
def net():
    keras.utils.set_random_seed(0)
    # Cell 0 normal (8x8), cells 1 and 2 reduction (inputs 8x8 and 4x4).
    return SearchNetwork(10, channels=4, num_layers=3, input_shape=(8, 8, 3))


def _plant_rank_one(net, target):
    """Last pointwise kernel: rank 1 for `target`, well-conditioned for the other ops."""
    rng = np.random.default_rng(5)
    for cell in net.search_cells:
        for edge in cell.edges:
            for name, op in zip(edge.primitives, edge.candidates):
                kernel = scored_kernel(op)
                if kernel is not None:
                    c = kernel.shape[-1]
                    value = (np.outer(rng.normal(size=c), rng.normal(size=c)) if name == target
                             else np.eye(c) + 0.1 * rng.normal(size=(c, c)))
                    kernel.assign(value[None, None].astype("float32"))


@pytest.mark.parametrize("target", ["sep_conv_5x5", "dil_conv_3x3"])
def test_rank_one_op_is_chosen_everywhere(net, target):
    _plant_rank_one(net, target)
    result = selection.select("stable_rank", net)
    chosen = [op for op, _ in result.genotype.normal + result.genotype.reduce]
    assert chosen == [target] * 16
    assert not set(chosen) & set(WEIGHTLESS)
    assert result.genotype.normal_concat == result.genotype.reduce_concat == (2, 3, 4, 5)
    k = net.primitives.index(target)
    # Rank 1 -> srank = H*W on the 8x8 normal cell.
    assert result.scores["normal"][0][k] == pytest.approx(64.0, rel=1e-5)


def test_scores_shape_and_none_for_weightless(net):
    scores = selection.select("stable_rank", net).scores
    for kind in ("normal", "reduce"):
        assert len(scores[kind]) == 14
        for row in scores[kind]:
            assert len(row) == 8
            assert [v is None for v in row] == [name in WEIGHTLESS for name in net.primitives]
            assert all(v > 0 for v in row if v is not None)


def test_edge_sizes_code_and_actual(net):
    code, actual = edge_sizes(net, "code"), edge_sizes(net, "actual")
    inputs = [j for _, j in net.search_cells[0].edge_inputs]
    assert code[0] == actual[0] == [(8, 8)] * 14
    assert code[1] == [(4, 4) if j < 2 else (8, 8) for j in inputs]
    assert actual[1] == [(4, 4)] * 14
    assert code[2] == [(2, 2) if j < 2 else (4, 4) for j in inputs]
    assert actual[2] == [(2, 2)] * 14


def test_code_shapes_inflate_stride_one_reduction_edges_by_four(net):
    code = selection.select("stable_rank", net, {"msr_shapes": "code"}).scores
    actual = selection.select("stable_rank", net, {"msr_shapes": "actual"}).scores
    assert code["normal"] == actual["normal"]
    inputs = [j for _, j in net.search_cells[0].edge_inputs]
    for j, code_row, actual_row in zip(inputs, code["reduce"], actual["reduce"]):
        factor = 1.0 if j < 2 else 4.0
        for c, a in zip(code_row, actual_row):
            assert (c is None) == (a is None)
            if c is not None:
                assert c == pytest.approx(factor * a, rel=1e-9)


def test_unknown_msr_shapes_raises(net):
    with pytest.raises(ConfigError, match="--msr_shapes must be one of"):
        selection.select("stable_rank", net, {"msr_shapes": "torch"})


def test_registered():
    assert "stable_rank" in selection.names()
    assert selection.get("stable_rank") is not selection.get("magnitude")


def test_op_set_without_parameterised_ops_raises():
    net = SearchNetwork(10, channels=4, num_layers=3, input_shape=(8, 8, 3),
                        primitives=("none", "max_pool_3x3", "skip_connect"))
    with pytest.raises(GenotypeError, match="no ops with a scorable pointwise kernel"):
        selection.select("stable_rank", net)
