"""Training a genotype's network from scratch: data -> NetworkCIFAR / NetworkImageNet
-> SGD epochs -> test accuracy, with checkpoints; and the export of such a run.

`run_train(config)` is what `python -m keras_darts.train` runs, `export_run`
what `python -m keras_darts.export` runs.  Every epoch sets the learning rate
and the drop-path probability of the recipe, trains, optionally tests, writes
TensorBoard scalars and saves a checkpoint (network, optimizer, epoch, step
count and the genotype itself), so an export can prove which genotype a
checkpoint holds.  SIGINT/SIGTERM save a checkpoint after the current step and
stop; `--resume` continues from it, mid-epoch too: the step count is the
position in the training stream (`data.TrainData.train_from`).
"""

import dataclasses
import json
import os
import time

import keras
import tensorflow as tf
from absl import logging

from keras_darts import data as data_lib
from keras_darts import ops
from keras_darts import schedules
from keras_darts.config import TrainConfig
from keras_darts.errors import ConfigError, GenotypeError
from keras_darts.evaluation import networks as eval_net
from keras_darts.evaluation.train_step import NetworkTraining, epoch_lr
from keras_darts.infra import runtime
from keras_darts.infra import fileio
from keras_darts.infra.fileio import write_json
from keras_darts.infra.summaries import EpochWriter
from keras_darts.runs.lifecycle import (RunLoop, StopOnSignal, check_output_dir,
                                        checkpointable_weights, format_duration,
                                        checkpoint_paths, first_line, mean_loss_and_accuracy,
                                        record_resume)
from keras_darts.serving import savedmodel as serving
from keras_darts.space import genotype as genotype_lib
from keras_darts.space import hypercuboid

# The checkpoint stores the genotype's JSON in a string variable of this name, and
# every network variable in a list of this name.
_GENOTYPE_KEY = "genotype"
_WEIGHTS_KEY = "network_weights"


class RunFiles:
    """Where a training run writes (all under its output directory)."""

    def __init__(self, root):
        self.root = root
        self.config = os.path.join(root, "config.json")
        self.genotype = os.path.join(root, "genotype.json")
        self.dataset = os.path.join(root, "dataset.json")  # What an export needs of the data.
        self.results = os.path.join(root, "results.json")
        self.checkpoints = os.path.join(root, "checkpoints")
        self.tensorboard = os.path.join(root, "tensorboard")

    def make(self):
        for d in (self.checkpoints, self.tensorboard):
            fileio.makedirs(d)


def build_network(config, info, genotype):
    """The run's network for data `info`."""
    return eval_net.build_network(
        genotype, kind=config.network, num_classes=info.num_classes, channels=config.channels,
        num_layers=config.layers, input_shape=info.image_shape, auxiliary=config.auxiliary,
        op_options=config.op_options(), dropout_rate=config.dropout_rate)


def _check_chain_settings(config):
    """A HyperCuboid path trains as a chain network, which has its widths from
    the path, no cells, no auxiliary head and no drop path: flags for those
    would be ignored (docs/methods/hypercuboid.md#chain-network)."""
    for name in config.changed_fields(("network", "channels", "layers", "mid_channels",
                                       "dropout_rate")):
        raise ConfigError(f"--{name} does not apply to a HyperCuboid path (--genotype="
                          f"{config.genotype}): the path sets the network")
    if config.auxiliary or config.drop_path_prob:
        raise ConfigError(f"a HyperCuboid path (--genotype={config.genotype}) trains without "
                          "auxiliary head and drop path: pass --noauxiliary --drop_path_prob=0")


def _reductions(config):
    """Halvings of the input before the last cell: 2 reduction cells (+3 ImageNet stems)."""
    return 2 + (3 if config.network == "imagenet" else 0)


