"""The life of a run, shared by the search (runs/search_run.py) and the training
of a genotype (runs/train_run.py): epoch and step counters, checkpoints (save,
restore the newest readable one), the steps of an epoch (resumable mid-epoch,
the NaN stop, progress lines), stopping cleanly on SIGINT/SIGTERM (agreed
among the workers of a cluster), and the pieces they are made of.

    class MyRun(RunLoop):
        def build(self):
            with strategy.scope():
                ...model, step...
                self.make_counters()
            self.track(checkpoint_dir, keep, model=..., optimizer=...)

A run's `epoch` variable counts finished epochs and `global_step` the steps
taken, which is also the position in its data streams: a checkpoint of both
is all a resumed run needs to continue exactly where it stopped.
"""

import datetime
import math
import os
import signal
import threading
import time

import tensorflow as tf
from absl import logging

from keras_darts.errors import ConfigError, Interrupted, TrainingDivergedError
from keras_darts.infra import cluster as cluster_lib
from keras_darts.infra import fileio
from keras_darts.infra.fileio import write_json

RESUME_HISTORY = "resume_history.json"


def format_duration(seconds):
    """"1:02:03" or "2:03"."""
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def eta(epoch_times, remaining):
    """Seconds left; the first epoch of a process includes tracing, so it is
    only used while nothing better is known."""
    typical = epoch_times[1:] or epoch_times
    return sum(typical) / len(typical) * remaining


def mean_loss_and_accuracy(batches, sums_of):
    """(mean loss, accuracy) over `batches`, `sums_of(batch)` giving the loss sum,
    the correct count and the example count of one (global) batch."""
    loss_sum = correct = count = 0.0
    for batch in batches:
        batch_loss, batch_correct, batch_count = sums_of(batch)
        loss_sum += float(batch_loss)
        correct += float(batch_correct)
        count += float(batch_count)
    return loss_sum / max(count, 1.0), correct / max(count, 1.0)


def check_finite(metrics, keys, epoch, step, hint):
    """Raises TrainingDivergedError if any of `metrics[keys]` (those present) is NaN
    or infinite.

    The loops call this before the epoch's checkpoint is written, so the last
    good checkpoint survives.  `epoch` and `step` are 0-based.
    """
    bad = [k for k in keys if k in metrics and not math.isfinite(metrics[k])]
    if bad:
        raise TrainingDivergedError(
            f"{' and '.join(bad)} became {metrics[bad[0]]} at epoch {epoch + 1}, step "
            f"{step + 1}; stopped without saving this epoch (the last good checkpoint is "
            f"kept). {hint}")


def check_output_dir(root, checkpoints, finished_marker, resume, what):
    """Refuses to overwrite an earlier run in `root` unless resuming it, and to
    resume without a checkpoint.  `finished_marker`: a file only a run writes;
    `what`: the run's kind, for the message ("a search")."""
    has_checkpoint = bool(checkpoint_paths(checkpoints))
    if resume and not has_checkpoint:
        raise ConfigError(f"--resume: no checkpoint found in {checkpoints}")
    if not resume and (has_checkpoint or fileio.exists(finished_marker)):
        raise ConfigError(f"--output_dir {root} already holds {what}; pass --resume "
                          "to continue it or choose another --output_dir")


def record_resume(root, config, config_path, changes, step):
    """After a --resume: appends {when, step, changes} to root/resume_history.json
    (`changes`: {flag: [saved, new]}, what the resume changed) and rewrites
    config.json, so it describes the run as it continues."""
    path = os.path.join(root, RESUME_HISTORY)
    history = []
    if fileio.exists(path):
        try:
            history = list(fileio.read_json(path))
        except (OSError, ValueError, TypeError) as e:
            logging.warning("%s unreadable (%s): starting a new history", path, e)
    when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    history.append({"resumed_at": when, "step": int(step), "changes": changes})
    write_json(path, history)
    config.save(config_path)
    if changes:
        logging.info("resume changed %s", "; ".join(f"--{k}: {old!r} -> {new!r}"
                                                   for k, (old, new) in changes.items()))


def checkpointable_weights(model):
    """Every variable of a Keras 3 `model`, as one list to put in a tf.train.Checkpoint.

    tf.train.Checkpoint(model=model) follows the model's layer attributes but
    not the Python lists of layers it holds (cells, a cell's ops, a Sequential's
    layers): Keras 3 tracks those for itself only, so their variables would be
    silently left out.  `model.variables` has them all, in an order fixed by
    the construction code; a checkpoint of another architecture fails to
    restore on the first shape that differs.
    """
    return list(model.variables)


