"""Training a genotype from scratch: the CLI end to end, resume, the recipe's pieces
(lr schedules, cutout, whole train split), flagfiles, NaN handling and bad input."""

import dataclasses
import glob
import json
import math
import os
import signal

import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from conftest import REPO, event_tags, run_module

from keras_darts import data as data_lib
from keras_darts.cli import flags as cli_flags
from keras_darts.config import TrainConfig
from keras_darts.errors import (ConfigError, DataError, GenotypeError, Interrupted,
                                TrainingDivergedError)
from keras_darts.evaluation.train_step import NetworkTraining, epoch_lr
from keras_darts.runs.train_run import TrainRun, run_train
from keras_darts.space import genotype as genotype_lib

# 32x32 so that the auxiliary head (on cell 2 of 3, at 8x8) is part of the run.
TINY = ["--genotype=DARTS_V2", "--dataset=digits", "--image_size=32", "--channels=4",
        "--layers=3", "--batch_size=16", "--steps_per_epoch=3", "--eval_batch_size=360",
        "--cutout=8", "--log_every=1"]
TINY_CONFIG = dict(genotype="DARTS_V2", channels=4, layers=3, image_size=16, auxiliary=False,
                   batch_size=16, steps_per_epoch=2, eval_batch_size=360, cutout=0,
                   log_every=0)


# ---------------------------------------------------------------------------
# The CLI end to end
# ---------------------------------------------------------------------------

