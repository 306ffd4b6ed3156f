"""The bilevel search step (keras_darts/methods/bilevel.py) and the optimizers
(docs/methods/darts.md)."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_darts.methods.bilevel import BilevelSearch, SearchHParams
from keras_darts.optim import Adam, MomentumSGD
from keras_darts.schedules import cosine as cosine_lr
from keras_darts.space import plans
from keras_darts.space.genotype import Genotype
from keras_darts.space.search_space import dense_edges
from keras_darts.space.supernet import SearchNetwork

SMALL_PRIMITIVES = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3")


def build(hparams, primitives="darts", batch=4, seed=0):
    keras.utils.set_random_seed(seed)
    net = SearchNetwork(3, channels=4, num_layers=3, num_nodes=2, primitives=primitives,
                        input_shape=(8, 8, 3))
    search = BilevelSearch(net, tf.distribute.get_strategy(), batch, hparams)
    rng = np.random.default_rng(seed)
    train = (tf.constant(rng.standard_normal((batch, 8, 8, 3)), tf.float32),
             tf.constant(rng.integers(0, 3, batch), tf.int32))
    val = (tf.constant(rng.standard_normal((batch, 8, 8, 3)), tf.float32),
           tf.constant(rng.integers(0, 3, batch), tf.int32))
    return net, search, train, val


def snapshot(variables):
    return [v.numpy().copy() for v in variables]


def mean_ce(net, batch, training=True):
    images, labels = batch
    logits = net(images, training=training)
    return float(tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)))


def weight_grads(net, batch):
    """Eager gradient of the mean train CE w.r.t. the weights (train-mode BN)."""
    images, labels = batch
    with tf.GradientTape() as tape:
        logits = net(images, training=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    return [g.numpy() for g in tape.gradient(loss, net.weight_variables)]


def global_norm(arrays):
    return math.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in arrays))


# --------------------------------------------------------------------------
# the two phases of a step


# One worker builds the module fixture below for all of this module's tests.
pytestmark = pytest.mark.xdist_group("test_bilevel")


@pytest.fixture(scope="module")
def darts_search():
    return build(SearchHParams(w_weight_decay=0.0, w_grad_clip=0.05, a_weight_decay=0.0))


def test_weight_phase_only_changes_weights_and_clips(darts_search):
    net, search, train, val = darts_search
    hp = search.hparams
    search.arch_optimizer.learning_rate.assign(0.0)
    a0, w0 = snapshot(net.arch_variables), snapshot(net.weight_variables)
    expected_val_loss = mean_ce(net, val)
    expected_train_loss = mean_ce(net, train)
    g = weight_grads(net, train)
    g_norm = global_norm(g)
    assert g_norm > 10 * hp.w_grad_clip  # clipping is active

    out = search.step(train, val)

    for a, b in zip(a0, snapshot(net.arch_variables)):
        np.testing.assert_array_equal(a, b)
    w1 = snapshot(net.weight_variables)
    assert sum(not np.array_equal(a, b) for a, b in zip(w0, w1)) > 0.9 * len(w0)
    np.testing.assert_allclose(float(out["grad_norm"]), g_norm, rtol=1e-4)
    np.testing.assert_allclose(float(out["loss/val"]), expected_val_loss, rtol=1e-5)
    np.testing.assert_allclose(float(out["loss/train"]), expected_train_loss, rtol=1e-5)
    for key in ("accuracy/train", "accuracy/val"):
        assert float(out[key]) in (0.0, 0.25, 0.5, 0.75, 1.0)
    # First step, empty momentum buffer, no decay: w1 = w0 - lr * clip * g / ||g||.
    delta = [b - a for a, b in zip(w0, w1)]
    assert global_norm(delta) <= hp.w_lr * hp.w_grad_clip * (1 + 1e-4)
    np.testing.assert_allclose(global_norm(delta), hp.w_lr * hp.w_grad_clip, rtol=1e-3)
    scale = hp.w_lr * hp.w_grad_clip / g_norm
    for a, b, gi in zip(w0, w1, g):
        expected = a.astype(np.float64) - scale * gi
        # float32 storage: allow a few ulps of the weight on top of 0.1 % of the step.
        tolerance = 1e-3 * np.abs(scale * gi) + 2 * np.spacing(np.abs(a))
        assert np.all(np.abs(b - expected) <= tolerance)


def test_arch_phase_only_changes_alphas(darts_search):
    net, search, train, val = darts_search
    search.arch_optimizer.learning_rate.assign(search.hparams.a_lr)
    search.set_weight_lr(0.0)
    assert float(search.weight_optimizer.learning_rate) == 0.0
    a0, w0 = snapshot(net.arch_variables), snapshot(net.weight_variables)
    # The module's tests share the fixture (and may run in any order): count this step only.
    steps_before = (int(search.arch_optimizer.iterations),
                    int(search.weight_optimizer.iterations))
    search.step(train, val)
    for a, b in zip(w0, snapshot(net.weight_variables)):
        np.testing.assert_array_equal(a, b)
    a1 = snapshot(net.arch_variables)
    for a, b in zip(a0, a1):
        assert not np.array_equal(a, b)
        # An Adam step moves each entry by at most ~lr / (1 - beta_1^t) ~ a few lr.
        assert np.abs(b - a).max() <= 4 * search.hparams.a_lr
        assert np.abs(b - a).max() > 0.1 * search.hparams.a_lr
    assert int(search.arch_optimizer.iterations) == steps_before[0] + 1
    assert int(search.weight_optimizer.iterations) == steps_before[1] + 1


def test_evaluate_matches_eager_eval(darts_search):
    net, search, _, val = darts_search
    loss_sum, correct, count = search.evaluate(val)
    logits = net(val[0], training=False)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(val[1], logits)
    np.testing.assert_allclose(float(loss_sum), float(tf.reduce_sum(ce)), rtol=1e-5)
    hits = np.sum(np.argmax(logits.numpy(), -1) == val[1].numpy())
    assert float(correct) == hits
    assert float(count) == 4.0


def test_evaluate_arch_equals_one_hot_mixing():
    """A discrete architecture = the supernet mixing its chosen op with weight 1 on
    its chosen edges and 0 everywhere else (both in train mode)."""
    net, search, _, val = build(SearchHParams())
    genotype = Genotype(normal=[("sep_conv_3x3", 0), ("skip_connect", 1),
                                ("max_pool_3x3", 2), ("dil_conv_5x5", 0)], normal_concat=[2, 3],
                        reduce=[("skip_connect", 0), ("avg_pool_3x3", 1),
                                ("sep_conv_5x5", 1), ("sep_conv_3x3", 2)], reduce_concat=[2, 3])
    rows = {(node, j): e for e, (node, j) in enumerate(dense_edges(2))}
    one_hot = {}
    for cell, pairs in (("normal", genotype.normal), ("reduce", genotype.reduce)):
        weights = np.zeros(tuple(net.alpha_normal.shape), np.float32)
        for position, (op, j) in enumerate(pairs):
            weights[rows[(position // 2, j)], net.primitives.index(op)] = 1.0
        one_hot[cell] = weights
    discrete = [float(v) for v in search.evaluate_plan(val, plans.Discrete(genotype))]
    mixed = [float(v) for v in search.evaluate_plan(val, plans.Mix(one_hot))]
    np.testing.assert_allclose(discrete, mixed, rtol=1e-5)
    logits = net(val[0], training=True, plan=plans.Discrete(genotype))
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(val[1], logits)
    np.testing.assert_allclose(discrete[0], float(tf.reduce_sum(ce)), rtol=1e-5)
    assert discrete[1] == np.sum(np.argmax(logits.numpy(), -1) == val[1].numpy())


def test_arch_update_alone_changes_only_alphas():
    net, search, _, val = build(SearchHParams(), primitives=SMALL_PRIMITIVES)
    strategy = search.strategy
    a0, w0 = snapshot(net.arch_variables), snapshot(net.weight_variables)
    bn0 = snapshot(net.non_trainable_variables)

    @tf.function(autograph=False)
    def arch_step(images, labels):
        return strategy.run(search._arch_update, args=(images, labels))

    loss, _ = arch_step(*val)
    assert np.isfinite(float(loss))
    for a, b in zip(w0, snapshot(net.weight_variables)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(a0, snapshot(net.arch_variables)):
        assert not np.array_equal(a, b)
    # The supernet runs in train mode: BN moving statistics moved (they are not trainable).
    bn1 = snapshot(net.non_trainable_variables)
    assert any(not np.array_equal(a, b) for a, b in zip(bn0, bn1))


def test_weight_step_clips_before_coupled_l2():
    """w1 = w0 - lr * (clip(g) + wd * w0) on the first step
    (docs/methods/darts.md#weight-update)."""
    hp = SearchHParams(w_lr=0.05, w_weight_decay=0.1, w_grad_clip=1e-3)
    net, search, train, val = build(hp, primitives=SMALL_PRIMITIVES)
    search.arch_optimizer.learning_rate.assign(0.0)
    w0 = snapshot(net.weight_variables)
    g = weight_grads(net, train)
    g_norm = global_norm(g)
    out = search.step(train, val)
    np.testing.assert_allclose(float(out["grad_norm"]), g_norm, rtol=1e-4)
    factor = hp.w_grad_clip / max(g_norm, hp.w_grad_clip)
    checked = 0
    for a, b, gi in zip(w0, snapshot(net.weight_variables), g):
        step = hp.w_lr * (factor * gi + hp.w_weight_decay * a.astype(np.float64))
        tolerance = (1e-3 * np.abs(step) + 1e-5 * np.abs(step).max()
                     + 2 * np.spacing(np.abs(a)))
        assert np.all(np.abs(b - (a - step)) <= tolerance)
        # L2 added before clipping would shrink the decay term by the clip factor.
        wrong = hp.w_lr * factor * (gi + hp.w_weight_decay * a)
        if np.abs(a).max() > 0.01:  # (zero-initialised BN betas cannot tell)
            checked += 1
            assert np.abs(b - (a - wrong)).max() > 10 * tolerance.max()
    assert checked > 0.5 * len(w0)


# --------------------------------------------------------------------------
# optimizers vs hand-written PyTorch formulas


def test_momentum_sgd_matches_pytorch():
    lr, mu, wd = 0.1, 0.9, 0.01
    w = np.array([1.0, -2.0, 0.5], np.float64)
    var = tf.Variable(w.astype(np.float32))
    opt = MomentumSGD([var], lr, momentum=mu, weight_decay=wd)
    grads = [np.array([0.3, -0.1, 2.0]), np.array([-0.5, 0.4, 1.0])]
    buf = np.zeros(3)
    for step, g in enumerate(grads, 1):
        opt.apply([tf.constant(g, tf.float32)], [var])
        buf = mu * buf + (g + wd * w)
        w = w - lr * buf
        np.testing.assert_allclose(var.numpy(), w, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(opt.slots["momentum"][0].numpy(), buf, rtol=1e-5, atol=1e-7)
        assert int(opt.iterations) == step


@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.5, 0.999)])
def test_adam_matches_pytorch(betas):
    lr, (b1, b2), eps, wd = 0.01, betas, 1e-8, 1e-3
    w = np.array([[0.5, -1.0], [2.0, 1e-3]], np.float64)
    var = tf.Variable(w.astype(np.float32))
    opt = Adam([var], lr, beta_1=b1, beta_2=b2, epsilon=eps, weight_decay=wd)
    grads = [np.array([[0.1, -0.2], [1e-6, 0.0]]), np.array([[-0.3, 0.2], [5.0, 1e-7]])]
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(grads, 1):
        opt.apply([tf.constant(g, tf.float32)], [var])
        g = g + wd * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        denom = np.sqrt(v) / math.sqrt(1 - b2 ** t) + eps
        w = w - (lr / (1 - b1 ** t)) * m / denom
        np.testing.assert_allclose(var.numpy(), w, rtol=1e-5, atol=1e-7)


