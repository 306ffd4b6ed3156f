"""MSR-DARTS's own search (`--method=msr`, docs/methods/msr.md)."""

import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from absl.testing import flagsaver
from conftest import REPO, event_tags, run_module, tiny_search_flags

from keras_darts import methods, ops
from keras_darts.cli import flags as cli_flags
from keras_darts.config import SearchConfig
from keras_darts.data import load_search_data
from keras_darts.errors import ConfigError, DataError
from keras_darts.methods import msr
from keras_darts.methods.bilevel import BilevelSearch, SearchHParams
from keras_darts.ops.spectral_norm import SpectralNorm
from keras_darts.schedules import cosine as cosine_lr
from keras_darts.selection.conv_stable_rank import conv_singular_values, stable_rank
from keras_darts.selection.stable_rank import edge_input_sizes, edge_sizes
from keras_darts.space import genotype as genotype_lib
from keras_darts.space import plans
from keras_darts.space.supernet import SearchNetwork

cli_flags.define_search_flags()

MSR_OPS = ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")


def tiny_msr(num_layers=3, num_nodes=2, recompute="none", msr_shapes="code"):
    return msr.build_supernet(3, msr_shapes=msr_shapes, channels=4, num_layers=num_layers,
                              num_nodes=num_nodes, input_shape=(8, 8, 3), recompute=recompute)


def batch(size=4, seed=0):
    rng = np.random.default_rng(seed)
    return (tf.constant(rng.standard_normal((size, 8, 8, 3)), tf.float32),
            tf.constant(rng.integers(0, 3, size), tf.int32))


def all_convs(model):
    """(conv, belongs to a candidate op) for every ops.Conv of the supernet."""
    found = [(model.stem_conv, False)]
    for cell in model.search_cells:
        for pre in (cell.preprocess0, cell.preprocess1):
            found += [(getattr(pre, name), False) for name in ("conv", "conv_a", "conv_b")
                      if hasattr(pre, name)]
        for edge in cell.edges:
            for op in edge.candidates:
                found += [(conv, True) for conv in msr.candidate_convs(op)]
    return found


# -- the supernet --------------------------------------------------------------

def test_msr_supernet_has_the_spec_weight_count():
    # docs/methods/msr.md#search-space: C=16, 8 cells, 10 classes, 32x32x3 -> 1,889,658 weights.
    net = msr.build_supernet(10, channels=16, num_layers=8, input_shape=(32, 32, 3))
    assert net.count_weight_params() == 1_889_658
    assert net.primitives == MSR_OPS
    convs = all_convs(net)
    # 6 normal cells x 14 edges x (4 + 4 + 2 + 2 convs), same for the 2 reduction cells.
    assert sum(candidate for _, candidate in convs) == 8 * 14 * 12
    for conv, candidate in convs:
        assert (conv.spectral_norm is not None) == candidate
        if candidate:  # Only depthwise convs restart from a random vector.
            assert conv.spectral_norm.rerandomise == conv.depthwise


def test_spectral_norm_sizes_follow_the_edge_sizes():
    for shapes in ("code", "actual"):
        net = tiny_msr(msr_shapes=shapes)
        last_sizes, input_sizes = edge_sizes(net, shapes), edge_input_sizes(net, shapes)
        for c, cell in enumerate(net.search_cells):
            for e, edge in enumerate(cell.edges):
                for op in edge.candidates:
                    convs = msr.candidate_convs(op)
                    assert convs[0].spectral_norm.input_size == input_sizes[c][e]
                    # The scored (last pointwise) conv runs where the stable rank is taken.
                    assert convs[-1].spectral_norm.input_size == last_sizes[c][e]
    # 8x8 input, cells [normal, reduce, reduce]: stride-1 edges of reduction cells
    # keep the cell's input size under "code" (the reference quirk), not under "actual".
    assert edge_input_sizes(net, "code")[1][4] == (8, 8)
    assert edge_input_sizes(net, "actual")[1][4] == (4, 4)


# -- spectral normalisation ------------------------------------------------------

