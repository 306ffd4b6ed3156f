"""Second-order DARTS (docs/methods/darts.md#second-order-gradient): the finite-difference unrolled
gradient against an exact one from nested GradientTapes."""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from keras_darts.methods.bilevel import BilevelSearch, SearchHParams
from keras_darts.space.supernet import SearchNetwork

# No max pool (its gradient is not twice differentiable in TF); still BatchNorm,
# ReLU, depthwise + pointwise convs, an identity and `none`.
PRIMITIVES = ("none", "skip_connect", "avg_pool_3x3", "sep_conv_3x3")
HPARAMS = SearchHParams(w_lr=0.5)  # A large virtual step makes the Hessian term matter.


def setup(hparams=HPARAMS):
    keras.utils.set_random_seed(0)
    model = SearchNetwork(3, channels=4, num_layers=3, num_nodes=2, primitives=PRIMITIVES,
                          input_shape=(8, 8, 3))
    rng = np.random.default_rng(0)
    for alpha in model.arch_variables:
        alpha.assign(rng.standard_normal(alpha.shape).astype(np.float32))
    search = BilevelSearch(model, tf.distribute.get_strategy(), 8, hparams, order="second")
    # A non-zero momentum buffer, as after some weight steps.
    for m in search.weight_optimizer.slots["momentum"]:
        m.assign(0.1 * rng.standard_normal(m.shape).astype(np.float32))

    def batch(seed):
        r = np.random.default_rng(seed)
        return (tf.constant(r.standard_normal((8, 8, 8, 3)).astype(np.float32)),
                tf.constant(r.integers(0, 3, 8).astype(np.int32)))
    return model, search, batch(1), batch(2)


def loss_at(model, weights, images, labels):
    """Train-mode mean CE with the weight variables replaced by `weights`."""
    with keras.StatelessScope(state_mapping=list(zip(model.weight_variables, weights))):
        logits = model(images, training=True)
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))


def alpha_grads(model, weights, batch):
    alphas = [v.value for v in model.arch_variables]
    with tf.GradientTape() as tape:
        tape.watch(alphas)
        loss = loss_at(model, weights, *batch)
    return [t.numpy() for t in tape.gradient(loss, alphas)]


def virtual_step(model, search, train):
    """w' = w - lr (mu m + g + wd w), with g a function of the alphas (watched by
    any enclosing tape)."""
    hp = search.hparams
    w = [tf.convert_to_tensor(v) for v in model.weight_variables]
    with tf.GradientTape() as tape:
        tape.watch(w)
        loss = loss_at(model, w, *train)
    g = tape.gradient(loss, w)
    return w, [wi - hp.w_lr * (hp.w_momentum * m + gi + hp.w_weight_decay * wi)
               for wi, m, gi in zip(w, search.weight_optimizer.slots["momentum"], g)]


def exact_unrolled_grads(model, search, train, val):
    """d/dalpha L_val(w'(alpha), alpha) by differentiating through the virtual step."""
    alphas = [v.value for v in model.arch_variables]
    with tf.GradientTape() as outer:
        outer.watch(alphas)
        _, w_virtual = virtual_step(model, search, train)
        val_loss = loss_at(model, w_virtual, *val)
    return [t.numpy() for t in outer.gradient(val_loss, alphas)]


def unrolled(search, train, val):
    return [tf.convert_to_tensor(g).numpy()
            for g in tf.function(search._unrolled_arch_grads)(*train, *val)[2]]


def test_finite_difference_converges_to_the_exact_unrolled_gradient():
    # The reference's eps (0.01 / ||v||) crosses ReLU kinks of this tiny network, so the
    # exact comparison uses a small eps; tolerance 5 % of the Hessian term's norm
    # (float32 round-off divided by 2 eps ~ 1e-5 is a few per cent of it).
    hparams = dataclasses.replace(HPARAMS, unrolled_eps=1e-5)
    model, search, train, val = setup(hparams)
    _, w_virtual = virtual_step(model, search, train)
    first = alpha_grads(model, w_virtual, val)  # d/dalpha L_val at w', w' held fixed.
    exact = exact_unrolled_grads(model, search, train, val)
    approx = unrolled(search, train, val)
    for a, e, f in zip(approx, exact, first):
        hessian_term = e - f
        assert np.linalg.norm(hessian_term) > 0.1 * np.linalg.norm(f)  # It matters here.
        assert np.linalg.norm((a - f) - hessian_term) <= 0.05 * np.linalg.norm(hessian_term)


