"""Tests for keras_darts.tracing: shared traces (and recomputation) change nothing
but speed and memory: outputs, gradients and BatchNorm statistics equal the
inline (eager) computation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_darts import ops
from keras_darts.infra import tracing
from keras_darts.space.cells import MixedOp

DARTS = ops.op_set("darts")


def make_edges(stride, recompute, channels=4):
    """Two edges of the same kind (so they share one trace), same seed -> same weights."""
    keras.utils.set_random_seed(0)
    return [MixedOp(channels, stride, DARTS, recompute=recompute) for _ in range(2)]


def inputs(channels=4):
    rng = np.random.default_rng(1)
    x = tf.constant(rng.standard_normal((2, 8, 8, channels)).astype(np.float32))
    w = tf.nn.softmax(tf.constant(rng.standard_normal((2, len(DARTS))).astype(np.float32)))
    target = tf.constant(rng.standard_normal((2, 8, 8, channels)).astype(np.float32))
    return x, w, target


def forward_backward(edges, x, w, target, weight_grads, stride):
    """Loss of both edges on x, and its gradients w.r.t. x, w and the edges' weights."""
    variables = [v.value for e in edges for v in e.trainable_variables]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, w])
        y = sum(edge(x, tf.nn.relu(x), w[i], training=True, weight_grads=weight_grads)
                for i, edge in enumerate(edges))
        loss = tf.reduce_sum(y * target[:, ::stride, ::stride])
    grads = tape.gradient(loss, [x, w])
    return loss, grads, tape.gradient(loss, variables)


def moving_stats(edges):
    return [v.numpy() for e in edges for v in e.non_trainable_variables]


@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("stride", [1, 2])
def test_shared_trace_equals_inline(stride, recompute):
    x, w, target = inputs()
    eager_edges = make_edges(stride, recompute)
    assert not tracing.can_share()  # Eager: every layer runs inline.
    loss, grads, var_grads = forward_backward(eager_edges, x, w, target, True, stride)

    shared_edges = make_edges(stride, recompute)
    shared = tf.function(lambda: forward_backward(shared_edges, x, w, target, True, stride))
    s_loss, s_grads, s_var_grads = shared()

    np.testing.assert_allclose(s_loss, loss, rtol=1e-5)
    for got, want in zip(s_grads + s_var_grads, grads + var_grads):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # BN statistics were updated once per call, as inline (not again when recomputing).
    for got, want in zip(moving_stats(shared_edges), moving_stats(eager_edges)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(moving_stats(shared_edges)[0], 0.0)


def test_edges_of_one_kind_share_one_trace():
    x, w, target = inputs(channels=6)  # A kind no other test uses.
    edges = make_edges(1, recompute=True, channels=6)
    tf.function(lambda: forward_backward(edges, x, w, target, True, 1))()
    template = edges[0].__dict__["_shared_template"]
    assert edges[1].__dict__["_shared_template"] is template
    functions = template.__dict__["_shared_functions"]
    assert list(functions) == [(MixedOp.mix, False, True)]
    assert functions[MixedOp.mix, False, True].experimental_get_tracing_count() == 1


def test_constant_variables_skip_weight_gradients_only():
    x, w, target = inputs()
    eager_edges = make_edges(1, recompute=True)
    _, grads, _ = forward_backward(eager_edges, x, w, target, True, 1)
    edges = make_edges(1, recompute=True)
    _, s_grads, s_var_grads = tf.function(
        lambda: forward_backward(edges, x, w, target, False, 1))()
    for got, want in zip(s_grads, grads):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # The inline max pool has no weights, so no weight gets a gradient.
    assert all(g is None for g in s_var_grads)