def checkpoint_paths(directory):
    """Every checkpoint prefix in `directory` whose .index file exists, oldest
    first (by the step number in its name): the ones TF's state file lists and
    any it lost.  tf.train.latest_checkpoint answers None as soon as the newest
    one's .index is gone, although older ones are intact."""
    if not tf.io.gfile.isdir(directory):
        return []
    state = tf.train.get_checkpoint_state(directory)
    names = {os.path.basename(p) for p in (state.all_model_checkpoint_paths if state else [])}
    names.update(name[:-len(".index")] for name in tf.io.gfile.listdir(directory)
                 if name.endswith(".index"))
    present = [n for n in names if tf.io.gfile.exists(os.path.join(directory, n + ".index"))]

    def step(name):
        tail = name.rsplit("-", 1)[-1]
        return (int(tail), name) if tail.isdigit() else (-1, name)

    return [os.path.join(directory, n) for n in sorted(present, key=step)]


def restore_newest_readable(checkpoint, directory, check=None):
    """Restores into `checkpoint` the newest checkpoint of `directory` that reads
    completely; a corrupt one (e.g. a crash while the disk filled) falls back to
    the one before it, with a warning.  `check(path)` runs first and may raise to
    refuse a checkpoint outright (e.g. another genotype): that is not a fallback.
    Returns the path restored, or None when no checkpoint there is readable."""
    for path in reversed(checkpoint_paths(directory)):
        try:
            if check is not None:
                check(path)
            checkpoint.restore(path).assert_consumed()
        # What TF raises for damaged files, missing objects and mismatched shapes.
        except (tf.errors.OpError, ValueError, AssertionError, IndexError) as e:
            logging.warning("checkpoint %s is unreadable (%s); trying an older one",
                            path, first_line(e))
            continue
        return path
    return None


def first_line(error):
    """TF errors can span lines and pages; a CLI error message is one short line."""
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return line if len(line) <= 300 else line[:300] + " ..."


