"""The search loop: data -> supernet -> bilevel steps -> genotype, with checkpoints.

`run_search(config)` is what `python -m keras_darts.search` runs.  Every epoch
it evaluates the supernet on search-val, derives a genotype, writes it with the
alphas and TensorBoard summaries, and saves a checkpoint (weights, alphas,
both optimizers, epoch) so `--resume` loses at most the running epoch.
"""

import dataclasses
import os
import time

import keras
import tensorflow as tf
from absl import logging

from keras_darts import data as data_lib
from keras_darts import genotype as genotype_lib
from keras_darts import cluster as cluster_lib
from keras_darts import edas, msr, replicas, runtime, selection
from keras_darts.config import SearchConfig
from keras_darts.errors import ConfigError, Interrupted
from keras_darts.fileio import atomic_write_text, write_json
from keras_darts.run_utils import (StopOnSignal, check_finite, check_output_dir,
                                   checkpointable_weights, restore_newest_readable)
from keras_darts.run_utils import eta as _eta, format_duration as _format_duration
from keras_darts.search_step import BilevelSearch, cosine_lr
from keras_darts.selection import perturbation
from keras_darts.summaries import EpochWriter
from keras_darts.supernet import SearchNetwork, reduction_layers


class _Paths:
    """Where a search run writes (all under config.output_dir)."""

    def __init__(self, root):
        self.root = root
        self.config = os.path.join(root, "config.json")
        self.genotype = os.path.join(root, "genotype.json")
        self.results = os.path.join(root, "results.json")
        self.genotypes = os.path.join(root, "genotypes")
        self.perturbation = os.path.join(root, "perturbation")
        self.alphas = os.path.join(root, "alphas")
        self.checkpoints = os.path.join(root, "checkpoints")
        self.tensorboard = os.path.join(root, "tensorboard")

    def make(self):
        for d in (self.genotypes, self.alphas, self.checkpoints, self.tensorboard):
            os.makedirs(d, exist_ok=True)


def _check_relaxation(cfg, strategy):
    """EDAS settings only with --relaxation=single_edge, and what it cannot do
    (`strategy`: the resolved --strategy)."""
    if cfg.relaxation == "full":
        changed = [k for k in SearchConfig.EDAS_KEYS
                   if getattr(cfg, k) != SearchConfig.__dataclass_fields__[k].default]
        if changed:
            raise ConfigError(f"--{changed[0]} only applies to --relaxation=single_edge")
        return
    if cfg.selection == "perturbation":
        raise ConfigError("--selection=perturbation fine-tunes the fully mixed supernet; "
                          "use it with --relaxation=full")
    if cfg.order != "first":
        raise ConfigError("--relaxation=single_edge takes first-order alpha steps (the "
                          "EDAS proposal); use --order=first")
    if strategy != "default":
        raise ConfigError("--relaxation=single_edge derives each step's clamping on the "
                          "host between its two phases and is built and tested for one "
                          f"device: it supports only --strategy=default (--strategy="
                          f"{cfg.strategy} means {strategy} here)")


def _edas_settings(cfg):
    return edas.EdasSettings(clamp=cfg.edas_clamp, edges_per_step=cfg.edas_edges_per_step,
                             sampling=cfg.edas_edge_sampling, tau0=cfg.edas_tau0,
                             eps=cfg.edas_eps, seed=cfg.seed)


def _check_output_dir(config, paths, resume):
    """Refuses to overwrite an earlier search unless resuming it."""
    check_output_dir(paths.root, paths.checkpoints, paths.genotype, resume, "a search")
    if resume and os.path.exists(paths.config):
        config.check_resumable_from(SearchConfig.load(paths.config))


