"""Helper script for tests/methods/nao_v2/test_nao_supernet.py (not a test module;
run it in a fresh process): NAO's single-path step on 2 logical CPUs under
MirroredStrategy (branches masked, BatchNorm statistics all-reduced) equals the
step on one device (branches switched).  Weights, momentum slots, metrics and
sampled indices must agree; prints `NAO_DISTRIBUTED all equal {...}`.  Scoring
runs the same forward pass; comparing it too would add ~35 s of tracing.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

# First: it splits the CPU into 2 devices before anything initialises them.
from replica_check import Diffs, copies, distributed, report, two_cpu_strategy  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_darts.infra import runtime  # noqa: E402
from keras_darts.methods.nao_v2.single_path import SinglePathHParams, SinglePathStep  # noqa: E402
from keras_darts.methods.nao_v2.supernet import NAOSupernet  # noqa: E402
from keras_darts.space import nao_arch  # noqa: E402

BATCH, STEPS, ATOL = 8, 3, 1e-5


def make(strategy):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        net = NAOSupernet(10, channels=4, cells_per_stage=1, input_shape=(8, 8, 3))
    # Clip 1: the clipping path is active.
    step = SinglePathStep(net, strategy, BATCH, SinglePathHParams(w_grad_clip=1.0),
                          pool_capacity=4)
    step.set_pool(nao_arch.random_pool(np.random.default_rng(0), 3), [1.0, 2.0, 3.0])
    step.start_round(10)
    return net, step


def main():
    # As the CLI sets it: TF's full Grappler makes fused-BN gradients drift by
    # up to 1.3 % on CPU (docs/tensorflow_notes.md#threads-and-grappler).
    runtime.configure_graph_optimizer("auto")
    rng = np.random.default_rng(1)
    data = [(tf.constant(rng.standard_normal((BATCH, 8, 8, 3)).astype(np.float32)),
             tf.constant(rng.integers(0, 10, BATCH).astype(np.int32))) for _ in range(STEPS + 1)]
    single_net, single = make(tf.distribute.get_strategy())
    mirrored_net, mirrored = make(two_cpu_strategy())
    for a, b in zip(single_net.variables, mirrored_net.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    diffs = Diffs(1e-4, ATOL)
    record = diffs.record
    indices = []
    for batch in data[:STEPS]:
        out_single, out_mirrored = single.step(batch), mirrored.step(distributed(mirrored, batch))
        for key in out_single:
            record(f"metric:{key}", out_single[key].numpy(), out_mirrored[key].numpy())
        indices.append(single.last_arch_index())
    for a, b in zip(single_net.trainable_variables, mirrored_net.trainable_variables):
        record("weights", a.numpy(), b.numpy())
    for a, b in zip(single.weight_optimizer.slots["momentum"],
                    mirrored.weight_optimizer.slots["momentum"]):
        record("slots:momentum", a.numpy(), b.numpy())
    for v in mirrored_net.trainable_variables:  # Every replica holds the same copy.
        held = copies(v)
        assert len(held) == 2 and np.array_equal(held[0], held[1]), v.path
    start_net, _ = make(tf.distribute.get_strategy())
    moved = sum(not np.array_equal(a.numpy(), b.numpy())
                for a, b in zip(start_net.trainable_variables, single_net.trainable_variables))
    assert moved > 0 and diffs["weights"] < ATOL
    report("NAO_DISTRIBUTED all equal", {"max_abs_diff": diffs, "indices": indices,
                                         "variables_moved": moved})


if __name__ == "__main__":
    main()