class TrainRun(RunLoop):
    """One training run: owns the strategy, network, step function, data and outputs."""

    KIND = "the training run"

    def __init__(self, config, resume=False, strategy=None):
        """`strategy`: an existing `tf.distribute` strategy to train under (a run
        inside another run, e.g. NAO-V2's re-rank: a process must not hold two
        MirroredStrategy objects, whose collectives would share keys); default:
        the one `config.strategy` names."""
        super().__init__(resume)
        self.config = config
        self.files = RunFiles(config.output_dir)
        self._given_strategy = strategy
        self._resume_changes = {}  # {flag: [saved, new]} that --resume allowed.

    # -- setup ---------------------------------------------------------------
    def prepare(self):
        """Validates everything that can be wrong BEFORE writing any output."""
        cfg = self.config
        schedules.check_config(cfg, "lr")
        self.genotype = genotype_lib.load_genotype(cfg.genotype)
        if hypercuboid.is_path(self.genotype):
            _check_chain_settings(cfg)
        else:
            try:  # E.g. --mid_channels with a genotype of DARTS's ops (no middle width).
                ops.family(self.genotype.op_family).resolve_options(cfg.op_options())
            except ValueError as e:
                raise ConfigError(f"--genotype={cfg.genotype}: {e}") from None
        check_output_dir(self.files.root, self.files.checkpoints, self.files.results,
                         self.resume, "a training run")
        if self.resume:
            self._check_resumable()
        if cfg.export_dir:
            serving.check_export_dir(cfg.export_dir)  # Now, not after the last epoch.
        strategy = runtime.resolve_strategy(cfg.strategy)
        if strategy == "multi_worker":  # Its chief-only outputs exist for the search only.
            raise ConfigError(f"keras_darts.train runs on one machine: --strategy="
                              f"{cfg.strategy} means multi_worker here (TF_CONFIG describes "
                              "a cluster); use --strategy=mirrored for several local GPUs, "
                              "or unset TF_CONFIG")
        self.strategy = (self._given_strategy if self._given_strategy is not None
                         else runtime.start(strategy, cfg.graph_optimizer))
        self.data = data_lib.load_train_data(
            cfg.dataset, cfg.batch_size, data_dir=cfg.data_dir or None,
            image_size=cfg.image_size or None, seed=cfg.seed,
            crop_padding=None if cfg.crop_padding < 0 else cfg.crop_padding,
            cutout=cfg.cutout, eval_batch_size=cfg.eval_batch_size or None,
            augmentation=cfg.augmentation, validation_portion=cfg.validation_portion,
            resize=cfg.resize)
        data_lib.check_image_size(min(self.data.info.image_shape[:2]), _reductions(cfg))
        data_lib.check_augmentation_sizes(min(self.data.info.image_shape[:2]), cfg.crop_padding,
                                          cfg.cutout)
        self.steps_per_epoch = cfg.steps_per_epoch or self.data.steps_per_epoch(cfg.batch_size)

    def _check_resumable(self):
        if fileio.exists(self.files.config):
            self._resume_changes = self.config.check_resumable_from(
                TrainConfig.load(self.files.config))
        if fileio.exists(self.files.genotype):
            saved = genotype_lib.load(self.files.genotype)
            if saved != self.genotype:
                raise ConfigError(f"cannot --resume: {self.files.root} trains a different "
                                  f"genotype ({self.files.genotype}) than --genotype="
                                  f"{self.config.genotype}")

    def build(self):
        cfg, info = self.config, self.data.info
        keras.utils.set_random_seed(cfg.seed)
        with self.strategy.scope():
            self.model = build_network(cfg, info, self.genotype)
            self.training = NetworkTraining(self.model, self.strategy, cfg.batch_size,
                                            cfg.hparams())
            # Steps taken: also the position in the training stream.
            self.make_counters()
        genotype_json = tf.Variable(self.genotype.to_json(), trainable=False, name="genotype")
        self.track(self.files.checkpoints, cfg.keep_checkpoints, optimizer=self.training.optimizer,
                   **{_WEIGHTS_KEY: checkpointable_weights(self.model),
                      _GENOTYPE_KEY: genotype_json})

    def restore(self):
        """The newest readable checkpoint (a corrupt one falls back to the one
        before it); one of another genotype is refused."""
        return self.restore_from(self.files.checkpoints,
                                 check=lambda p: _check_checkpoint(p, self.genotype, self.model))

    def _write_run_files(self):
        self.config.save(self.files.config)
        genotype_lib.save(self.genotype, self.files.genotype)
        write_json(self.files.dataset, self.data.info.to_json_dict())

    # -- loop ----------------------------------------------------------------
    def run(self):
        self.prepare()
        self.build()  # Raises on sizes the network cannot take: still before any output.
        self.files.make()
        if self.resume:
            self.restore()
            record_resume(self.files.root, self.config, self.files.config,
                          self._resume_changes, self.global_step.numpy())
        else:
            self._write_run_files()
        cfg, info = self.config, self.data.info
        logging.info("%s network (%s): %d weights (%d with the auxiliary head), %d cells, "
                     "C=%d; %d steps/epoch, %d epochs; dataset %s %s, %d classes, %d train "
                     "images", cfg.network, cfg.genotype, self.model.count_weight_params(),
                     self.model.count_weight_params(include_auxiliary=True), cfg.layers,
                     cfg.channels, self.steps_per_epoch, cfg.epochs, info.name,
                     info.image_shape, info.num_classes, self.data.num_train)
        start = int(self.global_step.numpy())
        train_iter = iter(self.training.distribute(self.data.train_from(start)))
        self._test = None
        with EpochWriter(self.files.tensorboard) as self.writer, StopOnSignal() as self._stop:
            self.writer.config_text(start, cfg.to_json_dict())
            for epoch in range(int(self.epoch.numpy()), cfg.epochs):
                self._run_epoch(epoch, train_iter)
            summary = self._finish()
        if cfg.export_dir:
            export_run(cfg.output_dir, cfg.export_dir)
        return summary

    def _run_epoch(self, epoch, train_iter):
        cfg = self.config
        start = time.time()
        lr = epoch_lr(cfg.lr_schedule, epoch, cfg.epochs, cfg.lr, cfg.lr_min, cfg.lr_decay,
                      **schedules.config_options(cfg, "lr"))
        self.training.set_lr(lr)
        drop_prob = eval_net.drop_path_prob_for_epoch(epoch, cfg.epochs, cfg.drop_path_prob)
        self.model.set_drop_path_prob(drop_prob)
        means = self._train_epoch(epoch, train_iter)
        scalars = {f"train/{k}": v for k, v in means.items()}
        scalars.update({"lr": lr, "drop_path_prob": drop_prob})
        last = epoch + 1 == cfg.epochs
        evaluated = last or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0)
        if evaluated:
            self._test = self.evaluate(self.data.test)
            self.check_evaluation(f"{self.data.evaluated_on} loss", self._test[0], epoch)
            scalars.update(self._eval_scalars())
        self.writer.scalars(epoch + 1, scalars)  # Written after the checkpoint.
        self.epoch.assign(epoch + 1)
        self.save()
        self.stop_if_requested()
        # Includes testing and the checkpoint.
        seconds, eta = self.epoch_took(start, cfg.epochs - epoch - 1)
        tested = (f" | {self.data.evaluated_on} loss {self._test[0]:.4f} acc "
                  f"{self._test[1]:.4f}" if evaluated else "")
        logging.info("epoch %d/%d: train loss %.4f acc %.3f%s | lr %.5f, drop path %.3f | "
                     "%s, ETA %s", epoch + 1, cfg.epochs, means["loss"], means["accuracy"],
                     tested, lr, drop_prob, format_duration(seconds), format_duration(eta))

    def _train_epoch(self, epoch, train_iter):
        """The training steps of one epoch (the rest of it, when resumed from a
        checkpoint saved mid-epoch); returns their mean metrics."""
        return self.run_steps(
            lambda: self.training.step(next(train_iter)), epoch, self.config.epochs,
            lambda m: "loss %.4f acc %.3f" % (m["loss"], m["accuracy"]), ("loss",),
            "Try a lower --lr or a smaller --grad_clip, or check the input data.",
            self.config.log_every)

    def evaluate(self, dataset):
        """Mean cross entropy and accuracy over `dataset` in eval mode."""
        return mean_loss_and_accuracy(self.training.distribute(dataset), self.training.evaluate)

    def _eval_scalars(self):
        """TensorBoard scalars of the latest evaluation ("eval/test_*", or with
        --validation_portion "eval/validation_*")."""
        name = self.data.evaluated_on
        return {f"eval/{name}_loss": self._test[0], f"eval/{name}_accuracy": self._test[1]}

    def _finish(self):
        cfg, info = self.config, self.data.info
        if self._test is None:  # Resumed after the last epoch: nothing tested yet.
            self._test = self.evaluate(self.data.test)
            self.writer.scalars(cfg.epochs, self._eval_scalars())
        test_loss, test_acc = self._test
        name = self.data.evaluated_on
        summary = {"genotype": self.genotype.to_json_dict(), f"{name}_loss": test_loss,
                   f"{name}_accuracy": test_acc, "epochs": cfg.epochs,
                   "weight_params": self.model.count_weight_params(),
                   "weight_params_with_auxiliary":
                       self.model.count_weight_params(include_auxiliary=True),
                   "num_classes": info.num_classes,
                   f"num_{name}": info.num_test if name == "test" else info.num_search_val,
                   "train_seconds_this_process": round(sum(self._epoch_times), 1)}
        write_json(self.files.results, summary)
        self.writer.hparams(
            cfg.epochs, {**cfg.to_json_dict(), "genotype": summary["genotype"]},
            (f"eval/{name}_accuracy", f"eval/{name}_loss", "train/images_per_second"),
            trial=os.path.basename(os.path.normpath(cfg.output_dir)))
        logging.info("training done: %s accuracy %.4f (chance %.3f), loss %.4f; results "
                     "in %s", name, test_acc, 1.0 / info.num_classes, test_loss, self.files.results)
        return summary


