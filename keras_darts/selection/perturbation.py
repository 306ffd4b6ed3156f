"""`perturbation`: perturbation-based selection, DARTS-PT (docs/selection/perturbation.md).

A selection phase: after the search, the harness hands the run to `perturbation`
(registered with tunes_supernet=True), which tunes the supernet between
decisions through the harness's phase API (keras_darts/runs/search_run.py).

The algorithm itself is decoupled from data and training by two callbacks:

  evaluate(edge_weights) -> (acc, loss)
      top-1 accuracy (%) and mean cross-entropy of the supernet on the whole
      validation split, no gradient, in TRAIN mode (BatchNorm batch statistics),
      mixing by edge_weights = {"normal": [E, K], "reduce": [E, K]}.
  tune(projection, epoch)
      one epoch of supernet training (alpha and weight steps) in which decided
      rows are overridden by `projection.weights(...)`.

All progress lives in a `Projection`, which round-trips through JSON: save it
from `on_decision` and after each `tune` epoch, and `run_schedule(...,
start_epoch=t)` resumes without losing or repeating a decision.

`none` (in the darts.md op set, not in DARTS-PT's s5 space) is never an op
decision candidate: the darts.md derivation rule cannot express a `none` edge,
and removing it does not change the supernet output anyway.
"""

import dataclasses
import json
import numbers
import operator
import time

import numpy as np
from absl import logging

from keras_darts.errors import ConfigError
from keras_darts.infra import fileio
from keras_darts.infra.fileio import atomic_write_text
from keras_darts.runs.lifecycle import format_duration
from keras_darts.selection import SelectionResult, register
from keras_darts.settings import setting
from keras_darts.space import plans
from keras_darts.space.genotype import EDGES_PER_NODE
from keras_darts.space.search_space import SearchSpace

CELL_TYPES = ("normal", "reduce")
CRITERIA = ("acc", "loss")
EDGE_DECISIONS = ("random",)


@dataclasses.dataclass(frozen=True)
class PTSettings:
    """DARTS-PT's settings (docs/selection/perturbation.md#flags-and-defaults);
    defaults = the published scripts.  `edge_decision` and `seed` have no flag:
    the phase seeds the random edge / node choices with the run's --seed."""

    proj_intv: int = setting(5, "pt_proj_intv", "perturbation: tuning epochs between "
                             "decisions (published scripts: 5).", lower=1)
    crit_normal: str = setting("acc", "pt_crit_normal", "perturbation: score normal-cell "
                               "decisions by validation accuracy or loss.", choices=CRITERIA)
    crit_reduce: str = setting("acc", "pt_crit_reduce", "perturbation: the same for reduction "
                               "cells.", choices=CRITERIA)
    edge_decision: str = "random"
    seed: int = 2               # Seeds the random edge / node choices.

    def __post_init__(self):
        if not _is_int(self.proj_intv) or self.proj_intv < 1:
            raise ValueError(f"proj_intv must be a positive integer, got {self.proj_intv!r}")
        for name in ("crit_normal", "crit_reduce"):
            if getattr(self, name) not in CRITERIA:
                raise ValueError(f"{name} must be one of {list(CRITERIA)}, "
                                 f"got {getattr(self, name)!r}")
        if self.edge_decision not in EDGE_DECISIONS:
            raise ValueError(f"edge_decision must be one of {list(EDGE_DECISIONS)}, "
                             f"got {self.edge_decision!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")

    def crit(self, cell_type):
        return self.crit_normal if cell_type == "normal" else self.crit_reduce


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def multi_input_nodes(num_nodes):
    """{node: alpha rows of its incoming edges} for the nodes with > 2 inputs
    (docs/selection/perturbation.md#node-decision).

    4 nodes: {1: [2, 3, 4], 2: [5, 6, 7, 8], 3: [9, ..., 13]}; node 0 keeps both edges.
    """
    return SearchSpace("darts", (), num_nodes).multi_input_nodes()


