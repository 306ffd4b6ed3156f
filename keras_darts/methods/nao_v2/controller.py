"""NAO's controller: encoder - predictor - decoder (docs/methods/nao_v2.md#controller).

The encoder maps an architecture's 40 tokens (keras_darts/space/nao_arch.py) to
20 unit-length LSTM outputs and their normalised mean, the architecture
embedding e; the predictor scores e in [0, 1]; the decoder, an attention LSTM
started from e, reads the tokens back.  Training mixes the predictor's squared
error and the decoder's negative log-likelihood; generation moves the encoder
outputs of good architectures along the predictor's gradient and decodes them.

`Controller` runs all of it under a tf.distribute strategy, with every random
choice a pure function of (seed, epoch, batch) so that a round stopped at an
epoch boundary resumes bit-identically.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from keras_darts.infra import replicas
from keras_darts.optim import Adam, clip_by_global_norm
from keras_darts.space import nao_arch

STEPS = nao_arch.ARCH_LENGTH // 2        # Encoder steps: one (input, op) pair each.
AUGMENTATIONS = ("expand", "swap")
# Stream ids of the host-side random choices (docs/methods/nao_v2.md#determinism-and-resuming).
_SPLIT, _EXPAND, _SHUFFLE, _SWAP, _DROPOUT = range(5)


@dataclasses.dataclass(frozen=True)
class ControllerHParams:
    """Controller sizes and training settings; defaults = NAO-V2
    (docs/methods/nao_v2.md#hyper-parameters).

    hidden_size must be 2 x embedding_size (one encoder step reads two tokens).
    augmentation: "expand" (each training arch plus expand - 1 branch-swapped
    copies, made once per `train` call) or "swap" (NAO-WS: every epoch each
    training arch is replaced by one fresh branch-swapped copy).
    """

    embedding_size: int = 32
    hidden_size: int = 64
    mlp_layers: int = 0
    mlp_hidden: int = 200
    dropout: float = 0.1
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float = 5.0
    batch_size: int = 100
    epochs: int = 1000
    trade_off: float = 0.8
    augmentation: str = "expand"
    expand: int = 10
    eval_every: int = 100
    heldout_fraction: float = 0.1
    num_new: int = 300
    max_eta: int = 50

    def __post_init__(self):
        if self.hidden_size != 2 * self.embedding_size:
            raise ValueError(f"hidden_size {self.hidden_size} must be 2 x embedding_size "
                             f"{self.embedding_size}")
        if self.augmentation not in AUGMENTATIONS:
            raise ValueError(f"augmentation {self.augmentation!r} is not one of {AUGMENTATIONS}")
        if not 0.0 <= self.heldout_fraction < 1.0 or not 0.0 <= self.trade_off <= 1.0:
            raise ValueError("heldout_fraction must be in [0, 1) and trade_off in [0, 1]")
        if min(self.batch_size, self.expand, self.eval_every, self.max_eta) < 1:
            raise ValueError("batch_size, expand, eval_every and max_eta must be >= 1")


NAO_V2 = ControllerHParams()
NAO_WS = ControllerHParams(embedding_size=48, hidden_size=96, mlp_layers=3, weight_decay=1e-4,
                           augmentation="swap", expand=1)
PRESETS = {"nao_v2": NAO_V2, "nao_ws": NAO_WS}


# -- metrics -----------------------------------------------------------------------
def normalize_targets(scores):
    """Min-max scaling of a pool's scores to [0, 1]; if all scores are equal there
    is no order to learn and every target is 0.5 (docs/methods/nao_v2.md#training)."""
    scores = np.asarray(scores, np.float64)
    low, high = (scores.min(), scores.max()) if scores.size else (0.0, 0.0)
    if high == low:
        return np.full(scores.shape, 0.5, np.float32)
    return ((scores - low) / (high - low)).astype(np.float32)


def pairwise_accuracy(targets, predictions):
    """Fraction of pairs i < j ordered alike: targets[i] >= targets[j] and
    predictions[i] >= predictions[j], or < for both (ties count as >=;
    docs/methods/nao_v2.md#ranking-metrics).  Without ties Kendall tau = 2 PA - 1."""
    targets, predictions = np.asarray(targets), np.asarray(predictions)
    if targets.shape != predictions.shape or targets.ndim != 1:
        raise ValueError(f"need two equal-length vectors, got {targets.shape}, "
                         f"{predictions.shape}")
    if targets.size < 2:
        raise ValueError("pairwise accuracy needs at least two values")
    upper = np.triu_indices(targets.size, k=1)
    agree = ((targets[:, None] >= targets[None, :])
             == (predictions[:, None] >= predictions[None, :]))
    return float(agree[upper].mean())


def hamming_distance(archs, reference):
    """Mean number of the 40 positions at which `archs` differ from `reference`."""
    archs, reference = np.asarray(archs), np.asarray(reference)
    if archs.shape != reference.shape:
        raise ValueError(f"shapes differ: {archs.shape} vs {reference.shape}")
    return float((archs != reference).sum(axis=-1).mean()) if archs.size else 0.0


def _seed_state(*words, size=2):
    """A stateless seed (int32 [size]) that is a pure function of `words`."""
    return (np.random.SeedSequence(words).generate_state(size) >> 1).astype(np.int32)


def _rng(*words):
    return np.random.default_rng(np.random.SeedSequence(words))


def _tokens(archs):
    """Controller tokens int32 [n, 40] of architectures [n, 40]."""
    return np.stack([nao_arch.to_tokens(a) for a in archs]).astype(np.int32)


# -- the network ---------------------------------------------------------------------
def _decoding_mask():
    """[40, VOCAB] additive mask: 0 where a token is valid at step t, -1e9 elsewhere."""
    mask = np.full((nao_arch.ARCH_LENGTH, nao_arch.VOCAB_SIZE), -1e9, np.float32)
    for t in range(nao_arch.ARCH_LENGTH):
        low, high = nao_arch.token_range(t)
        mask[t, low:high] = 0.0
    return mask


def _arch_embedding(outputs):
    """e = L2-normalise(mean over the encoder steps)."""
    return tf.math.l2_normalize(tf.reduce_mean(outputs, axis=1), axis=-1)


class ControllerNetwork(keras.Model):
    """The three parts (docs/methods/nao_v2.md#encoder-predictor-decoder); its
    methods are called one by one, `call` is teacher-forced training's forward.

    init_seed: seeds every initializer, so the weights are a function of it.
    """

    def __init__(self, embedding_size=32, hidden_size=64, mlp_layers=0, mlp_hidden=200,
                 dropout=0.1, init_seed=0, **kwargs):
        super().__init__(**kwargs)
        self.embedding_size, self.hidden_size = int(embedding_size), int(hidden_size)
        self.mlp_layers, self.mlp_hidden = int(mlp_layers), int(mlp_hidden)
        self.dropout, self.init_seed = float(dropout), int(init_seed)
        seeds = iter(range(1000 * self.init_seed, 1000 * (self.init_seed + 1)))

        def uniform():
            return keras.initializers.RandomUniform(-0.05, 0.05, seed=next(seeds))

        def glorot():
            return keras.initializers.GlorotUniform(seed=next(seeds))

        def lstm(units):
            # Not unrolled: unrolling ran a step ~15 % faster on CPU but traced ~2.5x
            # slower.  seed: the (unused) dropout SeedGenerator's state is a variable.
            return keras.layers.LSTM(units, return_sequences=True,
                                     seed=next(seeds), kernel_initializer=glorot(),
                                     recurrent_initializer=keras.initializers.Orthogonal(
                                         seed=next(seeds)))

        vocab, hidden = nao_arch.VOCAB_SIZE, self.hidden_size
        self.encoder_embedding = keras.layers.Embedding(vocab, self.embedding_size,
                                                        embeddings_initializer=uniform())
        self.encoder_lstm = lstm(hidden)
        self.mlp = [keras.layers.Dense(self.mlp_hidden, activation="relu",
                                       kernel_initializer=glorot())
                    for _ in range(self.mlp_layers)]
        self.score_head = keras.layers.Dense(1, kernel_initializer=glorot())
        self.decoder_embedding = keras.layers.Embedding(vocab, hidden,
                                                        embeddings_initializer=uniform())
        self.decoder_lstm = lstm(hidden)
        self.attention_query = keras.layers.Dense(hidden, use_bias=False,
                                                  kernel_initializer=glorot())
        self.attention_output = keras.layers.Dense(hidden, use_bias=False,
                                                   kernel_initializer=glorot())
        self.token_logits = keras.layers.Dense(vocab, kernel_initializer=glorot())
        self._mask = tf.constant(_decoding_mask())

    def build_all(self):
        """Creates every variable (call inside the strategy's scope)."""
        tokens = tf.zeros([1, nao_arch.ARCH_LENGTH], tf.int32) + nao_arch.INPUT_TOKEN_OFFSET
        self(tokens)
        self.decode_greedy(*self.encode(tokens))
        self.built = True

    def encode(self, tokens):
        """tokens [n, 40] -> (encoder outputs [n, 20, H], unit length per step; e [n, H])."""
        pairs = tf.reshape(self.encoder_embedding(tokens), [-1, STEPS, 2 * self.embedding_size])
        outputs = tf.math.l2_normalize(self.encoder_lstm(pairs), axis=-1)
        return outputs, _arch_embedding(outputs)

    def score(self, embedding, dropout_seed=None, rows=None):
        """f(e) in (0, 1) [n].  dropout_seed (int32 [2]) turns dropout on; its mask
        is drawn for the `rows` = (first, total) rows of the global batch, so it
        does not depend on how the batch is split over replicas."""
        x = embedding
        for i, dense in enumerate(self.mlp):
            x = dense(x)
            if dropout_seed is not None and self.dropout > 0.0:
                first, total = rows
                seed = tf.random.experimental.stateless_fold_in(dropout_seed, i)
                keep = tf.random.stateless_uniform([total, self.mlp_hidden], seed)
                keep = keep[first:first + tf.shape(x)[0]] >= self.dropout
                x = tf.where(keep, x / (1.0 - self.dropout), 0.0)
        return tf.squeeze(tf.sigmoid(self.score_head(x)), axis=-1)

    def _read_out(self, states, outputs):
        """Attention over the encoder outputs -> log-probabilities [n, T, VOCAB]."""
        query = self.attention_query(states)
        weights = tf.nn.softmax(tf.matmul(query, outputs, transpose_b=True), axis=-1)
        context = tf.matmul(weights, outputs)
        mixed = tf.tanh(self.attention_output(tf.concat([context, states], axis=-1)))
        return tf.nn.log_softmax(self.token_logits(mixed), axis=-1)

    def decode_teacher(self, tokens, outputs, embedding):
        """Teacher-forced log-probabilities [n, 40, VOCAB] of reading `tokens` back
        (input [SOS] + tokens[:-1], h0 = c0 = e)."""
        start = tf.fill([tf.shape(tokens)[0], 1], nao_arch.SOS)
        inputs = tf.concat([start, tokens[:, :-1]], axis=1)
        states = self.decoder_lstm(self.decoder_embedding(inputs),
                                   initial_state=[embedding, embedding])
        return self._read_out(states, outputs)

    def decode_greedy(self, outputs, embedding):
        """Greedy constrained decoding -> tokens [n, 40], always a valid architecture
        (docs/methods/nao_v2.md#constrained-greedy-decoding).  A symbolic loop:
        one traced step instead of 40 keeps tracing short."""

        def step(t, token, h, c, chosen):
            out, (h, c) = self.decoder_lstm.cell(self.decoder_embedding(token), [h, c])
            log_probs = self._read_out(out[:, None], outputs)[:, 0]
            token = tf.argmax(log_probs + tf.gather(self._mask, t), axis=-1,
                              output_type=tf.int32)
            return t + 1, token, h, c, chosen.write(t, token)

        start = tf.fill([tf.shape(embedding)[0]], nao_arch.SOS)
        chosen = tf.TensorArray(tf.int32, size=nao_arch.ARCH_LENGTH)
        *_, chosen = tf.while_loop(lambda t, *_: t < nao_arch.ARCH_LENGTH, step,
                                   (tf.constant(0), start, embedding, embedding, chosen))
        return tf.transpose(chosen.stack())

    def call(self, tokens, training=None):
        outputs, embedding = self.encode(tokens)
        return self.score(embedding), self.decode_teacher(tokens, outputs, embedding)

    def get_config(self):
        return {**super().get_config(), "embedding_size": self.embedding_size,
                "hidden_size": self.hidden_size, "mlp_layers": self.mlp_layers,
                "mlp_hidden": self.mlp_hidden, "dropout": self.dropout,
                "init_seed": self.init_seed}


# -- training, evaluation, generation ---------------------------------------------------
_TOKENS = tf.TensorSpec([None, nao_arch.ARCH_LENGTH], tf.int32)
_CHUNK = 1024  # rows per call of the evaluation functions


class Controller:
    """A `ControllerNetwork` with its training round, scoring, reconstruction and
    generation, under `strategy` (default: the current one).  The network is built
    in the strategy's scope; so is `make_optimizer`'s Adam."""

    def __init__(self, hparams=NAO_V2, strategy=None, init_seed=0):
        self.hparams = hparams
        self.strategy = strategy or tf.distribute.get_strategy()
        with self.strategy.scope():
            self.network = ControllerNetwork(hparams.embedding_size, hparams.hidden_size,
                                             hparams.mlp_layers, hparams.mlp_hidden,
                                             hparams.dropout, init_seed=init_seed)
            self.network.build_all()
        self._step_fn = (None, None)  # (optimizer, its traced step): slots belong to one Adam
        self._score = tf.function(self._score_fn, input_signature=[_TOKENS], autograph=False)
        self._reconstruct = tf.function(lambda tokens: self.network.decode_greedy(
            *self.network.encode(tokens)), input_signature=[_TOKENS], autograph=False)
        self._ascend = tf.function(self._ascend_fn, autograph=False, input_signature=[
            _TOKENS, tf.TensorSpec([], tf.float32)])

    @property
    def variables(self):
        """Every network variable, in a fixed order (what a checkpoint should hold)."""
        return list(self.network.variables)

    def make_optimizer(self):
        """A fresh Adam (PyTorch semantics, coupled L2) over the trainable variables:
        NAO re-creates it for every round."""
        with self.strategy.scope():
            return Adam(self.network.trainable_variables, self.hparams.lr,
                        weight_decay=self.hparams.weight_decay, name="controller_adam")

    def checkpoint_state(self, optimizer):
        """Items for tf.train.Checkpoint(**...): the weights as one list (Keras keeps
        layer lists out of TF's object graph) and the round's optimizer."""
        return {"controller_weights": self.variables, "controller_optimizer": optimizer}

    # -- data ------------------------------------------------------------------------
    def split(self, archs, targets, seed):
        """(train archs, train targets, held-out archs, held-out targets): the pool
        shuffled by `seed`, the last heldout_fraction held out."""
        archs = np.stack([nao_arch.validate(a) for a in archs])
        targets = np.asarray(targets, np.float32)
        if targets.shape != (len(archs),):
            raise ValueError(f"{len(archs)} architectures but targets of shape {targets.shape}")
        order = _rng(seed, _SPLIT).permutation(len(archs))
        heldout = int(len(archs) * self.hparams.heldout_fraction)
        train, rest = order[:len(archs) - heldout], order[len(archs) - heldout:]
        return archs[train], targets[train], archs[rest], targets[rest]

    def expand(self, archs, targets, seed):
        """"expand" augmentation: each arch, then expand - 1 branch-swapped copies
        of it (same target), drawn from (seed)."""
        copies = self.hparams.expand if self.hparams.augmentation == "expand" else 1
        rng = _rng(seed, _EXPAND)
        out = [[a] + [nao_arch.symmetric_copy(a, rng) for _ in range(copies - 1)]
               for a in archs]
        shape = (len(archs) * copies, nao_arch.ARCH_LENGTH)
        return np.asarray(out, np.int32).reshape(shape), np.repeat(targets, copies)

    def _epoch_archs(self, archs, seed, epoch):
        """"swap" augmentation: one fresh branch-swapped copy of each arch, from (seed, epoch)."""
        rng = _rng(seed, _SWAP, epoch)
        return np.stack([nao_arch.symmetric_copy(a, rng) for a in archs])

    # -- training --------------------------------------------------------------------
    def train(self, archs, targets, seed, epochs=None, start_epoch=0, optimizer=None,
              on_epoch_end=None):
        """One NAO round of controller training (docs/methods/nao_v2.md#training).

        archs [n, 40] ints, targets [n] in [0, 1] (see `normalize_targets`).
        Epochs start_epoch .. epochs - 1 run (default hparams.epochs); pass the
        optimizer and start_epoch of a checkpoint to resume (None: a fresh Adam).
        on_epoch_end(epochs_done, metrics) may checkpoint; returning True stops.
        metrics: loss / mse / nll (means over the epoch's examples), and every
        eval_every epochs and at the last one the held-out pairwise_accuracy and
        hamming (see `evaluate`).  Returns the last epoch's metrics.
        """
        hp = self.hparams
        epochs = hp.epochs if epochs is None else int(epochs)
        train_archs, train_targets, held_archs, held_targets = self.split(archs, targets, seed)
        train_archs, train_targets = self.expand(train_archs, train_targets, seed)
        optimizer = optimizer or self.make_optimizer()
        step = self._train_step(optimizer)
        metrics = {}
        tokens = _tokens(train_archs)
        for epoch in range(int(start_epoch), epochs):
            if hp.augmentation == "swap":
                tokens = _tokens(self._epoch_archs(train_archs, seed, epoch))
            order = _rng(seed, _SHUFFLE, epoch).permutation(len(tokens))
            sums = []
            for batch, first in enumerate(range(0, len(order), hp.batch_size)):
                rows = order[first:first + hp.batch_size]
                sums.append(step(tf.constant(tokens[rows]), tf.constant(train_targets[rows]),
                                 tf.constant(_seed_state(seed, _DROPOUT, epoch, batch))))
            totals = {k: float(sum(s[k] for s in sums).numpy()) / len(order) for k in sums[0]}
            metrics = {"epoch": epoch + 1, **totals}
            if len(held_archs) > 1 and ((epoch + 1) % hp.eval_every == 0 or epoch + 1 == epochs):
                metrics.update(self.evaluate(held_archs, held_targets))
            if on_epoch_end is not None and on_epoch_end(epoch + 1, metrics):
                break
        return metrics

    def evaluate(self, archs, targets):
        """{"pairwise_accuracy": predictor vs targets, "hamming": mean distance of the
        greedy reconstruction} on held-out architectures."""
        return {"pairwise_accuracy": pairwise_accuracy(targets, self.predict(archs)),
                "hamming": hamming_distance(self.reconstruct(archs), archs)}

    def _train_step(self, optimizer):
        """The traced step of `optimizer` (one trace per optimizer; any batch size)."""
        if self._step_fn[0] is not optimizer:
            def distributed_step(tokens, targets, dropout_seed):
                return replicas.sum_over_replicas(
                    self.strategy, lambda *a: self._replica_step(optimizer, *a),
                    tokens, targets, dropout_seed)
            self._step_fn = (optimizer, tf.function(distributed_step, autograph=False,
                                                    input_signature=[
                _TOKENS, tf.TensorSpec([None], tf.float32), tf.TensorSpec([2], tf.int32)]))
        return self._step_fn[1]

    def _replica_step(self, optimizer, tokens, targets, dropout_seed):
        """This replica's rows of the global batch: loss, all-reduced gradients
        clipped by their global norm, Adam.  Returns sums over its rows."""
        hp, net = self.hparams, self.network
        context = tf.distribute.get_replica_context()
        size = tf.shape(tokens)[0]
        first = size * context.replica_id_in_sync_group // context.num_replicas_in_sync
        end = size * (context.replica_id_in_sync_group + 1) // context.num_replicas_in_sync
        tokens, targets = tokens[first:end], targets[first:end]
        variables = [v.value for v in net.trainable_variables]
        with tf.GradientTape() as tape:
            outputs, embedding = net.encode(tokens)
            scores = net.score(embedding, dropout_seed, rows=(first, size))
            log_probs = net.decode_teacher(tokens, outputs, embedding)
            squared = tf.square(scores - targets)
            nll = -tf.reduce_mean(tf.gather(log_probs, tokens, axis=2, batch_dims=2), axis=1)
            per_example = hp.trade_off * squared + (1.0 - hp.trade_off) * nll
            loss = tf.reduce_sum(per_example) / tf.cast(size, tf.float32)
        # Embedding gradients come as IndexedSlices; dense ones all-reduce and clip alike.
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, variables)]
        grads, _ = clip_by_global_norm(replicas.all_reduce_sum(grads), hp.grad_clip)
        optimizer.apply(grads, variables)
        return {"loss": tf.reduce_sum(per_example), "mse": tf.reduce_sum(squared),
                "nll": tf.reduce_sum(nll)}

    # -- inference -----------------------------------------------------------------------
    def _chunked(self, fn, archs):
        tokens = _tokens(archs)
        return np.concatenate([fn(tf.constant(tokens[i:i + _CHUNK])).numpy()
                               for i in range(0, len(tokens), _CHUNK)])

    def _score_fn(self, tokens):
        return self.network.score(self.network.encode(tokens)[1])

    def predict(self, archs):
        """Predicted scores [n] (no dropout)."""
        return self._chunked(self._score, archs)

    def reconstruct(self, archs):
        """Greedy reconstruction [n, 40] of each architecture from its own encoding."""
        tokens = self._chunked(self._reconstruct, archs)
        return np.stack([nao_arch.from_tokens(t) for t in tokens])

    def _ascend_fn(self, tokens, eta):
        """Decoded tokens of the encoder outputs moved by eta x d f / d outputs
        (docs/methods/nao_v2.md#generation-by-gradient-ascent)."""
        outputs, _ = self.network.encode(tokens)
        with tf.GradientTape() as tape:
            tape.watch(outputs)
            scores = self.network.score(_arch_embedding(outputs))
        moved = tf.math.l2_normalize(outputs + eta * tape.gradient(scores, outputs), axis=-1)
        return self.network.decode_greedy(moved, _arch_embedding(moved))

    def generate(self, seeds, exclude=(), num_new=None, max_eta=None):
        """New architectures by gradient ascent from `seeds` (the caller passes the
        top of the sorted pool): eta = 1, 2, ... until num_new new unique
        architectures, none in `exclude` (archs or `nao_arch.key`s), or eta > max_eta.
        Returns (archs int32 [k, 40], eta int32 [k] of each, k <= num_new)."""
        num_new = self.hparams.num_new if num_new is None else int(num_new)
        max_eta = self.hparams.max_eta if max_eta is None else int(max_eta)
        seen = {e if isinstance(e, tuple) else nao_arch.key(e) for e in exclude}
        seen.update(nao_arch.key(a) for a in seeds)
        tokens = tf.constant(_tokens(seeds))
        found, etas = [], []
        for eta in range(1, max_eta + 1):
            for decoded in self._ascend(tokens, tf.constant(float(eta))).numpy():
                arch = nao_arch.from_tokens(decoded)
                if nao_arch.key(arch) not in seen and len(found) < num_new:
                    seen.add(nao_arch.key(arch))
                    found.append(arch)
                    etas.append(eta)
            if len(found) >= num_new:
                break
        archs = np.stack(found) if found else np.zeros((0, nao_arch.ARCH_LENGTH), np.int32)
        return archs.astype(np.int32), np.asarray(etas, np.int32)
