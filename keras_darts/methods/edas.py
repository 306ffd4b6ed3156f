"""EDAS: relax one sampled edge per step, clamp every other edge (docs/methods/edas.md).

Only the paper's abstract is available; the procedure below is this
project's proposal (docs/methods/edas.md#status-of-the-sources), with its
alternatives as settings:

* Clamping (`clamp`): "derived" (default) = the discrete cell the DARTS
  derivation rule gives for the current alphas: per node its 2 strongest
  edges are ON and run only their argmax (non-`none`) op with coefficient 1;
  every other edge is OFF and not computed.  The clamped supernet is then the
  very network the derivation produces.  "per_edge_argmax" = every edge ON
  with its argmax over all ops (`none` included, which computes nothing).
* The sampled edge (one per cell type, or one of all edges: `edges_per_step`;
  drawn i.i.d. uniform or round robin: `sampling`) mixes all its ops by
  softmax(alpha / tau).  It is the only source of alpha gradient.
* The same sampled edge serves the alpha step and the weight step; the
  clamped edges are re-derived after the alpha step.
* Exploration regularisers (off by default): temperature `tau0` annealed
  linearly to 1 over the search; epsilon-greedy clamping `eps`, decayed
  linearly to 0 by mid-search.

The architecture changes every step, yet a step is two traced graphs (the
alpha phase and the weight phase), traced once: the edge modes are an input
tensor, and every edge runs `MixedOp.run_mode`, one `tf.switch_case` over
"op k alone / mixed / off" inside a function shared per kind of edge, so only
the chosen branch executes and the trace does not grow with the number of
edges (BUILD_NOTES.md).  The modes are derived from the alphas in numpy
between the two phases; the temperature is a variable, so its annealing
reaches the traced graphs.  Gradients of ops that did not run come out as zeros;
their weights and optimizer slots are masked out of the update.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from keras_darts import selection
from keras_darts.errors import ConfigError
from keras_darts.methods import register
from keras_darts.methods.base import SearchMethod
from keras_darts.methods.bilevel import BilevelSearch, SearchHParams
from keras_darts.settings import setting
from keras_darts.space import plans
from keras_darts.space.cells import EDGE_MIXED, EDGE_OFF

CLAMPS = ("derived", "per_edge_argmax")
EDGES_PER_STEP = ("per_cell_type", "single")
EDGE_SAMPLINGS = ("uniform", "round_robin")
NO_EDGE = -1  # A cell type without a sampled edge this step (edges_per_step="single").
CELL_TYPES = ("normal", "reduce")


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class EdasSettings:
    """The proposal's knobs (docs/methods/edas.md#clamping,
    docs/methods/edas.md#temperature-and-epsilon-schedules)."""

    clamp: str = setting(
        "derived", "edas_clamp", "How the edges that are not relaxed run: 'derived' = the "
        "DARTS-derived cell of the current alphas (2 edges per node, argmax op, the rest "
        "off); 'per_edge_argmax' = every edge runs its argmax op.", choices=CLAMPS)
    edges_per_step: str = setting(
        "per_cell_type", "edas_edges_per_step", "Relaxed edges per step: one per cell type "
        "(normal and reduce) or one of all edges.", choices=EDGES_PER_STEP)
    sampling: str = setting(
        "uniform", "edas_edge_sampling", "How the relaxed edge is drawn: i.i.d. uniform, or "
        "a fresh random permutation of the edges every num_edges steps.",
        choices=EDGE_SAMPLINGS)
    tau0: float = setting(
        1.0, "edas_tau0", "Softmax temperature of the relaxed edge at the start, annealed "
        "linearly towards 1 over the search (1 = plain softmax).", lower=1e-3)
    eps: float = setting(
        0.0, "edas_eps", "Probability that a clamped ON edge runs a random op instead of its "
        "chosen one, at the start; decays linearly to 0 by mid-search.", lower=0.0,
        upper=1.0)

    def __post_init__(self):
        _check_choice("clamp", self.clamp, CLAMPS)
        _check_choice("edges_per_step", self.edges_per_step, EDGES_PER_STEP)
        _check_choice("sampling", self.sampling, EDGE_SAMPLINGS)
        if self.tau0 <= 0:
            raise ValueError(f"tau0 must be positive, got {self.tau0}")
        if not 0.0 <= self.eps <= 1.0:
            raise ValueError(f"eps must be in [0, 1], got {self.eps}")

    def temperature(self, progress):
        """tau at `progress` (fraction of the search done): tau0 -> 1 linearly."""
        return self.tau0 + (1.0 - self.tau0) * progress

    def epsilon(self, progress):
        """eps at `progress`: linearly to 0 by mid-search."""
        return self.eps * max(0.0, 1.0 - 2.0 * progress)


