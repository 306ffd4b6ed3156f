"""NAO-V2 (docs/methods/nao_v2.md): one-shot neural architecture optimization
in rounds.

    pool_new = --nao_initial_pool random architectures
    for round r in 0 .. --nao_rounds - 1:
        train the weight-sharing supernet --epochs / --nao_rounds epochs on
            pool_new, one sampled architecture per step (size-balanced or
            uniform), with a fresh cosine schedule (and, per_iteration, fresh
            weights)
        pool += pool_new; score the whole pool on the supernet
        if r is the last round: stop
        train the controller on the pool, generate --nao_new_archs new
            architectures by gradient ascent -> pool_new
    re-rank the --nao_rerank_top best by short stand-alone training

The harness (keras_darts/runs/search_run.py) runs the supernet epochs; this
method drives them through `run_epochs` and keeps everything else, the pool,
the round, the phase and its progress, in its checkpoint state, so a run
killed at any point resumes where it was: inside an epoch, a scoring pass,
the controller's training or the re-rank.
"""

import dataclasses
import json
import os

import numpy as np
import tensorflow as tf
from absl import logging

from keras_darts import schedules
from keras_darts.errors import ConfigError
from keras_darts.evaluation import nao_network
from keras_darts.infra.fileio import atomic_write_text, write_json
from keras_darts.methods import register
from keras_darts.methods.base import SearchMethod
from keras_darts.methods.nao_v2 import controller as controller_lib
from keras_darts.methods.nao_v2.pool import ArchPool
from keras_darts.methods.nao_v2.single_path import SinglePathStep
from keras_darts.methods.nao_v2.supernet import NAOSupernet
from keras_darts.settings import setting
from keras_darts.space import nao_arch

SAMPLINGS = ("size_balanced", "uniform")
REINITS = ("warm", "per_iteration")
PHASES = ("train", "score", "controller", "generate", "rerank", "done")
POOL_FILE = "arch_pool.json"
# Checkpoints inside a long phase: every this many scored architectures /
# controller epochs (and at any stop signal).
SCORE_SAVE_EVERY = 200
CONTROLLER_SAVE_EVERY = 50


@dataclasses.dataclass(frozen=True)
class NaoV2Settings:
    """NAO-V2's settings (defaults: the reference's, docs/methods/nao_v2.md#settings)."""

    rounds: int = setting(4, "nao_rounds", "Rounds of supernet training + controller; "
                          "--epochs is split evenly among them.", lower=1)
    initial_pool: int = setting(1000, "nao_initial_pool", "Random architectures of round 0.",
                                lower=2)
    new_archs: int = setting(300, "nao_new_archs", "New architectures the controller "
                             "generates per round.", lower=1)
    seed_archs: int = setting(100, "nao_seed_archs", "Best architectures of the pool the "
                              "generation starts from.", lower=1)
    sampling: str = setting("size_balanced", "nao_sampling", "How a step samples its "
                            "architecture from the round's new ones: in proportion to the "
                            "stand-alone parameter count at the search size "
                            "('size_balanced', NAO-V2) or uniformly.", choices=SAMPLINGS)
    supernet_reinit: str = setting("warm", "nao_supernet_reinit", "'warm': the supernet and "
                                   "its momentum carry over between rounds (reference code); "
                                   "'per_iteration': every round starts from the initial "
                                   "weights with fresh momentum.", choices=REINITS)
    score_batch: int = setting(500, "nao_score_batch", "Held-out images an architecture is "
                               "scored on (a new random batch per architecture).", lower=1)
    drop_path_keep: float = setting(0.9, "nao_drop_path_keep", "Drop-path keep probability "
                                    "of the last cell at the end of a round (1 = none).",
                                    lower=0.05, upper=1.0)
    controller_epochs: int = setting(1000, "nao_controller_epochs", "Controller training "
                                     "epochs per round.", lower=1)
    embedding_size: int = setting(32, "nao_embedding_size", "Controller token embedding "
                                  "size E (LSTM width 2E).", lower=1)
    mlp_layers: int = setting(0, "nao_mlp_layers", "Hidden layers of the predictor MLP "
                              "(NAO-V2: 0).", lower=0)
    trade_off: float = setting(0.8, "nao_trade_off", "Controller loss = trade_off * MSE + "
                               "(1 - trade_off) * reconstruction NLL.", lower=0.0, upper=1.0)
    controller_batch: int = setting(100, "nao_controller_batch", "Controller batch size.",
                                    lower=1)
    expand: int = setting(10, "nao_expand", "Copies of each training architecture (the "
                          "original + branch-swapped ones).", lower=1)
    max_eta: int = setting(50, "nao_max_eta", "Largest gradient-ascent step size tried when "
                           "generating (eta = 1, 2, ... until enough new architectures).",
                           lower=1)
    rerank_top: int = setting(5, "nao_rerank_top", "Best architectures re-ranked by "
                              "stand-alone training at the end; 0 = answer with the best "
                              "supernet score.", lower=0)
    rerank_epochs: int = setting(10, "nao_rerank_epochs", "Stand-alone epochs of the "
                                 "re-rank.", lower=1)