def explicit_matrix(conv, size):
    """The conv's linear map on a zero-padded [size, size, C_in] input, built
    column by column from the op's own forward pass (no spectral norm)."""
    n = size * size * conv.in_channels
    basis = tf.reshape(tf.eye(n), (n, size, size, conv.in_channels))
    saved, conv.spectral_norm = conv.spectral_norm, None
    columns = conv(basis).numpy().reshape(n, -1)
    conv.spectral_norm = saved
    return columns.T


def normalised_top_singular_value(conv, size, calls):
    sn = conv.spectral_norm
    for _ in range(calls):
        normalised = sn(tf.convert_to_tensor(conv.kernel), training=True).numpy()
    # W' = W / (sigma + eps): the map is linear in W.
    scale = float(np.sum(normalised * conv.kernel.numpy()) / np.sum(conv.kernel.numpy() ** 2))
    return scale * np.linalg.svd(explicit_matrix(conv, size), compute_uv=False)[0]


@pytest.mark.parametrize("kernel_size, stride, dilation", [(3, 1, 1), (5, 2, 1), (3, 2, 2),
                                                           (5, 1, 2)])
def test_depthwise_power_iteration_normalises_to_one(kernel_size, stride, dilation):
    conv = ops.Conv(3, 3, kernel_size, stride, dilation * (kernel_size - 1) // 2,
                    dilation=dilation, depthwise=True)
    conv.spectral_norm = SpectralNorm(conv, (6, 6), rerandomise=True)
    # 5 iterations from a random vector underestimate sigma a little: >= 1, close to 1.
    top = normalised_top_singular_value(conv, 6, calls=1)
    assert 1.0 - 1e-4 <= top < 1.1
    # Warm-started, the iteration converges to the exact value.
    conv.spectral_norm = SpectralNorm(conv, (6, 6), rerandomise=False)
    assert normalised_top_singular_value(conv, 6, calls=40) == pytest.approx(1.0, abs=2e-4)


def test_pointwise_power_iteration_matches_the_exact_singular_value():
    conv = ops.Conv(4, 4, 1)
    conv.spectral_norm = SpectralNorm(conv, (5, 5))
    top = normalised_top_singular_value(conv, 5, calls=10)
    assert top == pytest.approx(1.0, abs=1e-4)
    # Independent value: the largest singular value of the 1x1 conv = that of its matrix.
    exact = conv_singular_values(conv.kernel.numpy(), 5, 5).max()
    assert exact == pytest.approx(np.linalg.svd(explicit_matrix(conv, 5), compute_uv=False)[0],
                                  rel=1e-5)


def test_transpose_is_the_adjoint_of_the_conv():
    rng = np.random.default_rng(0)
    conv = ops.Conv(3, 3, 5, 2, 4, dilation=2, depthwise=True)
    sn = SpectralNorm(conv, (7, 7))
    kernel = tf.convert_to_tensor(conv.kernel)
    x = tf.constant(rng.standard_normal((1, 7, 7, 3)), tf.float32)
    y = tf.constant(rng.standard_normal(sn.u.shape), tf.float32)
    forward = float(tf.reduce_sum(sn.apply(x, kernel) * y))
    assert forward == pytest.approx(float(tf.reduce_sum(x * sn.transpose(y, kernel))), rel=1e-5)
    np.testing.assert_allclose(sn.apply(x, kernel), conv(x), atol=1e-5)


def test_state_changes_only_in_train_mode_and_replays_from_a_checkpoint(tmp_path):
    conv = ops.Conv(3, 3, 3, 1, 1, depthwise=True)
    conv.spectral_norm = sn = SpectralNorm(conv, (5, 5), rerandomise=True)
    x = tf.random.normal((2, 5, 5, 3))
    conv(x, training=True)
    state = [v.numpy().copy() for v in sn.variables]
    eval_out = conv(x, training=False).numpy()
    np.testing.assert_array_equal(conv(x, training=False), eval_out)  # Deterministic...
    for before, v in zip(state, sn.variables):  # ...and stateless.
        np.testing.assert_array_equal(before, v.numpy())
    assert sn.rng_state.numpy()[1] == 1  # One random draw so far.
    checkpoint = tf.train.Checkpoint(conv=conv)
    path = checkpoint.write(str(tmp_path / "ckpt"))
    first = conv(x, training=True).numpy()
    assert sn.rng_state.numpy()[1] == 2
    checkpoint.read(path).assert_consumed()
    np.testing.assert_array_equal(conv(x, training=True), first)  # Same draw after restoring.