def clamped_modes(probs, space, sampled_edge=NO_EDGE, clamp="derived", eps=0.0, rng=None):
    """Edge modes (a tuple of ints, see cells.EDGE_MIXED / EDGE_OFF) of one cell
    type of `space` from its softmax(alpha) rows `probs` [num_edges, num_ops]."""
    probs = np.asarray(probs)
    primitives = space.primitives
    if clamp == "derived":
        modes = [EDGE_OFF] * probs.shape[0]
        row_of = {ij: e for e, ij in enumerate(space.edges)}
        for position, (op, j) in enumerate(space.derive_cell(probs)):
            modes[row_of[(position // space.inputs_per_node, j)]] = primitives.index(op)
    else:
        _check_choice("clamp", clamp, CLAMPS)
        modes = [int(np.argmax(row)) for row in probs]  # First maximum wins.
    if eps > 0.0:
        choices = space.candidate_ops()
        for e, mode in enumerate(modes):
            if mode >= 0 and rng.random() < eps:
                modes[e] = int(rng.choice(choices))
    if sampled_edge != NO_EDGE:
        modes[sampled_edge] = EDGE_MIXED
    return tuple(modes)


class EdgeSampler:
    """Which edge each step relaxes: a pure function of (seed, step), so a
    resumed search samples exactly what an uninterrupted one would have."""

    def __init__(self, num_edges, seed, edges_per_step="per_cell_type", sampling="uniform"):
        _check_choice("edges_per_step", edges_per_step, EDGES_PER_STEP)
        _check_choice("sampling", sampling, EDGE_SAMPLINGS)
        self.num_edges = num_edges
        self.seed = seed
        self.edges_per_step = edges_per_step
        self.sampling = sampling

    def sample(self, step):
        """{"normal": edge, "reduce": edge}: the relaxed edge of each cell type
        (NO_EDGE for a cell type without one this step)."""
        if self.edges_per_step == "per_cell_type":
            picks = [self._draw(step, stream, self.num_edges) for stream in (0, 1)]
        else:  # One edge among both cell types' edges.
            pick = self._draw(step, 0, 2 * self.num_edges)
            picks = [pick, NO_EDGE] if pick < self.num_edges else [NO_EDGE, pick - self.num_edges]
        return dict(zip(CELL_TYPES, picks))

    def _draw(self, step, stream, n):
        if self.sampling == "uniform":
            return int(np.random.default_rng([self.seed, stream, step]).integers(n))
        # round_robin: a fresh random permutation of the n edges every n steps.
        cycle, position = divmod(step, n)
        return int(np.random.default_rng([self.seed, stream, cycle]).permutation(n)[position])


class SingleEdgeSearch(BilevelSearch):
    """The bilevel search with EDAS's single-edge relaxation.

    Same optimizers, losses and metrics as `BilevelSearch`; every forward pass
    runs a `plans.Clamp` of the current edge modes.  Alpha rows other than the
    sampled edge's get an exactly zero gradient and are not updated (values and
    Adam moments: a lazy update).  Weights of ops that did not run get a zero
    gradient from the traced switch and are not updated at all (no decay, no
    momentum), as if it were None.
    """

    def __init__(self, model, strategy, global_batch_size, hparams=SearchHParams(),
                 settings=EdasSettings(), seed=0):
        super().__init__(model, strategy, global_batch_size, hparams)
        self.settings = settings
        self.seed = seed
        self.sampler = EdgeSampler(model.space.num_edges, seed, settings.edges_per_step,
                                   settings.sampling)
        self._progress = 0.0
        with strategy.scope():  # Read by the traced phases: a variable, never a constant.
            self._temperature = tf.Variable(settings.temperature(0.0), trainable=False,
                                            dtype=tf.float32, name="edas_temperature")
        # Which (cell type, edge, op) each op weight belongs to (see _ran).
        self._op_of = {}
        for cell in model.search_cells:
            for e, edge in enumerate(cell.edges):
                for k, op in enumerate(edge.candidates):
                    for v in op.trainable_variables:
                        self._op_of[id(v)] = (cell.cell_type, e, k)
        # autograph off: no tensor-dependent Python control flow.
        self._arch_phase = tf.function(self._distributed_arch_phase, autograph=False)
        self._weight_phase = tf.function(self._distributed_weight_phase, autograph=False)

    def set_progress(self, epoch, epochs):
        self._progress = epoch / max(epochs, 1)
        self._temperature.assign(self.settings.temperature(self._progress))

    def edge_modes(self, sampled, step, eps=None):
        """The clamped cells of this step, from the current alphas (`eps`: the
        exploration probability, default: the schedule's at this progress)."""
        space = self.model.space
        probs = self.model.arch_probabilities()
        rng = np.random.default_rng([self.seed, 2, step])  # Only used when eps > 0.
        eps = self.settings.epsilon(self._progress) if eps is None else eps
        return {cell: clamped_modes(probs[cell], space, sampled[cell], self.settings.clamp,
                                    eps, rng)
                for cell in space.cell_types}

    def derived_modes(self):
        """Every edge clamped, none relaxed, no exploration: the derived network itself."""
        return self.edge_modes(dict.fromkeys(self.model.space.cell_types, NO_EDGE), step=0,
                               eps=0.0)

    def step(self, train_batch, val_batch):
        step = int(self.arch_optimizer.iterations.numpy())
        sampled = self.sampler.sample(step)
        val_loss, val_correct = self._arch_phase(val_batch, self._as_tensors(
            self.edge_modes(sampled, step)))
        # The alpha step may have changed the argmax or a node's top 2.
        train_loss, train_correct, grad_norm = self._weight_phase(
            train_batch, self._as_tensors(self.edge_modes(sampled, step)))
        return self._step_metrics({
            "loss/val": val_loss, "correct/val": val_correct, "loss/train": train_loss,
            "correct/train": train_correct,
            "grad_norm": grad_norm / self.strategy.num_replicas_in_sync})

    def step_graph(self, train_batch, val_batch):
        raise ValueError("the single-edge step is two traced graphs (alpha phase, weight "
                         "phase) with the edge modes derived in between")

    def evaluate(self, batch):
        """Eval-mode loss sum, correct count and example count of the derived
        network (the clamped supernet, no edge relaxed)."""
        return self._evaluate(batch, self._as_tensors(self.derived_modes()))

    def clamp_plan(self, edge_modes):
        """The supernet plan of a clamping: mixed edges weighted by softmax(alpha / tau)."""
        return plans.Clamp(edge_modes, self.mixing_weights())

    def mixing_weights(self):
        return {cell: self.mixing_rule(alpha, self._temperature)
                for cell, alpha in self.model.alphas.items()}

    @staticmethod
    def _as_tensors(modes):
        return {cell: tf.constant(m, tf.int32) for cell, m in modes.items()}

    def _distributed_evaluate(self, batch, edge_modes):
        return self._run(self._replica_evaluate_clamped, *batch, edge_modes)

    def _replica_evaluate_clamped(self, images, labels, edge_modes):
        return self._replica_evaluate(images, labels, self.clamp_plan(edge_modes))

    def _distributed_arch_phase(self, batch, edge_modes):
        return self._run(self._replica_arch_phase, *batch, edge_modes)

    def _distributed_weight_phase(self, batch, edge_modes):
        return self._run(self._replica_weight_phase, *batch, edge_modes)

    def _replica_arch_phase(self, images, labels, edge_modes):
        """Adam step on the alpha rows of the mixed edges (a lazy update: the
        other rows keep their values and moments)."""
        masks = [tf.cast(tf.equal(edge_modes[cell], EDGE_MIXED), tf.float32)
                 for cell in self.model.space.cell_types]
        return self._arch_update(images, labels, lambda: self.clamp_plan(edge_modes),
                                 row_masks=masks)

    def _replica_weight_phase(self, images, labels, edge_modes):
        """SGD step (clipped as `BilevelSearch`'s) on the weights of the ops that
        ran; the others (zero gradient) keep their values and momentum."""
        return self._weight_update(images, labels, lambda: self.clamp_plan(edge_modes),
                                   active=self._ran(edge_modes))

    def _ran(self, edge_modes):
        """Per weight variable: None (always runs) or a 0/1 scalar, 1 if the op
        owning it ran under `edge_modes` (chosen, or on the mixed edge)."""
        ran = {}
        for cell, e, k in set(self._op_of.values()):
            mode = edge_modes[cell][e]
            ran[cell, e, k] = tf.logical_or(tf.equal(mode, k), tf.equal(mode, EDGE_MIXED))
        return [ran.get(self._op_of.get(id(v))) for v in self.model.weight_variables]


@register
class Edas(SearchMethod):
    """EDAS (docs/methods/edas.md); `--relaxation=single_edge` selects it too."""

    name = "edas"
    description = ("EDAS: one sampled edge per cell type relaxed, every other edge clamped "
                   "to the derived cell (= --relaxation=single_edge)")
    Settings = EdasSettings
    relaxation = "single_edge"
    strategies = ("default",)
    strategy_note = ("derives each step's clamping on the host between its two phases and "
                     "is built and tested for one device")

    def check(self, strategy):
        super().check(strategy)
        if selection.get(self.config.selection).tunes_supernet:
            raise ConfigError(f"--selection={self.config.selection} fine-tunes the fully "
                              "mixed supernet; use it with --relaxation=full (not EDAS)")

    def build_step(self, model, strategy):
        self.step = SingleEdgeSearch(model, strategy, self.config.batch_size,
                                     self.config.hparams(), self.settings, seed=self.config.seed)
        return self.step