@pytest.mark.slow
def test_train_end_to_end_then_resume(tmp_path):
    out = str(tmp_path / "run")
    first = run_module("keras_darts.train", *TINY, "--epochs=1", f"--output_dir={out}")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "epoch 1/1" in first.stderr and "ETA" in first.stderr
    results = json.load(open(os.path.join(out, "results.json")))
    assert 0.0 <= results["test_accuracy"] <= 1.0 and results["num_test"] == 360
    assert results["weight_params"] < results["weight_params_with_auxiliary"]
    assert genotype_lib.load(os.path.join(out, "genotype.json")) == genotype_lib.DARTS_V2
    assert json.load(open(os.path.join(out, "dataset.json")))["image_shape"] == [32, 32, 1]
    assert os.path.exists(os.path.join(out, "checkpoints", "ckpt-3.index"))  # Step 3.
    assert {"train/loss", "train/accuracy", "train/grad_norm", "lr", "drop_path_prob",
            "eval/test_loss", "eval/test_accuracy"} <= event_tags(os.path.join(out, "tensorboard"))

    again = run_module("keras_darts.train", *TINY, "--epochs=1", f"--output_dir={out}")
    assert again.returncode == 2 and "already holds a training run" in again.stderr

    other = run_module("keras_darts.train", *TINY, "--epochs=2", "--resume", "--channels=6",
                       "--genotype=DARTS_V1", f"--output_dir={out}")
    assert other.returncode == 2 and "--channels: saved 4, now 6" in other.stderr

    resumed = run_module("keras_darts.train", *TINY, "--epochs=2", "--resume",
                         f"--output_dir={out}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr and "epoch 2/2" in resumed.stderr
    assert "epoch 1/2" not in resumed.stderr  # Epoch 1 was not run again.
    assert os.path.exists(os.path.join(out, "checkpoints", "ckpt-6.index"))
    assert json.load(open(os.path.join(out, "results.json")))["epochs"] == 2


def test_bad_genotype_on_the_command_line_exits_before_writing(tmp_path):
    out = tmp_path / "run"
    result = run_module("keras_darts.train", *TINY, "--genotype=DARTS_V9", "--epochs=1",
                        f"--output_dir={out}", timeout=300)
    assert result.returncode == 2
    assert "unknown genotype name 'DARTS_V9'; known names: " in result.stderr
    assert not out.exists()


def test_resume_restores_every_weight_and_refuses_another_genotype(tmp_path):
    out = tmp_path / "run"
    results = run_train(TrainConfig(output_dir=str(out), epochs=1, **TINY_CONFIG))
    # A resumed run's network reproduces the test accuracy measured in memory at the end.
    run = TrainRun(TrainConfig(output_dir=str(out), epochs=2, **TINY_CONFIG), resume=True)
    run.prepare()
    run.build()
    run.restore()
    assert run.evaluate(run.data.test) == pytest.approx(
        (results["test_loss"], results["test_accuracy"]), rel=1e-6)
    config = TrainConfig(output_dir=str(out), epochs=2, **{**TINY_CONFIG, "genotype": "DARTS_V1"})
    with pytest.raises(ConfigError, match="--genotype: saved 'DARTS_V2', now 'DARTS_V1'"):
        run_train(config, resume=True)
    (out / "config.json").write_text(config.to_json())  # A config edited by hand.
    with pytest.raises(ConfigError, match="trains a different genotype"):
        run_train(config, resume=True)
    TrainConfig(output_dir=str(out), epochs=1, **TINY_CONFIG).save(str(out / "config.json"))
    assert sorted(os.listdir(out / "checkpoints")) == ["checkpoint", "ckpt-2.data-00000-of-00001",
                                                       "ckpt-2.index"]


def test_checkpoint_readers_fall_back_past_a_damaged_newest_checkpoint(tmp_path, caplog):
    from keras_darts.runs.train_run import restore_run

    out = tmp_path / "run"
    run_train(TrainConfig(output_dir=str(out), epochs=2, **TINY_CONFIG))
    checkpoints = out / "checkpoints"
    (checkpoints / "ckpt-4.index").unlink()  # The newest (2 steps per epoch), half deleted.
    assert tf.train.latest_checkpoint(str(checkpoints)) is None  # TF's answer: nothing.
    assert restore_run(str(out)).checkpoint.endswith("ckpt-2")  # What an export reads.
    run = TrainRun(TrainConfig(output_dir=str(out), epochs=3, **TINY_CONFIG), resume=True)
    run.prepare()
    run.build()
    assert run.restore().endswith("ckpt-2") and int(run.epoch.numpy()) == 1
    data = checkpoints / "ckpt-2.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:100])  # Now the only one left is truncated.
    with caplog.at_level("WARNING"):
        with pytest.raises(ConfigError, match="no readable checkpoint in"):
            restore_run(str(out))
    assert "ckpt-2 is unreadable" in caplog.text


def _final_weights(out):
    reader = tf.train.load_checkpoint(str(out / "checkpoints"))
    return {k: reader.get_tensor(k) for k in sorted(reader.get_variable_to_shape_map())
            if k.startswith("network_weights/") or k.startswith("optimizer/")}


def test_sigterm_mid_epoch_then_resume_is_bit_identical(tmp_path, monkeypatch):
    """SIGTERM saves after the current step and stops (errors.Interrupted); the
    resumed run continues mid-epoch and ends exactly where an uninterrupted one
    does (weights, BN statistics, drop-path seed, momentum), and a corrupt newest
    checkpoint falls back to the one before it."""
    config = dict(epochs=2, **{**TINY_CONFIG, "steps_per_epoch": 3, "drop_path_prob": 0.2})
    run_train(TrainConfig(output_dir=str(tmp_path / "reference"), **config))

    real_step = NetworkTraining.step
    calls = {"n": 0}

    def step_then_term(self, batch):
        calls["n"] += 1
        if calls["n"] == 5:  # Arrives during step 5 = epoch 2, step 2.
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(self, batch)

    out = tmp_path / "interrupted"
    monkeypatch.setattr(NetworkTraining, "step", step_then_term)
    with pytest.raises(Interrupted, match="stopped by signal 15 at step 5, checkpoint saved"):
        run_train(TrainConfig(output_dir=str(out), **config))
    monkeypatch.setattr(NetworkTraining, "step", real_step)
    assert tf.train.latest_checkpoint(str(out / "checkpoints")).endswith("ckpt-5")
    run_train(TrainConfig(output_dir=str(out), **config), resume=True)
    reference, resumed = _final_weights(tmp_path / "reference"), _final_weights(out)
    assert reference.keys() == resumed.keys() and len(reference) > 50
    for key in reference:
        np.testing.assert_array_equal(resumed[key], reference[key], err_msg=key)

    # A corrupt newest checkpoint (ckpt-6): --resume falls back to ckpt-5 with a warning.
    data_file = glob.glob(str(out / "checkpoints" / "ckpt-6.data-*"))[0]
    with open(data_file, "r+b") as f:
        f.truncate(100)
    run = TrainRun(TrainConfig(output_dir=str(out), **config), resume=True)
    run.prepare()
    run.build()
    run.restore()
    assert int(run.global_step.numpy()) == 5


# ---------------------------------------------------------------------------
# Bad input: nothing written
# ---------------------------------------------------------------------------

def _genotype_file(tmp_path, mutate):
    data = genotype_lib.DARTS_V2.to_json_dict()
    mutate(data)
    path = tmp_path / "genotype.json"
    path.write_text(json.dumps(data))
    return str(path)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["normal"].__setitem__(1, ["conv_7x7", 1]), "uses unknown op 'conv_7x7'"),
    (lambda d: d["normal"].pop(), "2 [op, input] pairs per node"),
    (lambda d: d["reduce"].__setitem__(4, ["max_pool_3x3", 4]),
     "reduce[4] (node 2) has input 4; it must be 0..3"),
    (lambda d: d.pop("normal_concat"), "missing key(s) ['normal_concat']"),
])
def test_bad_genotype_file_is_a_clear_error(tmp_path, mutate, message):
    out = tmp_path / "run"
    config = TrainConfig(output_dir=str(out), epochs=1,
                         **{**TINY_CONFIG, "genotype": _genotype_file(tmp_path, mutate)})
    with pytest.raises(GenotypeError) as err:
        run_train(config)
    assert message in str(err.value) and "genotype.json" in str(err.value)
    assert not out.exists()


