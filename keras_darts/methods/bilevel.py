"""The bilevel search step: one architecture update, then one weight update.

This is the only implementation of a search step; the CLI trainer, the
benchmark tool and the tests all call `BilevelSearch.step`.

Choice (BUILD_NOTES.md): an explicit `strategy.run` inside one `tf.function`
rather than `keras.Model.fit` with a custom `train_step`: the step needs two
batches (train, val), two tapes, two optimizers and clipping by the global
norm of the all-reduced gradient, and Keras' fit mis-splits paired batches
under MirroredStrategy (docs/tensorflow_notes.md#distribution).

Variants change what the forward passes run, not the step: `plan()` is the
supernet plan (keras_darts/space/plans.py) of every training and evaluation
pass; the MSR-DARTS and EDAS steps override it.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from keras_darts.infra import replicas
from keras_darts.optim import Adam, MomentumSGD, assign_all, clip_by_global_norm
from keras_darts.space import plans


@dataclasses.dataclass(frozen=True)
class SearchHParams:
    """Optimiser settings of the search (defaults: docs/methods/darts.md#defaults-and-flags)."""

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
    (the architecture gradient, docs/methods/darts.md#second-order-gradient).

    Create `model` inside `strategy.scope()`; this object creates both optimizers
    in the same scope.  Batches passed to `step` are global batches: plain
    tensors under the default strategy, distributed values otherwise (see
    `distribute`).  The mixing rule that turns alphas into op coefficients
    is the supernet's (`model.mixing_rule`, keras_darts/space/mixing.py).
    """

    def __init__(self, model, strategy, global_batch_size, hparams=SearchHParams(),
                 order="first"):
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
        self.order = order
        self.model = model
        self.strategy = strategy
        self.global_batch_size = int(global_batch_size)
        self.hparams = hparams
        self.mixing_rule = model.mixing_rule
        with strategy.scope():
            self.weight_optimizer = MomentumSGD(
                model.weight_variables, hparams.w_lr, momentum=hparams.w_momentum,
                weight_decay=hparams.w_weight_decay, name="weight_sgd")
            self.arch_optimizer = Adam(
                model.arch_variables, hparams.a_lr, beta_1=hparams.a_beta_1,
                beta_2=hparams.a_beta_2, epsilon=hparams.a_epsilon,
                weight_decay=hparams.a_weight_decay, name="arch_adam")
            # Rows of the mixing weights held fixed instead of the rule's
            # (perturbation selection's projection); all free by default.
            shape = tuple(model.space.alpha_shape)
            self._fixed_rows = {cell: tf.Variable(tf.zeros(shape[:1]), trainable=False,
                                                  name=f"fixed_rows_{cell}")
                                for cell in model.space.cell_types}
            self._fixed_weights = {cell: tf.Variable(tf.zeros(shape), trainable=False,
                                                     name=f"fixed_weights_{cell}")
                                   for cell in model.space.cell_types}
        # autograph off: the step has no tensor-dependent Python control flow.
        self._step = tf.function(self._distributed_step, autograph=False)
        self._evaluate = tf.function(self._distributed_evaluate, autograph=False)
        self._evaluate_plan = {}  # plan.trace_key() -> its traced evaluation.

    # -- public --------------------------------------------------------------
    def set_weight_lr(self, lr):
        self.weight_optimizer.learning_rate.assign(lr)

    def set_progress(self, epoch, epochs):
        """Called at the start of every search epoch; a hook for variants whose
        step depends on the search's progress (DARTS' does not)."""

    def fix_rows(self, fixed):
        """Holds rows of the mixing weights fixed in every later step: `fixed` =
        {"normal": {row: weights [K]}, "reduce": {...}}; other rows stay
        the rule's (and only they get alpha gradients)."""
        for cell in self.model.space.cell_types:
            rows = np.zeros(self._fixed_rows[cell].shape, np.float32)
            weights = np.zeros(self._fixed_weights[cell].shape, np.float32)
            for row, values in fixed.get(cell, {}).items():
                rows[row], weights[row] = 1.0, values
            self._fixed_rows[cell].assign(rows)
            self._fixed_weights[cell].assign(weights)

    def step(self, train_batch, val_batch):
        """One search step; returns global-mean metrics as scalar tensors.
        `val_batch=None`: no architecture update, only the weight update (the
        metrics then have no "val" entries)."""
        return self._step(train_batch, val_batch)

    def step_graph(self, train_batch, val_batch):
        """The traced graph of `step` for these batch shapes (for analysis tools)."""
        return self._step.get_concrete_function(train_batch, val_batch).graph

    def evaluate(self, batch):
        """Eval-mode loss sum, correct count and example count over a global batch,
        the supernet running as it trains (`plan()`)."""
        return self._evaluate(batch)

    def evaluate_plan(self, batch, plan):
        """Like `evaluate`, but in train mode (batch statistics, as DARTS-PT scores
        edges and as a discrete architecture inside the supernet is scored: the
        running statistics were collected under mixing) and running `plan`.
        One trace per `plan.trace_key()`: new weights never retrace."""
        key = plan.trace_key()
        function = self._evaluate_plan.get(key)
        if function is None:
            template = plan

            def evaluate(batch, tensors):
                return self._run(self._replica_evaluate_plan, *batch,
                                 template.with_tensors(tensors))
            function = tf.function(evaluate, autograph=False)
            self._evaluate_plan[key] = function
        return function(batch, plan.tensors())

    def distribute(self, dataset):
        """A dataset of global batches -> an iterable of per-replica batches
        (`replicas.distribute`)."""
        return replicas.distribute(self.strategy, dataset)

    def plan(self):
        """The supernet plan of this step's forward passes: every edge mixed by
        the mixing rule of alpha, with the fixed rows replaced."""
        return plans.Mix(self._mixing_weights())

    def mixing_weights(self):
        """The rule's coefficients of every cell type (no fixed rows)."""
        return {cell: self.mixing_rule(alpha) for cell, alpha in self.model.alphas.items()}

    # -- replica functions -----------------------------------------------------
    def _mean_loss(self, labels, logits):
        return tf.nn.compute_average_loss(_cross_entropy(labels, logits),
                                          global_batch_size=self.global_batch_size)

    def _loss_and_grads(self, images, labels, variables, weight_grads=True, make_plan=None):
        """Train-mode loss on one batch and its all-reduced gradient w.r.t. `variables`
        only; the forward runs `make_plan()` (default: `self.plan()`), called
        under the tape: a plan's weights are functions of the alphas."""
        variables = [v.value for v in variables]  # The tf.Variables behind Keras variables.
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(variables)
            plan = (make_plan or self.plan)()
            logits = self.model(images, training=True, weight_grads=weight_grads, plan=plan)
            loss = self._mean_loss(labels, logits)
        # None (e.g. an op EDAS did not run) stays None.
        grads = replicas.all_reduce_sum(tape.gradient(loss, variables))
        return loss, _correct(labels, logits), grads

    def _mixing_weights(self):
        """The rule's weights with the fixed rows replaced (exactly the rule's when
        none are)."""
        weights = {}
        for cell, rule_weights in self.mixing_weights().items():
            fixed = self._fixed_rows[cell][:, None]
            weights[cell] = (fixed * self._fixed_weights[cell] + (1.0 - fixed) * rule_weights)
        return weights

    def _arch_update(self, images, labels, make_plan=None, row_masks=None):
        """Adam step on alphas with the gradient of the val loss w.r.t. alphas
        (`row_masks`: only those rows change, see `Adam.apply`)."""
        arch_vars = self.model.arch_variables
        loss, correct, grads = self._loss_and_grads(images, labels, arch_vars, weight_grads=False,
                                                    make_plan=make_plan)
        self.arch_optimizer.apply(grads, arch_vars, row_masks=row_masks)
        return loss, correct

    def _unrolled_arch_grads(self, train_images, train_labels, val_images, val_labels):
        """Second-order architecture gradient (docs/methods/darts.md#second-order-gradient,
        DARTS eq. 7-8): d/dalpha L_val(w', alpha) at the virtual step
        w' = w - lr (mu m + g + wd w), minus lr times a finite-difference
        Hessian-vector product.  Returns the val loss and correct count at w' and
        the gradients; leaves w as it was.  All gradients are all-reduced, so
        every replica takes the same virtual step."""
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

    def _weight_update(self, images, labels, make_plan=None, active=None):
        """SGD step on weights with the gradient of the train loss w.r.t. weights
        (`active`: which variables may change, see `MomentumSGD.apply`)."""
        weight_vars = self.model.weight_variables
        loss, correct, grads = self._loss_and_grads(images, labels, weight_vars,
                                                    make_plan=make_plan)
        # Clip by the global norm of the full-batch gradient, before L2 (reference order).
        grads, grad_norm = clip_by_global_norm(grads, self.hparams.w_grad_clip)
        self.weight_optimizer.apply(grads, weight_vars, active=active)
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

    def _replica_evaluate(self, images, labels, plan=None):
        # With the fixed rows: after DARTS-PT's projection the supernet is the
        # projected one (it was tuned so); before any, this is the rule's mixing.
        return _eval_sums(labels, self.model(images, training=False,
                                             plan=self.plan() if plan is None else plan))

    def _replica_evaluate_plan(self, images, labels, plan):
        return _eval_sums(labels, self.model(images, training=True, plan=plan))

    def _distributed_evaluate(self, batch, plan=None):
        return self._run(self._replica_evaluate, *batch, plan)