class Projection:
    """Decisions taken so far for both cell types
    (docs/selection/perturbation.md#projected-weights).

    chosen_ops[cell][edge] = op index of a decided edge; removed_edges[cell][node]
    = the rows a decided node dropped; undecided edges / nodes are the rest.
    `history` holds the decision records (JSON-safe), the per-edge scores.
    """

    def __init__(self, primitives, num_nodes, op_family="darts"):
        if not _is_int(num_nodes) or num_nodes < 1:
            raise ValueError(f"num_nodes must be a positive integer, got {num_nodes!r}")
        self.primitives = tuple(primitives)
        self.num_nodes = int(num_nodes)
        # The DARTS cell over these ops: its wiring and derivation rule.
        self.space = SearchSpace("darts", self.primitives, self.num_nodes, op_family=op_family)
        self.edges = list(self.space.edges)
        self.node_rows = self.space.multi_input_nodes()
        self.candidate_ops = self.space.candidate_ops()
        if not self.candidate_ops:
            raise ValueError(f"no op besides 'none' to choose from: {list(self.primitives)}")
        self.chosen_ops = {cell: {} for cell in CELL_TYPES}
        self.removed_edges = {cell: {} for cell in CELL_TYPES}
        self.history = []

    @property
    def num_edges(self):
        return len(self.edges)

    def undecided_edges(self, cell_type):
        return [e for e in range(self.num_edges) if e not in self.chosen_ops[cell_type]]

    def undecided_nodes(self, cell_type):
        return [n for n in self.node_rows if n not in self.removed_edges[cell_type]]

    def num_decisions(self, cell_type):
        return len(self.chosen_ops[cell_type]) + len(self.removed_edges[cell_type])

    def decide_op(self, cell_type, edge, op):
        if edge not in self.undecided_edges(cell_type):
            raise ValueError(f"{cell_type} edge {edge} is not an undecided edge")
        if op not in self.candidate_ops:
            raise ValueError(f"op index {op} is not a candidate ({self.candidate_ops})")
        self.chosen_ops[cell_type][int(edge)] = int(op)

    def decide_node(self, cell_type, node, removed):
        if node not in self.undecided_nodes(cell_type):
            raise ValueError(f"{cell_type} node {node} is not an undecided node with > 2 inputs")
        rows = self.node_rows[node]
        removed = sorted(int(e) for e in removed)
        if (len(set(removed)) != len(removed) or not set(removed) <= set(rows)
                or len(rows) - len(removed) != EDGES_PER_NODE):
            raise ValueError(f"node {node} (rows {rows}) must remove all but "
                             f"{EDGES_PER_NODE} of its rows, got {removed}")
        self.removed_edges[cell_type][int(node)] = removed

    def fixed_rows(self):
        """{cell: {row: weights [K]}}: the rows decisions fix, one-hot of the chosen
        op for decided edges, zeros for removed edges
        (docs/selection/perturbation.md#projected-weights)."""
        num_ops = len(self.primitives)
        fixed = {}
        for cell in CELL_TYPES:
            rows = {e: np.eye(num_ops, dtype=np.float32)[k]
                    for e, k in self.chosen_ops[cell].items()}
            for removed in self.removed_edges[cell].values():
                rows.update({e: np.zeros(num_ops, np.float32) for e in removed})
            fixed[cell] = rows
        return fixed

    def weights(self, probs_by_cell):
        """Forward weights per cell type: softmax(alpha) rows with the fixed rows
        (`fixed_rows`) in place (docs/selection/perturbation.md#projected-weights).  New arrays."""
        out = {}
        for cell, rows in self.fixed_rows().items():
            w = np.array(probs_by_cell[cell], copy=True)
            if w.shape != (self.num_edges, len(self.primitives)):
                raise ValueError(f"{cell} probabilities have shape {w.shape}, expected "
                                 f"{(self.num_edges, len(self.primitives))}")
            for e, values in rows.items():
                w[e] = values
            out[cell] = w
        return out

    # -- checkpointing ------------------------------------------------------
    def to_json_dict(self):
        data = {
            "primitives": list(self.primitives),
            "num_nodes": self.num_nodes,
            "chosen_ops": {c: {str(e): k for e, k in sorted(d.items())}
                           for c, d in self.chosen_ops.items()},
            "removed_edges": {c: {str(n): r for n, r in sorted(d.items())}
                              for c, d in self.removed_edges.items()},
            "history": self.history,
        }
        if self.space.op_family != "darts":  # States of DARTS-family runs keep their bytes.
            data["op_family"] = self.space.op_family
        return data

    @classmethod
    def from_json_dict(cls, data):
        """Rebuilds a projection, re-validating every decision (ValueError if bad)."""
        try:
            projection = cls(data["primitives"], data["num_nodes"],
                             data.get("op_family", "darts"))
            for cell in CELL_TYPES:
                for e, k in data["chosen_ops"][cell].items():
                    projection.decide_op(cell, int(e), k)
                for node, removed in data["removed_edges"][cell].items():
                    projection.decide_node(cell, int(node), removed)
            projection.history = list(data["history"])
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"malformed projection state: {e!r}") from None
        return projection

    def to_json(self):
        return json.dumps(self.to_json_dict())

    @classmethod
    def from_json(cls, text):
        return cls.from_json_dict(json.loads(text))