def test_adam_epsilon_placement():
    """Tiny gradients expose eps: PyTorch adds eps to sqrt(v_hat), outside the bias correction."""
    lr, eps = 1.0, 1e-8
    var = tf.Variable([0.0])
    opt = Adam([var], lr, beta_1=0.9, beta_2=0.999, epsilon=eps)
    g = 1e-8
    opt.apply([tf.constant([g])], [var])
    # t=1: m_hat = g, sqrt(v_hat) = |g| -> step = lr * g / (g + eps) = 0.5.
    np.testing.assert_allclose(var.numpy(), [-0.5], rtol=1e-4)


def test_optimizer_rejects_wrong_variable_count():
    a, b = tf.Variable(1.0), tf.Variable(2.0)
    opt = MomentumSGD([a], 0.1)
    with pytest.raises(ValueError):
        opt.apply([tf.constant(1.0), tf.constant(1.0)], [a, b])


# --------------------------------------------------------------------------
# learning-rate schedule


def test_cosine_lr_reference_schedule():
    lrs = [cosine_lr(e, 50, 0.025, 0.001) for e in range(50)]
    assert abs(lrs[0] - (0.001 + 0.012 * (1 + math.cos(math.pi / 50)))) < 1e-12
    assert abs(lrs[-1] - 0.001) < 1e-12
    assert abs(lrs[24] - (0.001 + 0.012 * (1 + math.cos(math.pi * 25 / 50)))) < 1e-12
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert lrs[0] < 0.025


