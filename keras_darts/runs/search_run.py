"""The search harness: data -> supernet -> search steps -> genotype, with checkpoints.

`run_search(config)` is what `python -m keras_darts.search` runs.  The harness
knows no method by name: the config's method plug-in (keras_darts/methods/)
builds the supernet and the step and gets its hooks called; the config's
selection criterion (keras_darts/selection/) turns the supernet into the
genotype, after every epoch (a read-out) and at the end (the read-out, or a
phase that tunes the supernet further, e.g. DARTS-PT).

Every epoch it evaluates the supernet on search-val, derives a genotype,
writes it with the method's architecture artefacts and TensorBoard summaries,
and saves a checkpoint (weights, alphas, both optimizers, the method's own
state, epoch and step), so `--resume` loses at most the running step.

What a selection phase, or a method that runs its own loop of epochs
(`SearchMethod.run_epochs`), may use (its API, keep it small): `config`,
`data`, `model`, `search` (the step), `epoch`, `writer`, `run_epoch(epoch)`,
`train_epoch(epoch, epochs)`, `evaluate(dataset, plan)`, `save()`,
`stop_if_requested()`, `at_epoch_start(epochs_done)`, `output_path(...)`,
`chief_path(...)`.
"""

import dataclasses
import os
import time

import keras
from absl import logging

from keras_darts import data as data_lib
from keras_darts import methods, schedules, selection
from keras_darts.config import SearchConfig
from keras_darts.errors import ConfigError
from keras_darts.infra import cluster as cluster_lib
from keras_darts.infra import replicas, runtime
from keras_darts.infra import fileio
from keras_darts.infra.fileio import write_json
from keras_darts.infra.summaries import EpochWriter
from keras_darts.runs.lifecycle import (RunLoop, StopOnSignal, check_output_dir,
                                        checkpointable_weights, format_duration,
                                        checkpoint_paths, mean_loss_and_accuracy,
                                        record_resume)
from keras_darts.space import genotype as genotype_lib
from keras_darts.space.supernet import reduction_layers


# The HParams dashboard's columns for comparing searches (summaries.EpochWriter.hparams).
_COMPARED_METRICS = ("eval/test_accuracy", "eval/test_loss", "eval/search_val_accuracy",
                     "search/images_per_second")


class _Paths:
    """Where a search run writes (all under config.output_dir)."""

    def __init__(self, root):
        self.root = root
        self.config = os.path.join(root, "config.json")
        self.genotype = os.path.join(root, "genotype.json")
        self.results = os.path.join(root, "results.json")
        self.genotypes = os.path.join(root, "genotypes")
        self.alphas = os.path.join(root, "alphas")
        self.checkpoints = os.path.join(root, "checkpoints")
        self.tensorboard = os.path.join(root, "tensorboard")

    def make(self):
        for d in (self.genotypes, self.alphas, self.checkpoints, self.tensorboard):
            fileio.makedirs(d)


