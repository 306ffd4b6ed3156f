"""Shared test set-up: quiet TF, deterministic seeds, helpers to run the CLI."""

import glob
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

from keras_darts.infra import runtime  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The command line's CPU threads (one per op), set before TF starts: runs inside
# the test process then compute exactly what the CLI computes.
runtime.configure_threads()


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


def rand(*shape, scale=1.0, shift=0.0):
    """Standard-normal float32 test data (seeded by `_seed`)."""
    import numpy as np

    return (np.random.standard_normal(shape) * scale + shift).astype(np.float32)


def n_trainable(layer):
    return int(sum(v.numpy().size for v in layer.trainable_variables))


def n_non_trainable(layer):
    return int(sum(v.numpy().size for v in layer.non_trainable_variables))


# A search small enough for a test: digits, C=4, 3 cells, 3 steps per epoch.
TINY_SEARCH = {"dataset": "digits", "channels": 4, "layers": 3, "nodes": 2, "batch_size": 16,
               "steps_per_epoch": 3, "eval_batch_size": 256, "log_every": 1}


def tiny_search_flags(**flags):
    """The command-line flags of TINY_SEARCH with `flags` set or added (None: dropped)."""
    return [f"--{name}={value}" for name, value in {**TINY_SEARCH, **flags}.items()
            if value is not None]


def run_module(module, *args, timeout=600):
    """Runs `python -m module args...` in a fresh process; returns CompletedProcess."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def event_tags(logdir):
    """Every summary tag written to the TensorBoard event files in `logdir`."""
    import tensorflow as tf

    tags = set()
    for path in glob.glob(os.path.join(logdir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(v.tag for v in event.summary.value)
    return tags


def start_module(module, *args):
    """Starts `python -m module args...` in the background (stderr piped, text)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def signal_after_line(proc, signum, line, delay=0.0, timeout=600):
    """Sends `signum` to `proc` (from `start_module`) `delay` s after `line`
    appears in its log; returns (exit code, whole log)."""
    import time

    log = []
    for text in proc.stderr:
        log.append(text)
        if line in text:
            time.sleep(delay)
            proc.send_signal(signum)
            break
    log.append(proc.stderr.read())
    proc.wait(timeout=timeout)
    return proc.returncode, "".join(log)


def finish(proc, timeout=900):
    """Waits for `proc` (from `start_module`); returns (exit code, stderr)."""
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def run_check_script(script, tag, *args, timeout=900):
    """Runs a helper script (e.g. a 2-replica check built on tests/replica_check.py)
    in a fresh interpreter; returns (CompletedProcess, the JSON payload of its last
    `TAG {json}` line, or None).  The script's own directory is its working one."""
    import json

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, script, *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=os.path.dirname(script))
    lines = [line for line in proc.stdout.splitlines() if line.startswith(tag + " ")]
    return proc, (json.loads(lines[-1][len(tag) + 1:]) if lines else None)


def check_log(proc):
    """A failed helper script's output, for an assertion message."""
    return f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-6000:]}"
