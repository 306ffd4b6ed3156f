"""NAO-V2's supernet training step: one sampled architecture per batch, only its
path forward and backward (docs/spaces/nao.md#single-path-step), and the
scoring of architectures on the trained supernet (docs/spaces/nao.md#scoring).

The architectures a round trains are a POOL held in fixed-size variables
(`set_pool`); every step draws one index with a stateless RNG keyed by
(seed, a sample counter the step owns), in cross-replica context, so every
replica trains the same architecture and a run resumed from a checkpoint of
the supernet, the optimizer and `checkpoint_state()` draws the same sequence.
The architecture is a tensor inside the traced step: one trace serves them all.

The weight update is `BilevelSearch._weight_update`'s (keras_darts/methods/bilevel.py):
all-reduced gradient, clipped by its global norm, then momentum SGD with
coupled L2.  Weights off the sampled path get a zero gradient, so momentum and
weight decay still move them, as PyTorch (< 2.0, whose zero_grad zeroes the
gradients instead of dropping them) did in NAO's code.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from keras_darts.infra import replicas
from keras_darts.methods.bilevel import _correct, _cross_entropy, _eval_sums
from keras_darts.optim import MomentumSGD, clip_by_global_norm
from keras_darts.space import nao_arch


@dataclasses.dataclass(frozen=True)
class SinglePathHParams:
    """Weight optimiser of the supernet (NAO-V2: SGD 0.9, wd 3e-4, clip 5,
    cosine 0.025 -> 0.001 set by the caller through `set_weight_lr`)."""

    w_lr: float = 0.025
    w_lr_min: float = 0.001
    w_momentum: float = 0.9
    w_weight_decay: float = 3e-4
    w_grad_clip: float = 5.0


def sample_index(probs, seed, counter):
    """Index of one draw from `probs` [n] (zeros never drawn), a pure function of
    (seed, counter): int64 scalar."""
    logits = tf.math.log(tf.cast(probs, tf.float32))[None]
    key = tf.stack([tf.cast(seed, tf.int64), 2 * tf.cast(counter, tf.int64)])
    return tf.random.stateless_categorical(logits, 1, seed=key, dtype=tf.int64)[0, 0]


def drop_path_uniform(shape, seed, counter):
    """The drop-path draws of one step (the same on every replica)."""
    key = tf.stack([tf.cast(seed, tf.int64), 2 * tf.cast(counter, tf.int64) + 1])
    return tf.random.stateless_uniform(shape, key)


class SinglePathStep:
    """Trains `model` (a `NAOSupernet` made in `strategy.scope()`) one sampled
    architecture per step, and scores architectures on it.

    Batches are global batches: plain tensors under the default strategy,
    what `distribute` yields otherwise.  Args: global_batch_size (losses are
    scaled by it), hparams, pool_capacity (largest pool `set_pool` takes),
    seed (of the architecture and drop-path draws).
    """

    def __init__(self, model, strategy, global_batch_size, hparams=SinglePathHParams(),
                 pool_capacity=1000, seed=0):
        self.model = model
        self.strategy = strategy
        self.global_batch_size = int(global_batch_size)
        self.hparams = hparams
        self.pool_capacity = int(pool_capacity)
        self.seed = int(seed)
        with strategy.scope():
            self.weight_optimizer = MomentumSGD(
                model.trainable_variables, hparams.w_lr, momentum=hparams.w_momentum,
                weight_decay=hparams.w_weight_decay, name="weight_sgd")

            def counter(name, value=0):
                return tf.Variable(value, dtype=tf.int64, trainable=False, name=name)
            self.sample_counter = counter("nao_sample_counter")
            self.drop_path_step = counter("nao_drop_path_step")
            self.drop_path_total = counter("nao_drop_path_total", 1)
            self.last_index = counter("nao_last_index", -1)
            self.pool_archs = tf.Variable(tf.zeros((self.pool_capacity, nao_arch.ARCH_LENGTH),
                                                   tf.int32), trainable=False, name="nao_pool")
            self.pool_probs = tf.Variable(tf.zeros((self.pool_capacity,)), trainable=False,
                                          name="nao_pool_probs")
            self.eval_arch = tf.Variable(tf.zeros((nao_arch.ARCH_LENGTH,), tf.int32),
                                         trainable=False, name="nao_eval_arch")
        self._pool_size = 0
        self._step = tf.function(self._distributed_step, autograph=False)
        self._score = tf.function(self._distributed_score, autograph=False)

    # -- set-up --------------------------------------------------------------
    def set_pool(self, archs, probs):
        """The architectures of the coming steps, [n, 40], drawn with probability
        proportional to `probs` [n] (NAO-V2: parameter counts)."""
        archs = np.stack([nao_arch.validate(a, f"pool architecture {i}")
                          for i, a in enumerate(np.asarray(archs))])
        probs = np.asarray(probs, np.float64)
        if not 0 < len(archs) <= self.pool_capacity or probs.shape != (len(archs),):
            raise ValueError(f"set_pool: {len(archs)} architectures and {probs.shape} "
                             f"probabilities; 1..{self.pool_capacity} of each expected")
        if (probs < 0).any() or probs.sum() <= 0 or not np.isfinite(probs).all():
            raise ValueError("set_pool: probabilities must be finite, >= 0, not all 0")
        padded_archs = np.zeros(self.pool_archs.shape, np.int32)
        padded_archs[:len(archs)] = archs
        padded_probs = np.zeros(self.pool_probs.shape, np.float32)
        padded_probs[:len(archs)] = probs / probs.sum()
        self.pool_archs.assign(padded_archs)
        self.pool_probs.assign(padded_probs)
        self._pool_size = len(archs)

    def start_round(self, total_steps):
        """A new round: the drop-path schedule restarts over `total_steps` steps
        (NAO-V2: ceil(45000 / 64) * 50 = 35,200)."""
        self.drop_path_step.assign(0)
        self.drop_path_total.assign(int(total_steps))

    def set_weight_lr(self, lr):
        self.weight_optimizer.learning_rate.assign(lr)

    def set_eval_arch(self, arch):
        """The architecture `evaluate` scores (the current best)."""
        self.eval_arch.assign(nao_arch.validate(arch, "evaluation architecture"))

    def checkpoint_state(self):
        """{name: trackable} a resumed run needs besides the supernet and the optimizer."""
        return {v.name.split(":")[0]: v for v in (
            self.sample_counter, self.drop_path_step, self.drop_path_total, self.last_index,
            self.pool_archs, self.pool_probs, self.eval_arch)}

    def last_arch_index(self):
        """Pool index the last step trained (-1 before the first)."""
        return int(self.last_index.numpy())

    def distribute(self, dataset):
        """A dataset of global batches -> an iterable of per-replica batches."""
        return replicas.distribute(self.strategy, dataset)

    # -- steps -----------------------------------------------------------------
    def step(self, train_batch, val_batch=None):
        """One weight step on one sampled architecture; returns global-mean
        metrics {"loss/train", "accuracy/train", "grad_norm"}; the pool index it
        trained is `last_arch_index()`."""
        if val_batch is not None:
            raise ValueError("NAO's supernet step trains weights only: val_batch must be None")
        if float(tf.reduce_sum(self.pool_probs)) <= 0:
            raise ValueError("set_pool() before the first step")
        metrics = self._step(train_batch)
        metrics.pop("arch_index")  # Also in self.last_index (not a metric to average).
        return metrics

    def step_graph(self, train_batch, val_batch=None):
        """The traced graph of `step` (for analysis tools; `val_batch` as in `step`)."""
        return self._step.get_concrete_function(train_batch).graph

    def score(self, batch, arch):
        """(loss sum, correct count, example count) of `arch` on a global batch:
        no gradient, no drop path, BatchNorm on the batch's statistics.  One trace
        for every architecture."""
        arch = tf.constant(nao_arch.validate(arch, "scored architecture"), tf.int32)
        return self._score(batch, arch)

    def score_pool(self, archs, batches):
        """Top-1 accuracy [n] of every architecture, each on its own batch (NAO:
        a fresh random batch of 500 held-out images per architecture)."""
        accuracies = []
        for arch, batch in zip(archs, batches, strict=True):
            _, correct, count = self.score(batch, arch)
            accuracies.append(float(correct) / float(count))
        return np.asarray(accuracies)

    def evaluate(self, batch):
        """`score` of the architecture of `set_eval_arch` (the harness's per-epoch eval)."""
        return self._score(batch, tf.convert_to_tensor(self.eval_arch))

    # -- traced functions ----------------------------------------------------------
    def _distributed_step(self, train_batch):
        counter = self.sample_counter.read_value()
        index = sample_index(self.pool_probs, self.seed, counter)
        arch = tf.gather(self.pool_archs, index)
        progress = (tf.cast(self.drop_path_step + 1, tf.float32)
                    / tf.cast(self.drop_path_total, tf.float32))
        totals = replicas.sum_over_replicas(self.strategy, self._replica_step, train_batch,
                                            arch, progress, counter)
        with tf.control_dependencies(list(totals.values())):
            updates = [self.sample_counter.assign_add(1), self.drop_path_step.assign_add(1),
                       self.last_index.assign(index)]
        with tf.control_dependencies(updates):
            batch = float(self.global_batch_size)
            return {"loss/train": tf.identity(totals["loss"]),
                    "accuracy/train": totals["correct"] / batch,
                    "grad_norm": tf.identity(totals["grad_norm"]), "arch_index": index}

    def _replica_step(self, batch, arch, progress, counter):
        images, labels = batch
        context = tf.distribute.get_replica_context()
        replicas_in_sync = context.num_replicas_in_sync
        local = tf.shape(labels)[0]
        # One global draw, sliced as `replicas.distribute` slices the batch: the
        # masks do not depend on the number of replicas.
        shape = [self.model.num_cells, nao_arch.NUM_NODES, 2, local * replicas_in_sync]
        start = tf.cast(context.replica_id_in_sync_group, tf.int32) * local
        uniform = drop_path_uniform(shape, self.seed, counter)[..., start:start + local]
        variables = [v.value for v in self.model.trainable_variables]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(variables)
            logits = self.model(images, arch, drop_path=(progress, uniform))
            loss = tf.nn.compute_average_loss(_cross_entropy(labels, logits),
                                              global_batch_size=self.global_batch_size)
        grads = [None if g is None else tf.convert_to_tensor(g)  # IndexedSlices of gathers.
                 for g in tape.gradient(loss, variables)]
        grads = replicas.all_reduce_sum(grads)
        grads, grad_norm = clip_by_global_norm(grads, self.hparams.w_grad_clip)
        self.weight_optimizer.apply(grads, self.model.trainable_variables)
        return {"loss": loss, "correct": _correct(labels, logits),
                "grad_norm": grad_norm / replicas_in_sync}

    def _distributed_score(self, batch, arch):
        return replicas.sum_over_replicas(self.strategy, self._replica_score, batch, arch)

    def _replica_score(self, batch, arch):
        images, labels = batch
        return _eval_sums(labels, self.model(images, arch))
