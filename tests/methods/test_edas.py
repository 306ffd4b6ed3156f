"""EDAS single-edge relaxation (docs/methods/edas.md): clamping, sampling, which
ops run, which alphas and weights change, and equality with the derived network."""


import numpy as np
import pytest
import tensorflow as tf
from conftest import run_module, tiny_search_flags

from keras_darts import ops
from keras_darts.methods import edas
from keras_darts.optim import Adam, MomentumSGD
from keras_darts.space import plans
from keras_darts.space.cells import EDGE_MIXED, EDGE_OFF
from keras_darts.space.darts_cell import darts_cell
from keras_darts.space.search_space import dense_edges
from keras_darts.space.supernet import SearchNetwork

DARTS = ops.op_set("darts")
NUM_NODES = 4
NUM_EDGES = len(dense_edges(NUM_NODES))
SPACE = darts_cell(DARTS, NUM_NODES)


def tiny_search(**settings):
    model = SearchNetwork(10, channels=4, num_layers=3, input_shape=(8, 8, 3))
    # Distinct alphas so that the derived cell is unambiguous.
    rng = np.random.default_rng(3)
    for alpha in model.arch_variables:
        alpha.assign(rng.standard_normal(alpha.shape).astype(np.float32))
    search = edas.SingleEdgeSearch(model, tf.distribute.get_strategy(), 4,
                                   settings=edas.EdasSettings(**settings))
    return model, search


def batch(seed=0):
    rng = np.random.default_rng(seed)
    return (tf.constant(rng.standard_normal((4, 8, 8, 3)).astype(np.float32)),
            tf.constant(rng.integers(0, 10, 4), tf.int32))


