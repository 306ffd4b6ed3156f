"""The bilevel search step: one architecture update, then one weight update.

This is the only implementation of a search step; the CLI trainer, the
benchmark tool and the tests all call `BilevelSearch.step`.

Choice (BUILD_NOTES.md): an explicit `strategy.run` inside one `tf.function`
rather than `keras.Model.fit` with a custom `train_step`: the step needs two
batches (train, val), two tapes, two optimizers and clipping by the global
norm of the all-reduced gradient, and Keras' fit mis-splits paired batches
under MirroredStrategy (NOTES_TF.md).
"""

import dataclasses
import functools
import math

import numpy as np
import tensorflow as tf

from keras_darts import replicas
from keras_darts.optim import Adam, MomentumSGD, assign_all


@dataclasses.dataclass(frozen=True)
class SearchHParams:
    """Optimiser settings of the search (defaults: specs/darts.md sect. 3)."""

    w_lr: float = 0.025
    w_lr_min: float = 0.001
    w_momentum: float = 0.9
    w_weight_decay: float = 3e-4
    w_grad_clip: float = 5.0
    a_lr: float = 3e-4
    a_beta_1: float = 0.5
    a_beta_2: float = 0.999
    a_epsilon: float = 1e-8
    a_weight_decay: float = 1e-3
    # Second order: finite-difference step eps = unrolled_eps / ||d L_val / d w'||.
    unrolled_eps: float = 0.01


def cosine_lr(epoch, epochs, lr_max, lr_min, stepped_before_epoch=True):
    """Weight learning rate of 0-based `epoch`, as the reference code runs it.

    The DARTS reference steps PyTorch's CosineAnnealingLR at the start of every
    epoch, so epoch e uses the value for e + 1 and the last epoch runs at
    lr_min.  MSR-DARTS steps it after the epoch (`stepped_before_epoch=False`):
    epoch e uses cos(pi * e / epochs), the first epoch runs at lr_max.
    """
    t = epoch + 1 if stepped_before_epoch else epoch
    return lr_min + 0.5 * (lr_max - lr_min) * (1.0 + math.cos(math.pi * t / epochs))


def _cross_entropy(labels, logits):
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(labels, tf.int32),
                                                          logits=logits)


def _correct(labels, logits):
    hits = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), tf.cast(labels, tf.int32))
    return tf.reduce_sum(tf.cast(hits, tf.float32))


def _eval_sums(labels, logits):
    """(loss sum, correct count, example count) of one replica's batch."""
    return (tf.reduce_sum(_cross_entropy(labels, logits)), _correct(labels, logits),
            tf.cast(tf.shape(labels)[0], tf.float32))


ORDERS = ("first", "second")


