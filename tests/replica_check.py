"""What the MirroredStrategy-equals-one-device helper scripts share
(tests/infra/distributed_check.py, tests/methods/nao_v2/*_distributed_check.py,
tests/methods/nao_v2/search_mirrored_check.py).  Importing it splits the CPU into
2 logical devices, so a script imports it before anything touches TensorFlow's
devices; each script runs in a fresh interpreter (devices cannot be split later).
"""

import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import tensorflow as tf  # noqa: E402

tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * 2)

import numpy as np  # noqa: E402


def two_cpu_strategy():
    """MirroredStrategy over the two logical CPUs."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    return strategy


def copies(variable):
    """Per-device copies of a (Keras-wrapped) mirrored variable."""
    inner = getattr(variable, "value", variable)
    values = getattr(inner, "values", None)
    return [v.numpy() for v in values] if values is not None else [inner.numpy()]


def distributed(step, batch):
    """`batch` split over the replicas by the step's own `distribute`, as the run does."""
    return next(iter(step.distribute(tf.data.Dataset.from_tensors(batch))))


class Diffs(dict):
    """The largest |single - mirrored| seen per key; with tolerances, each
    comparison also asserts closeness."""

    def __init__(self, rtol=None, atol=None):
        super().__init__()
        self.rtol, self.atol = rtol, atol

    def record(self, key, single, mirrored):
        a, b = np.asarray(single, np.float64), np.asarray(mirrored, np.float64)
        self[key] = max(self.get(key, 0.0), float(np.abs(a - b).max()))
        if self.atol is not None:
            np.testing.assert_allclose(b, a, rtol=self.rtol, atol=self.atol, err_msg=key)


def report(tag, payload):
    """The one result line the test parses: `TAG {json}`."""
    print(f"{tag} {json.dumps(payload)}")
    sys.stdout.flush()