# -- decisions ---------------------------------------------------------------
def _pick(values, better):
    """Index of the best value: scan left to right, replace when `better(v, best)`.
    Strict comparisons keep the first of ties, non-strict ones the last."""
    best = 0
    for i in range(1, len(values)):
        if better(values[i], values[best]):
            best = i
    return best


def _scores(evaluate, base, cell_type, masks):
    """(accuracies, losses) of evaluate() on copies of `base`, each with
    weights[cell_type][mask] = 0 for one mask (no renormalisation)."""
    accs, losses = [], []
    for mask in masks:
        weights = {cell: w.copy() for cell, w in base.items()}
        weights[cell_type][mask] = 0.0
        acc, loss = evaluate(weights)
        accs.append(float(acc))
        losses.append(float(loss))
    return accs, losses


def _random_undecided(candidates, rng, cell_type, what, crit):
    _check_crit(crit)
    if not candidates:
        raise ValueError(f"no undecided {cell_type} {what} left")
    return int(rng.choice(candidates))


def _check_crit(crit):
    if crit not in CRITERIA:
        raise ValueError(f"crit must be one of {list(CRITERIA)}, got {crit!r}")


def project_op(projection, cell_type, probs_by_cell, evaluate, rng, crit):
    """Operation decision on one random undecided edge of `cell_type`
    (docs/selection/perturbation.md#operation-decision).

    Masks each candidate op in turn (the other cell type keeps its projected
    weights) and keeps the op whose removal hurts most: lowest accuracy (crit
    "acc") or highest loss ("loss"), the first op among ties.  Returns the record.
    """
    edge = _random_undecided(projection.undecided_edges(cell_type), rng, cell_type, "edge", crit)
    base = projection.weights(probs_by_cell)
    accs, losses = _scores(evaluate, base, cell_type,
                           [(edge, k) for k in projection.candidate_ops])
    best = _pick(accs, operator.lt) if crit == "acc" else _pick(losses, operator.gt)
    op = projection.candidate_ops[best]
    projection.decide_op(cell_type, edge, op)
    node, input_index = projection.edges[edge]
    return {"kind": "op", "cell_type": cell_type, "crit": crit, "edge": edge, "node": node,
            "input": input_index,
            "ops": [projection.primitives[k] for k in projection.candidate_ops],
            "acc": accs, "loss": losses, "chosen": projection.primitives[op]}


def project_edge(projection, cell_type, probs_by_cell, evaluate, rng, crit):
    """Topology decision on one random undecided node of `cell_type`
    (docs/selection/perturbation.md#node-decision).

    While more than 2 incoming edges remain, evaluate with each remaining row
    zeroed (rows removed earlier in this loop stay in) and remove the edge that
    matters least: highest accuracy (crit "acc") or lowest loss ("loss"), the
    later edge among ties.  The removed rows are then zeroed for good.
    """
    node = _random_undecided(projection.undecided_nodes(cell_type), rng, cell_type, "node", crit)
    base = projection.weights(probs_by_cell)
    remaining, removed, rounds = list(projection.node_rows[node]), [], []
    while len(remaining) > EDGES_PER_NODE:
        accs, losses = _scores(evaluate, base, cell_type, remaining)
        worst = _pick(accs, operator.ge) if crit == "acc" else _pick(losses, operator.le)
        rounds.append({"edges": list(remaining), "acc": accs, "loss": losses,
                       "removed": remaining[worst]})
        removed.append(remaining.pop(worst))
    projection.decide_node(cell_type, node, removed)
    return {"kind": "node", "cell_type": cell_type, "crit": crit, "node": node,
            "rounds": rounds, "removed": removed, "kept": remaining}