@pytest.mark.parametrize("changes, error, message", [
    ({"image_size": 0, "auxiliary": True}, ConfigError, "auxiliary head: cell 2 outputs 2x2"),
    ({"lr_min": 1.0}, ConfigError, "--lr_min (1.0) must not exceed --lr"),
    ({"lr_schedule": "cosine_power", "lr_power": 0.5}, ConfigError,
     "--lr_power must be >= 1.0, got 0.5"),
    ({"lr_schedule": "cosine_power", "lr_warmup_epochs": 1}, ConfigError,
     "--lr_warmup_epochs must be >= 0 and below --epochs (1), got 1"),
    ({"lr_power": 3.0}, ConfigError, "--lr_power is an option of --lr_schedule=cosine_power"),
    # DARTS's ops have no middle width: --mid_channels would be ignored.
    ({"mid_channels": 16}, ConfigError, "op family 'darts' takes no option(s) ['mid_channels']"),
    ({"batch_size": 5000}, DataError, "batch size is 5000"),
    ({"network": "imagenet"}, DataError, "image size 16 is too small"),
])
def test_bad_settings_fail_before_writing(tmp_path, changes, error, message):
    out = tmp_path / "run"
    with pytest.raises(error) as err:
        run_train(TrainConfig(output_dir=str(out), epochs=1, **{**TINY_CONFIG, **changes}))
    assert message in str(err.value)
    assert not out.exists()


def test_cosine_power_flags_reach_the_config_and_are_refused_under_cosine(tmp_path):
    out = tmp_path / "run"
    fv = flags.FlagValues()
    cli_flags.define_train_flags(fv)
    fv(["train", "--genotype=DARTS_V2", "--lr_schedule=cosine", "--lr_power=3", "--epochs=1",
        f"--output_dir={out}"])
    config = cli_flags.to_train_config(fv)
    assert (config.lr_schedule, config.lr_power, config.lr_warmup_epochs) == ("cosine", 3.0, 0)
    with pytest.raises(ConfigError, match="--lr_schedule=cosine would ignore it"):
        run_train(dataclasses.replace(config, **TINY_CONFIG))
    assert not out.exists()


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    config = TrainConfig(output_dir=str(tmp_path / "run"), epochs=3, **TINY_CONFIG)
    real_step = NetworkTraining.step
    calls = {"n": 0}

    def step_then_nan(self, batch):
        calls["n"] += 1
        metrics = dict(real_step(self, batch))
        if calls["n"] == 3:  # The first step of epoch 2.
            metrics["loss"] = tf.constant(float("nan"))
        return metrics

    monkeypatch.setattr(NetworkTraining, "step", step_then_nan)
    with pytest.raises(TrainingDivergedError, match="loss became nan at epoch 2, step 1"):
        run_train(config)
    checkpoints = os.path.join(config.output_dir, "checkpoints")
    assert tf.train.latest_checkpoint(checkpoints).endswith("ckpt-2")  # Epoch 1 = 2 steps.
    assert not os.path.exists(os.path.join(config.output_dir, "results.json"))


