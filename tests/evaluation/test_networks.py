"""Evaluation network from a genotype, and the published genotypes (docs/evaluation.md)."""

import functools
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_darts.errors import ConfigError, GenotypeError
from keras_darts.evaluation import networks as eval_net
from keras_darts.evaluation.networks import EvalCell, NetworkCIFAR, NetworkImageNet
from keras_darts.space import genotype as genotype_lib
from keras_darts.space import published

TINY = {"channels": 4, "num_layers": 3, "num_classes": 5}  # Aux head on cell 2 at 8x8.
# Every (name, setting) for which the specs give exact parameter counts ("DARTS" is an alias).
COUNTED = [(name, setting) for name, entry in published.REGISTRY.items() if name != "DARTS"
           for setting in entry.param_counts]


@functools.lru_cache(maxsize=None)
def _measured(name, setting):
    """(params without aux, with aux, reduction cells, aux input channels, classifier input)
    of the published genotype built at the paper size (construction only, no forward)."""
    net = eval_net.build_network(published.REGISTRY[name].genotype,
                                 **published.PAPER_SETTINGS[setting])
    reductions = [i for i, cell in enumerate(net.eval_cells) if cell.reduction]
    return (net.count_weight_params(), net.count_weight_params(include_auxiliary=True),
            reductions, net.aux_head.conv_reduce.in_channels, net.classifier.in_features)


# ---------------------------------------------------------------------------
# Published genotypes: exact parameter counts at the paper size
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name, setting", COUNTED, ids=[f"{n}-{s}" for n, s in COUNTED])
def test_published_genotype_has_the_spec_parameter_count(name, setting):
    without_aux, with_aux = published.REGISTRY[name].param_counts[setting]
    measured = _measured(name, setting)
    assert measured[0] == without_aux
    if with_aux is not None:
        assert measured[1] == with_aux
    # CIFAR-10 aux head alone (576 in, 10 classes): 476,426 (docs/evaluation.md#parameter-counts).
    if setting == "cifar10":
        assert measured[1] - measured[0] == 476_426


def test_paper_size_layout():
    """Reductions at L//3, 2L//3; aux head after the second (576 / 768 channels)."""
    assert _measured("DARTS_V2", "cifar10")[2:] == ([6, 13], 576, 576)
    assert _measured("DARTS_V2", "imagenet")[2:] == ([4, 9], 768, 768)


def test_rounded_paper_figures():
    """The papers' rounded figures hold for the measured counts, to their rounding (+-0.05M
    for one decimal in millions).  DARTS_V1 is left out: the DARTS paper gives "3.3M" for
    the first-order cell, whose count is 3.17M (docs/evaluation.md#parameter-counts: 3,169,414)."""
    def millions(name, setting="cifar10"):
        return _measured(name, setting)[0] / 1e6

    assert abs(millions("DARTS_V2") - 3.3) <= 0.05
    assert abs(millions("DARTS_V2", "imagenet") - 4.7) <= 0.05
    assert abs(millions("MSRDARTS") - 4.0) <= 0.05
    # DARTS-PT Table 2: "3.0" = mean of the four DARTS+PT searches; best (s5_3) "3.3".
    mean = np.mean([millions(f"darts_pt_s5_{i}") for i in range(4)])
    assert abs(mean - 3.0) <= 0.05
    assert abs(millions("darts_pt_s5_3") - 3.3) <= 0.05


def test_published_genotypes_are_valid_and_as_in_the_specs():
    for name, entry in published.REGISTRY.items():
        assert genotype_lib.from_json_dict(entry.genotype.to_json_dict()) == entry.genotype
        assert entry.source and entry.reported_error and entry.reported_params
    # Spot checks against the specs' text (first and last pairs).
    assert published.REGISTRY["DARTS"] is published.REGISTRY["DARTS_V2"]
    assert genotype_lib.DARTS_V2.normal[-1] == ("dil_conv_3x3", 2)
    msr = published.REGISTRY["MSRDARTS"].genotype
    assert msr.normal[0] == ("sep_conv_3x3", 1) and msr.reduce[-1] == ("sep_conv_5x5", 1)
    pt = published.REGISTRY["blank_pt_s5_2"].genotype
    assert pt.normal[1] == ("dil_conv_3x3", 1) and pt.reduce[-1] == ("dil_conv_5x5", 4)


# ---------------------------------------------------------------------------
# load_genotype
# ---------------------------------------------------------------------------