# -- schedule ----------------------------------------------------------------
def decision_epochs(proj_intv, num_edges, num_multi_input_nodes):
    """(tune_epochs, [(epoch, "op" | "node"), ...]) of docs/selection/perturbation.md#schedule.

    14 edges, 3 nodes, proj_intv 5: 81 epochs, ops at 0, 5, ..., 65, nodes at 70, 75, 80.
    """
    num_projs = num_edges + num_multi_input_nodes - 1
    tune_epochs = proj_intv * num_projs + 1
    decisions = [(t, "op" if t < proj_intv * num_edges else "node")
                 for t in range(tune_epochs) if t % proj_intv == 0 or t == tune_epochs - 1]
    return tune_epochs, decisions


def _check_resume(projection, decisions, start_epoch):
    """Before `start_epoch` every scheduled decision must be in `projection`;
    only those of `start_epoch` itself may already be there too."""
    before = sum(1 for t, _ in decisions if t < start_epoch)
    at_start = sum(1 for t, _ in decisions if t == start_epoch)
    for cell in CELL_TYPES:
        done = projection.num_decisions(cell)
        if not before <= done <= before + at_start:
            raise ValueError(f"cannot resume at epoch {start_epoch}: the projection has {done} "
                             f"{cell} decisions, the schedule has {before} before that epoch")


def run_schedule(projection, probs_fn, evaluate, tune, settings=None, on_decision=None,
                 start_epoch=0):
    """Progressive projection and tuning (docs/selection/perturbation.md#schedule);
    returns `projection`.

    probs_fn() -> current softmax(alpha) by cell type (alphas keep training).
    At each decision epoch: an op (or, after all edges, a node) decision for
    the normal then the reduction cell, each appended to projection.history
    and passed to on_decision(record, epoch); then tune(projection, epoch).

    Resuming: pass a projection restored with from_json() and start_epoch =
    the first epoch whose tune() did not finish.  Decisions of that epoch
    already in the projection are skipped: the i-th scheduled decision of a
    cell type is due only while it has exactly i decisions.  Its random choice
    uses a Generator seeded by (seed, i, cell type), so a resumed run makes
    the same choices as an uninterrupted one.
    """
    settings = settings or PTSettings()
    tune_epochs, decisions = decision_epochs(settings.proj_intv, projection.num_edges,
                                             len(projection.node_rows))
    if not _is_int(start_epoch) or not 0 <= start_epoch <= tune_epochs:
        raise ValueError(f"start_epoch must be in 0..{tune_epochs}, got {start_epoch!r}")
    _check_resume(projection, decisions, start_epoch)
    due = {t: (index, kind) for index, (t, kind) in enumerate(decisions)}
    for t in range(start_epoch, tune_epochs):
        if t in due:
            index, kind = due[t]
            for c, cell in enumerate(CELL_TYPES):
                if projection.num_decisions(cell) > index:
                    continue  # Taken before an interruption.
                project = project_op if kind == "op" else project_edge
                rng = np.random.default_rng([settings.seed, index, c])
                record = project(projection, cell, probs_fn(), evaluate, rng,
                                 settings.crit(cell))
                record["epoch"] = t
                projection.history.append(record)
                if on_decision is not None:
                    on_decision(record, t)
        tune(projection, t)
    return projection


def genotype_from_projection(projection, probs_by_cell):
    """The derivation rule on the projected weights, each node's kept edges in
    input index order (docs/selection/perturbation.md#final-genotype)."""
    weights = projection.weights(probs_by_cell)
    cells = {}
    for cell in CELL_TYPES:
        pairs = projection.space.derive_cell(weights[cell])
        cells[cell] = [pair for i in range(0, len(pairs), EDGES_PER_NODE)
                       for pair in sorted(pairs[i:i + EDGES_PER_NODE], key=lambda p: p[1])]
    return projection.space.genotype(cells)


