"""Tests for keras_darts.cells (MixedOp, SearchCell) and the supernet's discrete mode."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_darts import ops
from keras_darts.errors import GenotypeError
from keras_darts.space import plans
from keras_darts.space.cells import MixedOp, SearchCell
from keras_darts.space.genotype import Genotype
from keras_darts.space.search_space import dense_edges
from keras_darts.space.supernet import SearchNetwork

DARTS = ops.op_set("darts")


@pytest.fixture(autouse=True)
def seed():
    keras.utils.set_random_seed(0)


def rand(*shape):
    return tf.constant(np.random.standard_normal(shape).astype(np.float32))


def test_edge_inputs_order():
    edges = list(dense_edges(4))
    assert len(edges) == 14
    assert edges == [(0, 0), (0, 1),
                     (1, 0), (1, 1), (1, 2),
                     (2, 0), (2, 1), (2, 2), (2, 3),
                     (3, 0), (3, 1), (3, 2), (3, 3), (3, 4)]
    assert list(dense_edges(2)) == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("stride", [1, 2])
def test_mixed_op_is_weighted_sum(stride, training):
    c = 4
    mixed = MixedOp(c, stride, DARTS)
    x = rand(2, 8, 8, c)
    relu_x = tf.nn.relu(x)
    w = tf.nn.softmax(rand(len(DARTS)))
    y = mixed(x, relu_x, w, training=training).numpy()
    ref = np.zeros((2, 8 // stride, 8 // stride, c), np.float64)
    for k, op in enumerate(mixed.candidates):
        out = op(relu_x if op.starts_with_relu else x, training=training).numpy()
        assert out.shape == ref.shape
        ref += float(w[k]) * out
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    # Sanity: the candidates were built as their names say.
    assert [type(op).__name__ for op in mixed.candidates][:4] == [
        "Zero", "Pool", "Pool", "Identity" if stride == 1 else "FactorizedReduce"]


def test_mixed_op_never_computes_none():
    x = rand(2, 8, 8, 4)
    mixed = MixedOp(4, 1, ("none", "skip_connect"))
    assert not mixed.needs_relu
    y = mixed(x, None, tf.constant([0.7, 0.3])).numpy()
    np.testing.assert_array_equal(y, np.float32(0.3) * x.numpy())
    # A NaN input of `none` would poison x*0; none is skipped, so the output has no NaN.
    x_nan = tf.where(tf.range(4) == 0, np.nan, x)
    y_nan = mixed(x_nan, None, tf.constant([0.7, 0.3])).numpy()
    assert np.isnan(y_nan[..., 0]).all() and np.isfinite(y_nan[..., 1:]).all()
    only_none = MixedOp(4, 1, ("none",))
    assert only_none(x, None, tf.constant([1.0])) is None


def make_cell(reduction, reduction_prev, num_nodes=4, c=4, c_pp=12, c_p=12):
    return SearchCell(num_nodes, c_pp, c_p, c, reduction, reduction_prev, DARTS)


@pytest.mark.parametrize("num_nodes", [2, 4])
def test_search_cell_shapes(num_nodes):
    n, c = 2, 4
    weights = tf.nn.softmax(rand(len(dense_edges(num_nodes)), len(DARTS)), axis=-1)
    normal = make_cell(False, False, num_nodes, c)
    out = normal(rand(n, 8, 8, 12), rand(n, 8, 8, 12), plan=plans.MixedCell(weights), training=True)
    assert tuple(out.shape) == (n, 8, 8, num_nodes * c)
    assert normal.out_channels == num_nodes * c

    reduce = make_cell(True, False, num_nodes, 2 * c)
    assert [e.stride for e in reduce.edges] == [2 if j < 2 else 1
                                                for _, j in dense_edges(num_nodes)]
    out = reduce(rand(n, 8, 8, 12), rand(n, 8, 8, 12), plan=plans.MixedCell(weights), training=True)
    assert tuple(out.shape) == (n, 4, 4, num_nodes * 2 * c)

    # The cell after a reduction: s0 is twice as large and goes through FactorizedReduce.
    after = make_cell(False, True, num_nodes, c, c_pp=12, c_p=16)
    assert isinstance(after.preprocess0, ops.FactorizedReduce)
    assert isinstance(normal.preprocess0, ops.ReLUConvBN)
    out = after(rand(n, 8, 8, 12), rand(n, 4, 4, 16), plan=plans.MixedCell(weights), training=True)
    assert tuple(out.shape) == (n, 4, 4, num_nodes * c)


# --------------------------------------------------------------------------
# discrete mode

PAIRS = (("sep_conv_3x3", 0), ("skip_connect", 1), ("max_pool_3x3", 2), ("dil_conv_3x3", 0))


def genotype2(normal=PAIRS, reduce=(("max_pool_3x3", 0), ("avg_pool_3x3", 1),
                                    ("skip_connect", 2), ("sep_conv_5x5", 1)),
              normal_concat=(2, 3), reduce_concat=(2, 3)):
    return Genotype(normal=normal, normal_concat=normal_concat, reduce=reduce,
                    reduce_concat=reduce_concat)


@pytest.mark.parametrize("reduction", [False, True])
def test_discrete_cell_equals_hand_computed(reduction):
    c = 4
    cell = make_cell(reduction, False, num_nodes=2, c=c)
    s0, s1 = rand(2, 8, 8, 12), rand(2, 8, 8, 12)
    out = cell(s0, s1, plan=plans.DiscreteCell(PAIRS), training=False).numpy()

    index = {ij: e for e, ij in enumerate(cell.edge_inputs)}

    def op(node, j, name):
        return cell.edges[index[(node, j)]].candidates[DARTS.index(name)]

    p0 = cell.preprocess0(tf.nn.relu(s0), training=False)
    p1 = cell.preprocess1(tf.nn.relu(s1), training=False)
    n0 = op(0, 0, "sep_conv_3x3")(tf.nn.relu(p0)) + op(0, 1, "skip_connect")(tf.nn.relu(p1)
                                                                             if reduction else p1)
    n1 = op(1, 2, "max_pool_3x3")(n0) + op(1, 0, "dil_conv_3x3")(tf.nn.relu(p0))
    ref = tf.concat([n0, n1], axis=-1).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)

    # Mixed mode with one-hot rows on the chosen edges and zero rows elsewhere is the same map.
    w = np.zeros((5, len(DARTS)), np.float32)
    for node, (name, j) in zip((0, 0, 1, 1), PAIRS):
        w[index[(node, j)], DARTS.index(name)] = 1.0
    mixed = cell(s0, s1, plan=plans.MixedCell(tf.constant(w)), training=False).numpy()
    np.testing.assert_allclose(mixed, out, rtol=1e-5, atol=1e-5)


def test_discrete_cell_all_none_node_is_zero():
    cell = make_cell(True, False, num_nodes=2)
    pairs = (("none", 0), ("none", 1), ("skip_connect", 2), ("max_pool_3x3", 0))
    out = cell(rand(2, 8, 8, 12), rand(2, 8, 8, 12), plan=plans.DiscreteCell(pairs)).numpy()
    assert out.shape == (2, 4, 4, 8)
    assert not out[..., :4].any()
    assert out[..., 4:].any()


# One worker builds the module fixture below for all of this module's tests.
pytestmark = pytest.mark.xdist_group("test_cells")


@pytest.fixture(scope="module")
def tiny_net():
    keras.utils.set_random_seed(0)
    return SearchNetwork(3, channels=4, num_layers=3, num_nodes=2, input_shape=(8, 8, 3))


def test_discrete_network_forward(tiny_net):
    x = rand(2, 8, 8, 3)
    mixed = tiny_net(x, training=False).numpy()
    discrete = tiny_net(x, training=False, plan=plans.Discrete(genotype2())).numpy()
    assert discrete.shape == mixed.shape == (2, 3)
    assert np.all(np.isfinite(discrete))
    assert np.abs(discrete - mixed).max() > 1e-4
    # Deterministic: the same genotype gives the same output again.
    np.testing.assert_array_equal(tiny_net(x, training=False,
                                           plan=plans.Discrete(genotype2())).numpy(),
                                  discrete)
    other = genotype2(normal=(("skip_connect", 0), ("skip_connect", 1),
                              ("avg_pool_3x3", 2), ("sep_conv_5x5", 1)))
    other_out = tiny_net(x, training=False, plan=plans.Discrete(other)).numpy()
    assert np.abs(other_out - discrete).max() > 1e-4


def test_discrete_network_rejects_unknown_op(tiny_net):
    x = rand(2, 8, 8, 3)
    bad = genotype2(normal=(("sep_conv_7x7", 0),) + PAIRS[1:])  # registered, not a candidate
    with pytest.raises(GenotypeError, match="sep_conv_7x7"):
        tiny_net(x, plan=plans.Discrete(bad))


@pytest.mark.parametrize("concat", [(2,), (3,), (1, 2, 3), (2, 3, 3)])
def test_discrete_network_rejects_partial_concat(tiny_net, concat):
    x = rand(2, 8, 8, 3)
    with pytest.raises(GenotypeError):
        tiny_net(x, plan=plans.Discrete(genotype2(normal_concat=concat)))
    with pytest.raises(GenotypeError):
        tiny_net(x, plan=plans.Discrete(genotype2(reduce_concat=concat)))


def test_discrete_network_rejects_wrong_node_count(tiny_net):
    from keras_darts.space.genotype import DARTS_V2  # 4 nodes; the tiny net has 2
    with pytest.raises(GenotypeError):
        tiny_net(rand(2, 8, 8, 3), plan=plans.Discrete(DARTS_V2))


def test_discrete_network_rejects_bad_input_index(tiny_net):
    bad = genotype2(normal=(("sep_conv_3x3", 3),) + PAIRS[1:])  # node 0 may read 0..1
    with pytest.raises(GenotypeError):
        tiny_net(rand(2, 8, 8, 3), plan=plans.Discrete(bad))


def test_masking_an_op_removes_exactly_its_contribution():
    """Perturbation selection zeroes one op's weight: the edge output changes by
    exactly that op's weighted output (train mode, batch statistics)."""
    c = 4
    mixed = MixedOp(c, 1, DARTS)
    x = rand(2, 8, 8, c)
    relu_x = tf.nn.relu(x)
    w = tf.nn.softmax(rand(len(DARTS)))
    k = DARTS.index("sep_conv_3x3")
    masked = tf.tensor_scatter_nd_update(w, [[k]], [0.0])
    full = mixed(x, relu_x, w, training=True).numpy()
    without = mixed(x, relu_x, masked, training=True).numpy()
    contribution = float(w[k]) * mixed.run_op(k, x, relu_x, training=True).numpy()
    np.testing.assert_allclose(full - without, contribution, rtol=1e-4, atol=1e-5)