def test_spec_eps_is_the_central_difference_it_defines():
    """With eps = 0.01 / ||v||: grad = g_a - lr (g+ - g-) / (2 eps), each piece
    recomputed independently; the weights are left exactly as they were (BN
    statistics are not: the reference's passes at w, w+ and w- update them)."""
    model, search, train, val = setup()
    before = {v.path: v.numpy().copy() for v in model.weight_variables}
    w, w_virtual = virtual_step(model, search, train)
    with tf.GradientTape() as tape:
        tape.watch(w_virtual)
        val_loss = loss_at(model, w_virtual, *val)
    v = tape.gradient(val_loss, w_virtual)
    eps = 0.01 / tf.linalg.global_norm(v)
    plus = alpha_grads(model, [a + eps * b for a, b in zip(w, v)], train)
    minus = alpha_grads(model, [a - eps * b for a, b in zip(w, v)], train)
    first = alpha_grads(model, w_virtual, val)
    expected = [f - 0.5 * (p - m) / (2.0 * float(eps))
                for f, p, m in zip(first, plus, minus)]
    for got, want in zip(unrolled(search, train, val), expected):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())
    for v in model.weight_variables:
        np.testing.assert_array_equal(v.numpy(), before[v.path], err_msg=v.path)


def test_second_order_step_moves_alphas_and_weights():
    model, search, train, val = setup()
    alphas = [v.numpy().copy() for v in model.arch_variables]
    kernel = model.stem_conv.trainable_variables[0]
    kernel_before = kernel.numpy().copy()
    metrics = search.step(train, val)
    assert np.isfinite(float(metrics["loss/train"]))
    assert all(not np.array_equal(v.numpy(), a) for v, a in zip(model.arch_variables, alphas))
    assert not np.array_equal(kernel.numpy(), kernel_before)


def test_search_with_order_second(tmp_path):
    from keras_darts.config import SearchConfig
    from keras_darts.runs.search_run import run_search
    from keras_darts.space.genotype import load
    config = SearchConfig(output_dir=str(tmp_path / "run"), channels=4, layers=3, nodes=2,
                          batch_size=16, steps_per_epoch=2, eval_batch_size=256, epochs=1,
                          log_every=0, method_settings={"order": "second"})
    results = run_search(config)
    assert 0.0 <= results["test_accuracy"] <= 1.0
    assert len(load(str(tmp_path / "run" / "genotype.json")).normal) == 4


def test_second_order_step_runs_with_max_w():
    """The unrolled gradient goes through the supernet's mixing rule: with
    Max-W it differs from softmax's for the same weights, alphas and batches."""
    rng = np.random.default_rng(0)
    data = (tf.constant(rng.standard_normal((4, 8, 8, 3)), tf.float32),
            tf.constant(rng.integers(0, 3, 4), tf.int32))
    changes = {}
    for rule in ("softmax", "max_w"):
        keras.utils.set_random_seed(0)
        net = SearchNetwork(3, channels=4, num_layers=3, num_nodes=2, mixing=rule,
                            primitives=("none", "skip_connect", "sep_conv_3x3"),
                            input_shape=(8, 8, 3))
        search = BilevelSearch(net, tf.distribute.get_strategy(), 4, order="second")
        before = net.alpha_normal.numpy()
        search.step(data, data)
        changes[rule] = net.alpha_normal.numpy() - before
    assert np.abs(changes["max_w"]).max() > 0
    assert not np.allclose(changes["max_w"], changes["softmax"])