def run_train(config, resume=False, strategy=None):
    """Runs (or resumes) the training described by `config` (under `strategy`,
    see `TrainRun`); returns the results dict."""
    return TrainRun(config, resume=resume, strategy=strategy).run()


# ---------------------------------------------------------------------------
# Export of a finished (or interrupted) run
# ---------------------------------------------------------------------------

def _check_checkpoint(path, genotype, network):
    """Raises GenotypeError unless the checkpoint at `path` was trained on `genotype`
    and holds as many network variables as `network` has (shapes are checked
    when restoring)."""
    # Not tf.train.load_checkpoint: it asks isdir(path) first, which some
    # filesystems (TF's ram://) answer yes for a prefix that other files start with.
    reader = tf.compat.v1.train.NewCheckpointReader(path)
    key = f"{_GENOTYPE_KEY}/.ATTRIBUTES/VARIABLE_VALUE"
    if not reader.has_tensor(key):
        raise GenotypeError(f"checkpoint {path} holds no genotype: not a keras_darts.train "
                            "checkpoint")
    saved = genotype_lib.parse(json.loads(reader.get_tensor(key)), where=f"genotype in {path}")
    if saved != genotype:
        raise GenotypeError(f"checkpoint {path} was trained on a different genotype than "
                            f"the one given:\n  checkpoint: {saved.to_json_dict()}\n  given:"
                            f"      {genotype.to_json_dict()}")
    count = sum(1 for k in reader.get_variable_to_shape_map()
                if k.startswith(f"{_WEIGHTS_KEY}/") and k.endswith("VARIABLE_VALUE"))
    if count != len(network.variables):
        raise GenotypeError(f"checkpoint {path} holds {count} network variables, the network "
                            f"of this config and genotype has {len(network.variables)}")


