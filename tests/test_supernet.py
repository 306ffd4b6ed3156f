"""Tests for keras_darts.supernet: faithfulness of the search supernet (spec sect. 2, 7)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_darts import ops
from keras_darts.supernet import SearchNetwork, reduction_layers


def n_params(variables):
    return int(sum(np.prod(v.shape) for v in variables))


@pytest.fixture(scope="module")
def darts_net():
    """The paper's search supernet: C=16, 8 cells, 4 nodes, 10 classes, 32x32x3."""
    keras.utils.set_random_seed(0)
    return SearchNetwork(10)


def test_weight_param_count_matches_reference(darts_net):
    assert darts_net.count_weight_params() == 1930618


def test_per_part_param_counts(darts_net):
    cells = [n_params(c.trainable_variables) for c in darts_net.search_cells]
    assert cells == [45888, 46144, 144000, 137856, 139904, 484608, 460032, 468224]
    stem = n_params(darts_net.stem_conv.trainable_variables
                    + darts_net.stem_bn.trainable_variables)
    assert stem == 1392
    assert n_params(darts_net.classifier.trainable_variables) == 2570
    assert stem + sum(cells) + 2570 == darts_net.count_weight_params()


def test_per_edge_param_counts(darts_net):
    """102C + 6C^2 per stride-1 MixedOp, 102C + 7C^2 per stride-2 one (spec sect. 7)."""
    for cell in darts_net.search_cells:
        c = cell.channels
        for edge in cell.edges:
            extra = c * c if edge.stride == 2 else 0
            assert n_params(edge.trainable_variables) == 102 * c + 6 * c * c + extra


def test_alphas_are_separate_from_weights(darts_net):
    arch = darts_net.arch_variables
    assert len(arch) == 2
    assert [tuple(a.shape) for a in arch] == [(14, 8), (14, 8)]
    assert arch[0] is darts_net.alpha_normal and arch[1] is darts_net.alpha_reduce
    arch_ids = {id(v) for v in arch}
    weight_ids = [id(v) for v in darts_net.weight_variables]
    assert not arch_ids & set(weight_ids)
    assert len(set(weight_ids)) == len(weight_ids)
    trainable_ids = [id(v) for v in darts_net.trainable_variables]
    assert len(set(trainable_ids)) == len(trainable_ids)
    assert set(trainable_ids) == arch_ids | set(weight_ids)
    # Alphas are not counted; trainable = weights + 2 * 14 * 8.
    assert n_params(darts_net.trainable_variables) == darts_net.count_weight_params() + 224
    # BN moving statistics are not trainable and not counted.
    names = {v.name for v in darts_net.non_trainable_variables}
    assert names == {"moving_mean", "moving_var"}