class BilevelSearch:
    """DARTS search of `model` under `strategy`, first or second `order`
    (the architecture gradient, specs/darts.md sect. 3).

    Create `model` inside `strategy.scope()`; this object creates both optimizers
    in the same scope.  Batches passed to `step` are global batches: plain
    tensors under the default strategy, distributed values otherwise (see
    `distribute`).
    """

    def __init__(self, model, strategy, global_batch_size, hparams=SearchHParams(),
                 order="first", per_cell_weights=False):
        """per_cell_weights: every cell mixes its edges by its own weights, set with
        `set_cell_weights` (MSR-DARTS), instead of softmax(alpha) per cell type."""
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
        self.order = order
        self.model = model
        self.strategy = strategy
        self.global_batch_size = int(global_batch_size)
        self.hparams = hparams
        with strategy.scope():
            self.weight_optimizer = MomentumSGD(
                model.weight_variables, hparams.w_lr, momentum=hparams.w_momentum,
                weight_decay=hparams.w_weight_decay, name="weight_sgd")
            self.arch_optimizer = Adam(
                model.arch_variables, hparams.a_lr, beta_1=hparams.a_beta_1,
                beta_2=hparams.a_beta_2, epsilon=hparams.a_epsilon,
                weight_decay=hparams.a_weight_decay, name="arch_adam")
            # Rows of the mixing weights held fixed instead of softmax(alpha)
            # (perturbation selection's projection); all free by default.
            shape = tuple(model.alpha_normal.shape)
            self._fixed_rows = {cell: tf.Variable(tf.zeros(shape[:1]), trainable=False,
                                                  name=f"fixed_rows_{cell}")
                                for cell in ("normal", "reduce")}
            self._fixed_weights = {cell: tf.Variable(tf.zeros(shape), trainable=False,
                                                     name=f"fixed_weights_{cell}")
                                   for cell in ("normal", "reduce")}
            self.cell_weights = None
            if per_cell_weights:
                cells_shape = (len(model.search_cells),) + shape
                self.cell_weights = tf.Variable(tf.fill(cells_shape, 1.0 / shape[-1]),
                                                trainable=False, name="cell_weights")
        # autograph off: the step has no tensor-dependent Python control flow.
        self._step = tf.function(self._distributed_step, autograph=False)
        self._evaluate = tf.function(self._distributed_evaluate, autograph=False)
        self._evaluate_mixed = tf.function(self._distributed_evaluate_mixed, autograph=False)
        self._evaluate_arch = {}  # Genotype -> its traced evaluation (see evaluate_arch).

    # -- public --------------------------------------------------------------
    def set_weight_lr(self, lr):
        self.weight_optimizer.learning_rate.assign(lr)

    def set_progress(self, epoch, epochs):
        """Called at the start of every search epoch; a hook for variants whose
        step depends on the search's progress (DARTS' does not)."""

    def fix_rows(self, fixed):
        """Holds rows of the mixing weights fixed in every later step: `fixed` =
        {"normal": {row: weights [K]}, "reduce": {...}}; other rows stay
        softmax(alpha) (and only they get alpha gradients)."""
        for cell in ("normal", "reduce"):
            rows = np.zeros(self._fixed_rows[cell].shape, np.float32)
            weights = np.zeros(self._fixed_weights[cell].shape, np.float32)
            for row, values in fixed.get(cell, {}).items():
                rows[row], weights[row] = 1.0, values
            self._fixed_rows[cell].assign(rows)
            self._fixed_weights[cell].assign(weights)

    def set_cell_weights(self, weights):
        """Mixing weights [num_cells, num_edges, num_ops] of every later step and
        evaluation (only with per_cell_weights=True)."""
        if self.cell_weights is None:
            raise ValueError("set_cell_weights needs BilevelSearch(per_cell_weights=True)")
        self.cell_weights.assign(tf.convert_to_tensor(weights, tf.float32))

    def step(self, train_batch, val_batch):
        """One search step; returns global-mean metrics as scalar tensors.
        `val_batch=None`: no architecture update, only the weight update (the
        metrics then have no "val" entries)."""
        return self._step(train_batch, val_batch)

    def step_graph(self, train_batch, val_batch):
        """The traced graph of `step` for these batch shapes (for analysis tools)."""
        return self._step.get_concrete_function(train_batch, val_batch).graph

    def evaluate(self, batch):
        """Eval-mode loss sum, correct count and example count over a global batch."""
        return self._evaluate(batch)

    def evaluate_mixed(self, batch, edge_weights):
        """Like `evaluate`, but in train mode (batch statistics, as DARTS-PT scores
        edges) with the given mixing weights {"normal": [E, K], "reduce": [E, K]}."""
        edge_weights = {k: tf.convert_to_tensor(v, tf.float32) for k, v in edge_weights.items()}
        return self._evaluate_mixed(batch, edge_weights)

    def evaluate_arch(self, batch, arch):
        """Like `evaluate_mixed`, for the discrete architecture `arch` (a Genotype)
        inside the supernet: only its chosen ops on its chosen edges run, in train
        mode (batch statistics: the running ones were collected under mixing)."""
        function = self._evaluate_arch.get(arch)
        if function is None:
            function = tf.function(functools.partial(self._distributed_evaluate_arch,
                                                     arch=arch), autograph=False)
            self._evaluate_arch[arch] = function
        return function(batch)

    def distribute(self, dataset):
        """A dataset of global batches -> an iterable of per-replica batches
        (`replicas.distribute`)."""
        return replicas.distribute(self.strategy, dataset)

    # -- replica functions -----------------------------------------------------
    def _mean_loss(self, labels, logits):
        return tf.nn.compute_average_loss(_cross_entropy(labels, logits),
                                          global_batch_size=self.global_batch_size)

    def _loss_and_grads(self, images, labels, variables, weight_grads=True, edge_modes=None):
        """Train-mode loss on one batch and its all-reduced gradient w.r.t. `variables` only."""
        variables = [v.value for v in variables]  # The tf.Variables behind Keras variables.
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(variables)
            logits = self.model(images, training=True, weight_grads=weight_grads,
                                edge_modes=edge_modes, **self._mixing())
            loss = self._mean_loss(labels, logits)
        # None (e.g. an op EDAS did not run) stays None.
        grads = replicas.all_reduce_sum(tape.gradient(loss, variables))
        return loss, _correct(labels, logits), grads

    def _mixing(self, fixed_rows=True):
        """The supernet's mixing-weight argument: per cell, or per cell type
        (softmax(alpha), with the fixed rows replaced unless `fixed_rows=False`)."""
        if self.cell_weights is not None:
            return {"cell_weights": self.cell_weights}
        return {"edge_weights": self._mixing_weights()} if fixed_rows else {}

    def _mixing_weights(self):
        """softmax(alpha) with the fixed rows replaced (exactly softmax when none are)."""
        weights = {}
        for cell, alpha in (("normal", self.model.alpha_normal),
                            ("reduce", self.model.alpha_reduce)):
            fixed = self._fixed_rows[cell][:, None]
            weights[cell] = (fixed * self._fixed_weights[cell]
                             + (1.0 - fixed) * tf.nn.softmax(alpha, axis=-1))
        return weights

    def _arch_update(self, images, labels):
        """Adam step on alphas with the gradient of the val loss w.r.t. alphas."""
        arch_vars = self.model.arch_variables
        loss, correct, grads = self._loss_and_grads(images, labels, arch_vars, weight_grads=False)
        self.arch_optimizer.apply(grads, arch_vars)
        return loss, correct

    def _unrolled_arch_grads(self, train_images, train_labels, val_images, val_labels):
        """Second-order architecture gradient (specs/darts.md sect. 3, DARTS eq. 7-8):
        d/dalpha L_val(w', alpha) at the virtual step w' = w - lr (mu m + g + wd w),
        minus lr times a finite-difference Hessian-vector product.  Returns the
        val loss and correct count at w' and the gradients; leaves w as it was.
        All gradients are all-reduced, so every replica takes the same virtual step."""
        hp = self.hparams
        arch_vars, weight_vars = self.model.arch_variables, self.model.weight_variables
        num_arch = len(arch_vars)
        w = [tf.identity(v) for v in weight_vars]
        _, _, g = self._loss_and_grads(train_images, train_labels, weight_vars)
        lr = tf.identity(self.weight_optimizer.learning_rate)
        momentum = self.weight_optimizer.slots["momentum"]
        assign_all(weight_vars, [wi - lr * (hp.w_momentum * m + gi + hp.w_weight_decay * wi)
                                 for wi, m, gi in zip(w, momentum, g)])
        # The reference evaluates w' on a copy of the model: its BN statistics
        # updates are discarded.
        stats = self.model.non_trainable_variables
        saved_stats = [tf.identity(v) for v in stats]
        val_loss, val_correct, grads = self._loss_and_grads(val_images, val_labels,
                                                            arch_vars + weight_vars)
        assign_all(stats, saved_stats)
        val_alpha_grads, v = grads[:num_arch], grads[num_arch:]
        eps = hp.unrolled_eps / tf.linalg.global_norm(v)
        train_alpha_grads = []
        for sign in (1.0, -1.0):
            assign_all(weight_vars, [wi + sign * eps * vi for wi, vi in zip(w, v)])
            train_alpha_grads.append(self._loss_and_grads(
                train_images, train_labels, arch_vars, weight_grads=False)[2])
        assign_all(weight_vars, w)
        hessian_v = [(plus - minus) / (2.0 * eps) for plus, minus in zip(*train_alpha_grads)]
        return val_loss, val_correct, [ga - lr * h for ga, h in zip(val_alpha_grads, hessian_v)]

    def _unrolled_arch_update(self, train_images, train_labels, val_images, val_labels):
        loss, correct, grads = self._unrolled_arch_grads(train_images, train_labels,
                                                         val_images, val_labels)
        self.arch_optimizer.apply(grads, self.model.arch_variables)
        return loss, correct

    def _weight_update(self, images, labels):
        """SGD step on weights with the gradient of the train loss w.r.t. weights."""
        weight_vars = self.model.weight_variables
        loss, correct, grads = self._loss_and_grads(images, labels, weight_vars)
        # Clip by the global norm of the full-batch gradient, before L2 (reference order).
        grads, grad_norm = tf.clip_by_global_norm(grads, self.hparams.w_grad_clip)
        self.weight_optimizer.apply(grads, weight_vars)
        return loss, correct, grad_norm

    def _replica_step(self, train_batch, val_batch):
        if val_batch is None:  # Weights only.
            train_loss, train_correct, grad_norm = self._weight_update(*train_batch)
            return {"loss/train": train_loss, "correct/train": train_correct,
                    "grad_norm": grad_norm / self.strategy.num_replicas_in_sync}
        if self.order == "second":
            val_loss, val_correct = self._unrolled_arch_update(*train_batch, *val_batch)
        else:
            val_loss, val_correct = self._arch_update(*val_batch)
        train_loss, train_correct, grad_norm = self._weight_update(*train_batch)
        return {"loss/val": val_loss, "correct/val": val_correct,
                "loss/train": train_loss, "correct/train": train_correct,
                "grad_norm": grad_norm / self.strategy.num_replicas_in_sync}

    def _distributed_step(self, train_batch, val_batch):
        return self._step_metrics(self._run(self._replica_step, train_batch, val_batch))

    def _run(self, replica_fn, *args):
        """strategy.run, with every output summed over the replicas."""
        return replicas.sum_over_replicas(self.strategy, replica_fn, *args)

    def _step_metrics(self, totals):
        batch = float(self.global_batch_size)
        if "loss/val" not in totals:  # A weights-only step.
            return {"loss/train": totals["loss/train"],
                    "accuracy/train": totals["correct/train"] / batch,
                    "grad_norm": totals["grad_norm"]}
        return {"loss/train": totals["loss/train"], "loss/val": totals["loss/val"],
                "accuracy/train": totals["correct/train"] / batch,
                "accuracy/val": totals["correct/val"] / batch,
                "grad_norm": totals["grad_norm"]}

    def _replica_evaluate(self, images, labels, edge_modes=None):
        # With the fixed rows: after DARTS-PT's projection the supernet is the
        # projected one (it was tuned so); before any, this is softmax(alpha).
        mixing = self._mixing(fixed_rows=edge_modes is None)
        return _eval_sums(labels, self.model(images, training=False, edge_modes=edge_modes,
                                             **mixing))

    def _replica_evaluate_mixed(self, images, labels, edge_weights):
        return _eval_sums(labels, self.model(images, training=True, edge_weights=edge_weights))

    def _replica_evaluate_arch(self, images, labels, arch):
        return _eval_sums(labels, self.model(images, training=True, arch=arch))

    def _distributed_evaluate_arch(self, batch, arch):
        return self._run(functools.partial(self._replica_evaluate_arch, arch=arch), *batch)

    def _distributed_evaluate_mixed(self, batch, edge_weights):
        return self._run(self._replica_evaluate_mixed, *batch, edge_weights)

    def _distributed_evaluate(self, batch, edge_modes=None):
        return self._run(self._replica_evaluate, *batch, edge_modes)
