"""The search supernet (keras_darts/space/supernet.py): faithfulness (docs/spaces/darts.md)."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_darts import ops
from keras_darts.errors import GenotypeError
from keras_darts.runs.lifecycle import checkpointable_weights
from keras_darts.space import plans
from keras_darts.space.genotype import DARTS_V2, Genotype
from keras_darts.space.supernet import SearchNetwork, reduction_layers


def n_params(variables):
    return int(sum(np.prod(v.shape) for v in variables))


# One worker builds the module fixture below for all of this module's tests.
pytestmark = pytest.mark.xdist_group("test_supernet")


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
    """102C + 6C^2 per stride-1 MixedOp, 102C + 7C^2 per stride-2 one
    (docs/spaces/darts.md#parameter-counts)."""
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
        s0, s1 = s1, cell(s0, s1, plan=plans.MixedCell(weights[cell.reduction]), training=False)
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
    from keras_darts.methods.bilevel import BilevelSearch

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
    same = net(x, plan=plans.Mix({"normal": probs["normal"], "reduce": probs["reduce"]}))
    np.testing.assert_allclose(same, net(x), rtol=1e-5, atol=1e-6)
    masked = probs["normal"].copy()
    masked[0, 4] = 0.0  # Remove sep_conv_3x3 from edge 0 of the normal cells.
    assert not np.allclose(net(x, plan=plans.Mix({"normal": masked})), net(x), atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        net(x, plan=plans.Mix({"normal": masked[:3]}))
    with pytest.raises(ValueError, match="keys"):
        net(x, plan=plans.Mix({"normall": masked}))


def test_darts_pt_space_has_no_none_and_the_same_weights():
    """DARTS-PT's s5 space: the 7 DARTS ops without `none`; `none` has no weights,
    so the supernet keeps 1,930,618 (docs/methods/blank.md)."""
    assert ops.op_set("darts_pt") == ops.op_set("darts")[1:]
    keras.utils.set_random_seed(0)
    net = SearchNetwork(10, primitives="darts_pt")
    assert tuple(net.alpha_normal.shape) == (14, 7)
    assert net.count_weight_params() == 1_930_618


# A 2-node genotype for the tiny net below (cell 0 normal, C=4; cells 1 and 2 reduction,
# C=8 and C=16); the stride-2 edges of reduction cells are those from inputs 0 and 1.
TINY_ARCH = Genotype(
    normal=[("sep_conv_3x3", 0), ("skip_connect", 1), ("dil_conv_5x5", 2), ("max_pool_3x3", 0)],
    normal_concat=[2, 3],
    reduce=[("skip_connect", 0), ("sep_conv_5x5", 1), ("avg_pool_3x3", 2), ("dil_conv_3x3", 1)],
    reduce_concat=[2, 3])


def _tiny_grey_net():
    keras.utils.set_random_seed(0)
    return SearchNetwork(10, channels=4, num_layers=3, num_nodes=2, input_shape=(8, 8, 1))


def test_discrete_arch_param_count_by_hand():
    net = _tiny_grey_net()
    stem = 3 * 3 * 1 * 12 + 2 * 12            # 3x3 conv 1 -> 3C = 12, BN with gamma, beta
    preprocess = (12 * 4 + 12 * 4             # cell 0: 1x1 convs from the stem (12) twice
                  + 12 * 8 + 8 * 8            # cell 1: from the stem (12), from cell 0 (2 x 4)
                  + 2 * (8 * 8) + 16 * 16)    # cell 2: FactorizedReduce from cell 0 (8 -> 2 x
    #                                           8 halves), 1x1 from cell 1 (2 nodes x 8)
    classifier = 2 * 16 * 10 + 10             # cell 2 outputs 2 nodes x 16 channels

    def sep(c, k):  # (depthwise kxk + pointwise 1x1) twice; its BNs are affine=False
        return 2 * (k * k * c + c * c)

    def dil(c, k):  # depthwise kxk (dilated) + pointwise 1x1
        return k * k * c + c * c

    # skip_connect at stride 1 is the identity; pools (+ BN affine=False) have no weights.
    normal = sep(4, 3) + 0 + dil(4, 5) + 0

    def reduce(c):  # skip_connect on a stride-2 edge: FactorizedReduce, two 1x1 c -> c/2
        return c * c + sep(c, 5) + 0 + dil(c, 3)

    expected = stem + preprocess + classifier + normal + reduce(8) + reduce(16)
    assert expected == 132 + 640 + 330 + 220 + 728 + 1968
    assert net.count_arch_params(TINY_ARCH) == expected
    # A pair listed twice runs one layer twice: its weights count once.
    twice = dataclasses.replace(TINY_ARCH, normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 0),
                                                   ("dil_conv_5x5", 2), ("max_pool_3x3", 0)])
    assert net.count_arch_params(twice) == expected


def test_discrete_arch_weights_are_exactly_those_its_forward_uses():
    net = _tiny_grey_net()
    x = tf.random.normal((2, 8, 8, 1))
    variables = [v.value for v in net.weight_variables]
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(net(x, training=True, plan=plans.Discrete(TINY_ARCH))))
    grads = tape.gradient(loss, variables)
    used = {id(v) for v, g in zip(net.weight_variables, grads) if g is not None}
    assert used == {id(v) for v in net.arch_weight_variables(TINY_ARCH)}
    assert len(used) < len(variables)


def test_discrete_arch_param_count_rejects_a_foreign_genotype():
    net = _tiny_grey_net()
    with pytest.raises(GenotypeError, match="nodes"):
        net.count_arch_params(DARTS_V2)


def test_checkpoint_holds_every_variable(tmp_path):
    """Cells, edges and ops live in lists, which Keras 3 does not expose to
    tf.train.Checkpoint(model=...): run_utils.checkpointable_weights lists them all."""
    keras.utils.set_random_seed(0)
    saved = SearchNetwork(10, channels=4, num_layers=3, num_nodes=2, input_shape=(8, 8, 1))
    path = tf.train.Checkpoint(weights=checkpointable_weights(saved)).save(str(tmp_path / "c"))
    stored = [name for name, _ in tf.train.list_variables(path) if name.startswith("weights/")]
    assert len(stored) == len(saved.variables)
    keras.utils.set_random_seed(1)
    restored = SearchNetwork(10, channels=4, num_layers=3, num_nodes=2, input_shape=(8, 8, 1))
    assert not np.array_equal(restored.search_cells[0].preprocess0.conv.kernel.numpy(),
                              saved.search_cells[0].preprocess0.conv.kernel.numpy())
    tf.train.Checkpoint(weights=checkpointable_weights(restored)).restore(path).assert_consumed()
    for a, b in zip(saved.variables, restored.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())