def test_default_hparams_follow_reference():
    hp = SearchHParams()
    assert (hp.w_lr, hp.w_lr_min, hp.w_momentum, hp.w_weight_decay, hp.w_grad_clip) == (
        0.025, 0.001, 0.9, 3e-4, 5.0)
    assert (hp.a_lr, hp.a_beta_1, hp.a_beta_2, hp.a_epsilon, hp.a_weight_decay) == (
        3e-4, 0.5, 0.999, 1e-8, 1e-3)


def test_fixed_rows_get_no_alpha_gradient_and_are_used():
    """DARTS-PT tuning: decided rows are held at their one-hot weights; the step
    changes only the other alpha rows (their Adam update needs a gradient)."""
    keras.utils.set_random_seed(0)
    net = SearchNetwork(10, channels=4, num_layers=3, num_nodes=2, input_shape=(8, 8, 3))
    search = BilevelSearch(net, tf.distribute.get_strategy(), 4,
                           SearchHParams(a_weight_decay=0.0))
    one_hot = np.eye(len(net.primitives), dtype=np.float32)[4]
    search.fix_rows({"normal": {0: one_hot}})
    weights = search._mixing_weights()
    np.testing.assert_array_equal(weights["normal"][0], one_hot)
    np.testing.assert_allclose(weights["normal"][1], tf.nn.softmax(net.alpha_normal[1]))
    before = net.alpha_normal.numpy()
    rng = np.random.default_rng(0)
    batch = (tf.constant(rng.standard_normal((4, 8, 8, 3)).astype(np.float32)),
             tf.constant(rng.integers(0, 10, 4).astype(np.int32)))
    search.step(batch, batch)
    after = net.alpha_normal.numpy()
    np.testing.assert_array_equal(after[0], before[0])  # No gradient, no decay: unchanged.
    assert not np.allclose(after[1:], before[1:])