@dataclasses.dataclass(frozen=True)
class RestoredRun:
    """A training run's network with the weights of its latest checkpoint."""

    network: eval_net.EvalNetwork
    config: TrainConfig
    info: data_lib.DatasetInfo
    genotype: genotype_lib.Genotype
    checkpoint: str  # The checkpoint's path prefix.


def restore_run(run_dir, genotype=None):
    """Rebuilds the network of the training run in `run_dir` from its config.json,
    dataset.json and latest checkpoint (outside any distribution strategy).

    genotype: a name or JSON path the checkpoint must hold (default: the run's
    genotype.json).  Raises GenotypeError if the checkpoint holds another
    genotype or does not fit the network.
    """
    files = RunFiles(run_dir)
    if not fileio.isfile(files.config):
        raise ConfigError(f"{run_dir} is not a keras_darts.train output directory "
                          "(no config.json)")
    config = TrainConfig.load(files.config)
    try:
        info = data_lib.DatasetInfo.from_json_dict(fileio.read_json(files.dataset))
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"cannot read {files.dataset}: {e}") from None
    run_genotype = genotype_lib.load(files.genotype)
    genotype = run_genotype if genotype is None else genotype_lib.load_genotype(genotype)
    network = build_network(config, info, genotype)
    weights = tf.train.Checkpoint(**{_WEIGHTS_KEY: checkpointable_weights(network)})
    candidates = list(reversed(checkpoint_paths(files.checkpoints)))
    if not candidates:
        raise ConfigError(f"no checkpoint in {files.checkpoints}")
    for latest in candidates:  # The newest readable one; a damaged one falls back.
        try:
            _check_checkpoint(latest, genotype, network)
            status = weights.restore(latest)
            status.assert_existing_objects_matched()
        except (tf.errors.OpError, IndexError) as e:  # Truncated or missing files.
            logging.warning("checkpoint %s is unreadable (%s); trying an older one", latest,
                            first_line(e))
            continue
        except (AssertionError, ValueError) as e:  # Missing objects / mismatched shapes.
            raise GenotypeError(f"checkpoint {latest} does not match the network of its "
                                f"config and genotype: {first_line(e)}") from None
        status.expect_partial()  # The optimizer's state stays unread.
        break
    else:
        raise ConfigError(f"no readable checkpoint in {files.checkpoints} (see the warnings)")
    return RestoredRun(network, config, info, genotype, latest)


def export_run(run_dir, export_dir, genotype=None):
    """Exports the latest checkpoint of the training run in `run_dir` (see
    `serving`); nothing is written unless it matches `genotype` (`restore_run`)."""
    serving.check_export_dir(export_dir)
    run = restore_run(run_dir, genotype)
    serving.export_network(run.network, run.info, run.genotype, run.config.weight_decay,
                           export_dir)
    logging.info("exported %s to %s/{%s,%s}", run.checkpoint, export_dir,
                 serving.CLASSIFIER_DIR, serving.FEATURES_DIR)
    return export_dir