# -- clamping and sampling ---------------------------------------------------------
def test_derived_modes_are_the_derived_cell_with_one_edge_mixed():
    probs = tf.nn.softmax(np.random.default_rng(0).standard_normal((NUM_EDGES, 8)),
                          axis=-1).numpy()
    genotype = SPACE.derive_genotype({"normal": probs, "reduce": probs})
    modes = edas.clamped_modes(probs, SPACE, sampled_edge=5)
    assert modes[5] == EDGE_MIXED and modes.count(EDGE_MIXED) == 1
    expected = dict.fromkeys(range(NUM_EDGES), EDGE_OFF)
    for position, (op, j) in enumerate(genotype.normal):
        expected[dense_edges(NUM_NODES).index((position // 2, j))] = DARTS.index(op)
    expected[5] = EDGE_MIXED
    assert modes == tuple(expected[e] for e in range(NUM_EDGES))
    for node in range(NUM_NODES):  # Every node keeps 2 inputs (3 if the mixed edge is OFF).
        rows = [e for e, (n, _) in enumerate(dense_edges(NUM_NODES)) if n == node]
        assert 2 <= sum(modes[e] != EDGE_OFF for e in rows) <= 3
    assert DARTS.index("none") not in modes


def test_per_edge_argmax_clamps_every_edge_including_none():
    probs = np.full((NUM_EDGES, 8), 0.1)
    probs[:, 0] = 0.5  # `none` strongest everywhere...
    probs[3, 4] = 0.9  # ...except edge 3.
    modes = edas.clamped_modes(probs, SPACE, clamp="per_edge_argmax")
    assert modes[3] == 4 and all(m == 0 for e, m in enumerate(modes) if e != 3)


def test_epsilon_greedy_changes_only_on_edges_and_never_to_none():
    probs = tf.nn.softmax(np.random.default_rng(1).standard_normal((NUM_EDGES, 8))).numpy()
    plain = edas.clamped_modes(probs, SPACE)
    greedy = edas.clamped_modes(probs, SPACE, eps=1.0,
                                rng=np.random.default_rng(0))
    assert [m == EDGE_OFF for m in greedy] == [m == EDGE_OFF for m in plain]
    assert all(m != 0 for m in greedy if m != EDGE_OFF)
    assert greedy != plain


def test_regulariser_schedules():
    settings = edas.EdasSettings(tau0=5.0, eps=0.4)
    assert settings.temperature(0.0) == 5.0 and settings.temperature(1.0) == 1.0
    assert settings.temperature(0.5) == 3.0
    assert settings.epsilon(0.0) == 0.4 and settings.epsilon(0.25) == pytest.approx(0.2)
    assert settings.epsilon(0.5) == 0.0 and settings.epsilon(0.9) == 0.0
    with pytest.raises(ValueError, match="clamp"):
        edas.EdasSettings(clamp="random")


def test_sampler_is_a_function_of_seed_and_step():
    sampler = edas.EdgeSampler(NUM_EDGES, seed=7)
    draws = [sampler.sample(step) for step in range(200)]
    assert draws == [edas.EdgeSampler(NUM_EDGES, seed=7).sample(s) for s in range(200)]
    assert draws != [edas.EdgeSampler(NUM_EDGES, seed=8).sample(s) for s in range(200)]
    for cell in edas.CELL_TYPES:
        assert {d[cell] for d in draws} == set(range(NUM_EDGES))  # All edges get drawn.


def test_round_robin_relaxes_every_edge_once_per_pass():
    sampler = edas.EdgeSampler(NUM_EDGES, seed=0, sampling="round_robin")
    for start in (0, NUM_EDGES, 5 * NUM_EDGES):
        picks = [sampler.sample(s)["normal"] for s in range(start, start + NUM_EDGES)]
        assert sorted(picks) == list(range(NUM_EDGES))


def test_single_mode_relaxes_one_edge_of_both_cell_types():
    sampler = edas.EdgeSampler(NUM_EDGES, seed=0, edges_per_step="single")
    draws = [sampler.sample(s) for s in range(100)]
    for d in draws:
        assert sum(d[c] != edas.NO_EDGE for c in edas.CELL_TYPES) == 1
    assert {c for d in draws for c in edas.CELL_TYPES if d[c] != edas.NO_EDGE} == \
        set(edas.CELL_TYPES)


# -- which ops run -----------------------------------------------------------------
def test_clamped_edges_run_only_their_chosen_op(monkeypatch):
    model, search = tiny_search()
    calls = []
    for c, cell in enumerate(model.search_cells):
        for e, edge in enumerate(cell.edges):
            for k, op in enumerate(edge.candidates):
                def counted(*args, _real=op.call, _where=(c, e, k), **kwargs):
                    calls.append(_where)
                    return _real(*args, **kwargs)
                monkeypatch.setattr(op, "call", counted)
    sampled = {"normal": 2, "reduce": 9}
    modes = search.edge_modes(sampled, step=0)
    model(batch()[0], training=True, plan=plans.Clamp(modes))  # Eager: every op call is seen.
    expected = set()
    for c, cell in enumerate(model.search_cells):
        cell_modes = modes["reduce" if cell.reduction else "normal"]
        assert cell_modes.count(EDGE_MIXED) == 1
        for e, mode in enumerate(cell_modes):
            if mode == EDGE_MIXED:
                expected |= {(c, e, k) for k in range(len(DARTS)) if DARTS[k] != "none"}
            elif mode != EDGE_OFF:
                expected.add((c, e, mode))
    assert set(calls) == expected and len(calls) == len(expected)
    assert modes["normal"][2] == EDGE_MIXED and modes["reduce"][9] == EDGE_MIXED


# -- gradients and updates ---------------------------------------------------------
def test_alpha_gradient_reaches_only_the_sampled_rows():
    model, search = tiny_search()
    modes = search.edge_modes({"normal": 4, "reduce": 11}, step=0)
    _, _, grads = search._loss_and_grads(*batch(), model.arch_variables, weight_grads=False,
                                         make_plan=lambda: search.clamp_plan(modes))
    for grad, row in zip(grads, (4, 11)):
        grad = tf.convert_to_tensor(grad).numpy()
        assert np.abs(grad[row]).sum() > 0
        assert not np.delete(grad, row, axis=0).any()


# One worker builds the module fixture below for all of this module's tests.
pytestmark = pytest.mark.xdist_group("test_edas")


@pytest.fixture(scope="module")
def stepped():
    """A tiny search before and after its first step (tracing the step takes most
    of the time, so the tests below share it)."""
    model, search = tiny_search()
    sampled = search.sampler.sample(0)
    modes = [search.edge_modes(sampled, 0)]  # The alpha phase's; the weight phase's below.
    alphas = [a.numpy().copy() for a in model.arch_variables]
    before = {id(v): v.numpy().copy() for v in model.variables}
    metrics = search.step(batch(1), batch(2))  # Traced: every edge is a tf.switch_case.
    modes.append(search.edge_modes(sampled, 0))
    return model, search, sampled, modes, alphas, before, metrics


def test_step_changes_only_sampled_alpha_rows_and_weights_of_ops_that_ran(stepped):
    model, search, sampled, modes, alphas, before, metrics = stepped
    assert np.isfinite(float(metrics["loss/train"]))
    for alpha, old, cell in zip(model.arch_variables, alphas, edas.CELL_TYPES):
        changed = np.flatnonzero(np.any(alpha.numpy() != old, axis=1))
        assert changed.tolist() == [sampled[cell]]
    # Ops that did not run in either phase kept their weights and their BatchNorm
    # statistics (which any execution in train mode would have moved); ops that
    # ran moved their statistics.
    ran_with_stats = 0
    for cell in model.search_cells:
        cell_type = "reduce" if cell.reduction else "normal"
        for e, edge in enumerate(cell.edges):
            for k, op in enumerate(edge.candidates):
                ran = any(m[cell_type][e] in (EDGE_MIXED, k) for m in modes)
                for v in op.variables:
                    if not ran:
                        np.testing.assert_array_equal(v.numpy(), before[id(v)])
                stats = [v for v in op.variables if not v.trainable]
                if ran and stats:
                    assert not np.array_equal(stats[0].numpy(), before[id(stats[0])])
                    ran_with_stats += 1
    assert ran_with_stats > len(model.search_cells)
    stem = model.stem_conv.trainable_variables[0]
    assert not np.array_equal(stem.numpy(), before[id(stem)])


def test_lazy_adam_rows():
    var = tf.Variable(np.ones((3, 2), np.float32))
    adam = Adam([var], 0.1, weight_decay=0.1)
    grad = tf.constant(np.ones((3, 2), np.float32))
    adam.apply([grad], [var], row_masks=[[0.0, 1.0, 0.0]])
    np.testing.assert_array_equal(var.numpy()[[0, 2]], 1.0)
    assert (var.numpy()[1] < 1.0).all()
    np.testing.assert_array_equal(adam.slots["m"][0].numpy()[[0, 2]], 0.0)
    assert (adam.slots["m"][0].numpy()[1] > 0).all()


def test_inactive_variables_keep_value_and_momentum_exactly():
    rng = np.random.default_rng(0)
    values = [rng.standard_normal((3, 2)).astype(np.float32) for _ in range(3)]
    variables = [tf.Variable(v) for v in values]
    reference = [tf.Variable(v) for v in values]
    sgd = MomentumSGD(variables, 0.1, momentum=0.9, weight_decay=0.01)
    plain = MomentumSGD(reference, 0.1, momentum=0.9, weight_decay=0.01)
    for step in range(3):
        grads = [tf.constant(rng.standard_normal((3, 2)).astype(np.float32)) for _ in values]
        grads[1] = tf.zeros((3, 2))  # An op that did not run: its gradient is zero.
        sgd.apply(grads, variables, active=[None, tf.constant(False), tf.constant(True)])
        plain.apply([grads[0], None, grads[2]], reference)  # torch.optim: no gradient.
    for v, r in zip(variables, reference):
        np.testing.assert_array_equal(v.numpy(), r.numpy())
    np.testing.assert_array_equal(variables[1].numpy(), values[1])
    np.testing.assert_array_equal(sgd.slots["momentum"][1].numpy(), 0.0)
    np.testing.assert_array_equal(sgd.slots["momentum"][2].numpy(),
                                  plain.slots["momentum"][2].numpy())


# -- the clamped supernet is the derived network -----------------------------------
def test_clamped_supernet_equals_the_derived_genotype_network():
    model, search = tiny_search()
    genotype = SPACE.derive_genotype(model.arch_probabilities())
    images = batch()[0]
    for training in (False, True):
        clamped = model(images, training=training, plan=plans.Clamp(search.derived_modes()))
        discrete = model(images, training=training, plan=plans.Discrete(genotype))
        np.testing.assert_allclose(clamped.numpy(), discrete.numpy(), rtol=1e-6, atol=1e-6)


def test_shared_traces_change_nothing():
    model, search = tiny_search()
    modes = search.edge_modes({"normal": 3, "reduce": 0}, step=0)
    images = batch()[0]
    inline = model(images, training=False, plan=plans.Clamp(modes))
    shared = tf.function(lambda x: model(x, training=False, plan=plans.Clamp(modes)))(images)
    np.testing.assert_allclose(shared.numpy(), inline.numpy(), rtol=1e-5, atol=1e-6)


def test_resumed_sampling_continues_the_sequence(stepped):
    search = stepped[1]
    step = int(search.arch_optimizer.iterations.numpy())
    assert step == 1
    # The edge of step 1 is what a fresh sampler (a resumed run) draws for step 1.
    assert search.sampler.sample(step) == edas.EdgeSampler(NUM_EDGES, 0).sample(1)


# -- command line ------------------------------------------------------------------
TINY = tiny_search_flags(nodes=4, log_every=0, epochs=1)


@pytest.mark.parametrize("args, message", [
    (["--edas_tau0=2"], "--edas_tau0 only applies to --relaxation=single_edge"),
    (["--relaxation=single_edge", "--selection=perturbation"], "--relaxation=full"),
    (["--relaxation=single_edge", "--edas_clamp=random"], "edas_clamp"),
])
def test_bad_edas_flags(tmp_path, args, message):
    out = tmp_path / "run"
    result = run_module("keras_darts.search", *TINY, f"--output_dir={out}", *args,
                        timeout=300)
    assert result.returncode != 0
    assert message in result.stderr
    assert not out.exists()


# -- regularisers inside the traced step ---------------------------------------------
def test_temperature_anneals_inside_a_traced_function():
    """tau is a variable: a function traced at the start sees every later value
    (a Python float would stay frozen at its first-traced value)."""
    model, search = tiny_search(tau0=4.0)
    traced = tf.function(lambda: search.mixing_weights()["normal"])
    hot = traced().numpy()
    search.set_progress(1, 2)  # Halfway: tau = 4 + (1 - 4) / 2 = 2.5.
    warm = traced().numpy()
    alpha = model.alpha_normal.numpy()
    np.testing.assert_allclose(hot, tf.nn.softmax(alpha / 4.0), rtol=1e-5)
    np.testing.assert_allclose(warm, tf.nn.softmax(alpha / 2.5), rtol=1e-5)
    assert traced.experimental_get_tracing_count() == 1


def test_evaluation_runs_the_derived_network_without_exploration():
    model, search = tiny_search(eps=1.0)
    search.set_progress(0, 10)  # eps = 1: every step's ON edges explore.
    probs = model.arch_probabilities()
    derived = {cell: edas.clamped_modes(probs[cell], SPACE) for cell in ("normal", "reduce")}
    assert search.derived_modes() == derived
    explored = search.edge_modes({"normal": edas.NO_EDGE, "reduce": edas.NO_EDGE}, step=0)
    assert explored != derived


def test_the_sampled_edge_mixes_by_the_supernets_rule():
    """--weighting=max_w reaches EDAS's relaxed edge: Max-W of softmax(alpha / tau)."""
    model = SearchNetwork(10, channels=4, num_layers=3, input_shape=(8, 8, 3), mixing="max_w")
    search = edas.SingleEdgeSearch(model, tf.distribute.get_strategy(), 4,
                                   settings=edas.EdasSettings(tau0=2.0))
    w = tf.nn.softmax(model.alpha_normal.numpy() / 2.0).numpy()
    np.testing.assert_allclose(search.mixing_weights()["normal"].numpy(),
                               1.0 - w.max(axis=-1, keepdims=True) + w, rtol=1e-5)
    before = model.alpha_normal.numpy()
    search.step(batch(0), batch(1))
    assert not np.array_equal(before, model.alpha_normal.numpy())
