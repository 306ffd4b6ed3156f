"""EDAS: relax one sampled edge per step, clamp every other edge (specs/edas.md).

Only the paper's abstract is available; the procedure below is the spec's
PROPOSAL (sect. 1-4), with its alternatives as settings:

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
between the two phases.  Gradients of ops that did not run come out as zeros;
their weights and optimizer slots are masked out of the update.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from keras_darts.cells import EDGE_MIXED, EDGE_OFF, edge_inputs
from keras_darts.search_step import BilevelSearch, SearchHParams
from keras_darts.selection.magnitude import derive_cell

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
    """The spec's PROPOSAL knobs (specs/edas.md sect. 1 and 4)."""

    clamp: str = "derived"
    edges_per_step: str = "per_cell_type"
    sampling: str = "uniform"
    tau0: float = 1.0   # Sampled edge's softmax temperature at the start (1 = plain softmax).
    eps: float = 0.0    # Probability that an ON edge runs a random op, at the start.
    seed: int = 0

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


def clamped_modes(probs, primitives, num_nodes, sampled_edge=NO_EDGE, clamp="derived",
                  eps=0.0, rng=None):
    """Edge modes (a tuple of ints, see cells.EDGE_MIXED / EDGE_OFF) of one cell
    type from its softmax(alpha) rows `probs` [num_edges, num_ops]."""
    probs = np.asarray(probs)
    primitives = tuple(primitives)
    if clamp == "derived":
        modes = [EDGE_OFF] * probs.shape[0]
        row_of = {ij: e for e, ij in enumerate(edge_inputs(num_nodes))}
        for position, (op, j) in enumerate(derive_cell(probs, primitives, num_nodes)):
            modes[row_of[(position // 2, j)]] = primitives.index(op)
    else:
        _check_choice("clamp", clamp, CLAMPS)
        modes = [int(np.argmax(row)) for row in probs]  # First maximum wins.
    if eps > 0.0:
        choices = [k for k, name in enumerate(primitives) if name != "none"]
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

    Same optimizers, losses and metrics as `BilevelSearch`; `edge_modes` clamp
    the supernet.  Alpha rows other than the sampled edge's get an exactly zero
    gradient and are not updated (values and Adam moments: a lazy update).
    Weights of ops that did not run get a zero gradient from the traced switch
    and are not updated at all (no decay, no momentum), as if it were None.
    """

    def __init__(self, model, strategy, global_batch_size, hparams=SearchHParams(),
                 settings=EdasSettings()):
        super().__init__(model, strategy, global_batch_size, hparams)
        self.settings = settings
        self.sampler = EdgeSampler(model.alpha_normal.shape[0], settings.seed,
                                   settings.edges_per_step, settings.sampling)
        self._progress = 0.0
        # Which (cell type, edge, op) each op weight belongs to (see _ran).
        self._op_of = {}
        for cell in model.search_cells:
            for e, edge in enumerate(cell.edges):
                for k, op in enumerate(edge.candidates):
                    for v in op.trainable_variables:
                        self._op_of[id(v)] = (CELL_TYPES[cell.reduction], e, k)
        # autograph off: no tensor-dependent Python control flow.
        self._arch_phase = tf.function(self._distributed_arch_phase, autograph=False)
        self._weight_phase = tf.function(self._distributed_weight_phase, autograph=False)

    def set_progress(self, epoch, epochs):
        self._progress = epoch / max(epochs, 1)

    def edge_modes(self, sampled, step):
        """The clamped cells of this step, from the current alphas."""
        probs = self.model.arch_probabilities()
        rng = np.random.default_rng([self.settings.seed, 2, step])  # Only used when eps > 0.
        eps = self.settings.epsilon(self._progress)
        return {cell: clamped_modes(probs[cell], self.model.primitives, self.model.num_nodes,
                                    sampled[cell], self.settings.clamp, eps, rng)
                for cell in CELL_TYPES}

    def derived_modes(self):
        """Every edge clamped, none relaxed: the derived network itself."""
        return self.edge_modes(dict.fromkeys(CELL_TYPES, NO_EDGE), step=0)

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

    @staticmethod
    def _as_tensors(modes):
        return {cell: tf.constant(modes[cell], tf.int32) for cell in CELL_TYPES}

    def _distributed_arch_phase(self, batch, edge_modes):
        return self._run(self._arch_update, *batch, edge_modes)

    def _distributed_weight_phase(self, batch, edge_modes):
        return self._run(self._weight_update, *batch, edge_modes)

    def _arch_update(self, images, labels, edge_modes):
        """Adam step on the alpha rows of the mixed edges (a lazy update: the
        other rows keep their values and moments)."""
        arch_vars = self.model.arch_variables
        loss, correct, grads = self._loss_and_grads(images, labels, arch_vars,
                                                    weight_grads=False, edge_modes=edge_modes)
        self.arch_optimizer.apply(grads, arch_vars, row_masks=[
            tf.cast(tf.equal(edge_modes[cell], EDGE_MIXED), tf.float32) for cell in CELL_TYPES])
        return loss, correct

    def _weight_update(self, images, labels, edge_modes):
        """SGD step (clipped as `BilevelSearch`'s) on the weights of the ops that
        ran; the others (zero gradient) keep their values and momentum."""
        weight_vars = self.model.weight_variables
        loss, correct, grads = self._loss_and_grads(images, labels, weight_vars,
                                                    edge_modes=edge_modes)
        grads, grad_norm = tf.clip_by_global_norm(grads, self.hparams.w_grad_clip)
        self.weight_optimizer.apply(grads, weight_vars, active=self._ran(edge_modes))
        return loss, correct, grad_norm

    def _ran(self, edge_modes):
        """Per weight variable: None (always runs) or a 0/1 scalar, 1 if the op
        owning it ran under `edge_modes` (chosen, or on the mixed edge)."""
        ran = {}
        for cell, e, k in set(self._op_of.values()):
            mode = edge_modes[cell][e]
            ran[cell, e, k] = tf.logical_or(tf.equal(mode, k), tf.equal(mode, EDGE_MIXED))
        return [ran.get(self._op_of.get(id(v))) for v in self.model.weight_variables]

    def _mixing_weights(self):
        tau = self.settings.temperature(self._progress)
        return {cell: tf.nn.softmax(alpha / tau, axis=-1)
                for cell, alpha in zip(CELL_TYPES, self.model.arch_variables)}