def test_sigma_is_differentiable_and_the_kernel_gradient_is_the_normalised_one():
    # d/dW <g, W / sigma(W)> with sigma = u . F(v; W): checked against a finite difference.
    conv = ops.Conv(2, 3, 1)
    conv.spectral_norm = sn = SpectralNorm(conv, (3, 3))
    for _ in range(20):
        sn(tf.convert_to_tensor(conv.kernel), training=True)
    g = tf.random.normal(conv.kernel.shape)

    def objective(kernel):
        return tf.reduce_sum(g * sn(kernel, training=False))

    kernel = tf.convert_to_tensor(conv.kernel)
    with tf.GradientTape() as tape:
        tape.watch(kernel)
        value = objective(kernel)
    grad = tape.gradient(value, kernel).numpy()
    direction = np.random.default_rng(1).standard_normal(kernel.shape).astype(np.float32)
    step = 1e-2
    numeric = (float(objective(kernel + step * direction))
               - float(objective(kernel - step * direction))) / (2 * step)
    assert float(np.sum(grad * direction)) == pytest.approx(numeric, rel=2e-2, abs=1e-3)
    # Scale invariance of W / sigma(W): no gradient along W itself.
    assert abs(float(np.sum(grad * kernel.numpy()))) < 1e-3 * np.abs(grad).sum()


# -- per-cell softmax(-srank) mixing ---------------------------------------------

def test_mixing_weights_example_from_the_spec():
    np.testing.assert_array_equal(msr.mixing_weights([4903.0, 5357.0, 5679.0, 4267.0]),
                                  [0.0, 0.0, 0.0, 1.0])


def test_every_cell_mixes_by_softmax_of_minus_its_own_sranks():
    net = tiny_msr()
    sranks, weights = msr.cell_mixing(net)
    assert sranks.shape == weights.shape == (3, 5, 4)
    expected = tf.nn.softmax(-tf.constant(sranks, tf.float64), axis=-1).numpy()
    np.testing.assert_allclose(weights, expected, atol=1e-7)
    assert not np.allclose(sranks[1], sranks[2])  # Two reduction cells, two matrices.
    # One entry by hand: cell 0 (8x8 input), edge 0, sep_conv_3x3: H*W * srank(last 1x1).
    last = msr.candidate_convs(net.search_cells[0].edges[0].candidates[0])[-1]
    assert sranks[0, 0, 0] == pytest.approx(64 * stable_rank(last.kernel.numpy()[0, 0]),
                                            rel=1e-6)
    # Reduction cell 1, a stride-1 edge: the "code" size is the cell's 8x8 input.
    last = msr.candidate_convs(net.search_cells[1].edges[4].candidates[2])[-1]
    assert sranks[1, 4, 2] == pytest.approx(64 * stable_rank(last.kernel.numpy()[0, 0]),
                                            rel=1e-6)


def test_only_the_argmin_op_gets_weight_gradient():
    net = tiny_msr()
    rng = np.random.default_rng(0)
    argmin = rng.integers(0, 4, (3, 5))
    sranks = 1000.0 + rng.uniform(0.0, 500.0, (3, 5, 4))
    sranks[np.arange(3)[:, None], np.arange(5)[None], argmin] = 500.0  # Gaps >= 500.
    weights = msr.mixing_weights(sranks)
    images, labels = batch()
    with tf.GradientTape() as tape:
        logits = net(images, training=True, plan=plans.MixPerCell(weights))
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    ops_ = [(c, e, k, op) for c, cell in enumerate(net.search_cells)
            for e, edge in enumerate(cell.edges) for k, op in enumerate(edge.candidates)]
    variables = [[v.value for v in op.trainable_variables] for *_, op in ops_]
    grads = tape.gradient(loss, variables)
    for (c, e, k, _), op_grads in zip(ops_, grads):
        norm = sum(0.0 if g is None else float(tf.reduce_sum(g * g)) for g in op_grads)
        assert (norm > 0.0) == (k == argmin[c, e]), (c, e, k)


