"""Tests for keras_darts.space.mixing: the softmax and Max-W (sharpDARTS) mixing rules,
their gradients, and the supernet / bilevel step reading the supernet's rule."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_darts.errors import ConfigError
from keras_darts.methods.bilevel import BilevelSearch, SearchHParams
from keras_darts.space import mixing, plans
from keras_darts.space.supernet import SearchNetwork

ALPHA = np.array([[0.0, 1.0, 2.0], [3.0, 3.0, 0.0]], np.float32)
SMALL_PRIMITIVES = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3")


def np_softmax(a):
    a = np.asarray(a, np.float64)
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_max_w(a, temperature=None):
    """The spec: w = softmax(alpha / T); c_k = 1 - max_j w_j + w_k."""
    w = np_softmax(a if temperature is None else np.asarray(a, np.float64) / temperature)
    return 1.0 - w.max(axis=-1, keepdims=True) + w


def max_w_detached(alpha):
    """Max-W with the max cut out of the gradient (what the rule must NOT be)."""
    w = tf.nn.softmax(alpha, axis=-1)
    return 1.0 - tf.stop_gradient(tf.reduce_max(w, axis=-1, keepdims=True)) + w


# --------------------------------------------------------------------------
# values


def test_max_w_hand_set_alphas():
    c = mixing.max_w(tf.constant(ALPHA)).numpy()
    np.testing.assert_allclose(c, np_max_w(ALPHA), rtol=1e-6, atol=1e-7)
    # Row 0: the argmax alone gets exactly 1; row 1: both tied maxima do.
    assert c[0, 2] == 1.0
    assert c[1, 0] == 1.0 and c[1, 1] == 1.0
    assert np.all(c[0, :2] < 1.0) and c[1, 2] < 1.0
    # Not the softmax, and the coefficients do not sum to 1.
    assert not np.allclose(c, np_softmax(ALPHA), atol=1e-2)
    assert np.all(c.sum(axis=-1) > 1.5)


def test_max_w_argmax_is_exactly_one_on_random_alphas():
    rng = np.random.default_rng(0)
    alpha = (3.0 * rng.standard_normal((64, 8))).astype(np.float32)
    c = mixing.max_w(tf.constant(alpha)).numpy()
    np.testing.assert_array_equal(c[np.arange(64), alpha.argmax(axis=-1)], 1.0)
    np.testing.assert_allclose(c, np_max_w(alpha), rtol=1e-5, atol=1e-6)
    assert np.all(c <= 1.0) and np.all(c > 0.0)


@pytest.mark.parametrize("temperature", [0.5, 2.0, 7.0])
def test_max_w_with_temperature(temperature):
    c = mixing.max_w(tf.constant(ALPHA), tf.constant(temperature)).numpy()
    np.testing.assert_allclose(c, np_max_w(ALPHA, temperature), rtol=1e-6, atol=1e-7)
    assert not np.allclose(c, np_max_w(ALPHA), atol=1e-3)
    assert c[0, 2] == 1.0


def test_max_w_is_shift_invariant_per_row():
    shifted = ALPHA + np.array([[5.0], [-2.0]], np.float32)
    np.testing.assert_allclose(mixing.max_w(tf.constant(shifted)).numpy(),
                               mixing.max_w(tf.constant(ALPHA)).numpy(), rtol=1e-6, atol=1e-7)


def test_softmax_rule_unchanged():
    got = mixing.softmax(tf.constant(ALPHA)).numpy()
    np.testing.assert_allclose(got, np_softmax(ALPHA), rtol=1e-6)
    np.testing.assert_allclose(got.sum(axis=-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(mixing.softmax(tf.constant(ALPHA), tf.constant(4.0)).numpy(),
                               np_softmax(ALPHA / 4.0), rtol=1e-6)


def test_rule_registry():
    assert {"softmax", "max_w"} <= set(mixing.names())
    assert mixing.get("softmax") is mixing.softmax
    assert mixing.get("max_w") is mixing.max_w
    with pytest.raises(ConfigError, match="maxw"):
        mixing.get("maxw")
    with pytest.raises(ConfigError):
        SearchNetwork(3, channels=4, num_layers=3, num_nodes=2, primitives=SMALL_PRIMITIVES,
                      input_shape=(8, 8, 3), mixing="sharp_w")


# --------------------------------------------------------------------------
# gradient


def np_softmax_jacobian(w):
    """dw_k / dalpha_j = w_k (delta_kj - w_j), one [K, K] matrix per row."""
    return np.stack([np.diag(row) - np.outer(row, row) for row in w])


def test_max_w_gradient_flows_through_the_max():
    alpha = np.array([[0.0, 1.0, 2.0], [0.5, -1.0, 0.2], [1.5, 2.5, -0.5]], np.float32)
    v = np.array([[1.0, -2.0, 0.5], [3.0, 1.0, -1.0], [0.2, -0.7, 2.0]], np.float32)
    a = tf.Variable(alpha)
    with tf.GradientTape(persistent=True) as tape:
        loss = tf.reduce_sum(mixing.max_w(a) * v)
        loss_detached = tf.reduce_sum(max_w_detached(a) * v)
    grad = tape.gradient(loss, a).numpy()
    grad_detached = tape.gradient(loss_detached, a).numpy()

    w = np_softmax(alpha)
    jac = np_softmax_jacobian(w)  # [rows, k, j]
    m = w.argmax(axis=-1)
    v64 = v.astype(np.float64)
    # d/dalpha_j sum_k v_k (1 - w_m + w_k) = sum_k v_k J_kj - (sum_k v_k) J_mj.
    through = np.einsum("rk,rkj->rj", v64, jac)
    expected = through - v64.sum(axis=-1, keepdims=True) * jac[np.arange(3), m]
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad_detached, through, rtol=1e-5, atol=1e-6)
    assert not np.allclose(grad, grad_detached, atol=1e-3)


def test_max_w_gradient_with_temperature():
    alpha = np.array([[0.3, -0.4, 1.1, 0.0]], np.float32)
    v = np.array([[2.0, 1.0, -1.0, 0.5]], np.float32)
    t = 2.5
    a = tf.Variable(alpha)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(mixing.max_w(a, tf.constant(t)) * v)
    grad = tape.gradient(loss, a).numpy()
    w = np_softmax(alpha / t)
    jac = np_softmax_jacobian(w) / t
    v64 = v.astype(np.float64)
    expected = (np.einsum("rk,rkj->rj", v64, jac)
                - v64.sum(axis=-1, keepdims=True) * jac[0, w.argmax()])
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------
# the supernet and the bilevel step read the supernet's rule


@pytest.fixture(scope="module")
def max_w_search():
    keras.utils.set_random_seed(0)
    net = SearchNetwork(3, channels=4, num_layers=3, num_nodes=2, primitives=SMALL_PRIMITIVES,
                        input_shape=(8, 8, 3), mixing="max_w")
    rng = np.random.default_rng(0)
    for alpha in net.arch_variables:  # Far from uniform, so the rules differ clearly.
        alpha.assign(rng.standard_normal(alpha.shape).astype(np.float32))
    search = BilevelSearch(net, tf.distribute.get_strategy(), 4, SearchHParams())
    images = tf.constant(rng.standard_normal((4, 8, 8, 3)), tf.float32)
    labels = tf.constant(rng.integers(0, 3, 4), tf.int32)
    return net, search, (images, labels)


def test_supernet_holds_max_w(max_w_search):
    net, _, _ = max_w_search
    assert net.mixing == "max_w"
    assert net.mixing_rule is mixing.max_w
    for alpha in net.arch_variables:
        np.testing.assert_allclose(net.default_mixing(alpha).numpy(), np_max_w(alpha.numpy()),
                                   rtol=1e-6, atol=1e-7)
    # The selection criteria still read softmax(alpha).
    for cell_type, probs in net.arch_probabilities().items():
        np.testing.assert_allclose(probs, np_softmax(net.alphas[cell_type].numpy()), rtol=1e-5)
    default = SearchNetwork(3, channels=4, num_layers=3, num_nodes=2,
                            primitives=SMALL_PRIMITIVES, input_shape=(8, 8, 3))
    assert default.mixing_rule is mixing.softmax


def test_bilevel_search_mixes_by_max_w(max_w_search):
    net, search, (images, _) = max_w_search
    assert search.mixing_rule is mixing.max_w
    weights = search.mixing_weights()
    assert set(weights) == set(net.alphas)
    for cell_type, alpha in net.alphas.items():
        np.testing.assert_allclose(weights[cell_type].numpy(), np_max_w(alpha.numpy()),
                                   rtol=1e-6, atol=1e-7)
        # No rows fixed: the step's plan mixes by exactly the rule's weights.
        np.testing.assert_allclose(search.plan().weights[cell_type].numpy(),
                                   weights[cell_type].numpy(), rtol=1e-6)
    max_w_plan = plans.Mix({k: np_max_w(a.numpy()).astype(np.float32)
                            for k, a in net.alphas.items()})
    softmax_plan = plans.Mix({k: np_softmax(a.numpy()).astype(np.float32)
                              for k, a in net.alphas.items()})
    y_max_w = net(images, training=False, plan=max_w_plan).numpy()
    y_softmax = net(images, training=False, plan=softmax_plan).numpy()
    y_default = net(images, training=False).numpy()
    assert not np.allclose(y_max_w, y_softmax, atol=1e-3)
    np.testing.assert_allclose(y_default, y_max_w, rtol=1e-4, atol=1e-5)
    y_step_plan = net(images, training=False, plan=search.plan()).numpy()
    np.testing.assert_allclose(y_step_plan, y_max_w, rtol=1e-4, atol=1e-5)


def test_bilevel_evaluate_uses_max_w(max_w_search):
    """The traced evaluation of the step mixes by the supernet's rule."""
    net, search, (images, labels) = max_w_search

    def loss_sum(plan):
        logits = net(images, training=False, plan=plan)
        return float(tf.reduce_sum(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)))

    max_w_loss = loss_sum(plans.Mix({k: mixing.max_w(a) for k, a in net.alphas.items()}))
    softmax_loss = loss_sum(plans.Mix({k: mixing.softmax(a) for k, a in net.alphas.items()}))
    assert abs(max_w_loss - softmax_loss) > 1e-3 * abs(softmax_loss)
    total, _, count = search.evaluate((images, labels))
    assert float(count) == 4.0
    np.testing.assert_allclose(float(total), max_w_loss, rtol=1e-4)
