"""DARTS-PT selection (docs/selection/perturbation.md) with synthetic evaluate/tune callbacks."""

import json

import numpy as np
import pytest

from keras_darts import selection
from keras_darts.errors import ConfigError
from keras_darts.ops import DARTS_PRIMITIVES
from keras_darts.selection.perturbation import (Projection, PTSettings, decision_epochs,
                                                genotype_from_projection, multi_input_nodes,
                                                project_edge, project_op, run_schedule)
from keras_darts.space import plans
from keras_darts.space.search_space import SearchSpace

# DARTS-PT's s5 space: the DARTS ops without `none` (docs/methods/blank.md).
S5 = DARTS_PRIMITIVES[1:]


def _probs(num_edges=14, num_ops=7, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for cell in ("normal", "reduce"):
        logits = rng.normal(size=(num_edges, num_ops))
        out[cell] = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return out


class LinearEvaluate:
    """acc = sum(weights * usefulness), loss = sum(weights * harm), summed over
    both cell types, so the effect of masking any entry is known exactly.
    Keeps a copy of every edge_weights it was called with."""

    def __init__(self, usefulness, harm):
        self.usefulness, self.harm, self.calls = usefulness, harm, []

    def __call__(self, edge_weights):
        self.calls.append({c: w.copy() for c, w in edge_weights.items()})
        acc = sum(float((edge_weights[c] * self.usefulness[c]).sum()) for c in edge_weights)
        loss = sum(float((edge_weights[c] * self.harm[c]).sum()) for c in edge_weights)
        return acc, loss


def _tables(seed, num_edges=14, num_ops=7):
    rng = np.random.default_rng(seed)
    return {c: rng.random((num_edges, num_ops)) for c in ("normal", "reduce")}


# -- settings and state -------------------------------------------------------
def test_settings_defaults_and_validation():
    s = PTSettings()
    assert (s.proj_intv, s.crit_normal, s.crit_reduce, s.edge_decision, s.seed) == (
        5, "acc", "acc", "random", 2)
    with pytest.raises(ValueError, match=r"crit_normal must be one of \['acc', 'loss'\]"):
        PTSettings(crit_normal="top5")
    with pytest.raises(ValueError, match=r"crit_reduce must be one of"):
        PTSettings(crit_reduce="edge")
    with pytest.raises(ValueError, match=r"edge_decision must be one of \['random'\]"):
        PTSettings(edge_decision="sequential")
    with pytest.raises(ValueError, match="proj_intv must be a positive integer"):
        PTSettings(proj_intv=0)


def test_row_groups_match_the_spec():
    assert multi_input_nodes(4) == {1: [2, 3, 4], 2: [5, 6, 7, 8], 3: [9, 10, 11, 12, 13]}
    assert multi_input_nodes(2) == {1: [2, 3, 4]}
    assert multi_input_nodes(1) == {}
    p = Projection(S5, 4)
    assert p.num_edges == 14 and p.undecided_nodes("normal") == [1, 2, 3]


def test_projected_weights():
    probs = _probs()
    p = Projection(S5, 4)
    p.decide_op("normal", 3, 2)
    p.decide_op("normal", 4, 6)
    p.decide_node("normal", 1, [2])
    p.decide_op("reduce", 0, 0)
    w = p.weights(probs)
    np.testing.assert_array_equal(w["normal"][3], np.eye(7)[2])
    np.testing.assert_array_equal(w["normal"][4], np.eye(7)[6])
    np.testing.assert_array_equal(w["normal"][2], np.zeros(7))
    np.testing.assert_array_equal(w["reduce"][0], np.eye(7)[0])
    for cell, decided in (("normal", [2, 3, 4]), ("reduce", [0])):
        undecided = [e for e in range(14) if e not in decided]
        np.testing.assert_array_equal(w[cell][undecided], probs[cell][undecided])
    assert not np.shares_memory(w["normal"], probs["normal"])  # Inputs are untouched.
    assert p.undecided_edges("normal") == [0, 1, 2] + list(range(5, 14))
    assert p.undecided_nodes("normal") == [2, 3] and p.num_decisions("normal") == 3
    with pytest.raises(ValueError, match="must remove all but 2"):
        p.decide_node("reduce", 3, [9, 10])
    with pytest.raises(ValueError, match="not an undecided edge"):
        p.decide_op("normal", 3, 1)


def test_json_round_trip_and_validation():
    p = Projection(S5, 4)
    p.decide_op("reduce", 7, 3)
    p.decide_node("normal", 3, [13, 9, 11])
    p.history.append({"kind": "op", "edge": 7})
    q = Projection.from_json(p.to_json())
    assert q.to_json_dict() == p.to_json_dict()
    assert q.removed_edges["normal"] == {3: [9, 11, 13]} and q.chosen_ops["reduce"] == {7: 3}
    bad = p.to_json_dict()
    bad["removed_edges"]["reduce"] = {"1": [2, 5]}
    with pytest.raises(ValueError, match="must remove all but 2"):
        Projection.from_json_dict(bad)
    with pytest.raises(ValueError, match="malformed projection state"):
        Projection.from_json_dict({"primitives": list(S5)})


# -- operation decision ---------------------------------------------
@pytest.mark.parametrize("crit", ["acc", "loss"])
def test_project_op_keeps_the_op_whose_removal_hurts_most(crit):
    probs = _probs()
    evaluate = LinearEvaluate(_tables(1), _tables(2))
    p = Projection(S5, 4)
    p.decide_op("reduce", 5, 4)
    rng = np.random.default_rng(0)
    seen = []
    for _ in range(14):
        record = project_op(p, "normal", probs, evaluate, rng, crit)
        e = record["edge"]
        assert e not in seen
        seen.append(e)
        # Masking op k lowers acc by w*usefulness and loss by w*harm.
        w = probs["normal"][e]
        drop = w * (evaluate.usefulness if crit == "acc" else evaluate.harm)["normal"][e]
        expected = int(np.argmax(drop)) if crit == "acc" else int(np.argmin(drop))
        assert record["chosen"] == S5[expected] and p.chosen_ops["normal"][e] == expected
        assert record["ops"] == list(S5) and len(record["acc"]) == len(record["loss"]) == 7
        json.dumps(record)
    assert sorted(seen) == list(range(14))
    # Each evaluation masked exactly one entry of the normal cell; the reduce
    # cell always came with its projected weights (edge 5 one-hot).
    for call in evaluate.calls:
        np.testing.assert_array_equal(call["reduce"][5], np.eye(7)[4])
    with pytest.raises(ValueError, match="no undecided normal edge"):
        project_op(p, "normal", probs, evaluate, rng, crit)


@pytest.mark.parametrize("crit", ["acc", "loss"])
def test_project_op_ties_pick_the_first_op_and_masks_without_renormalising(crit):
    probs = {c: np.full((14, 7), 1 / 7) for c in ("normal", "reduce")}
    ones = {c: np.ones((14, 7)) for c in ("normal", "reduce")}
    evaluate = LinearEvaluate(ones, ones)
    p = Projection(S5, 4)
    record = project_op(p, "reduce", probs, evaluate, np.random.default_rng(3), crit)
    assert record["chosen"] == S5[0]
    e = record["edge"]
    for k, call in enumerate(evaluate.calls):
        expected = np.full(7, 1 / 7)
        expected[k] = 0.0  # The row now sums to 6/7.
        np.testing.assert_allclose(call["reduce"][e], expected)
        np.testing.assert_array_equal(call["normal"], probs["normal"])


def test_project_op_never_evaluates_or_picks_none():
    probs = _probs(num_ops=8)
    usefulness = {c: np.zeros((14, 8)) for c in ("normal", "reduce")}
    evaluate = LinearEvaluate(usefulness, usefulness)  # All ties: 'none' would be first.
    p = Projection(DARTS_PRIMITIVES, 4)
    record = project_op(p, "normal", probs, evaluate, np.random.default_rng(0), "acc")
    assert len(evaluate.calls) == 7 and "none" not in record["ops"]
    assert record["chosen"] == "max_pool_3x3"


# -- topology decision ----------------------------------------------
def _only_node_left(node, cell="normal"):
    p = Projection(S5, 4)
    for other, rows in multi_input_nodes(4).items():
        if other != node:
            p.decide_node(cell, other, rows[2:])
    return p


@pytest.mark.parametrize("crit", ["acc", "loss"])
def test_project_edge_removes_the_least_useful_edges(crit):
    probs = _probs()
    # Edge contributions of node 3 (rows 9..13): removal order 11, 13, 9; keep 10, 12.
    usefulness = {c: np.zeros((14, 7)) for c in ("normal", "reduce")}
    for e, value in zip(range(9, 14), [2.0, 5.0, 1.0, 4.0, 1.5]):
        usefulness["normal"][e] = value
    harm = {c: -u for c, u in usefulness.items()}  # Low loss = removing it is harmless.
    evaluate = LinearEvaluate(usefulness, harm)
    p = _only_node_left(3)
    before = p.weights(probs)
    record = project_edge(p, "normal", probs, evaluate, np.random.default_rng(0), crit)
    assert record["node"] == 3 and record["removed"] == [11, 13, 9] and record["kept"] == [10, 12]
    assert [r["edges"] for r in record["rounds"]] == [
        [9, 10, 11, 12, 13], [9, 10, 12, 13], [9, 10, 12]]
    # 5 + 4 + 3 evaluations, each with exactly ONE row of the node zeroed.
    assert len(evaluate.calls) == 12
    masked = [e for r in record["rounds"] for e in r["edges"]]
    for call, e in zip(evaluate.calls, masked):
        zero_rows = [r for r in range(9, 14) if not call["normal"][r].any()]
        assert zero_rows == [e]
        np.testing.assert_array_equal(call["reduce"], before["reduce"])
    after = p.weights(probs)
    assert not after["normal"][[9, 11, 13]].any()
    np.testing.assert_array_equal(after["normal"][[10, 12]], probs["normal"][[10, 12]])
    assert p.undecided_nodes("normal") == [] and p.removed_edges["normal"][3] == [9, 11, 13]
    json.dumps(record)


@pytest.mark.parametrize("crit", ["acc", "loss"])
def test_project_edge_ties_remove_the_later_edge(crit):
    zeros = {c: np.zeros((14, 7)) for c in ("normal", "reduce")}
    p = _only_node_left(3, "reduce")
    record = project_edge(p, "reduce", _probs(), LinearEvaluate(zeros, zeros),
                          np.random.default_rng(0), crit)
    assert record["removed"] == [13, 12, 11] and record["kept"] == [9, 10]


# -- schedule ---------------------------------------------------------
def test_decision_epochs_match_the_spec():
    tune_epochs, decisions = decision_epochs(5, 14, 3)
    assert tune_epochs == 81
    assert decisions == [(t, "op") for t in range(0, 70, 5)] + [(70, "node"), (75, "node"),
                                                                (80, "node")]
    assert decision_epochs(1, 5, 1) == (6, [(0, "op"), (1, "op"), (2, "op"), (3, "op"),
                                            (4, "op"), (5, "node")])


class FakeTrainer:
    """Alphas that drift every tuned epoch; counts tune calls."""

    def __init__(self, num_edges, num_ops, epoch=0):
        self.epoch, self.num_edges, self.num_ops, self.tuned = epoch, num_edges, num_ops, []

    def probs(self):
        return _probs(self.num_edges, self.num_ops, seed=100 + self.epoch)

    def tune(self, projection, epoch):
        assert epoch == self.epoch
        self.tuned.append(epoch)
        self.epoch += 1


@pytest.mark.parametrize("num_nodes, proj_intv, tune_epochs, op_epochs, node_epochs", [
    (4, 5, 81, list(range(0, 70, 5)), [70, 75, 80]),
    (2, 1, 6, [0, 1, 2, 3, 4], [5]),
])
def test_run_schedule_tunes_every_epoch_and_decides_on_schedule(
        num_nodes, proj_intv, tune_epochs, op_epochs, node_epochs):
    p = Projection(S5, num_nodes)
    trainer = FakeTrainer(p.num_edges, 7)
    evaluate = LinearEvaluate(_tables(1, p.num_edges), _tables(2, p.num_edges))
    seen = []
    run_schedule(p, trainer.probs, evaluate, trainer.tune, PTSettings(proj_intv=proj_intv),
                 on_decision=lambda record, t: seen.append(
                     (t, record["kind"], record["cell_type"], trainer.epoch)))
    assert trainer.tuned == list(range(tune_epochs))
    expected = [(t, kind, cell, t) for kind, epochs in (("op", op_epochs), ("node", node_epochs))
                for t in epochs for cell in ("normal", "reduce")]
    assert seen == expected
    assert [(r["epoch"], r["kind"], r["cell_type"]) for r in p.history] == [s[:3] for s in seen]
    for cell in ("normal", "reduce"):
        assert p.undecided_edges(cell) == [] and p.undecided_nodes(cell) == []
    g = genotype_from_projection(p, trainer.probs())
    assert len(g.normal) == len(g.reduce) == 2 * num_nodes
    for pairs in (g.normal, g.reduce):
        inputs = [i for _, i in pairs]
        assert all(inputs[i] < inputs[i + 1] for i in range(0, len(inputs), 2))


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("stop_after", [
    ("decision", 35, "normal"),   # Between the normal and the reduce decision of epoch 35.
    ("decision", 70, "reduce"),   # After both decisions of epoch 70, before its tune().
    ("tune", 40, None),           # After the tune() of epoch 40.
])
def test_resume_gives_the_same_result_as_an_uninterrupted_run(stop_after):
    settings = PTSettings(seed=7, crit_reduce="loss")
    evaluate = LinearEvaluate(_tables(1), _tables(2))

    full, trainer = Projection(S5, 4), FakeTrainer(14, 7)
    run_schedule(full, trainer.probs, evaluate, trainer.tune, settings)

    # A run that checkpoints after every decision and every tuned epoch, then dies.
    saved = {}
    trainer = FakeTrainer(14, 7)
    where, stop_epoch, stop_cell = stop_after

    def on_decision(record, t):
        saved.update(state=projection.to_json(), epoch=t)
        if where == "decision" and (t, record["cell_type"]) == (stop_epoch, stop_cell):
            raise Interrupted

    def tune(proj, t):
        trainer.tune(proj, t)
        saved.update(state=projection.to_json(), epoch=t + 1)
        if where == "tune" and t == stop_epoch:
            raise Interrupted

    projection = Projection(S5, 4)
    with pytest.raises(Interrupted):
        run_schedule(projection, trainer.probs, evaluate, tune, settings, on_decision=on_decision)

    resumed = Projection.from_json(saved["state"])
    trainer = FakeTrainer(14, 7, epoch=saved["epoch"])
    run_schedule(resumed, trainer.probs, evaluate, trainer.tune, settings,
                 start_epoch=saved["epoch"])
    assert trainer.tuned == list(range(saved["epoch"], 81))
    assert resumed.to_json_dict() == full.to_json_dict()


def test_resume_rejects_an_inconsistent_start_epoch():
    p = Projection(S5, 4)
    trainer = FakeTrainer(14, 7)
    with pytest.raises(ValueError, match="cannot resume at epoch 40"):
        run_schedule(p, trainer.probs, None, trainer.tune, start_epoch=40)


def test_genotype_keeps_decided_edges_in_index_order():
    p = Projection(S5, 2)  # Edges: node0 <- 0, 1; node1 <- 0, 1, 2 (rows 2, 3, 4).
    for cell, ops in (("normal", [3, 0, 1, 5, 2]), ("reduce", [6, 6, 4, 4, 4])):
        for e, k in enumerate(ops):
            p.decide_op(cell, e, k)
    p.decide_node("normal", 1, [3])
    p.decide_node("reduce", 1, [2])
    g = genotype_from_projection(p, _probs(5, 7))
    assert g.normal == (("sep_conv_3x3", 0), ("max_pool_3x3", 1),
                        ("avg_pool_3x3", 0), ("skip_connect", 2))
    assert g.reduce == (("dil_conv_5x5", 0), ("dil_conv_5x5", 1),
                        ("sep_conv_5x5", 1), ("sep_conv_5x5", 2))
    assert g.normal_concat == g.reduce_concat == (2, 3)
    # Undecided edges: the stronger kept edge (input 2) still comes second.
    p = Projection(S5, 2)
    p.decide_node("normal", 1, [3])
    probs = {c: np.full((5, 7), 0.1) for c in ("normal", "reduce")}
    probs["normal"][4, 6] = 0.9
    assert genotype_from_projection(p, probs).normal[2:] == (("max_pool_3x3", 0),
                                                             ("dil_conv_5x5", 2))


# -- registered criterion ---------------------------------------------------------
def test_criterion_is_a_phase_that_needs_the_harness():
    assert "perturbation" in selection.names()
    criterion = selection.get("perturbation")
    assert criterion.tunes_supernet and criterion.preview_name == "magnitude"
    with pytest.raises(ConfigError, match="tunes the supernet.*keras_darts.select"):
        selection.select("perturbation", model=None)


def test_end_to_end_on_a_tiny_supernet():
    import tensorflow as tf

    from keras_darts.space.genotype import from_json_dict
    from keras_darts.space.supernet import SearchNetwork

    model = SearchNetwork(10, channels=4, num_layers=3, num_nodes=2, input_shape=(8, 8, 3))
    model.build_variables()
    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(size=(16, 8, 8, 3)), tf.float32)
    labels = tf.constant(rng.integers(0, 10, size=16))

    @tf.function
    def forward(normal, reduce):
        return model(images, training=True, plan=plans.Mix({"normal": normal, "reduce": reduce}))

    def evaluate(edge_weights):
        logits = forward(edge_weights["normal"], edge_weights["reduce"])
        acc = 100.0 * tf.reduce_mean(tf.cast(tf.argmax(logits, -1) == labels, tf.float32))
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        return float(acc), float(loss)

    tuned = []
    projection = run_schedule(Projection(model.primitives, model.num_nodes),
                              model.arch_probabilities, evaluate,
                              lambda projection, t: tuned.append(t), PTSettings(proj_intv=1))
    genotype = genotype_from_projection(projection, model.arch_probabilities())
    assert tuned == list(range(6))
    from_json_dict(genotype.to_json_dict())
    decisions = json.loads(json.dumps(projection.history))
    assert [(d["kind"], d["cell_type"]) for d in decisions] == (
        [("op", "normal"), ("op", "reduce")] * 5 + [("node", "normal"), ("node", "reduce")])
    assert all(op != "none" for op, _ in genotype.normal + genotype.reduce)