# ---------------------------------------------------------------------------
# The recipe's pieces
# ---------------------------------------------------------------------------

def test_lr_schedules_step_at_the_start_of_each_epoch():
    # docs/evaluation.md#learning-rate-schedule: cosine to 0 over 600 epochs, epoch e uses
    # the value for e + 1.
    assert epoch_lr("cosine", 0, 600, 0.025) == pytest.approx(
        0.0125 * (1 + math.cos(math.pi / 600)))
    assert epoch_lr("cosine", 299, 600, 0.025) == pytest.approx(0.0125)
    assert epoch_lr("cosine", 599, 600, 0.025) == pytest.approx(0.0, abs=1e-12)
    # ImageNet: x 0.97 per epoch.
    assert epoch_lr("exponential", 0, 250, 0.1, decay=0.97) == pytest.approx(0.097)
    assert epoch_lr("exponential", 9, 250, 0.1, decay=0.97) == pytest.approx(0.1 * 0.97**10)
    with pytest.raises(ConfigError, match="unknown lr schedule 'step'"):
        epoch_lr("step", 0, 10, 0.1)
    # docs/schedules.md#cosine-power-annealing: the CIFAR recipe of sharpDARTS.
    assert epoch_lr("cosine_power", 999, 2000, 0.025, 1e-8, power=2, warmup_epochs=5) == \
        pytest.approx(0.0104036, abs=1e-6)


def test_cutout_zeroes_one_clipped_square_on_every_channel():
    image = tf.ones((32, 32, 3))
    sizes = []
    for i in range(200):
        out = data_lib.cutout(image, tf.constant([7, i], tf.int64), 16).numpy()
        zero = out == 0.0
        assert np.array_equal(zero[..., 0], zero[..., 1]) and np.array_equal(zero[..., 0],
                                                                             zero[..., 2])
        rows, cols = np.nonzero(zero[..., 0].any(axis=1))[0], np.nonzero(zero[..., 0].any(0))[0]
        # One solid rectangle: every zero row/column contiguous, the block fully zero.
        assert np.array_equal(rows, np.arange(rows[0], rows[-1] + 1))
        assert np.array_equal(cols, np.arange(cols[0], cols[-1] + 1))
        assert zero[..., 0].sum() == len(rows) * len(cols)
        # Centre c uniform in 0..31: rows max(c-8, 0) .. min(c+8, 32) - 1, i.e. 8 to 16 of them.
        assert 8 <= len(rows) <= 16 and 8 <= len(cols) <= 16
        assert len(rows) == 16 or rows[0] == 0 or rows[-1] == 31
        sizes.append(len(rows))
    # Clipped (fewer than 16 rows) iff c < 8 or c > 24: probability 15/32.
    assert abs(np.mean(np.array(sizes) < 16) - 15 / 32) < 0.12


def test_train_data_uses_the_whole_train_split_with_cutout():
    data = data_lib.load_train_data("digits", 32, cutout=4, seed=1)
    assert data.info.num_train == 1797 - data_lib.DIGITS_TEST_SIZE
    assert data.steps_per_epoch(32) == data.info.num_train // 32
    images, labels = next(iter(data.train))
    assert images.shape == (32, 8, 8, 1) and labels.shape == (32,)
    # Normalised pixels are never exactly 0 here (mean > 0), so exact zeros are cutout's:
    # at least its smallest clipped square (2x2) in every image.
    zeros = np.sum(images.numpy() == 0.0, axis=(1, 2, 3))
    assert np.all(zeros >= 4)
    test_images, _ = next(iter(data.test))
    assert not np.any(test_images.numpy() == 0.0)  # No cutout in testing.
    again = data_lib.DatasetInfo.from_json_dict(json.loads(json.dumps(data.info.to_json_dict())))
    assert again == data.info
    with pytest.raises(DataError, match="cutout size must be >= 0"):
        data_lib.load_train_data("digits", 32, cutout=-1)