def test_load_genotype_by_name_or_path(tmp_path):
    assert genotype_lib.load_genotype("DARTS_V1") == genotype_lib.DARTS_V1
    assert genotype_lib.load_genotype("DARTS") is genotype_lib.DARTS_V2
    path = tmp_path / "g.json"
    genotype_lib.save(published.REGISTRY["MSRDARTS"].genotype, str(path))
    assert genotype_lib.load_genotype(str(path)) == published.REGISTRY["MSRDARTS"].genotype


def test_unknown_genotype_name_lists_the_known_ones(tmp_path):
    with pytest.raises(GenotypeError) as err:
        genotype_lib.load_genotype("DARTS_V3")
    assert "unknown genotype name 'DARTS_V3'" in str(err.value)
    assert "DARTS_V2" in str(err.value) and "darts_pt_s5_0" in str(err.value)
    with pytest.raises(GenotypeError, match="not found"):
        genotype_lib.load_genotype(str(tmp_path / "missing.json"))
    # A restricted op set (DARTS-PT's, no `none`) still validates a published name.
    with pytest.raises(GenotypeError, match="unknown op 'sep_conv_3x3'"):
        genotype_lib.load_genotype("DARTS_V2", known_ops={"skip_connect"})


# ---------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------

def _images(n, size=32):
    return tf.random.normal((n, size, size, 3))


def test_cifar_forward_train_returns_aux_eval_returns_logits():
    net = NetworkCIFAR("DARTS_V2", **TINY)
    logits, aux_logits = net(_images(2), training=True)
    assert logits.shape == (2, 5) and aux_logits.shape == (2, 5)
    logits = net(_images(2), training=False)
    assert isinstance(logits, tf.Tensor) and logits.shape == (2, 5)
    assert np.all(np.isfinite(logits.numpy()))
    # Without the head training returns logits only and no aux weights exist.
    plain = NetworkCIFAR("DARTS_V2", auxiliary=False, **TINY)
    assert plain(_images(2), training=True).shape == (2, 5)
    assert plain.count_weight_params(True) == plain.count_weight_params()


def test_imagenet_forward_and_stems():
    net = NetworkImageNet("DARTS_V1", **TINY)  # 224x224: stems to 56 and 28, aux at 7x7.
    logits, aux_logits = net(_images(1, 224), training=True)
    assert logits.shape == (1, 5) and aux_logits.shape == (1, 5)
    assert net(_images(1, 224), training=False).shape == (1, 5)
    assert net.eval_cells[0].preprocess0.__class__.__name__ == "FactorizedReduce"
    assert net.aux_head.bn_expand is None  # ImageNet head: no BN after the 2x2 conv.


def test_concat_list_of_the_genotype_is_honoured():
    g = genotype_lib.DARTS_V2
    narrow = genotype_lib.Genotype(g.normal, (2, 5), g.reduce, (3, 4, 5))
    net = NetworkCIFAR(narrow, auxiliary=False, **TINY)
    assert [cell.out_channels for cell in net.eval_cells] == [2 * 4, 3 * 8, 3 * 16]
    assert net(_images(2), training=False).shape == (2, 5)


def test_config_round_trip():
    net = NetworkCIFAR("MSRDARTS", **TINY)
    clone = NetworkCIFAR.from_config(net.get_config())
    assert clone.genotype == net.genotype
    assert clone.count_weight_params(True) == net.count_weight_params(True)


# ---------------------------------------------------------------------------
# Drop path
# ---------------------------------------------------------------------------

def test_drop_path_drops_whole_examples_with_probability_p():
    p, n = 0.3, 4000
    x = tf.ones((n, 2, 2, 3))
    y = eval_net.drop_path(x, p, tf.constant([1, 2], tf.int64)).numpy()
    per_example = y.reshape(n, -1)
    kept = np.all(np.isclose(per_example, 1 / (1 - p)), axis=1)
    dropped = np.all(per_example == 0, axis=1)
    assert np.all(kept | dropped)  # Whole examples only, kept ones rescaled by 1/(1-p).
    # Binomial(4000, 0.3): std 0.0072; 0.03 is ~4 std.
    assert abs(dropped.mean() - p) < 0.03
    same = eval_net.drop_path(x, p, tf.constant([1, 2], tf.int64)).numpy()
    other = eval_net.drop_path(x, p, tf.constant([1, 3], tf.int64)).numpy()
    assert np.array_equal(y, same) and not np.array_equal(y, other)


