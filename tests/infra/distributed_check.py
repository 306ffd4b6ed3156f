"""Helper script for tests/infra/test_distributed.py (not a test module; run it in a fresh process).

Splits the CPU into 2 logical devices, then runs the same search steps on the
same global batches with a tiny supernet twice: once under the default
strategy (one device) and once under MirroredStrategy on /cpu:0 + /cpu:1.
Alphas, weights, BN moving statistics, optimizer slots, the returned metrics
and an evaluation must agree.  Argument: the architecture gradient order
(`first` by default, or `second`), `sharp` (first order over sharpDARTS's op
family with Max-W mixing), `grid` (first order over HyperCuboid's grid
supernet, Max-W, the default skipping threshold), or `train`: the same
comparison for the
training step of a genotype's network (`train_step.NetworkTraining`, auxiliary
head and synchronised BatchNorm included).  Prints one line
`DISTRIBUTED_CHECK {json}` and exits 0 on success; an assertion error (exit
code 1) otherwise.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# First: it splits the CPU into 2 devices before anything initialises them.
from replica_check import Diffs, copies, distributed, report, two_cpu_strategy  # noqa: E402

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
import numpy as np  # noqa: E402

from keras_darts.evaluation.networks import NetworkCIFAR  # noqa: E402
from keras_darts.evaluation.train_step import NetworkTraining, TrainHParams  # noqa: E402
from keras_darts.infra import runtime  # noqa: E402
from keras_darts.methods.bilevel import BilevelSearch, SearchHParams  # noqa: E402
from keras_darts.space.darts_cell import darts_cell  # noqa: E402
from keras_darts.space.grid_network import GridNetwork  # noqa: E402
from keras_darts.space.hypercuboid import GridSpace  # noqa: E402
from keras_darts.space.supernet import SearchNetwork  # noqa: E402

GLOBAL_BATCH = 8
# A reduced op set keeps the code paths that matter here (BN after a pool, the
# stride-2 FactorizedReduce skip, a depthwise + pointwise conv with BN, `none`) but
# traces faster: the mirrored step traces ~10x slower than the single-device one
# (each synchronised BatchNorm call adds a cross-replica all-reduce).
PRIMITIVES = ("none", "max_pool_3x3", "skip_connect", "dil_conv_3x3")
STEPS = 2
MODE = sys.argv[1] if len(sys.argv) > 1 else "first"
ORDER = "first" if MODE in ("sharp", "grid") else MODE
# sharp: the same op names built by the sharp family (SharpSepConv, a choke op).
SHARP_PRIMITIVES = ("none", "max_pool_3x3", "skip_connect", "dil_choke_conv_3x3")
RTOL, ATOL = 1e-4, 1e-5


def make(strategy, hparams):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        if MODE == "grid":  # Thresholded ops: tf.cond on one device, masked on two.
            net = GridNetwork(3, GridSpace((2, 4), 1), input_shape=(8, 8, 3), mixing="max_w")
        elif MODE == "sharp":
            space = darts_cell(SHARP_PRIMITIVES, 2, op_family="sharp")
            net = SearchNetwork(3, channels=4, num_layers=3, space=space, mixing="max_w",
                                input_shape=(8, 8, 3))
        else:
            net = SearchNetwork(3, channels=4, num_layers=3, num_nodes=2,
                                primitives=PRIMITIVES, input_shape=(8, 8, 3))
    search = BilevelSearch(net, strategy, GLOBAL_BATCH, hparams, order=ORDER)
    return net, search


def batches(seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(2 * STEPS + 1):
        x = rng.standard_normal((GLOBAL_BATCH, 8, 8, 3)).astype(np.float32)
        y = rng.integers(0, 3, GLOBAL_BATCH).astype(np.int32)
        out.append((tf.constant(x), tf.constant(y)))
    return out


def main():
    logical = tf.config.list_logical_devices("CPU")
    assert len(logical) == 2, logical
    # Default w_grad_clip 5 and a smaller one so the clip path is active in both runs.
    hparams = SearchHParams(w_grad_clip=1.0)
    data = batches(0)

    single_net, single = make(tf.distribute.get_strategy(), hparams)
    mirrored_strategy = two_cpu_strategy()
    mirrored_net, mirrored = make(mirrored_strategy, hparams)
    mirrored_net.set_weights(single_net.get_weights())  # identical start, explicitly
    for a, b in zip(single_net.weights, mirrored_net.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    diffs = Diffs(RTOL, ATOL)
    record = diffs.record
    grad_norms = []
    for step in range(STEPS):
        train, val = data[2 * step], data[2 * step + 1]
        out_single = single.step(train, val)
        out_mirrored = mirrored.step(distributed(mirrored, train), distributed(mirrored, val))
        for key in out_single:
            record(f"metric:{key}", out_single[key].numpy(), out_mirrored[key].numpy())
        grad_norms.append(float(out_single["grad_norm"]))

    for a, b in zip(single_net.arch_variables, mirrored_net.arch_variables):
        record("alphas", a.numpy(), b.numpy())
    for a, b in zip(single_net.weight_variables, mirrored_net.weight_variables):
        record("weights", a.numpy(), b.numpy())
    assert len(single_net.non_trainable_variables) > 0
    for a, b in zip(single_net.non_trainable_variables, mirrored_net.non_trainable_variables):
        record("bn_moving_stats", a.numpy(), b.numpy())
    for opt_s, opt_m in ((single.weight_optimizer, mirrored.weight_optimizer),
                         (single.arch_optimizer, mirrored.arch_optimizer)):
        for slot in opt_s.slot_names:
            for a, b in zip(opt_s.slots[slot], opt_m.slots[slot]):
                record(f"slots:{opt_s.name}", a.numpy(), b.numpy())
        assert int(opt_s.iterations.numpy()) == int(opt_m.iterations.numpy()) == STEPS

    # Training moved everything (the comparison is not vacuous).
    assert diffs["alphas"] < ATOL
    start_net, _ = make(tf.distribute.get_strategy(), hparams)
    moved = [float(np.abs(a.numpy() - b.numpy()).max())
             for a, b in zip(start_net.trainable_variables, single_net.trainable_variables)]
    assert min(moved) > 0.0, "some variable did not change during the steps"

    # Every replica holds the same copy of every variable.
    copies_identical = True
    for v in mirrored_net.weights:
        held = copies(v)
        assert len(held) == 2, (v.path, len(held))
        copies_identical &= all(np.array_equal(held[0], c) for c in held[1:])
    assert copies_identical, "replica copies of a mirrored variable diverged"

    # Eval-mode evaluation over the global batch (moving statistics) agrees too.
    test = data[-1]
    eval_single = single.evaluate(test)
    eval_mirrored = mirrored.evaluate(distributed(mirrored, test))
    for name, a, b in zip(("loss_sum", "correct", "count"), eval_single, eval_mirrored):
        record(f"eval:{name}", a.numpy(), b.numpy())
    assert float(eval_mirrored[2].numpy()) == GLOBAL_BATCH

    report("DISTRIBUTED_CHECK", {
        "max_abs_diff": diffs, "replica_copies_identical": bool(copies_identical),
        "grad_norms": grad_norms, "num_replicas": mirrored_strategy.num_replicas_in_sync,
        "order": ORDER, "mode": MODE, "op_family": single_net.space.op_family,
        "mixing": single_net.mixing})


def make_training(strategy):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        # 32x32, 3 cells: the auxiliary head (on cell 2, 8x8) is part of the step.
        net = NetworkCIFAR("DARTS_V2", num_classes=3, channels=4, num_layers=3,
                           input_shape=(32, 32, 3))
    training = NetworkTraining(net, strategy, GLOBAL_BATCH, TrainHParams(grad_clip=1.0))
    training.set_lr(0.05)
    return net, training


def train_main():
    """The training step: 2 replicas equal one device.  Drop path is off: its
    masks differ per replica by design (each replica folds in its id).  Graph
    optimisation as the CLI sets it: with TF's full Grappler on CPU the fused
    BatchNorm gradients of the single-device step differ from eager ones by up
    to 1.3 % (BUILD_NOTES.md), far above the float noise compared here."""
    runtime.configure_graph_optimizer("auto")
    rng = np.random.default_rng(0)
    data = [(tf.constant(rng.standard_normal((GLOBAL_BATCH, 32, 32, 3)).astype(np.float32)),
             tf.constant(rng.integers(0, 3, GLOBAL_BATCH).astype(np.int32)))
            for _ in range(STEPS + 1)]
    single_net, single = make_training(tf.distribute.get_strategy())
    mirrored_strategy = two_cpu_strategy()
    mirrored_net, mirrored = make_training(mirrored_strategy)
    mirrored_net.set_weights(single_net.get_weights())
    diffs = Diffs(RTOL, ATOL)
    record = diffs.record
    for batch in data[:STEPS]:
        out_single, out_mirrored = single.step(batch), mirrored.step(distributed(mirrored, batch))
        for key in out_single:
            record(f"metric:{key}", out_single[key].numpy(), out_mirrored[key].numpy())
    for a, b in zip(single_net.trainable_variables, mirrored_net.trainable_variables):
        record("weights", a.numpy(), b.numpy())
    for a, b in zip(single_net.non_trainable_variables, mirrored_net.non_trainable_variables):
        if a.dtype == tf.float32:  # BN moving statistics (not the drop-path seed).
            record("bn_moving_stats", a.numpy(), b.numpy())
    for a, b in zip(single.optimizer.slots["momentum"], mirrored.optimizer.slots["momentum"]):
        record("slots:momentum", a.numpy(), b.numpy())
    eval_single = single.evaluate(data[-1])
    eval_mirrored = mirrored.evaluate(distributed(mirrored, data[-1]))
    for name, a, b in zip(("loss_sum", "correct", "count"), eval_single, eval_mirrored):
        record(f"eval:{name}", a.numpy(), b.numpy())
    start_net, _ = make_training(tf.distribute.get_strategy())
    moved = min(float(np.abs(a.numpy() - b.numpy()).max())
                for a, b in zip(start_net.trainable_variables, single_net.trainable_variables))
    assert moved > 0.0, "some weight did not change during the steps"
    report("DISTRIBUTED_CHECK", {
        "max_abs_diff": diffs, "num_replicas": mirrored_strategy.num_replicas_in_sync,
        "order": "train"})


if __name__ == "__main__":
    train_main() if ORDER == "train" else main()
