"""Shared test set-up: quiet TF, deterministic seeds, helpers to run the CLI."""

import glob
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
