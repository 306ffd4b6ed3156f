"""Pieces every epoch loop here shares (the search and the training of a genotype):
output-directory checks, progress text, the divergence check, what a checkpoint
holds of a Keras model, restoring the newest readable checkpoint, and stopping
cleanly on SIGINT/SIGTERM."""

import math
import os
import signal
import threading

import tensorflow as tf
from absl import logging

from keras_darts.errors import ConfigError, TrainingDivergedError


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
    has_checkpoint = tf.train.latest_checkpoint(checkpoints) is not None
    if resume and not has_checkpoint:
        raise ConfigError(f"--resume: no checkpoint found in {checkpoints}")
    if not resume and (has_checkpoint or os.path.exists(finished_marker)):
        raise ConfigError(f"--output_dir {root} already holds {what}; pass --resume "
                          "to continue it or choose another --output_dir")


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


def restore_newest_readable(checkpoint, directory, check=None):
    """Restores into `checkpoint` the newest checkpoint of `directory` that reads
    completely; a corrupt one (e.g. a crash while the disk filled) falls back to
    the one before it, with a warning.  `check(path)` runs first and may raise to
    refuse a checkpoint outright (e.g. another genotype): that is not a fallback.
    Returns the path restored, or None when no checkpoint there is readable."""
    state = tf.train.get_checkpoint_state(directory)
    candidates = list(reversed(state.all_model_checkpoint_paths)) if state else []
    for path in candidates:
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