def _cell(pairs, reduction=False, channels=4):
    return EvalCell(pairs, (2,), channels, channels, channels, reduction, False)


def test_drop_path_in_a_cell_drops_each_op_independently():
    """Node = drop(max_pool(s)) + drop(avg_pool(s)): per example one of the 4 patterns,
    each with its probability (independent masks per op)."""
    p, n = 0.5, 800
    cell = _cell([("max_pool_3x3", 1), ("avg_pool_3x3", 1)])
    s = tf.random.normal((n, 4, 4, 4))
    out = cell(s, s, drop_prob=tf.constant(p), seed=tf.constant([3, 4], tf.int64),
               training=True).numpy().reshape(n, -1)
    # The ops' input, recomputed: same batch, so the same batch statistics.
    state = cell.preprocess1(tf.nn.relu(s), training=True)
    mp = tf.nn.max_pool2d(state, 3, 1, "SAME").numpy().reshape(n, -1) / (1 - p)
    ap = tf.nn.avg_pool2d(state, 3, 1, "SAME").numpy().reshape(n, -1) / (1 - p)
    patterns = [np.zeros_like(mp), mp, ap, mp + ap]
    match = np.stack([np.all(np.isclose(out, q, atol=1e-5), axis=1) for q in patterns], 1)
    assert np.all(match.sum(1) >= 1)
    freq = match.argmax(1)
    # Each pattern has probability 0.25 (std of the frequency over 800: 0.015).
    for k in range(4):
        assert abs(np.mean(freq == k) - 0.25) < 0.07


def test_drop_path_skips_identity_but_not_factorized_reduce():
    s = tf.random.normal((64, 4, 4, 4))
    seed = tf.constant([5, 6], tf.int64)
    identity = _cell([("skip_connect", 0), ("skip_connect", 1)])
    plain = identity(s, s, training=True)
    dropped = identity(s, s, drop_prob=tf.constant(0.9), seed=seed, training=True)
    assert np.array_equal(plain.numpy(), dropped.numpy())
    reduce = _cell([("skip_connect", 0), ("skip_connect", 1)], reduction=True)
    out = reduce(s, s, drop_prob=tf.constant(0.9), seed=seed, training=True).numpy()
    zero_examples = np.all(out.reshape(64, -1) == 0, axis=1)
    assert 0.5 < zero_examples.mean() < 0.95  # Both dropped: probability 0.81.


def test_network_drop_path_only_in_training_and_fresh_masks_per_step():
    net = NetworkCIFAR("DARTS_V2", auxiliary=False, **TINY)
    x = _images(8)
    eval_logits = net(x, training=False).numpy()
    net.set_drop_path_prob(0.6)
    assert np.array_equal(net(x, training=False).numpy(), eval_logits)

    @tf.function
    def train_forward(images):
        return net(images, training=True)

    seed_before = net.drop_path_seed.numpy().copy()
    first, second = train_forward(x).numpy(), train_forward(x).numpy()
    assert not np.allclose(first, second)  # A new mask every step, from the seed variable.
    assert net.drop_path_seed.numpy()[1] == seed_before[1] + 2
    net.set_drop_path_prob(0.0)
    third, fourth = train_forward(x).numpy(), train_forward(x).numpy()
    np.testing.assert_allclose(third, fourth, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="drop path probability"):
        net.set_drop_path_prob(1.0)


def test_drop_path_schedule():
    assert eval_net.drop_path_prob_for_epoch(0, 600) == 0.0
    assert eval_net.drop_path_prob_for_epoch(300, 600) == pytest.approx(0.1)
    assert eval_net.drop_path_prob_for_epoch(599, 600) == pytest.approx(0.2 * 599 / 600)


# ---------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------

def test_label_smoothed_cross_entropy_by_hand():
    logits = tf.constant([[0.0, math.log(3.0)]])  # softmax = [0.25, 0.75]
    labels = tf.constant([1])
    by_hand = -(0.05 * math.log(0.25) + 0.95 * math.log(0.75))  # targets [0.05, 0.95]
    loss = eval_net.smoothed_cross_entropy(labels, logits, label_smoothing=0.1)
    assert loss.numpy()[0] == pytest.approx(by_hand, rel=1e-6)
    assert eval_net.smoothed_cross_entropy(labels, logits).numpy()[0] == pytest.approx(
        -math.log(0.75), rel=1e-6)
    keras_ref = keras.losses.categorical_crossentropy(
        tf.one_hot(labels, 2), logits, from_logits=True, label_smoothing=0.1)
    assert loss.numpy()[0] == pytest.approx(float(keras_ref[0]), rel=1e-5)