# -- the phase -----------------------------------------------------------------
@register("perturbation", settings=PTSettings, tunes_supernet=True, preview="magnitude")
def perturbation(run, settings, writer):
    """DARTS-PT after the search (docs/selection/perturbation.md#tuning-phase):
    decisions every `proj_intv` tuning epochs, the supernet (alphas and weights)
    tuned in between with the decided rows held fixed, by a fresh SGD at a
    tenth of the search's weight lr, never annealed.  All progress is in
    `perturbation/projection.json` (rewritten after every decision and every
    tuning epoch) and the checkpoints, so `--resume` continues the phase."""
    cfg, model, step = run.config, run.model, run.search
    settings = dataclasses.replace(settings, seed=cfg.seed)
    state = run.output_path("perturbation", "projection.json")
    # A resumed non-chief worker reads the chief's state (it keeps none).
    saved_state = run.chief_path("perturbation", "projection.json")
    done = int(run.epoch.numpy()) - cfg.epochs  # Tuning epochs finished before.
    if fileio.exists(saved_state):
        projection = Projection.from_json(fileio.read_text(saved_state))
    elif done > 0:
        raise ConfigError(f"{saved_state} is missing: cannot resume perturbation selection")
    else:
        projection = Projection(model.primitives, model.num_nodes, model.space.op_family)
    if (projection.primitives, projection.num_nodes) != (tuple(model.primitives), model.num_nodes):
        raise ConfigError(f"the saved projection is for ops {list(projection.primitives)} and "
                          f"{projection.num_nodes} nodes, the supernet has "
                          f"{list(model.primitives)} and {model.num_nodes}")
    if run.at_epoch_start(cfg.epochs):  # The first tuning step: DARTS-PT tunes with a new SGD...
        step.weight_optimizer.reset()
    step.set_weight_lr(cfg.w_lr / 10)  # ...at a tenth of the lr, never annealed.
    step.fix_rows(projection.fixed_rows())
    tune_epochs, _ = decision_epochs(settings.proj_intv, projection.num_edges,
                                     len(projection.node_rows))
    logging.info("perturbation selection: %d tuning epochs, decisions every %d",
                 tune_epochs, settings.proj_intv)

    def save_state():
        atomic_write_text(state, projection.to_json() + "\n")

    def evaluate(edge_weights):  # -> (top-1 %, mean loss), as DARTS-PT compares.
        loss, accuracy = run.evaluate(run.data.search_val_eval, plans.Mix(edge_weights))
        return 100.0 * accuracy, loss

    def on_decision(record, t):
        save_state()
        logging.info("perturbation epoch %d/%d: %s cell, %s", t + 1, tune_epochs,
                     record["cell_type"], _describe_decision(record))

    def tune(projection, t):
        start = time.time()
        step.fix_rows(projection.fixed_rows())
        means = run.train_epoch(t, tune_epochs)
        # Recorded before the checkpoint, written by it (summaries.EpochWriter).
        writer.scalars(cfg.epochs + t + 1, {**{f"perturbation/{k}": v for k, v in means.items()},
                                            "perturbation/decisions": len(projection.history)})
        run.epoch.assign(cfg.epochs + t + 1)
        run.save()
        save_state()
        run.stop_if_requested()
        logging.info("perturbation tuning epoch %d/%d: train loss %.4f acc %.3f | %s",
                     t + 1, tune_epochs, means["search/loss/train"],
                     means["search/accuracy/train"], format_duration(time.time() - start))

    run_schedule(projection, model.arch_probabilities, evaluate, tune, settings,
                 on_decision=on_decision, start_epoch=done)
    save_state()
    genotype = genotype_from_projection(projection, model.arch_probabilities())
    return SelectionResult(genotype=genotype, scores={"decisions": list(projection.history)})


def _describe_decision(record):
    if record["kind"] == "op":
        return (f"edge {record['edge']} (node {record['node']} <- {record['input']}): "
                f"{record['chosen']}; accuracy without each op "
                + ", ".join(f"{op} {acc:.2f}" for op, acc in zip(record["ops"], record["acc"])))
    return f"node {record['node']}: kept inputs {record['kept']}, removed {record['removed']}"