def test_alpha_init(darts_net):
    a_n = darts_net.alpha_normal.numpy()
    a_r = darts_net.alpha_reduce.numpy()
    for a in (a_n, a_r):
        assert np.abs(a).max() < 0.01
        assert 3e-4 < a.std() < 3e-3  # ~ N(0, 1e-3)
        assert np.unique(a).size == a.size
    probs = darts_net.arch_probabilities()
    np.testing.assert_allclose(probs["normal"].sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(probs["normal"], 1 / 8, atol=1e-3)


def test_alpha_normal_and_reduce_are_independent_draws(darts_net):
    a_n = darts_net.alpha_normal.numpy()
    a_r = darts_net.alpha_reduce.numpy()
    assert not np.array_equal(a_n, a_r)
    assert abs(np.corrcoef(a_n.ravel(), a_r.ravel())[0, 1]) < 0.5


def test_reduction_layers():
    assert reduction_layers(8) == [2, 5]
    assert reduction_layers(3) == [1, 2]
    assert reduction_layers(20) == [6, 13]


def test_cell_layout(darts_net):
    cells = darts_net.search_cells
    assert [c.reduction for c in cells] == [i in (2, 5) for i in range(8)]
    assert [c.channels for c in cells] == [16, 16, 32, 32, 32, 64, 64, 64]
    assert [c.out_channels for c in cells] == [64, 64, 128, 128, 128, 256, 256, 256]
    # reduction_prev -> FactorizedReduce preprocess0 in cells 3 and 6.
    assert [isinstance(c.preprocess0, ops.FactorizedReduce) for c in cells] == [
        i in (3, 6) for i in range(8)]
    assert darts_net.classifier.in_features == 256
    assert tuple(darts_net.stem_conv.kernel.shape) == (3, 3, 3, 48)


def test_spatial_sizes(darts_net):
    net = darts_net
    weights = {False: tf.nn.softmax(net.alpha_normal, axis=-1),
               True: tf.nn.softmax(net.alpha_reduce, axis=-1)}
    s0 = s1 = net.stem_bn(net.stem_conv(tf.zeros((1, 32, 32, 3))), training=False)
    sizes = []
    for cell in net.search_cells:
        s0, s1 = s1, cell(s0, s1, weights=weights[cell.reduction], training=False)
        sizes.append(tuple(s1.shape[1:]))
    assert sizes == [(32, 32, 64), (32, 32, 64), (16, 16, 128), (16, 16, 128), (16, 16, 128),
                     (8, 8, 256), (8, 8, 256), (8, 8, 256)]


@pytest.mark.parametrize("in_channels", [1, 3])
def test_tiny_forward(in_channels):
    keras.utils.set_random_seed(0)
    net = SearchNetwork(7, channels=4, num_layers=3, num_nodes=2,
                        input_shape=(8, 8, in_channels))
    assert tuple(net.stem_conv.kernel.shape) == (3, 3, in_channels, 12)
    assert tuple(net.alpha_normal.shape) == (5, 8)
    assert [c.reduction for c in net.search_cells] == [False, True, True]
    x = tf.random.normal((3, 8, 8, in_channels))
    for training in (True, False):
        logits = net(x, training=training)
        assert tuple(logits.shape) == (3, 7)
        assert np.all(np.isfinite(logits.numpy()))


def test_alphas_change_the_output():
    keras.utils.set_random_seed(0)
    net = SearchNetwork(3, channels=4, num_layers=3, num_nodes=2, input_shape=(8, 8, 3))
    x = tf.random.normal((2, 8, 8, 3))
    before = net(x, training=False).numpy()
    net.alpha_reduce.assign(net.alpha_reduce + tf.one_hot([4] * 5, 8) * 3.0)
    after = net(x, training=False).numpy()
    assert np.abs(before - after).max() > 1e-4


def test_same_seed_same_model():
    keras.utils.set_random_seed(3)
    a = SearchNetwork(3, channels=4, num_layers=3, num_nodes=2, input_shape=(8, 8, 3))
    keras.utils.set_random_seed(3)
    b = SearchNetwork(3, channels=4, num_layers=3, num_nodes=2, input_shape=(8, 8, 3))
    for va, vb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(va.numpy(), vb.numpy())


def test_recompute_policy_is_validated():
    with pytest.raises(ValueError, match="recompute"):
        SearchNetwork(10, channels=4, num_layers=3, input_shape=(8, 8, 3), recompute="some")


def test_recompute_changes_nothing_but_memory():
    """One search step with every edge recomputed equals one with none recomputed."""
    from keras_darts.search_step import BilevelSearch

    rng = np.random.default_rng(0)
    batch = (tf.constant(rng.standard_normal((4, 8, 8, 3)).astype(np.float32)),
             tf.constant(rng.integers(0, 10, 4).astype(np.int32)))
    results = {}
    for policy in ("none", "first_stage", "all"):
        keras.utils.set_random_seed(0)
        net = SearchNetwork(10, channels=4, num_layers=4, input_shape=(8, 8, 3), recompute=policy)
        search = BilevelSearch(net, tf.distribute.get_strategy(), 4)
        search.step(batch, batch)
        results[policy] = [v.numpy() for v in net.variables]
    for policy in ("first_stage", "all"):
        for got, want in zip(results[policy], results["none"]):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_edge_weights_replace_softmax_alpha():
    keras.utils.set_random_seed(0)
    net = SearchNetwork(10, channels=4, num_layers=3, input_shape=(8, 8, 3))
    x = tf.constant(np.random.default_rng(0).standard_normal((2, 8, 8, 3)).astype(np.float32))
    probs = net.arch_probabilities()
    same = net(x, edge_weights={"normal": probs["normal"], "reduce": probs["reduce"]})
    np.testing.assert_allclose(same, net(x), rtol=1e-5, atol=1e-6)
    masked = probs["normal"].copy()
    masked[0, 4] = 0.0  # Remove sep_conv_3x3 from edge 0 of the normal cells.
    assert not np.allclose(net(x, edge_weights={"normal": masked}), net(x), atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        net(x, edge_weights={"normal": masked[:3]})
    with pytest.raises(ValueError, match="keys"):
        net(x, edge_weights={"normall": masked})


def test_darts_pt_space_has_no_none_and_the_same_weights():
    """DARTS-PT's s5 space: the 7 DARTS ops without `none`; `none` has no weights,
    so the supernet keeps 1,930,618 (specs/selection.md 2.1)."""
    assert ops.op_set("darts_pt") == ops.op_set("darts")[1:]
    keras.utils.set_random_seed(0)
    net = SearchNetwork(10, primitives="darts_pt")
    assert tuple(net.alpha_normal.shape) == (14, 7)
    assert net.count_weight_params() == 1_930_618


def test_checkpoint_holds_every_variable(tmp_path):
    """Cells, edges and ops live in lists, which Keras 3 does not expose to
    tf.train.Checkpoint by itself (ops.CheckpointsListedLayers)."""
    keras.utils.set_random_seed(0)
    saved = SearchNetwork(10, channels=4, num_layers=3, num_nodes=2, input_shape=(8, 8, 1))
    path = tf.train.Checkpoint(model=saved).save(str(tmp_path / "ckpt"))
    stored = [name for name, _ in tf.train.list_variables(path) if name.startswith("model/")]
    assert len(stored) == len(saved.variables)
    keras.utils.set_random_seed(1)
    restored = SearchNetwork(10, channels=4, num_layers=3, num_nodes=2, input_shape=(8, 8, 1))
    assert not np.array_equal(restored.search_cells[0].preprocess0.conv.kernel.numpy(),
                              saved.search_cells[0].preprocess0.conv.kernel.numpy())
    tf.train.Checkpoint(model=restored).restore(path).assert_existing_objects_matched()
    for a, b in zip(saved.variables, restored.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
