"""Helper script for test_controller.py (not a test module; run it in a fresh process).

Splits the CPU into 2 logical devices, then trains the same tiny NAO controller
for 2 epochs on the same pool twice: on one device and under MirroredStrategy
on /cpu:0 + /cpu:1.  Weights, Adam slots and epoch metrics must agree.  The
batch of 9 splits 4 + 5 over the replicas, the last batch is smaller, one MLP
layer has dropout (its mask must not depend on the split) and a small clip
norm keeps clipping active; generation from the trained weights must agree
too.  Prints `CONTROLLER_CHECK {json}`; exit 1 on failure.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

# First: it splits the CPU into 2 devices before anything initialises them.
from replica_check import Diffs, copies, report, two_cpu_strategy  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_darts.methods.nao_v2 import controller  # noqa: E402
from keras_darts.space import nao_arch  # noqa: E402

HPARAMS = controller.ControllerHParams(
    embedding_size=4, hidden_size=8, mlp_layers=1, mlp_hidden=6, batch_size=9, expand=2,
    grad_clip=0.5, eval_every=2, heldout_fraction=0.2, weight_decay=1e-4, lr=1e-2)
EPOCHS = 2


def run(strategy, pool, targets):
    model = controller.Controller(HPARAMS, strategy=strategy, init_seed=0)
    start = [v.numpy() for v in model.variables]
    optimizer = model.make_optimizer()
    history = []
    model.train(pool, targets, seed=3, epochs=EPOCHS, optimizer=optimizer,
                on_epoch_end=lambda epoch, metrics: history.append(metrics))
    return model, optimizer, start, history


def main():
    assert len(tf.config.list_logical_devices("CPU")) == 2
    pool = nao_arch.random_pool(np.random.default_rng(0), 25)
    targets = controller.normalize_targets(np.random.default_rng(1).random(25))
    mirrored_strategy = two_cpu_strategy()
    single, single_opt, start, single_history = run(tf.distribute.get_strategy(), pool, targets)
    mirrored, mirrored_opt, mirrored_start, mirrored_history = run(mirrored_strategy, pool,
                                                                   targets)
    for a, b in zip(start, mirrored_start):
        np.testing.assert_array_equal(a, b)  # same seeded initial weights

    diffs = Diffs()  # The test applies the tolerances.
    record = diffs.record
    for a, b in zip(single.variables, mirrored.variables):
        record("weights", a.numpy(), b.numpy())
    for slot in single_opt.slot_names:
        for a, b in zip(single_opt.slots[slot], mirrored_opt.slots[slot]):
            record("slots", a.numpy(), b.numpy())
    for a, b in zip(single_history, mirrored_history):
        for key in ("loss", "mse", "nll", "pairwise_accuracy", "hamming"):
            if key in a:
                record(f"metric:{key}", a[key], b[key])
    assert int(single_opt.iterations.numpy()) == int(mirrored_opt.iterations.numpy()) > 0
    # Generation reads the mirrored weights from the cross-replica context.
    generated = [m.generate(pool[:6], exclude=pool, num_new=6, max_eta=4)
                 for m in (single, mirrored)]
    same_generation = all(np.array_equal(a, b) for a, b in zip(*generated))
    identical = all(all(np.array_equal(c[0], x) for x in c[1:])
                    for c in (copies(v) for v in mirrored.variables))
    assert all(len(copies(v)) == 2 for v in mirrored.variables)
    moved = min(float(np.abs(s - v.numpy()).max()) for s, v in zip(start, single.variables)
                if v.trainable)
    report("CONTROLLER_CHECK", {
        "max_abs_diff": diffs, "replica_copies_identical": bool(identical),
        "min_moved": moved, "same_generation": bool(same_generation),
        "num_generated": len(generated[0][0]), "epochs": len(single_history),
        "num_replicas": mirrored_strategy.num_replicas_in_sync})


if __name__ == "__main__":
    main()