def test_supernet_cell_weights_argument():
    net = SearchNetwork(3, channels=4, num_layers=3, num_nodes=2, input_shape=(8, 8, 3))
    images, _ = batch()
    probs = net.arch_probabilities()
    per_cell = np.stack([probs["reduce" if cell.reduction else "normal"]
                         for cell in net.search_cells])
    np.testing.assert_allclose(net(images, plan=plans.MixPerCell(per_cell)), net(images),
                               atol=1e-5)
    with pytest.raises(ValueError, match="cell_weights shape"):
        net(images, plan=plans.MixPerCell(per_cell[:2]))


def test_shared_traces_compute_what_the_inline_layers_do():
    # Inside a tf.function the edges run through tracing.call_shared (one traced
    # function per kind of edge, recomputed in backprop); eagerly they run inline.
    net = tiny_msr(num_nodes=1, recompute="all")
    _, weights = msr.cell_mixing(net)
    images, labels = batch()
    start = [v.numpy().copy() for v in net.variables]

    def loss_and_grads():
        with tf.GradientTape() as tape:
            logits = net(images, training=True, plan=plans.MixPerCell(weights))
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels,
                                                                                 logits))
        return logits, tape.gradient(loss, [v.value for v in net.weight_variables])

    eager = loss_and_grads()
    eager_state = [v.numpy().copy() for v in net.variables]
    for v, value in zip(net.variables, start):
        v.assign(value)
    traced = tf.function(loss_and_grads, autograph=False)()
    np.testing.assert_allclose(traced[0], eager[0], rtol=1e-4, atol=1e-5)
    for a, b in zip(traced[1], eager[1]):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
    for v, value in zip(net.variables, eager_state):  # u, v, RNG counters, BN statistics.
        np.testing.assert_allclose(v.numpy(), value, rtol=1e-4, atol=1e-5)


# -- training --------------------------------------------------------------------

def test_weight_only_step_with_per_cell_weights():
    net = tiny_msr(num_nodes=1)
    search = msr.MsrSearch(net, tf.distribute.get_strategy(), 4, SearchHParams())
    search.set_cell_weights(msr.cell_mixing(net)[1])
    alphas = [v.numpy().copy() for v in net.arch_variables]
    weights = [v.numpy().copy() for v in net.weight_variables]
    metrics = search.step(batch(), None)
    assert set(metrics) == {"loss/train", "accuracy/train", "grad_norm"}
    assert int(search.arch_optimizer.iterations.numpy()) == 0
    for before, v in zip(alphas, net.arch_variables):
        np.testing.assert_array_equal(before, v.numpy())
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(weights, net.weight_variables))
    loss, correct, count = search.evaluate(batch(seed=1))
    assert math.isfinite(float(loss)) and float(count) == 4.0
    assert not hasattr(BilevelSearch(net, tf.distribute.get_strategy(), 4), "set_cell_weights")


def test_cosine_schedules_of_darts_and_msr():
    lr_max, lr_min, epochs = 0.025, 0.001, 50
    msr_lrs = [cosine_lr(e, epochs, lr_max, lr_min, stepped_before_epoch=False)
               for e in range(epochs)]
    darts_lrs = [cosine_lr(e, epochs, lr_max, lr_min) for e in range(epochs)]
    assert msr_lrs[0] == pytest.approx(0.025)  # cos(0) = 1.
    assert msr_lrs[25] == pytest.approx(0.013)  # cos(pi/2) = 0: the midpoint.
    assert msr_lrs[49] == pytest.approx(0.001 + 0.012 * (1 + math.cos(math.pi * 0.98)))
    assert darts_lrs[:-1] == pytest.approx(msr_lrs[1:])  # DARTS runs one value ahead...
    assert darts_lrs[-1] == pytest.approx(0.001)  # ...and ends at lr_min.