class SearchRun:
    """One search: owns the strategy, model, step function, data and outputs.

    Under --strategy=multi_worker every worker runs this same loop; only the
    chief writes to --output_dir, the others into a temporary directory
    (`cluster.WorkerOutput`) deleted when the run ends.  All read the chief's
    checkpoints (--output_dir must be on a filesystem every worker sees), and a
    restarted cluster resumes from them without --resume (BackupAndRestore
    semantics).
    """

    def __init__(self, config, resume=False):
        self.config = config
        self.paths = _Paths(config.output_dir)
        self.resume = resume
        self.cluster = cluster_lib.SINGLE
        self._output = None  # This worker's cluster_lib.WorkerOutput, made by prepare().
        self._checkpoints_to_read = self.paths.checkpoints  # The chief's, on every worker.
        self._stop = StopOnSignal()  # Inactive until entered by run / select_from.

    # -- setup ---------------------------------------------------------------
    def prepare(self):
        """Validates everything that can be wrong BEFORE writing any output."""
        cfg = self.config
        if cfg.w_lr_min > cfg.w_lr:
            raise ConfigError(f"--w_lr_min ({cfg.w_lr_min}) must not exceed --w_lr ({cfg.w_lr})")
        if cfg.channels % 2:
            raise ConfigError(f"--channels must be even (FactorizedReduce halves it), "
                              f"got {cfg.channels}")
        strategy = runtime.resolve_strategy(cfg.strategy)
        _check_relaxation(cfg, strategy)
        msr.check_config(cfg)
        if strategy == "multi_worker":
            self.cluster = cluster_lib.current()
            # A restarted cluster continues from the chief's checkpoints.
            self.resume = self.resume or tf.train.latest_checkpoint(
                self.paths.checkpoints) is not None
        _check_output_dir(cfg, self.paths, self.resume)
        self.strategy = runtime.start(strategy, cfg.graph_optimizer)
        self.data = data_lib.load_search_data(
            cfg.dataset, cfg.batch_size, data_dir=cfg.data_dir or None,
            image_size=cfg.image_size or None, seed=cfg.seed,
            crop_padding=None if cfg.crop_padding < 0 else cfg.crop_padding,
            eval_batch_size=cfg.eval_batch_size or None, train_portion=cfg.train_portion)
        info = self.data.info
        data_lib.check_image_size(min(info.image_shape[:2]), len(reduction_layers(cfg.layers)))
        self.steps_per_epoch = cfg.steps_per_epoch or self.data.steps_per_epoch(cfg.batch_size)
        if cfg.batch_size < self.strategy.num_replicas_in_sync:
            raise ConfigError(f"--batch_size ({cfg.batch_size}) is the global batch: it must "
                              f"be at least the number of replicas "
                              f"({self.strategy.num_replicas_in_sync})")
        self._output = cluster_lib.WorkerOutput(cfg.output_dir, self.cluster)
        self.paths = _Paths(self._output.root)  # Where this worker writes.

    def build(self):
        cfg, info = self.config, self.data.info
        keras.utils.set_random_seed(cfg.seed)
        with self.strategy.scope():
            self.model = SearchNetwork(
                info.num_classes, channels=cfg.channels, num_layers=cfg.layers,
                num_nodes=cfg.nodes, primitives=cfg.primitives,
                input_shape=info.image_shape, stem_multiplier=cfg.stem_multiplier,
                recompute=cfg.recompute)
            if self.is_msr:
                msr.normalise_candidate_convs(self.model, cfg.msr_shapes)
            if cfg.relaxation == "single_edge":
                self.search = edas.SingleEdgeSearch(self.model, self.strategy, cfg.batch_size,
                                                    cfg.hparams(), _edas_settings(cfg))
            else:
                self.search = BilevelSearch(self.model, self.strategy, cfg.batch_size,
                                            cfg.hparams(), order=cfg.order,
                                            per_cell_weights=self.is_msr)
            # Epochs finished (search, then selection tuning) and search steps
            # taken: the step count is also the position in both data streams.
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        extra = {}
        if self.is_msr:  # The epoch's mixing, for a resume in the middle of an epoch.
            self._mixing_sranks = tf.Variable(tf.zeros_like(self.search.cell_weights),
                                              trainable=False, name="mixing_sranks")
            extra = {"msr_mixing": self.search.cell_weights,
                     "msr_mixing_sranks": self._mixing_sranks}
        self.checkpoint = tf.train.Checkpoint(
            network_weights=checkpointable_weights(self.model),  # Not model=: see there.
            weight_optimizer=self.search.weight_optimizer,
            arch_optimizer=self.search.arch_optimizer, epoch=self.epoch,
            step=self.global_step, **extra)
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.paths.checkpoints,
                                                  max_to_keep=cfg.keep_checkpoints)
        self._gather = replicas.make_gather(self.strategy)

    def restore(self, directory=None):
        """Restores the newest readable checkpoint of `directory` (default: ours);
        a corrupt one (e.g. a crash while the disk filled) falls back to the one
        before it, with a warning."""
        directory = directory or self._checkpoints_to_read
        path = restore_newest_readable(self.checkpoint, directory)
        if path is not None:
            logging.info("resumed from %s (epoch %d done, step %d)", path,
                         int(self.epoch.numpy()), int(self.global_step.numpy()))
            return path
        raise ConfigError(f"cannot restore the supernet from {directory}: no checkpoint there "
                          "is readable and matches this configuration (see the warnings)")

    def _check_workers_agree(self):
        """Under multi_worker: every worker starts at the same step (else they read
        different checkpoints, or some none: --output_dir is not shared)."""
        if self.cluster.num_workers == 1:
            return
        steps = self._gather([float(self.global_step.numpy())])
        if steps.min() != steps.max():
            raise ConfigError(f"the workers start at different steps ({steps.min():.0f} to "
                              f"{steps.max():.0f}; this one at {int(self.global_step.numpy())})"
                              ": --output_dir must be the same directory, on a filesystem "
                              "every worker sees")

    def save(self):
        """Checkpoint numbered by the step count (TF's own write is atomic: a crash
        while saving leaves the previous checkpoint as the latest).  Every worker
        saves (the save may run collectives); a non-chief's copy is deleted."""
        path = self.manager.save(checkpoint_number=int(self.global_step.numpy()))
        if not self.cluster.is_chief:
            tf.io.gfile.rmtree(self.paths.checkpoints)
        return path

    def _streams(self):
        """Iterators over search-train and search-val from the checkpointed step on."""
        start = int(self.global_step.numpy())
        return (iter(self.search.distribute(self.data.search_train_from(start))),
                iter(self.search.distribute(self.data.search_val_from(start))))

    def restore_searched(self, source_dir):
        """Prepares this run and loads the supernet checkpointed in `source_dir` (a
        search's output directory, only read); writes nothing.  Returns the path of
        the checkpoint loaded."""
        self.prepare()
        self.build()
        path = self.restore(os.path.join(source_dir, "checkpoints"))
        self._check_workers_agree()
        return path

    # -- loop ----------------------------------------------------------------
    def run(self):
        try:
            return self._run()
        finally:
            if self._output is not None:
                self._output.cleanup()

    def _run(self):
        self.prepare()
        self.paths.make()
        if not self.resume:
            self.config.save(self.paths.config)
        self.build()
        if self.resume:
            self.restore()
        self._check_workers_agree()
        cfg = self.config
        mixing = ("MSR-DARTS: alphas unused, per-cell softmax(-srank) mixing" if self.is_msr
                  else f"alphas 2 x {tuple(self.model.alpha_normal.shape)}")
        logging.info("supernet: %d weights, %s; %d steps/epoch, %d epochs; "
                     "dataset %s %s, %d classes", self.model.count_weight_params(),
                     mixing, self.steps_per_epoch, cfg.epochs,
                     self.data.info.name, self.data.info.image_shape,
                     self.data.info.num_classes)
        train_iter, val_iter = self._streams()
        self._epoch_times = []
        with EpochWriter(self.paths.tensorboard) as writer, StopOnSignal() as self._stop:
            for epoch in range(int(self.epoch.numpy()), cfg.epochs):
                self._run_epoch(epoch, train_iter, val_iter, writer)
            return self._select_and_finish(train_iter, val_iter, writer)

    def select_from(self, source_dir):
        """Runs --selection on the supernet checkpointed in `source_dir` (a search's
        output directory) and writes the outputs to this run's --output_dir; the
        source is only read."""
        try:
            return self._select_from(source_dir)
        finally:
            if self._output is not None:
                self._output.cleanup()

    def _select_from(self, source_dir):
        latest = self.restore_searched(source_dir)
        self.paths.make()
        self.config.save(self.paths.config)
        searched = int(self.epoch.numpy())
        if self.is_msr:
            self._refresh_mixing()
        if searched < self.config.epochs:
            logging.warning("%s holds a search stopped after %d of %d epochs", source_dir,
                            searched, self.config.epochs)
        # Selection-only runs count tuning epochs from the checkpoint's epoch.
        self.config = dataclasses.replace(self.config, epochs=searched)
        logging.info("selecting with '%s' on %s (epoch %d)", self.config.selection, latest,
                     searched)
        train_iter, val_iter = self._streams()
        self._epoch_times = []
        with EpochWriter(self.paths.tensorboard) as writer, StopOnSignal() as self._stop:
            return self._select_and_finish(train_iter, val_iter, writer)

    def _select_and_finish(self, train_iter, val_iter, writer):
        start = time.time()
        if self.config.selection == "perturbation":
            result = self._perturbation(train_iter, val_iter, writer)
        else:
            result = self._select()
        seconds = time.time() - start
        write_json(os.path.join(self.paths.root, "selection_scores.json"),
                   {"selection": self.config.selection, "scores": result.scores})
        return self._finish(writer, result, seconds)

    def _run_epoch(self, epoch, train_iter, val_iter, writer):
        cfg = self.config
        lr = cosine_lr(epoch, cfg.epochs, cfg.w_lr, cfg.w_lr_min,
                       stepped_before_epoch=not self.is_msr)
        self.search.set_weight_lr(lr)
        self.search.set_progress(epoch, cfg.epochs)
        starts_fresh = int(self.global_step.numpy()) == epoch * self.steps_per_epoch
        if self.is_msr and starts_fresh:  # Else the checkpoint restored the epoch's mixing.
            self._refresh_mixing()
        epoch_start = time.time()
        means = self._train_epoch(epoch, cfg.epochs, train_iter, val_iter)
        val_loss, val_acc = self.evaluate(self.data.search_val_eval)
        result = self._select()
        self._write_epoch(epoch, result, means, val_loss, val_acc, lr, writer)
        self.epoch.assign(epoch + 1)
        self.save()
        self._stop_if_requested()
        self._log_epoch(epoch, epoch_start, means, val_loss, val_acc, lr)

    def _train_epoch(self, epoch, epochs, train_iter, val_iter):
        """The search steps of one epoch (the rest of it, when resumed from a
        checkpoint saved mid-epoch); returns the mean metrics of those steps."""
        cfg = self.config
        epoch_start = time.time()
        totals = {}
        first = int(self.global_step.numpy()) - int(self.epoch.numpy()) * self.steps_per_epoch
        if not 0 <= first < self.steps_per_epoch:
            raise ConfigError(f"the checkpoint is at step {int(self.global_step.numpy())}, "
                              f"which is not in epoch {int(self.epoch.numpy()) + 1} with "
                              f"{self.steps_per_epoch} steps per epoch")
        for step in range(first, self.steps_per_epoch):
            # MSR-DARTS and the fix-alpha baseline train no alphas: weight-only steps.
            val_batch = next(val_iter) if self.config.method == "darts" else None
            metrics = {k: float(v) for k, v in
                       self.search.step(next(train_iter), val_batch).items()}
            self._check_finite(metrics, epoch, step)
            self.global_step.assign_add(1)
            for k, v in metrics.items():
                totals[k] = totals.get(k, 0.0) + v
            if step + 1 < self.steps_per_epoch and self._stop_signal():
                self.save()
                self._stop_if_requested()
            if cfg.log_every and (step + 1) % cfg.log_every == 0:
                val = ("" if val_batch is None else " | val loss %.4f acc %.3f" % (
                    metrics["loss/val"], metrics["accuracy/val"]))
                logging.info("epoch %d/%d step %d/%d: train loss %.4f acc %.3f%s | "
                             "%.2f s/step", epoch + 1, epochs, step + 1, self.steps_per_epoch,
                             metrics["loss/train"], metrics["accuracy/train"], val,
                             (time.time() - epoch_start) / (step + 1 - first))
        return {f"search/{k}": v / (self.steps_per_epoch - first) for k, v in totals.items()}

    def _stop_signal(self):
        """The SIGINT/SIGTERM that stops the run at this step boundary (0: none).
        Under multi_worker, any worker's: an all-gather, called at the same points
        on every worker, so all save at the same step and stop together (a worker
        that went on alone would wait forever in the next step's collectives)."""
        if self.cluster.num_workers == 1:
            return self._stop.requested
        signals = StopOnSignal.SIGNALS
        received = self._gather([float(self._stop.requested == s) for s in signals])
        stopping = [s for s, count in zip(signals, received.sum(axis=0)) if count]
        return self._stop.requested or (stopping[-1] if stopping else 0)

    def _stop_if_requested(self):
        """After a save: stop if SIGINT/SIGTERM arrived (errors.Interrupted)."""
        signum = self._stop_signal()
        if signum:
            where = "" if self._stop.requested else " (received by another worker)"
            raise Interrupted(signum, f"stopped by signal {signum}{where} at step "
                              f"{int(self.global_step.numpy())}, checkpoint saved")

    def _log_epoch(self, epoch, epoch_start, means, val_loss, val_acc, lr):
        cfg = self.config
        epoch_time = time.time() - epoch_start  # Includes evaluation, outputs, checkpoint.
        self._epoch_times.append(epoch_time)
        eta = _eta(self._epoch_times, cfg.epochs - epoch - 1)
        logging.info("epoch %d/%d: train loss %.4f acc %.3f | search-val (eval mode) loss "
                     "%.4f acc %.3f | lr %.5f | %s, ETA %s", epoch + 1, cfg.epochs,
                     means["search/loss/train"], means["search/accuracy/train"], val_loss,
                     val_acc, lr, _format_duration(epoch_time), _format_duration(eta))

    @staticmethod
    def _check_finite(metrics, epoch, step):
        check_finite(metrics, ("loss/train", "loss/val"), epoch, step,
                     "Try a lower --w_lr or --a_lr, or check the input data.")

    def evaluate(self, dataset, edge_weights=None, arch=None):
        """Mean loss and accuracy over `dataset`: eval mode (running BN statistics),
        or, given `edge_weights`, train mode with those mixing weights (DARTS-PT),
        or, given `arch` (a Genotype), train mode running only that discrete
        architecture inside the supernet (`BilevelSearch.evaluate_arch`)."""
        if edge_weights is not None and arch is not None:
            raise ValueError("evaluate takes edge_weights or arch, not both")
        loss_sum = correct = count = 0.0
        for batch in self.search.distribute(dataset):
            if arch is not None:
                batch_loss, batch_correct, batch_count = self.search.evaluate_arch(batch, arch)
            elif edge_weights is None:
                batch_loss, batch_correct, batch_count = self.search.evaluate(batch)
            else:
                batch_loss, batch_correct, batch_count = self.search.evaluate_mixed(
                    batch, edge_weights)
            loss_sum += float(batch_loss)
            correct += float(batch_correct)
            count += float(batch_count)
        return loss_sum / max(count, 1.0), correct / max(count, 1.0)

    def _write_epoch(self, epoch, result, means, val_loss, val_acc, lr, writer):
        number = epoch + 1
        genotype_lib.save(result.genotype,
                          os.path.join(self.paths.genotypes, f"epoch_{number:03d}.json"))
        if self.is_msr:
            arch_scalars = self._write_mixing(number, result, writer)
        else:
            arch_scalars = self._write_alphas(number, result, writer)
        writer.scalars(number, {**means, "eval/search_val_loss": val_loss,
                                "eval/search_val_accuracy": val_acc, "lr/weights": lr,
                                **arch_scalars})
        writer.genotype(number, result.genotype)
        writer.flush()

    def _write_alphas(self, number, result, writer):
        """alphas/epoch_NNN.json and the softmax(alpha) heatmaps; returns scalars."""
        probs = self.model.arch_probabilities()
        write_json(os.path.join(self.paths.alphas, f"epoch_{number:03d}.json"), {
            "primitives": list(self.model.primitives),
            "alpha": {"normal": self.model.alpha_normal.numpy().tolist(),
                      "reduce": self.model.alpha_reduce.numpy().tolist()},
            "softmax": {cell: p.tolist() for cell, p in probs.items()},
            "selection": self.config.selection, "scores": result.scores})
        writer.alphas(number, probs, self.model.primitives)
        return {"lr/alphas": self.config.a_lr}

    # -- MSR-DARTS (specs/selection.md 3.3) -----------------------------------
    @property
    def is_msr(self):
        return self.config.method == "msr"

    def _refresh_mixing(self):
        """Every cell's softmax(-srank) from the current kernels: the mixing
        weights until the next refresh (each epoch start, and after a restore)."""
        sranks, weights = msr.cell_mixing(self.model, self.config.msr_shapes)
        self._mixing_sranks.assign(sranks)
        self.search.set_cell_weights(weights)

    def _write_mixing(self, number, result, writer):
        """MSR-DARTS's counterpart of `_write_alphas`: the per-cell sranks and
        mixing weights the epoch trained with, the end-of-epoch scores, and
        heatmaps of the mean srank per cell type (what selection ranks)."""
        write_json(os.path.join(self.paths.alphas, f"epoch_{number:03d}.json"), {
            "primitives": list(self.model.primitives), "method": "msr",
            "mixing_srank": self._mixing_sranks.numpy().tolist(),
            "mixing": self.search.cell_weights.numpy().tolist(),
            "selection": self.config.selection, "scores": result.scores})
        mean_sranks = {kind: result.scores[kind] for kind in ("normal", "reduce")}
        writer.heatmaps(number, "srank", mean_sranks, self.model.primitives, "mean stable rank")
        return {}

    def _select(self):
        """The genotype by --selection (criteria ignore context keys they do not use).
        Perturbation selection runs once after the search; per-epoch previews
        use magnitude."""
        name = self.config.selection
        if name == "perturbation":
            name = "magnitude"
        return selection.select(name, self.model, {"msr_shapes": self.config.msr_shapes})

    # -- perturbation-based selection (DARTS-PT, specs/selection.md sect. 2.5) --
    def _perturbation(self, train_iter, val_iter, writer):
        cfg = self.config
        os.makedirs(self.paths.perturbation, exist_ok=True)
        state = os.path.join(self.paths.perturbation, "projection.json")
        # A resumed non-chief worker reads the chief's state (it keeps none).
        saved_state = os.path.join(cfg.output_dir, "perturbation", "projection.json")
        done = int(self.epoch.numpy()) - cfg.epochs  # Tuning epochs finished before.
        if os.path.exists(saved_state):
            with open(saved_state, encoding="utf-8") as f:
                projection = perturbation.Projection.from_json(f.read())
        elif done > 0:
            raise ConfigError(f"{saved_state} is missing: cannot resume perturbation selection")
        else:
            projection = perturbation.Projection(self.model.primitives, self.model.num_nodes)
        if done == 0:
            self.search.weight_optimizer.reset()  # DARTS-PT tunes with a new SGD...
        self.search.set_weight_lr(cfg.w_lr / 10)  # ...at a tenth of the lr, never annealed.
        self.search.fix_rows(projection.fixed_rows())
        tune_epochs, _ = perturbation.decision_epochs(
            cfg.pt_proj_intv, projection.num_edges, len(projection.node_rows))
        logging.info("perturbation selection: %d tuning epochs, decisions every %d",
                     tune_epochs, cfg.pt_proj_intv)

        def save_state():
            atomic_write_text(state, projection.to_json() + "\n")

        def evaluate(edge_weights):  # -> (top-1 %, mean loss), as DARTS-PT compares.
            loss, accuracy = self.evaluate(self.data.search_val_eval, edge_weights)
            return 100.0 * accuracy, loss

        def on_decision(record, t):
            save_state()
            logging.info("perturbation epoch %d/%d: %s cell, %s", t + 1, tune_epochs,
                         record["cell_type"], _describe_decision(record))

        def tune(projection, t):
            start = time.time()
            self.search.fix_rows(projection.fixed_rows())
            means = self._train_epoch(t, tune_epochs, train_iter, val_iter)
            self.epoch.assign(cfg.epochs + t + 1)
            self.save()
            save_state()
            self._stop_if_requested()
            writer.scalars(cfg.epochs + t + 1, {**{f"perturbation/{k}": v
                                                   for k, v in means.items()},
                                                "perturbation/decisions": len(projection.history)})
            logging.info("perturbation tuning epoch %d/%d: train loss %.4f acc %.3f | %s",
                         t + 1, tune_epochs, means["search/loss/train"],
                         means["search/accuracy/train"], _format_duration(time.time() - start))

        settings = perturbation.PTSettings(proj_intv=cfg.pt_proj_intv,
                                           crit_normal=cfg.pt_crit_normal,
                                           crit_reduce=cfg.pt_crit_reduce, seed=cfg.seed)
        result = selection.select("perturbation", self.model, {
            "evaluate": evaluate, "tune": tune, "settings": settings,
            "projection": projection, "start_epoch": done, "on_decision": on_decision})
        save_state()
        return result

    def _finish(self, writer, result, selection_seconds):
        cfg = self.config
        genotype_lib.save(result.genotype, self.paths.genotype)
        test_loss, test_acc = self.evaluate(self.data.test)
        summary = {"genotype": result.genotype.to_json_dict(), "test_loss": test_loss,
                   "test_accuracy": test_acc, "epochs": cfg.epochs,
                   "weight_params": self.model.count_weight_params(),
                   "num_classes": self.data.info.num_classes,
                   "selection_seconds": selection_seconds}
        write_json(self.paths.results, summary)
        writer.scalars(cfg.epochs, {"eval/test_loss": test_loss, "eval/test_accuracy": test_acc})
        writer.flush()
        logging.info("search done: supernet test accuracy %.4f (chance %.3f), loss %.4f; "
                     "genotype written to %s", test_acc, 1.0 / self.data.info.num_classes,
                     test_loss, self.paths.genotype)
        return summary


def _describe_decision(record):
    if record["kind"] == "op":
        return (f"edge {record['edge']} (node {record['node']} <- {record['input']}): "
                f"{record['chosen']}; accuracy without each op "
                + ", ".join(f"{op} {acc:.2f}" for op, acc in zip(record["ops"], record["acc"])))
    return f"node {record['node']}: kept inputs {record['kept']}, removed {record['removed']}"


def run_search(config, resume=False):
    """Runs (or resumes) the search described by `config`; returns the results dict."""
    return SearchRun(config, resume=resume).run()


def run_selection(config, source_dir):
    """Runs `config.selection` on the searched supernet in `source_dir`."""
    return SearchRun(config).select_from(source_dir)
