"""The training step of an evaluation network (docs/evaluation.md#cifar-10-recipe).

One SGD step on one global batch: the recipe's loss (cross entropy, optional
label smoothing, + auxiliary_weight x the auxiliary head's), gradients
all-reduced over replicas, clipped by their global norm, then `MomentumSGD`
(PyTorch semantics, coupled weight decay).  Like `methods.bilevel.BilevelSearch`
it is an explicit `strategy.run` inside one `tf.function`, so the same code
runs on one device and under MirroredStrategy.
"""

import dataclasses

import tensorflow as tf

from keras_darts import schedules
from keras_darts.evaluation import networks as eval_net
from keras_darts.infra import replicas
from keras_darts.optim import MomentumSGD, clip_by_global_norm

LR_SCHEDULES = schedules.names()


@dataclasses.dataclass(frozen=True)
class TrainHParams:
    """Step settings (defaults: the CIFAR-10 recipe; the lr is set per epoch)."""

    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    auxiliary_weight: float = eval_net.AUX_WEIGHT
    label_smoothing: float = 0.0


def epoch_lr(schedule, epoch, epochs, lr, lr_min=0.0, decay=0.97, **options):
    """Learning rate of 0-based `epoch` under a registered schedule
    (keras_darts/schedules.py): cosine from `lr` to `lr_min` (the last epoch
    runs at lr_min) or exponential lr * decay**(e + 1), both stepped at the
    start of every epoch as the reference code steps its schedulers, or
    cosine_power with `options` power and warmup_epochs
    (docs/schedules.md#cosine-power-annealing)."""
    return schedules.lr(schedule, epoch, epochs, lr, lr_min, decay=decay, **options)


def _correct(labels, logits):
    hits = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), tf.cast(labels, tf.int32))
    return tf.reduce_sum(tf.cast(hits, tf.float32))


class NetworkTraining:
    """Trains an `eval_net.EvalNetwork` under `strategy`.

    Create the model inside `strategy.scope()`; the optimizer is created here in
    the same scope.  Batches passed to `step` / `evaluate` are global batches:
    plain tensors under the default strategy, distributed values otherwise
    (see `distribute`).
    """

    def __init__(self, model, strategy, global_batch_size, hparams=TrainHParams()):
        self.model = model
        self.strategy = strategy
        self.global_batch_size = int(global_batch_size)
        self.hparams = hparams
        with strategy.scope():
            self.optimizer = MomentumSGD(model.trainable_variables, 0.0,
                                         momentum=hparams.momentum,
                                         weight_decay=hparams.weight_decay, name="sgd")
        self._step = tf.function(self._distributed_step, autograph=False)
        self._evaluate = tf.function(self._distributed_evaluate, autograph=False)

    def set_lr(self, lr):
        self.optimizer.learning_rate.assign(lr)

    def step(self, batch):
        """One training step; returns {"loss", "accuracy", "grad_norm"} as scalar tensors
        (loss: the global mean of the recipe's loss; accuracy of the main logits)."""
        return self._step(batch)

    def evaluate(self, batch):
        """Eval-mode cross-entropy sum (no smoothing), correct count and example count."""
        return self._evaluate(batch)

    def distribute(self, dataset):
        """A dataset of global batches -> an iterable of per-replica batches
        (`replicas.distribute`)."""
        return replicas.distribute(self.strategy, dataset)

    # -- replica functions -----------------------------------------------------
    def _replica_step(self, images, labels):
        variables = [v.value for v in self.model.trainable_variables]
        with tf.GradientTape() as tape:
            outputs = self.model(images, training=True)
            per_example = eval_net.network_loss(labels, outputs, self.hparams.label_smoothing,
                                                self.hparams.auxiliary_weight)
            loss = tf.nn.compute_average_loss(per_example,
                                              global_batch_size=self.global_batch_size)
        # None (a weight of a node left out of the concat list) stays None.
        grads = replicas.all_reduce_sum(tape.gradient(loss, variables))
        # Clip by the global norm of the full-batch gradient, before L2 (reference order).
        grads, grad_norm = clip_by_global_norm(grads, self.hparams.grad_clip)
        self.optimizer.apply(grads, variables)
        logits = outputs[0] if isinstance(outputs, tuple) else outputs
        return {"loss": loss, "correct": _correct(labels, logits),
                "grad_norm": grad_norm / self.strategy.num_replicas_in_sync}

    def _replica_evaluate(self, images, labels):
        logits = self.model(images, training=False)
        return (tf.reduce_sum(eval_net.smoothed_cross_entropy(labels, logits)),
                _correct(labels, logits), tf.cast(tf.shape(labels)[0], tf.float32))

    def _distributed_step(self, batch):
        totals = replicas.sum_over_replicas(self.strategy, self._replica_step, *batch)
        return {"loss": totals["loss"], "grad_norm": totals["grad_norm"],
                "accuracy": totals["correct"] / float(self.global_batch_size)}

    def _distributed_evaluate(self, batch):
        return replicas.sum_over_replicas(self.strategy, self._replica_evaluate, *batch)