class SearchRun(RunLoop):
    """One search: owns the strategy, method, model, step, data and outputs.

    Under --strategy=multi_worker every worker runs this same loop; only the
    chief writes to --output_dir, the others into a temporary directory
    (`cluster.WorkerOutput`) deleted when the run ends.  All read the chief's
    checkpoints (--output_dir must be on a filesystem every worker sees), and a
    restarted cluster resumes from them without --resume (BackupAndRestore
    semantics).
    """

    KIND = "the supernet"

    def __init__(self, config, resume=False):
        super().__init__(resume)
        self.config = config
        self.paths = _Paths(config.output_dir)
        self._output = None  # This worker's cluster_lib.WorkerOutput, made by prepare().
        self._checkpoints_to_read = self.paths.checkpoints  # The chief's, on every worker.
        self.criterion = selection.get(config.selection)

    # -- setup ---------------------------------------------------------------
    def prepare(self):
        """Validates everything that can be wrong BEFORE writing any output."""
        cfg = self.config
        schedules.check_config(cfg, "w_lr")
        if cfg.channels % 2:
            raise ConfigError(f"--channels must be even (FactorizedReduce halves it), "
                              f"got {cfg.channels}")
        strategy = runtime.resolve_strategy(cfg.strategy)
        self.method = methods.get(cfg.method)(cfg)
        self.method.check(strategy)
        if strategy == "multi_worker":
            self.cluster = cluster_lib.current()
            # A restarted cluster continues from the chief's checkpoints.
            self.resume = self.resume or bool(checkpoint_paths(self.paths.checkpoints))
        self._check_output_dir()
        self.strategy = runtime.start(strategy, cfg.graph_optimizer)
        self.data = data_lib.load_search_data(
            cfg.dataset, cfg.batch_size, data_dir=cfg.data_dir or None,
            image_size=cfg.image_size or None, seed=cfg.seed,
            crop_padding=None if cfg.crop_padding < 0 else cfg.crop_padding,
            eval_batch_size=cfg.eval_batch_size or None, train_portion=cfg.train_portion,
            resize=cfg.resize)
        info = self.data.info
        data_lib.check_image_size(min(info.image_shape[:2]), len(reduction_layers(cfg.layers)))
        data_lib.check_augmentation_sizes(min(info.image_shape[:2]), cfg.crop_padding)
        self.steps_per_epoch = cfg.steps_per_epoch or self.data.steps_per_epoch(cfg.batch_size)
        if cfg.batch_size < self.strategy.num_replicas_in_sync:
            raise ConfigError(f"--batch_size ({cfg.batch_size}) is the global batch: it must "
                              f"be at least the number of replicas "
                              f"({self.strategy.num_replicas_in_sync})")
        self._output = cluster_lib.WorkerOutput(cfg.output_dir, self.cluster)
        self.paths = _Paths(self._output.root)  # Where this worker writes.

    def _check_output_dir(self):
        """Refuses to overwrite an earlier search unless resuming it."""
        paths = self.paths
        check_output_dir(paths.root, paths.checkpoints, paths.genotype, self.resume, "a search")
        self._resume_changes = {}
        if self.resume and fileio.exists(paths.config):
            self._resume_changes = self.config.check_resumable_from(
                SearchConfig.load(paths.config), also_fixed=self.method.fixed_on_resume)

    def build(self):
        cfg, info = self.config, self.data.info
        keras.utils.set_random_seed(cfg.seed)
        with self.strategy.scope():
            self.model = self.method.build_supernet(info.num_classes, info.image_shape)
            self.search = self.method.build_step(self.model, self.strategy)
            # Epochs finished (search, then selection tuning) and search steps
            # taken: the step count is also the position in both data streams.
            self.make_counters()
        # A step without architecture weights (a sampled one-shot supernet) has
        # no architecture optimizer.
        optimizers = {"weight_optimizer": self.search.weight_optimizer,
                      "arch_optimizer": getattr(self.search, "arch_optimizer", None)}
        self.track(self.paths.checkpoints, cfg.keep_checkpoints,
                   network_weights=checkpointable_weights(self.model),  # Not model=: see there.
                   **{k: v for k, v in optimizers.items() if v is not None},
                   **self.method.checkpoint_state())
        self._gather = replicas.make_gather(self.strategy)

    def restore(self, directory=None):
        """Restores the newest readable checkpoint of `directory` (default: the
        chief's); see `RunLoop.restore_from`."""
        return self.restore_from(directory or self._checkpoints_to_read)

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

    def _open_streams(self):
        """Iterators over search-train and search-val from the checkpointed step on."""
        start = int(self.global_step.numpy())
        self._train_iter = iter(self.search.distribute(self.data.search_train_from(start)))
        self._val_iter = iter(self.search.distribute(self.data.search_val_from(start)))

    def restore_searched(self, source_dir):
        """Prepares this run and loads the supernet checkpointed in `source_dir` (a
        search's output directory, only read); writes nothing.  Returns the path of
        the checkpoint loaded."""
        self.prepare()
        self.build()
        path = self.restore(os.path.join(source_dir, "checkpoints"))
        self._check_workers_agree()
        return path

    # -- what a selection phase may use ----------------------------------------------
    def output_path(self, *parts):
        """A path under this worker's output directory (its folder is made)."""
        path = os.path.join(self.paths.root, *parts)
        fileio.makedirs(os.path.dirname(path))
        return path

    def chief_path(self, *parts):
        """The same path under the chief's output directory (what a resumed
        non-chief worker reads)."""
        return os.path.join(self.config.output_dir, *parts)

    def train_epoch(self, epoch, epochs):
        """The search steps of one epoch (the rest of it, when resumed from a
        checkpoint saved mid-epoch); returns the mean metrics of those steps."""
        def step_fn():
            # Methods that train no alphas take weight-only steps: no val batch.
            self._val_batch = next(self._val_iter) if self.method.trains_alphas else None
            return self.search.step(next(self._train_iter), self._val_batch)

        def describe(metrics):
            val = ("" if self._val_batch is None else " | val loss %.4f acc %.3f" % (
                metrics["loss/val"], metrics["accuracy/val"]))
            return "train loss %.4f acc %.3f%s" % (metrics["loss/train"],
                                                  metrics["accuracy/train"], val)

        return self.run_steps(step_fn, epoch, epochs, describe, ("loss/train", "loss/val"),
                              "Try a lower --w_lr or --a_lr, or check the input data.",
                              self.config.log_every, prefix="search/")

    def evaluate(self, dataset, plan=None):
        """Mean loss and accuracy over `dataset`: eval mode (running BN statistics)
        with the supernet as the step trains it, or, given a `plan`
        (keras_darts/space/plans.py), train mode running that plan, e.g.
        DARTS-PT's masked weights or one discrete architecture."""
        sums = (self.search.evaluate if plan is None
                else lambda batch: self.search.evaluate_plan(batch, plan))
        return mean_loss_and_accuracy(self.search.distribute(dataset), sums)

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
            record_resume(self.paths.root, self.config, self.paths.config,
                          self._resume_changes, self.global_step.numpy())
        self._check_workers_agree()
        cfg = self.config
        logging.info("supernet: %d weights, %s; %d steps/epoch, %d epochs; "
                     "dataset %s %s, %d classes", self.model.count_weight_params(),
                     self.method.describe(), self.steps_per_epoch, cfg.epochs,
                     self.data.info.name, self.data.info.image_shape,
                     self.data.info.num_classes)
        self._open_streams()
        with EpochWriter(self.paths.tensorboard) as self.writer, StopOnSignal() as self._stop:
            self.writer.config_text(int(self.global_step.numpy()), cfg.to_json_dict())
            self.method.run_epochs(self)
            return self._select_and_finish()

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
        self.method.restored_for_selection()
        if searched < self.config.epochs:
            logging.warning("%s holds a search stopped after %d of %d epochs", source_dir,
                            searched, self.config.epochs)
        # Selection-only runs count tuning epochs from the checkpoint's epoch.
        self.config = dataclasses.replace(self.config, epochs=searched)
        logging.info("selecting with '%s' on %s (epoch %d)", self.config.selection, latest,
                     searched)
        self._open_streams()
        with EpochWriter(self.paths.tensorboard) as self.writer, StopOnSignal() as self._stop:
            return self._select_and_finish()

    def _select_and_finish(self):
        start = time.time()
        if self.criterion.tunes_supernet:
            result = self.criterion(self, self.config.selection_settings, self.writer)
        else:
            result = self._read_out()
        seconds = time.time() - start
        write_json(os.path.join(self.paths.root, "selection_scores.json"),
                   {"selection": self.config.selection, "scores": result.scores})
        return self._finish(result, seconds)

    def run_epoch(self, epoch):
        """Search epoch `epoch` (0-based; the rest of it when resumed inside it):
        steps, evaluation, read-out, outputs, checkpoint."""
        cfg = self.config
        lr = self.method.weight_lr(epoch, cfg.epochs)
        self.search.set_weight_lr(lr)
        self.method.start_epoch(epoch, cfg.epochs, fresh=self.at_epoch_start(epoch))
        epoch_start = time.time()
        means = self.train_epoch(epoch, cfg.epochs)
        val_loss, val_acc = self.evaluate(self.data.search_val_eval)
        self.check_evaluation("search-val loss", val_loss, epoch)
        result = self._read_out()
        self._write_epoch(epoch, result, means, val_loss, val_acc, lr)
        self.epoch.assign(epoch + 1)
        self.save()
        self.stop_if_requested()
        self._log_epoch(epoch, epoch_start, means, val_loss, val_acc, lr)

    def _log_epoch(self, epoch, epoch_start, means, val_loss, val_acc, lr):
        epochs = self.config.epochs
        # Includes evaluation, outputs, checkpoint.
        seconds, eta = self.epoch_took(epoch_start, epochs - epoch - 1)
        logging.info("epoch %d/%d: train loss %.4f acc %.3f | search-val (eval mode) loss "
                     "%.4f acc %.3f | lr %.5f | %s, ETA %s", epoch + 1, epochs,
                     means["search/loss/train"], means["search/accuracy/train"], val_loss,
                     val_acc, lr, format_duration(seconds), format_duration(eta))

    def _write_epoch(self, epoch, result, means, val_loss, val_acc, lr):
        number = epoch + 1
        genotype_lib.save(result.genotype,
                          os.path.join(self.paths.genotypes, f"epoch_{number:03d}.json"))
        arch_scalars = self.method.write_epoch(number, result, self.paths.alphas, self.writer)
        self.writer.scalars(number, {**means, "eval/search_val_loss": val_loss,
                                     "eval/search_val_accuracy": val_acc, "lr/weights": lr,
                                     **arch_scalars})
        self.writer.genotype(number, result.genotype)  # Written after the checkpoint.

    def _read_out(self):
        """The genotype by the criterion's read-out: the criterion itself, or for
        a phase (which runs once, after the search) the read-out it previews with."""
        name = self.criterion.preview_name
        settings = self.config.selection_settings if name == self.criterion.name else None
        return selection.select(name, self.model, settings)

    def _finish(self, result, selection_seconds):
        cfg = self.config
        genotype_lib.save(result.genotype, self.paths.genotype)
        test_loss, test_acc = self.evaluate(self.data.test)
        summary = {"genotype": result.genotype.to_json_dict(), "test_loss": test_loss,
                   "test_accuracy": test_acc, "epochs": cfg.epochs,
                   "weight_params": self.model.count_weight_params(),
                   "num_classes": self.data.info.num_classes,
                   "selection_seconds": selection_seconds}
        summary = self.method.end_of_run(summary)
        write_json(self.paths.results, summary)
        self.writer.scalars(cfg.epochs, {"eval/test_loss": test_loss,
                                         "eval/test_accuracy": test_acc})
        self.writer.hparams(cfg.epochs, {**cfg.to_json_dict(), "genotype":
                                         result.genotype.to_json_dict()}, _COMPARED_METRICS,
                            trial=os.path.basename(os.path.normpath(cfg.output_dir)))
        self.writer.flush()
        logging.info("search done: supernet test accuracy %.4f (chance %.3f), loss %.4f; "
                     "genotype written to %s", test_acc, 1.0 / self.data.info.num_classes,
                     test_loss, self.paths.genotype)
        return summary


def run_search(config, resume=False):
    """Runs (or resumes) the search described by `config`; returns the results dict."""
    return SearchRun(config, resume=resume).run()


def run_selection(config, source_dir):
    """Runs `config.selection` on the searched supernet in `source_dir`."""
    return SearchRun(config).select_from(source_dir)