# -- the phase, driven through a stand-in of the harness's phase API ------------------
class _Step:
    def __init__(self):
        self.resets, self.lrs, self.fixed = 0, [], []
        self.weight_optimizer = self

    def reset(self):
        self.resets += 1

    def set_weight_lr(self, lr):
        self.lrs.append(lr)

    def fix_rows(self, rows):
        self.fixed.append(rows)


class _Run:
    """The phase API of keras_darts/runs/search_run.py, without a network."""

    def __init__(self, out, epoch, at_start):
        import tensorflow as tf

        from keras_darts.config import SearchConfig

        self.config = SearchConfig(output_dir=str(out), epochs=3, w_lr=0.02,
                                   selection="perturbation",
                                   selection_settings={"proj_intv": 1})
        self.model, self.search = self, _Step()
        self.primitives, self.num_nodes = S5, 1
        self.space = SearchSpace("darts", S5, 1)
        self.epoch = tf.Variable(epoch, dtype=tf.int64)
        self._at_start, self.out, self.calls = at_start, out, []
        self.data = self

    search_val_eval = None

    def arch_probabilities(self):
        return _probs(num_edges=2)

    def at_epoch_start(self, epochs_done):
        return self._at_start and epochs_done == int(self.epoch.numpy())

    def output_path(self, *parts):
        path = self.out.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return str(path)

    chief_path = output_path

    def evaluate(self, dataset, plan):
        weights = plan.weights
        return float(sum(w.sum() for w in weights.values())), 0.5

    def train_epoch(self, t, epochs):
        self.calls.append(("train", t, epochs))
        return {"search/loss/train": 1.0, "search/accuracy/train": 0.5}

    def save(self):
        self.calls.append(("save", int(self.epoch.numpy())))

    def stop_if_requested(self):
        pass

    def scalars(self, step, values):
        pass


def test_phase_tunes_with_a_fresh_optimizer_only_at_the_start(tmp_path):
    run = _Run(tmp_path, epoch=3, at_start=True)
    criterion = selection.get("perturbation")
    result = criterion(run, run.config.selection_settings, run)
    # 2 edges, no multi-input node, interval 1: op decisions at 0 and 1, 2 tuning epochs.
    assert [c for c in run.calls if c[0] == "train"] == [("train", 0, 2), ("train", 1, 2)]
    assert run.search.resets == 1 and run.search.lrs == [0.002]
    assert [d["kind"] for d in result.scores["decisions"]] == ["op"] * 4
    assert (tmp_path / "perturbation" / "projection.json").exists()
    # Resumed inside tuning epoch 0 (a checkpoint saved mid-epoch): the optimizer
    # state that epoch built up is kept.
    resumed = _Run(tmp_path / "resumed", epoch=3, at_start=False)
    criterion(resumed, resumed.config.selection_settings, resumed)
    assert resumed.search.resets == 0