def test_train_portion_splits_the_train_split():
    data = load_search_data("digits", 32, train_portion=0.8)
    # digits: 1,797 images, 360 held out as test -> 1,437; floor(0.8 * 1437) = 1149.
    assert (data.info.num_search_train, data.info.num_search_val) == (1149, 288)
    default = load_search_data("digits", 32)
    assert (default.info.num_search_train, default.info.num_search_val) == (718, 719)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(DataError, match="train_portion"):
            load_search_data("digits", 32, train_portion=bad)


# -- configuration and CLI -------------------------------------------------------

def parse(*args):
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["search", "--output_dir=/tmp/unused", *args])
    return cli_flags.to_search_config()


def test_method_msr_implies_its_space_and_read_out():
    with flagsaver.flagsaver():
        config = parse("--method=msr")
        assert (config.primitives, config.selection) == ("msr", "stable_rank")
        methods.get(config.method)(config).check("default")
        assert parse().method == "darts" and parse().primitives == "darts"


@pytest.mark.parametrize("args, message", [
    (["--method=msr", "--primitives=darts"], "--primitives=msr"),
    (["--method=msr", "--selection=magnitude"], "--selection=stable_rank"),
    (["--method=msr", "--selection=perturbation"], "--selection=stable_rank"),
    (["--method=msr", "--relaxation=single_edge"], "trains no alphas"),
    (["--method=blank", "--relaxation=single_edge"], "trains no alphas"),
    (["--method=blank", "--order=second"], "trains no alphas"),
])
def test_bad_method_combinations_are_config_errors(args, message):
    with flagsaver.flagsaver(), pytest.raises(ConfigError, match=message):
        config = parse(*args)
        methods.get(config.method)(config).check("default")


def test_method_and_train_portion_must_match_on_resume():
    saved = SearchConfig(output_dir="x")
    with pytest.raises(ConfigError, match="--method.*--train_portion"):
        SearchConfig(output_dir="x", method="msr", primitives="msr", selection="stable_rank",
                     train_portion=0.8).check_resumable_from(saved)


def test_msr_flagfile_has_the_paper_settings():
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flagfile = os.path.join(REPO, "flags", "msr_darts_cifar10.cfg")
        flags.FLAGS(["search", f"--flagfile={flagfile}"])
        config = cli_flags.to_search_config()
    assert (config.method, config.primitives, config.selection, config.dataset) == \
        ("msr", "msr", "stable_rank", "tfds:cifar10")
    assert (config.channels, config.layers, config.epochs, config.batch_size, config.seed,
            config.train_portion, config.w_lr, config.w_lr_min) == \
        (16, 8, 50, 128, 2, 0.8, 0.025, 0.001)
    methods.get(config.method)(config).check("default")


@pytest.mark.slow
def test_msr_search_end_to_end(tmp_path):
    out = tmp_path / "run"
    result = run_module("keras_darts.search", *tiny_search_flags(
        steps_per_epoch=2, recompute="none", train_portion=0.8, epochs=2, method="msr",
        output_dir=out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "val loss" not in result.stderr  # Weight-only steps.
    genotype = genotype_lib.load(str(out / "genotype.json"))
    assert len(genotype.normal) == len(genotype.reduce) == 4
    assert {op for op, _ in genotype.normal + genotype.reduce} <= set(MSR_OPS)
    assert os.path.exists(out / "genotypes" / "epoch_002.json")
    scores = json.load(open(out / "selection_scores.json"))
    assert scores["selection"] == "stable_rank"
    assert [cell["type"] for cell in scores["scores"]["cells"]] == ["normal", "reduce", "reduce"]
    assert all(len(cell["pairs"]) == 4 for cell in scores["scores"]["cells"])
    epoch = json.load(open(out / "alphas" / "epoch_002.json"))
    mixing = np.array(epoch["mixing"])
    assert epoch["method"] == "msr" and mixing.shape == (3, 5, 4)
    np.testing.assert_allclose(mixing, msr.mixing_weights(epoch["mixing_srank"]), atol=1e-6)
    assert {"srank/normal", "srank/reduce", "genotype/text", "lr/weights"} <= \
        event_tags(str(out / "tensorboard"))
    config = json.load(open(out / "config.json"))
    assert (config["method"], config["primitives"], config["selection"]) == \
        ("msr", "msr", "stable_rank")
