"""NAO's controller (docs/methods/nao_v2.md#controller): valid decoding, an autoencoder
that learns to reconstruct, a predictor that learns to rank, gradient-ascent
generation, bit-identical resume, the ranking metrics; and (slow, fresh process)
MirroredStrategy equal to one device."""

import os

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf
from conftest import check_log, run_check_script

from keras_darts.methods.nao_v2 import controller
from keras_darts.space import nao_arch

pytestmark = pytest.mark.xdist_group("nao_controller")
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      "controller_distributed_check.py")
# Small sizes where the sizes do not matter; NAO-V2's training rules otherwise.
TINY = controller.ControllerHParams(embedding_size=8, hidden_size=16, batch_size=30, expand=2,
                                    epochs=100, eval_every=50, heldout_fraction=0.25, lr=1e-2)


def sep_conv_fraction(archs):
    """A synthetic score with a known order: the fraction of sep-conv branches."""
    archs = np.asarray(archs)
    return ((archs[:, 1::2] <= 1).sum(axis=1) / (nao_arch.ARCH_LENGTH // 2)).astype(np.float32)


def assert_valid_tokens(tokens):
    tokens = np.asarray(tokens)
    assert tokens.shape[1:] == (nao_arch.ARCH_LENGTH,)
    for t in range(nao_arch.ARCH_LENGTH):
        low, high = nao_arch.token_range(t)
        assert ((tokens[:, t] >= low) & (tokens[:, t] < high)).all(), t


@pytest.fixture(scope="module")
def trained():
    """A tiny controller trained on 120 archs scored by `sep_conv_fraction` (~10 s)."""
    pool = nao_arch.random_pool(np.random.default_rng(0), 120)
    model = controller.Controller(TINY, init_seed=0)
    train_archs, train_targets, _, _ = model.split(pool, sep_conv_fraction(pool), seed=1)
    before = controller.hamming_distance(model.reconstruct(train_archs), train_archs)
    history = []
    model.train(pool, sep_conv_fraction(pool), seed=1,
                on_epoch_end=lambda epoch, metrics: history.append(metrics))
    return {"model": model, "pool": pool, "train_archs": train_archs, "history": history,
            "hamming_before": before}


def test_untrained_decoding_is_always_valid():
    model = controller.Controller(TINY, init_seed=3)
    archs = nao_arch.random_pool(np.random.default_rng(1), 300)
    assert_valid_tokens(model._reconstruct(tf.constant(controller._tokens(archs))).numpy())
    # Far-moved encodings (eta 50) and arbitrary unit vectors decode validly too.
    assert_valid_tokens(model._ascend(tf.constant(controller._tokens(archs)), 50.0).numpy())
    outputs = tf.math.l2_normalize(tf.random.stateless_normal([200, controller.STEPS, 16],
                                                              [1, 2]), axis=-1)
    tokens = model.network.decode_greedy(outputs, controller._arch_embedding(outputs)).numpy()
    assert_valid_tokens(tokens)
    assert len({tuple(t) for t in tokens}) > 1  # Not one constant answer.
    for t in tokens[:20]:
        nao_arch.from_tokens(t)


def test_autoencoder_learns_to_reconstruct(trained):
    archs = trained["train_archs"]
    assert trained["hamming_before"] > 15
    assert controller.hamming_distance(trained["model"].reconstruct(archs), archs) < 3
    # The held-out metric of the round falls as well.
    evaluated = [m for m in trained["history"] if "hamming" in m]
    assert [m["epoch"] for m in evaluated] == [50, 100]
    assert evaluated[-1]["hamming"] < 5
    assert trained["history"][-1]["loss"] < trained["history"][0]["loss"] / 10


def test_predictor_learns_the_synthetic_order(trained):
    assert trained["history"][-1]["pairwise_accuracy"] > 0.75  # held-out 25 %
    fresh = nao_arch.random_pool(np.random.default_rng(5), 150, exclude=trained["pool"])
    accuracy = controller.pairwise_accuracy(sep_conv_fraction(fresh),
                                            trained["model"].predict(fresh))
    assert accuracy > 0.75


def test_gradient_ascent_generates_new_better_archs(trained):
    model, pool = trained["model"], trained["pool"]
    seeds = trained["train_archs"][:40]
    archs, etas = model.generate(seeds, exclude=pool, num_new=40, max_eta=20)
    assert archs.shape == (40, nao_arch.ARCH_LENGTH) and etas.shape == (40,)
    keys = {nao_arch.key(a) for a in archs}
    assert len(keys) == 40 and not keys & {nao_arch.key(a) for a in pool}
    for arch in archs:
        nao_arch.validate(arch)
    assert etas.min() >= 1 and (np.diff(etas) >= 0).all()
    assert model.predict(archs).mean() > model.predict(seeds).mean()
    assert sep_conv_fraction(archs).mean() > sep_conv_fraction(seeds).mean()
    again, again_etas = model.generate(seeds, exclude=pool, num_new=40, max_eta=20)
    np.testing.assert_array_equal(again, archs)
    np.testing.assert_array_equal(again_etas, etas)
    # eta stops at max_eta: a budget one round cannot fill returns fewer.
    few, few_etas = model.generate(seeds, exclude=pool, num_new=1000, max_eta=1)
    assert 0 < len(few) <= len(seeds) and set(few_etas.tolist()) == {1}


@pytest.mark.parametrize("augmentation", ["expand", "swap"])
def test_resume_from_a_checkpoint_is_bit_identical(tmp_path, augmentation):
    # One MLP layer: the stateless dropout is part of the replay.
    hparams = controller.ControllerHParams(
        embedding_size=4, hidden_size=8, mlp_layers=1, mlp_hidden=6, batch_size=8, expand=2,
        eval_every=2, heldout_fraction=0.2, augmentation=augmentation, weight_decay=1e-4)
    pool = nao_arch.random_pool(np.random.default_rng(2), 20)
    targets = controller.normalize_targets(sep_conv_fraction(pool))
    # One straight 4-epoch run that also writes a checkpoint after epoch 2.
    straight = controller.Controller(hparams, init_seed=0)
    start = [v.numpy() for v in straight.variables]
    optimizer = straight.make_optimizer()
    prefix = str(tmp_path / "ckpt")
    saver = tf.train.Checkpoint(**straight.checkpoint_state(optimizer))
    final = straight.train(pool, targets, seed=4, epochs=4, optimizer=optimizer,
                           on_epoch_end=lambda epoch, m: epoch == 2 and not saver.write(prefix))

    resumed = controller.Controller(hparams, init_seed=9)  # other weights until restored
    assert not np.array_equal(resumed.variables[0].numpy(), start[0])
    optimizer = resumed.make_optimizer()
    tf.train.Checkpoint(**resumed.checkpoint_state(optimizer)).read(prefix).assert_consumed()
    copies = hparams.expand if augmentation == "expand" else 1
    assert int(optimizer.iterations.numpy()) == 2 * (16 * copies // 8)  # 2 epochs' batches
    # Epoch 3, stopped by the callback, then epoch 4 in another call.
    stopped = resumed.train(pool, targets, seed=4, epochs=4, start_epoch=2, optimizer=optimizer,
                            on_epoch_end=lambda epoch, m: epoch == 3)
    assert stopped["epoch"] == 3
    resumed_final = resumed.train(pool, targets, seed=4, epochs=4, start_epoch=3,
                                  optimizer=optimizer)
    assert resumed_final == final and "pairwise_accuracy" in final
    for a, b, s in zip(straight.variables, resumed.variables, start):
        assert np.array_equal(a.numpy(), b.numpy()), a.path
        assert not a.trainable or not np.array_equal(a.numpy(), s), a.path  # training moved it


def test_pairwise_accuracy_matches_kendall_tau_without_ties():
    rng = np.random.default_rng(0)
    for _ in range(5):
        targets, predictions = rng.random(30), rng.random(30)
        tau = scipy.stats.kendalltau(targets, predictions).statistic
        assert np.isclose(2 * controller.pairwise_accuracy(targets, predictions) - 1, tau)
    assert controller.pairwise_accuracy([1, 2, 3], [3, 2, 1]) == 0.0


def test_pairwise_accuracy_counts_target_ties_as_greater_or_equal():
    # Pair (0, 1) is tied in the target: it agrees iff predictions[0] >= predictions[1].
    assert controller.pairwise_accuracy([1, 1, 2], [0.5, 0.4, 0.9]) == 1.0
    assert controller.pairwise_accuracy([1, 1, 2], [0.4, 0.5, 0.9]) == pytest.approx(2 / 3)
    assert controller.pairwise_accuracy([1, 1], [0.3, 0.3]) == 1.0
    with pytest.raises(ValueError):
        controller.pairwise_accuracy([1], [1])


def test_normalize_targets_and_hamming_distance():
    np.testing.assert_allclose(controller.normalize_targets([0.5, 0.7, 0.6]), [0, 1, 0.5],
                               atol=1e-6)
    np.testing.assert_array_equal(controller.normalize_targets([0.3] * 4), [0.5] * 4)
    a = nao_arch.random_pool(np.random.default_rng(3), 2)
    b = a.copy()
    b[0, :3] = (b[0, :3] + 1) % 2
    assert controller.hamming_distance(b, a) == 1.5


def test_hparams_presets_and_checks():
    assert controller.PRESETS["nao_v2"] == controller.ControllerHParams()
    v2, ws = controller.NAO_V2, controller.NAO_WS
    assert (v2.embedding_size, v2.hidden_size, v2.mlp_layers, v2.weight_decay) == (32, 64, 0, 0)
    assert (ws.embedding_size, ws.hidden_size, ws.mlp_layers, ws.mlp_hidden) == (48, 96, 3, 200)
    assert ws.weight_decay == 1e-4 and ws.augmentation == "swap"
    with pytest.raises(ValueError, match="2 x embedding_size"):
        controller.ControllerHParams(embedding_size=8, hidden_size=8)
    with pytest.raises(ValueError, match="augmentation"):
        controller.ControllerHParams(augmentation="flip")


@pytest.mark.slow
def test_mirrored_training_equals_one_device():
    proc, result = run_check_script(SCRIPT, "CONTROLLER_CHECK", timeout=600)
    assert proc.returncode == 0 and result is not None, check_log(proc)
    assert result["num_replicas"] == 2
    assert result["replica_copies_identical"] is True
    assert result["min_moved"] > 0.0
    assert result["same_generation"] is True and result["num_generated"] > 0
    for key in ("weights", "slots", "metric:loss"):
        assert result["max_abs_diff"][key] <= 1e-5, (key, result["max_abs_diff"])