def test_network_loss_adds_weighted_aux():
    labels = tf.constant([0, 1])
    logits = tf.constant([[2.0, 0.0], [0.0, 1.0]])
    aux = tf.constant([[0.0, 0.0], [1.0, 0.0]])
    main = eval_net.smoothed_cross_entropy(labels, logits)
    aux_ce = eval_net.smoothed_cross_entropy(labels, aux)
    np.testing.assert_allclose(eval_net.network_loss(labels, (logits, aux)),
                               main + 0.4 * aux_ce, rtol=1e-6)
    np.testing.assert_allclose(eval_net.network_loss(labels, logits), main)
    # log 2 for uniform logits, with or without smoothing.
    assert aux_ce.numpy()[0] == pytest.approx(math.log(2.0), rel=1e-6)


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------

def _with(mutate):
    data = genotype_lib.DARTS_V2.to_json_dict()
    mutate(data)
    return data


@pytest.mark.parametrize("genotype, message", [
    (_with(lambda d: d["normal"].__setitem__(3, ["conv_9x9", 1])), "unknown op 'conv_9x9'"),
    (_with(lambda d: d["reduce"].pop()), "2 [op, input] pairs per node"),
    (_with(lambda d: d["normal"].__setitem__(2, ["sep_conv_3x3", 3])),
     "normal[2] (node 1) has input 3"),
    (_with(lambda d: d.update(reduce_concat=[1, 2, 3])), "'reduce_concat' [1, 2, 3] includes"),
    ("NO_SUCH_GENOTYPE", "unknown genotype name 'NO_SUCH_GENOTYPE'; known names: "),
])
def test_bad_genotype_is_a_clear_error(genotype, message):
    with pytest.raises(GenotypeError) as err:
        NetworkCIFAR(genotype, **TINY)
    assert message in str(err.value)


def test_bad_sizes_are_config_errors():
    with pytest.raises(ConfigError, match="auxiliary head: cell 2 outputs 4x4"):
        NetworkCIFAR("DARTS_V2", input_shape=(16, 16, 3), **TINY)
    NetworkCIFAR("DARTS_V2", input_shape=(16, 16, 3), auxiliary=False, **TINY)
    with pytest.raises(ConfigError, match="even"):
        NetworkCIFAR("DARTS_V2", channels=5, num_layers=3)
    with pytest.raises(ConfigError, match="unknown network kind"):
        eval_net.build_network("DARTS_V2", kind="mnist")


# ---------------------------------------------------------------------------
# Genotypes of another op family (sharpDARTS)
# ---------------------------------------------------------------------------

def test_a_sharp_genotype_builds_its_familys_ops():
    from keras_darts import ops

    genotype = published.REGISTRY["SHARP_DARTS"].genotype
    net = NetworkCIFAR(genotype, input_shape=(8, 8, 1), auxiliary=False, **TINY)
    cell = net.eval_cells[0]
    chokes = [op for (name, _), op in zip(cell.pairs, cell.cell_ops) if name == "choke_conv_3x3"]
    assert chokes and all(isinstance(op, ops.SharpSepConv) and op.mid_channels == 32
                          for op in chokes)
    wider = NetworkCIFAR(genotype, input_shape=(8, 8, 1), auxiliary=False,
                         op_options={"mid_channels": 8}, **TINY)
    assert {op.mid_channels for (name, _), op in zip(wider.eval_cells[0].pairs,
                                                     wider.eval_cells[0].cell_ops)
            if name == "choke_conv_3x3"} == {8}
    assert wider.count_weight_params() < net.count_weight_params()
    assert net(tf.zeros((2, 8, 8, 1))).shape == (2, TINY["num_classes"])
    # The op family and options survive a Keras config round trip (export, reuse).
    config = wider.get_config()
    assert config["genotype"]["op_family"] == "sharp"
    assert config["op_options"] == {"mid_channels": 8}
    again = NetworkCIFAR.from_config(config)
    assert again.count_weight_params() == wider.count_weight_params()


def test_op_options_the_family_does_not_take_are_refused():
    with pytest.raises(ConfigError, match="op family 'darts' takes no option"):
        NetworkCIFAR("DARTS_V2", input_shape=(8, 8, 1), op_options={"mid_channels": 8},
                     **TINY)