class StopOnSignal:
    """While active, SIGINT and SIGTERM only set `requested` (the signal number):
    the loop saves a checkpoint at the next step boundary, then stops.  A second
    signal acts as usual (immediate stop)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = 0
        self._previous = {}

    def _handle(self, signum, frame):
        self.requested = signum
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        logging.warning("signal %d: saving a checkpoint after the current step, then "
                        "stopping (send it again to stop at once)", signum)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        if not self.requested:
            for s, handler in self._previous.items():
                signal.signal(s, handler)
        return False


class StepProfiler:
    """--profile_steps: the TF profiler traces steps `first`..`last` (1-based
    step numbers of the run, inclusive) into `logdir` (TensorBoard's Profile
    tab).  A run resumed inside the range traces from where it resumed."""

    def __init__(self, steps, logdir):
        self.first, self.last = steps or (0, -1)
        self.logdir = logdir
        self.active = self.done = False

    def before(self, number):
        if not (self.active or self.done) and self.first <= number <= self.last:
            tf.profiler.experimental.start(self.logdir)
            self.active = True
            logging.info("profiling steps %d-%d into %s", number, self.last, self.logdir)

    def after(self, number):
        if self.active and number >= self.last:
            self.stop()

    def stop(self):
        if self.active:
            tf.profiler.experimental.stop()
            self.active, self.done = False, True


class RunLoop:
    """Base of the search and training runs (see the module docstring).

    Subclasses set `steps_per_epoch`, call `make_counters()` inside their
    strategy scope and `track(...)` once the state exists; under a cluster
    they also set `cluster` and `_gather` (replicas.make_gather).
    """

    KIND = "a run"  # For messages: "cannot restore a search from ...".

    def __init__(self, resume=False):
        self.resume = resume
        self.cluster = cluster_lib.SINGLE
        self.steps_per_epoch = None
        self._gather = None
        self._stop = StopOnSignal()  # Inactive until entered by the loop.
        self.writer = None  # The run's summaries.EpochWriter, committed by `save`.
        self._profiler = None
        self._epoch_times = []

    # -- state -------------------------------------------------------------------
    def make_counters(self):
        """The epoch and step counters (call inside the strategy scope)."""
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")

    def track(self, directory, keep, **trackables):
        """Checkpoints of the counters and `trackables` in `directory`, the
        newest `keep` kept."""
        self.checkpoint = tf.train.Checkpoint(epoch=self.epoch, step=self.global_step,
                                              **trackables)
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory,
                                                  max_to_keep=keep)

    def restore_from(self, directory, check=None):
        """Restores the newest readable checkpoint of `directory`: a corrupt one
        (e.g. a crash while the disk filled) falls back to the one before it,
        with a warning; `check(path)` may refuse one.  Returns its path."""
        path = restore_newest_readable(self.checkpoint, directory, check)
        if path is None:
            raise ConfigError(f"cannot restore {self.KIND} from {directory}: no checkpoint "
                              "there is readable and matches this configuration (see the "
                              "warnings)")
        logging.info("resumed from %s (epoch %d done, step %d)", path,
                     int(self.epoch.numpy()), int(self.global_step.numpy()))
        return path

    def save(self):
        """Checkpoint numbered by the step count (TF's own write is atomic: a crash
        while saving leaves the previous checkpoint as the latest).  Every worker
        saves (the save may run collectives); a non-chief's copy is deleted.  The
        summaries recorded since the last save are written after it, so TensorBoard
        never shows a step twice after a resume."""
        path = self.manager.save(checkpoint_number=int(self.global_step.numpy()))
        if self.writer is not None:
            self.writer.flush()
        if not self.cluster.is_chief:
            tf.io.gfile.rmtree(self.manager.directory)
        return path

    def at_epoch_start(self, epochs_done):
        """True if the step count is where epoch `epochs_done` + 1 begins."""
        return int(self.global_step.numpy()) == epochs_done * self.steps_per_epoch

    # -- signals -------------------------------------------------------------------
    def stop_signal(self):
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

    def stop_if_requested(self):
        """After a save: stop if SIGINT/SIGTERM arrived (errors.Interrupted)."""
        signum = self.stop_signal()
        if signum:
            where = "" if self._stop.requested else " (received by another worker)"
            raise Interrupted(signum, f"stopped by signal {signum}{where} at step "
                              f"{int(self.global_step.numpy())}, checkpoint saved")

    # -- the steps of an epoch -----------------------------------------------------
    def run_steps(self, step_fn, epoch, epochs, describe, finite_keys, hint, log_every,
                  prefix=""):
        """The steps of the current epoch (the rest of it, when resumed from a
        checkpoint saved mid-epoch): `step_fn()` -> {metric: scalar}; returns the
        mean metrics of those steps, named prefix + key, and their throughput
        (prefix + "images_per_second", training images of --batch_size per step).
        `epoch`/`epochs` label the progress lines; `describe(metrics)` is their
        middle part.  Every `log_every` steps the step's own metrics also go to
        TensorBoard as "steps/<prefix><key>" at the run's step number."""
        start = time.time()
        totals = {}
        first = int(self.global_step.numpy()) - int(self.epoch.numpy()) * self.steps_per_epoch
        if not 0 <= first < self.steps_per_epoch:
            raise ConfigError(f"the checkpoint is at step {int(self.global_step.numpy())}, "
                              f"which is not in epoch {int(self.epoch.numpy()) + 1} with "
                              f"{self.steps_per_epoch} steps per epoch")
        if self._profiler is None:
            self._profiler = StepProfiler(self.config.profiled_steps(), self.writer.logdir)
        try:
            for step in range(first, self.steps_per_epoch):
                number = int(self.global_step.numpy()) + 1
                self._profiler.before(number)
                metrics = {k: float(v) for k, v in step_fn().items()}
                self._profiler.after(number)
                check_finite(metrics, finite_keys, epoch, step, hint)
                self.global_step.assign_add(1)
                for k, v in metrics.items():
                    totals[k] = totals.get(k, 0.0) + v
                if step + 1 < self.steps_per_epoch and self.stop_signal():
                    self.save()
                    self.stop_if_requested()
                if log_every and (step + 1) % log_every == 0:
                    per_step = (time.time() - start) / (step + 1 - first)
                    logging.info("epoch %d/%d step %d/%d: %s | %.2f s/step", epoch + 1, epochs,
                                 step + 1, self.steps_per_epoch, describe(metrics), per_step)
                    self.writer.scalars(number, {
                        **{f"steps/{prefix}{k}": v for k, v in metrics.items()},
                        f"steps/{prefix}images_per_second": self.config.batch_size / per_step})
        except BaseException:  # A trace is only written when the profiler stops.
            self._profiler.stop()
            raise
        steps = self.steps_per_epoch - first
        means = {prefix + k: v / steps for k, v in totals.items()}
        means[prefix + "images_per_second"] = steps * self.config.batch_size / (
            time.time() - start)
        return means

    def check_evaluation(self, name, loss, epoch):
        """An evaluation's non-finite loss stops the run like a training loss
        does, before this epoch's outputs and checkpoint are written."""
        check_finite({name: float(loss)}, (name,), epoch, self.steps_per_epoch - 1,
                     "The weights diverged (an evaluation in eval mode reads the BatchNorm "
                     "moving statistics): try a lower learning rate.")

    def epoch_took(self, epoch_start, epochs_left):
        """(this epoch's seconds, ETA of the rest) from the epochs timed so far."""
        seconds = time.time() - epoch_start
        self._epoch_times.append(seconds)
        return seconds, eta(self._epoch_times, epochs_left)