def test_validation_portion_trains_on_the_rest_and_evaluates_on_the_held_out_part(tmp_path):
    whole = data_lib.load_train_data("digits", 32)
    held = data_lib.load_train_data("digits", 32, validation_portion=0.25)
    n = whole.num_train
    assert (held.num_train, held.info.num_search_val) == (math.floor(n * 0.75), n - held.num_train)
    assert held.steps_per_epoch(32) == held.num_train // 32
    assert (whole.evaluated_on, held.evaluated_on) == ("test", "validation")
    # The evaluation images are the train split's last quarter, not the test split.
    search = data_lib.load_search_data("digits", 32, train_portion=0.75)
    first = lambda ds: next(iter(ds))[0].numpy()
    np.testing.assert_array_equal(first(held.test), first(search.search_val_eval))
    assert not np.array_equal(first(held.test)[:8], first(whole.test)[:8])
    with pytest.raises(DataError, match="--validation_portion must be in"):
        data_lib.load_train_data("digits", 32, validation_portion=1.0)
    with pytest.raises(DataError, match="does not work with --augmentation=imagenet"):
        data_lib.load_train_data("digits", 32, validation_portion=0.1, augmentation="imagenet")
    # eval_every=0: evaluated after the last epoch only (what the re-rank runs).
    results = run_train(TrainConfig(output_dir=str(tmp_path / "run"), epochs=2, eval_every=0,
                                    validation_portion=0.2, **TINY_CONFIG))
    assert 0.0 <= results["validation_accuracy"] <= 1.0 and "test_accuracy" not in results
    assert results["num_validation"] == search.info.num_train - math.floor(
        search.info.num_train * 0.8)
    assert {"eval/validation_accuracy", "eval/validation_loss"} <= event_tags(
        str(tmp_path / "run" / "tensorboard"))