def test_evaluation_uses_the_fixed_rows():
    """After DARTS-PT's projection the supernet the run reports on (test
    accuracy) is the projected one it was tuned as, not plain softmax(alpha)."""
    keras.utils.set_random_seed(0)
    net = SearchNetwork(10, channels=4, num_layers=3, num_nodes=2, input_shape=(8, 8, 3))
    search = BilevelSearch(net, tf.distribute.get_strategy(), 4)
    rng = np.random.default_rng(1)
    images = tf.constant(rng.standard_normal((4, 8, 8, 3)).astype(np.float32))
    labels = tf.constant(rng.integers(0, 10, 4).astype(np.int32))
    plain_loss = float(search.evaluate((images, labels))[0])
    np.testing.assert_allclose(plain_loss, _sum_ce(labels, net(images, training=False)),
                               rtol=1e-5)
    eye = np.eye(len(net.primitives), dtype=np.float32)
    fixed = {"normal": {0: eye[4], 1: np.zeros(len(net.primitives), np.float32)},
             "reduce": {2: eye[3]}}
    search.fix_rows(fixed)
    loss = float(search.evaluate((images, labels))[0])
    expected = _sum_ce(labels, net(images, training=False,
                                   plan=plans.Mix(search._mixing_weights())))
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    assert abs(loss - plain_loss) > 1e-4


def _sum_ce(labels, logits):
    return float(tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)))