@dataclasses.dataclass
class _State:
    """Where the search is between supernet epochs (checkpointed as JSON)."""

    round: int = 0
    phase: str = "train"
    round_started: bool = False
    progress: int = 0              # Scored archs / controller epochs / re-ranked archs.
    pool: str = ""                 # ArchPool JSON.

    def to_json(self):
        return json.dumps(dataclasses.asdict(self))


@register
class NaoV2(SearchMethod):
    name = "nao_v2"
    description = ("NAO-V2: a weight-sharing supernet trained on sampled architectures in "
                   "rounds, an encoder-predictor-decoder controller generating new ones")
    Settings = NaoV2Settings
    strategies = ("default", "mirrored")
    strategy_note = "(built and tested on one machine)"
    trains_alphas = False
    # Grappler's fast_compile mode leaves the supernet's branch functions un-inlined,
    # and runs of one seed then differ (BUILD_NOTES.md 15.5); full Grappler costs
    # ~1 s of tracing here.
    implied = {"selection": "pool", "graph_optimizer": "full"}
    cell_supernet = False
    fixed_on_resume = ("epochs",)  # The rounds' epochs are a split of --epochs.

    def __init__(self, config):
        super().__init__(config)
        self.pool = ArchPool()
        self.state = _State()
        self._state_var = None
        self.controller = None
        self._held_out_arrays = None  # The search-val split in memory (`_held_out`).

    # -- checks and building -----------------------------------------------------
    @property
    def cells_per_stage(self):
        return (self.config.layers - 2) // 3

    def round_epochs(self, round_number):
        """(first, end) search epochs of a round: --epochs split as evenly as
        possible, earlier rounds taking the remainder (50 / 4: 13, 13, 12, 12)."""
        base, extra = divmod(self.config.epochs, self.settings.rounds)
        first = round_number * base + min(round_number, extra)
        return first, first + base + (round_number < extra)

    def round_of_epoch(self, epoch):
        return next(r for r in range(self.settings.rounds) if epoch < self.round_epochs(r)[1])

    def check(self, strategy):
        super().check(strategy)
        cfg, s = self.config, self.settings
        if cfg.layers < 5 or (cfg.layers - 2) % 3:
            raise ConfigError(f"--method=nao_v2 needs --layers = 3N + 2 cells (N cells per "
                              f"stage, N >= 1: 5, 8, 11, ...), got {cfg.layers}")
        if cfg.epochs < s.rounds:
            raise ConfigError(f"--epochs={cfg.epochs} is fewer than --nao_rounds={s.rounds}: "
                              "every round trains the supernet at least one epoch")
        if s.seed_archs > s.initial_pool:
            raise ConfigError(f"--nao_seed_archs={s.seed_archs} exceeds the pool "
                              f"(--nao_initial_pool={s.initial_pool})")

    def build_supernet(self, num_classes, image_shape):
        cfg = self.config
        self.num_classes = num_classes
        self.model = NAOSupernet(num_classes, channels=cfg.channels,
                                 cells_per_stage=self.cells_per_stage, input_shape=image_shape,
                                 stem_multiplier=cfg.stem_multiplier,
                                 drop_path_keep_prob=self.settings.drop_path_keep)
        self.model.scored_pool = self.pool  # What --selection=pool reads.
        # The seeded initial weights: what --nao_supernet_reinit=per_iteration restores.
        self._initial_weights = [v.numpy() for v in self.model.trainable_variables]
        return self.model

    def build_step(self, model, strategy):
        cfg, s = self.config, self.settings
        capacity = max(s.initial_pool, s.new_archs)
        self.step = SinglePathStep(model, strategy, cfg.batch_size, cfg.hparams(),
                                   pool_capacity=capacity, seed=cfg.seed)
        self.controller = controller_lib.Controller(self._controller_hparams(), strategy,
                                                    init_seed=cfg.seed)
        self.controller_optimizer = self.controller.make_optimizer()
        # Round 0's random pool (a restored run replaces it): the step can run at once
        # (tools/benchmark.py), and the first round trains on exactly this pool.
        rng = np.random.default_rng([cfg.seed, 0])
        archs = nao_arch.random_pool(rng, s.initial_pool)
        self.pool.add(archs, 0, self._param_counts(archs))
        self.step.set_pool(archs, self._sampling_probs(range(len(archs))))
        return self.step

    def _controller_hparams(self):
        s = self.settings
        return controller_lib.ControllerHParams(
            embedding_size=s.embedding_size, hidden_size=2 * s.embedding_size,
            mlp_layers=s.mlp_layers, epochs=s.controller_epochs, trade_off=s.trade_off,
            batch_size=s.controller_batch, expand=s.expand, num_new=s.new_archs,
            max_eta=s.max_eta)

    def checkpoint_state(self):
        self._state_var = tf.Variable(self.state.to_json(), trainable=False, name="nao_state")
        return {"nao_step": tf.train.Checkpoint(**self.step.checkpoint_state()),
                "nao_controller": tf.train.Checkpoint(
                    **self.controller.checkpoint_state(self.controller_optimizer)),
                "nao_state": self._state_var}

    def describe(self):
        s = self.settings
        return (f"one sampled path per step; {s.rounds} rounds in {self.config.epochs} epochs, "
                f"pool {s.initial_pool} + {s.new_archs}/round, sampling {s.sampling}")

    # -- state ---------------------------------------------------------------------
    def _load_state(self):
        """The search state of the restored checkpoint; a fresh run's is the
        initial one, with build_step's pool."""
        state = _State(**json.loads(self._state_var.numpy().decode("utf-8")))
        if state.pool:
            self.state = state
            self.pool.replace(ArchPool.from_json(state.pool).entries)
        self._sync_state()

    def _sync_state(self):
        """Puts the state (and the pool) into the checkpointed variable."""
        self.state.pool = self.pool.to_json()
        self._state_var.assign(self.state.to_json())

    def _commit(self, run, phase, **changes):
        """Ends a phase: the next one, the pool file, a checkpoint."""
        self.state.phase = phase
        self.state.progress = 0
        for k, v in changes.items():
            setattr(self.state, k, v)
        self._write_pool(run)
        self._save(run)

    def _save(self, run):
        self._sync_state()
        run.save()
        run.stop_if_requested()

    def _write_pool(self, run):
        atomic_write_text(os.path.join(run.paths.root, POOL_FILE), self.pool.to_json() + "\n")

    # -- the loop ------------------------------------------------------------------
    def run_epochs(self, run):
        self._load_state()
        phases = {"train": self._train_round, "score": self._score_pool,
                  "controller": self._train_controller, "generate": self._generate,
                  "rerank": self._rerank}
        while self.state.phase != "done":
            phases[self.state.phase](run)

    def _param_counts(self, archs):
        cfg = self.config
        return [nao_network.standalone_param_count(
            a, channels=cfg.channels, cells_per_stage=self.cells_per_stage,
            num_classes=self.num_classes, stem_multiplier=cfg.stem_multiplier) for a in archs]

    def _sampling_probs(self, indices):
        if self.settings.sampling == "uniform":
            return np.full(len(indices), 1.0 / len(indices))
        params = np.asarray([self.pool.entries[i].params for i in indices], np.float64)
        return params / params.sum()

    def _train_round(self, run):
        r = self.state.round
        first, end = self.round_epochs(r)
        indices = self.pool.of_round(r)
        self.step.set_pool(self.pool.archs(indices), self._sampling_probs(indices))
        # What the per-epoch evaluation runs: the best scored one (before any
        # scoring, the pool's first).
        self.step.set_eval_arch((self.pool.best() or self.pool.entries[0]).arch)
        if not self.state.round_started:
            if r > 0 and self.settings.supernet_reinit == "per_iteration":
                for v, value in zip(self.model.trainable_variables, self._initial_weights):
                    v.assign(value)
                self.step.weight_optimizer.reset()
            self.step.start_round((end - first) * run.steps_per_epoch)
            self.state.round_started = True
            self._sync_state()
        logging.info("round %d/%d: supernet epochs %d-%d on %d architectures (%s)", r + 1,
                     self.settings.rounds, first + 1, end, len(indices), self.settings.sampling)
        for epoch in range(int(run.epoch.numpy()), end):
            run.run_epoch(epoch)
        self._commit(run, "score")

    def start_epoch(self, epoch, epochs, fresh):
        """Nothing per epoch: the drop-path schedule counts the round's steps."""

    def weight_lr(self, epoch, epochs):
        """The cosine schedule restarts every round (docs/methods/nao_v2.md#rounds)."""
        cfg = self.config
        first, end = self.round_epochs(self.round_of_epoch(epoch))
        options = schedules.config_options(cfg, "w_lr")
        return schedules.lr(cfg.w_lr_schedule, epoch - first, end - first, cfg.w_lr,
                            cfg.w_lr_min, **options)

    def _held_out(self, run):
        """The search-val images and labels in memory (scoring draws from them)."""
        if self._held_out_arrays is None:
            images, labels = [], []
            for x, y in run.data.search_val_eval:
                images.append(x.numpy())
                labels.append(y.numpy())
            self._held_out_arrays = np.concatenate(images), np.concatenate(labels)
            if len(labels[0]) and len(self._held_out_arrays[1]) < self.settings.score_batch:
                raise ConfigError(f"--nao_score_batch={self.settings.score_batch} exceeds the "
                                  f"held-out images ({len(self._held_out_arrays[1])}); lower "
                                  "it or --train_portion")
        return self._held_out_arrays

    def score_batch_indices(self, round_number, index, num_held_out):
        """The held-out images architecture `index` is scored on in `round_number`
        (a fixed function of the seed: resumes score the same)."""
        rng = np.random.default_rng([self.config.seed, 1, round_number, index])
        return np.sort(rng.choice(num_held_out, self.settings.score_batch, replace=False))

    def _score_arch(self, run, arch, round_number, index):
        """Supernet accuracy of `arch` on its held-out batch (`score_batch_indices`)."""
        images, labels = self._held_out(run)
        idx = self.score_batch_indices(round_number, index, len(labels))
        _, correct, count = self.step.score((images[idx], labels[idx]), arch)
        return float(correct) / float(count)

    def _score_pool(self, run):
        r, n = self.state.round, len(self.pool)
        for i in range(self.state.progress, n):
            self.pool.entries[i].score = self._score_arch(run, self.pool.entries[i].arch, r, i)
            self.state.progress = i + 1
            if (i + 1) % SCORE_SAVE_EVERY == 0 or run.stop_signal():
                logging.info("round %d: scored %d/%d architectures", r + 1, i + 1, n)
                self._save(run)
        best = self.pool.best()
        self.step.set_eval_arch(best.arch)
        self._write_round_summaries(run)
        last = r + 1 == self.settings.rounds
        self._commit(run, "rerank" if last else "controller")

    def _write_round_summaries(self, run):
        scores = np.asarray([e.score for e in self.pool.entries], np.float32)
        step = int(run.epoch.numpy())
        run.writer.histogram(step, "nao/pool_scores", scores)
        run.writer.scalars(step, {"nao/best_score": float(scores.max()),
                                  "nao/mean_score": float(scores.mean()),
                                  "nao/pool_size": float(len(scores))})
        best = self.pool.best()
        logging.info("round %d: pool of %d scored, best %.4f (%s), mean %.4f",
                     self.state.round + 1, len(scores), best.score,
                     nao_arch.to_text(best.arch), scores.mean())

    def _train_controller(self, run):
        r = self.state.round
        archs = self.pool.archs()
        targets = controller_lib.normalize_targets([e.score for e in self.pool.entries])
        if self.state.progress == 0:
            self.controller_optimizer.reset()  # A fresh Adam every round (reference).

        def on_epoch_end(epochs_done, metrics):
            self.state.progress = epochs_done
            values = {k: v for k, v in metrics.items() if k != "epoch"}
            # TensorBoard step: controller epochs over all rounds.
            run.writer.scalars(r * self.settings.controller_epochs + epochs_done,
                               {f"controller/{k}": v for k, v in values.items()})
            if "pairwise_accuracy" in values:
                logging.info("round %d controller epoch %d: %s", r + 1, epochs_done,
                             ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
            if epochs_done % CONTROLLER_SAVE_EVERY == 0 or run.stop_signal():
                self._save(run)

        self.controller.train(archs, targets, seed=self._round_seed(r),
                              start_epoch=self.state.progress,
                              optimizer=self.controller_optimizer,
                              on_epoch_end=on_epoch_end)
        self.pool.set_predictions(self.controller.predict(archs))
        self._commit(run, "generate")

    def _round_seed(self, round_number):
        """The controller's seed of a round (an int from the run's seed)."""
        state = np.random.SeedSequence([self.config.seed, 3, round_number]).generate_state(1)
        return int(state[0] >> 1)

    def _generate(self, run):
        s, r = self.settings, self.state.round
        seeds = self.pool.archs(self.pool.ranked()[:s.seed_archs])
        new, etas = self.controller.generate(seeds, exclude=self.pool.keys(),
                                             num_new=s.new_archs)
        if len(new) < s.new_archs:
            logging.warning("round %d: the controller found %d new architectures of %d "
                            "(eta up to %g)", r + 1, len(new), s.new_archs, s.max_eta)
        if not len(new):  # Nothing new to train on: random ones stand in.
            rng = np.random.default_rng([self.config.seed, 2, r])
            new = nao_arch.random_pool(rng, s.new_archs, exclude=self.pool.keys())
            etas = [None] * len(new)  # Not generated (as round 0's).
        first = len(self.pool)
        self.pool.add(new, r + 1, self._param_counts(new), etas)
        self.pool.set_predictions(self.controller.predict(new), range(first, len(self.pool)))
        max_eta = max([e for e in etas if e is not None], default=0.0)
        run.writer.scalars(int(run.epoch.numpy()), {"nao/new_archs": float(len(new)),
                                                    "nao/max_eta": float(max_eta)})
        self._commit(run, "train", round=r + 1, round_started=False)

    def _rerank(self, run):
        # Imported here: the runs import the config, which imports every method.
        from keras_darts.runs import standalone

        s = self.settings
        top = self.pool.ranked()[:s.rerank_top]
        for rank, i in enumerate(top):
            entry = self.pool.entries[i]
            if entry.standalone_accuracy is not None:
                continue
            out = os.path.join(run.paths.root, "rerank", f"rank_{rank + 1}")
            logging.info("re-rank %d/%d: %s (supernet score %.4f), %d stand-alone epochs",
                         rank + 1, len(top), nao_arch.to_text(entry.arch), entry.score,
                         s.rerank_epochs)
            config = standalone.standalone_config(self.config, out, s.rerank_epochs,
                                                  min(run.data.info.image_shape[:2]))
            results = standalone.train_standalone(entry.genotype, config, run.strategy)
            entry.standalone_accuracy = float(results["validation_accuracy"])
            self._write_pool(run)
            self._save(run)
        self.step.set_eval_arch(self.pool.best().arch)  # The answer, for the final test.
        self._commit(run, "done")

    # -- studying the trained supernet -------------------------------------------------
    def random_genotypes(self, rng, count):
        """`count` distinct random architectures of NAO's space (as the seed pool
        draws them, docs/spaces/nao.md#encoding), as genotypes."""
        return [nao_arch.to_genotype(a) for a in nao_arch.random_pool(rng, count)]

    def score_genotype(self, run, genotype, index):
        """What the last round's scoring gives architecture number `index`: one
        held-out batch of --nao_score_batch images drawn by (seed, last round,
        index), BatchNorm batch statistics, no drop path
        (docs/methods/nao_v2.md#scoring)."""
        arch = nao_arch.from_genotype(genotype)
        return self._score_arch(run, arch, self.settings.rounds - 1, index)

    # -- outputs ---------------------------------------------------------------------
    def write_epoch(self, number, result, alphas_dir, writer):
        """No alphas: alphas_dir/epoch_NNN.json records the round and the
        architecture the epoch was evaluated with (the pool: arch_pool.json)."""
        write_json(os.path.join(alphas_dir, f"epoch_{number:03d}.json"), {
            "method": self.name, "round": self.state.round + 1, "pool_size": len(self.pool),
            "selection": self.config.selection, "scores": result.scores})
        return {"nao/round": float(self.state.round + 1)}

    def end_of_run(self, summary):
        best = self.pool.best()
        summary["nao_arch"] = nao_arch.to_text(best.arch)
        summary["best_supernet_score"] = best.score
        summary["best_standalone_accuracy"] = best.standalone_accuracy
        summary["pool_size"] = len(self.pool)
        atomic_write_text(os.path.join(self.config.output_dir, "arch.txt"),
                          nao_arch.to_text(best.arch) + "\n")
        return summary