def test_train_flagfiles_carry_the_papers_settings():
    configs = {}
    for path in sorted(glob.glob(os.path.join(REPO, "flags", "train_*.cfg"))):
        fv = flags.FlagValues()
        cli_flags.define_train_flags(fv)
        fv(["train", f"--flagfile={path}"])
        configs[os.path.basename(path)] = cli_flags.to_train_config(fv)
    assert set(configs) == {"train_quickstart.cfg", "train_cifar10.cfg",
                            "train_imagenet_mobile.cfg", "train_sharpdarts_cifar10.cfg",
                            "train_hypercuboid_quickstart.cfg", "train_nao_v2_cifar10.cfg"}
    nao = configs["train_nao_v2_cifar10.cfg"]
    assert (nao.genotype, nao.channels, nao.layers, nao.epochs, nao.batch_size, nao.lr,
            nao.lr_min, nao.weight_decay, nao.grad_clip, nao.dropout_rate, nao.drop_path_prob,
            nao.auxiliary_weight, nao.cutout) == \
        ("NAONet_V2", 36, 20, 600, 128, 0.025, 0.0, 5e-4, 5.0, 0.4, 0.2, 0.4, 16)
    chain = configs["train_hypercuboid_quickstart.cfg"]
    assert (chain.genotype, chain.auxiliary, chain.drop_path_prob) == \
        ("runs/hypercuboid_quickstart/path.json", False, 0.0)
    sharp = configs["train_sharpdarts_cifar10.cfg"]
    assert (sharp.genotype, sharp.mid_channels, sharp.augmentation, sharp.cutout, sharp.epochs,
            sharp.batch_size, sharp.lr, sharp.lr_schedule, sharp.lr_min, sharp.lr_power,
            sharp.lr_warmup_epochs, sharp.drop_path_prob, sharp.auxiliary_weight) == \
        ("SHARPSEPCONV_DARTS", 32, "autoaugment", 16, 2000, 64, 0.025, "cosine_power", 1e-8,
         2.0, 5, 0.2, 0.4)
    cifar = configs["train_cifar10.cfg"]
    assert (cifar.dataset, cifar.network, cifar.channels, cifar.layers, cifar.auxiliary,
            cifar.auxiliary_weight, cifar.drop_path_prob, cifar.cutout, cifar.epochs,
            cifar.batch_size, cifar.lr, cifar.lr_schedule, cifar.lr_min, cifar.momentum,
            cifar.weight_decay, cifar.grad_clip, cifar.label_smoothing, cifar.seed) == \
        ("tfds:cifar10", "cifar", 36, 20, True, 0.4, 0.2, 16, 600, 96, 0.025, "cosine", 0.0,
         0.9, 3e-4, 5.0, 0.0, 0)
    imagenet = configs["train_imagenet_mobile.cfg"]
    assert (imagenet.network, imagenet.channels, imagenet.layers, imagenet.image_size,
            imagenet.drop_path_prob, imagenet.cutout, imagenet.epochs, imagenet.batch_size,
            imagenet.lr, imagenet.lr_schedule, imagenet.lr_decay, imagenet.weight_decay,
            imagenet.grad_clip, imagenet.label_smoothing, imagenet.auxiliary_weight) == \
        ("imagenet", 48, 14, 224, 0.0, 0, 250, 128, 0.1, "exponential", 0.97, 3e-5, 5.0, 0.1,
         0.4)
    assert (imagenet.augmentation, cifar.augmentation) == ("imagenet", "crop_flip")
    quick = configs["train_quickstart.cfg"]
    assert quick.dataset == "digits" and quick.genotype == "runs/quickstart/genotype.json"
    # The quickstart size keeps the auxiliary head: 32x32 -> cell 3 of 5 outputs 8x8.
    assert (quick.image_size, quick.layers, quick.auxiliary) == (32, 5, True)


def _tiny_path_file(tmp_path):
    from keras_darts.space import hypercuboid
    from keras_darts.space.hypercuboid import GridPath, GridStage

    path = GridPath(4, (GridStage(0, 1, 4, 8, "sharp_sep_conv"),
                        GridStage(0, 2, 8, 4, "resizable_pool")))
    file = tmp_path / "path.json"
    hypercuboid.save(path, str(file))
    return path, file


def test_a_hypercuboid_path_trains_exports_and_serves(tmp_path):
    """keras_darts.train --genotype=path.json: the chain network trains, its
    genotype.json is the path, and the exported classifier serves it."""
    path, file = _tiny_path_file(tmp_path)
    out, export = tmp_path / "run", tmp_path / "export"
    chain = {**TINY_CONFIG, "genotype": str(file), "channels": 36, "layers": 20,
             "export_dir": str(export), "drop_path_prob": 0.0}
    results = run_train(TrainConfig(output_dir=str(out), epochs=1, **chain))
    assert genotype_lib.load(str(out / "genotype.json")) == path
    assert results["weight_params"] == results["weight_params_with_auxiliary"]
    served = tf.saved_model.load(str(export / "classifier"))
    outputs = served.signatures["serving_default"](images=tf.zeros((2, 16, 16, 3)))
    assert outputs["logits"].shape == (2, 10)


@pytest.mark.parametrize("changes, message", [
    ({"auxiliary": True}, "trains without auxiliary head and drop path"),
    ({"drop_path_prob": 0.2}, "trains without auxiliary head and drop path"),
    ({"layers": 8}, "--layers does not apply to a HyperCuboid path"),
    ({"mid_channels": 16}, "--mid_channels does not apply"),
])
def test_path_training_refuses_settings_it_would_ignore(tmp_path, changes, message):
    _, file = _tiny_path_file(tmp_path)
    config = {**TINY_CONFIG, "genotype": str(file), "channels": 36, "layers": 20,
              "drop_path_prob": 0.0, **changes}
    with pytest.raises(ConfigError, match=message):
        run_train(TrainConfig(output_dir=str(tmp_path / "run"), epochs=1, **config))
    assert not (tmp_path / "run").exists()
