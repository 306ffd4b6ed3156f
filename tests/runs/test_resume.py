"""Fault tolerance: a search is deterministic, and one killed at any point (SIGKILL
at a step boundary or mid-step; SIGTERM for every method in
tests/methods/test_conformance.py) and resumed ends bit-identical to an
uninterrupted one; a corrupt latest checkpoint falls back to the one before it."""

import glob
import os
import signal

import pytest
import tensorflow as tf
from conftest import finish, signal_after_line, start_module, tiny_search_flags

from keras_darts.config import SearchConfig
from keras_darts.runs.search_run import SearchRun, run_search

TINY = tiny_search_flags(epochs=3)
FINAL = ("alphas/epoch_003.json", "genotype.json")


def _start(out, *extra):
    return start_module("keras_darts.search", *TINY, f"--output_dir={out}", *extra)


def _wait(proc):
    code, stderr = finish(proc)
    assert code == 0, stderr[-3000:]
    return stderr


def _files(out):
    return [open(os.path.join(out, name), "rb").read() for name in FINAL]


@pytest.mark.slow
def test_killed_and_resumed_search_is_bit_identical(tmp_path):
    # Two uninterrupted runs in the background while the killed ones run: CPU
    # results do not depend on the load (one thread per op).
    reference, again = _start(tmp_path / "reference"), _start(tmp_path / "again")
    # SIGTERM, for every method: tests/methods/test_conformance.py.
    cases = [("kill_boundary", signal.SIGKILL, "epoch 2/3 step 1/3", 0.0, -9),
             ("kill_mid_step", signal.SIGKILL, "epoch 2/3 step 2/3", 0.15, -9)]
    resumed = {}
    for name, signum, line, delay, code in cases:
        returncode, log = signal_after_line(_start(tmp_path / name), signum, line, delay)
        assert returncode == code, (name, log[-3000:])
        resumed[name] = _start(tmp_path / name, "--resume")
    assert "epoch 3/3" in _wait(reference)
    _wait(again)
    assert _files(tmp_path / "again") == _files(tmp_path / "reference")  # Deterministic.
    for name, proc in resumed.items():
        assert "resumed from" in _wait(proc)
        assert _files(tmp_path / name) == _files(tmp_path / "reference"), name


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    config = SearchConfig(output_dir=str(tmp_path / "run"), channels=4, layers=3, nodes=2,
                          batch_size=16, steps_per_epoch=2, eval_batch_size=256, epochs=2,
                          log_every=0)
    run_search(config)
    checkpoints = tmp_path / "run" / "checkpoints"
    data = checkpoints / "ckpt-4.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:100])  # Truncated, as by a crash or a full disk.
    run = SearchRun(config, resume=True)
    run.prepare()
    run.build()
    with caplog.at_level("WARNING"):
        path = run.restore()
    assert path.endswith("ckpt-2")
    assert int(run.epoch.numpy()) == 1 and int(run.global_step.numpy()) == 2
    assert "unreadable" in caplog.text


def test_checkpoint_restores_every_model_variable(tmp_path):
    config = SearchConfig(output_dir=str(tmp_path / "run"), channels=4, layers=3, nodes=2,
                          batch_size=16, steps_per_epoch=2, eval_batch_size=256, epochs=1,
                          log_every=0)
    first = SearchRun(config)
    first.run()
    again = SearchRun(config, resume=True)
    again.prepare()
    again.build()
    again.restore()
    trained = first.model.weights
    assert len(again.model.weights) == len(trained) > 100  # Every cell's variables.
    for restored, saved in zip(again.model.weights, trained):
        assert restored.path.split("/")[-1] == saved.path.split("/")[-1]
        assert (restored.numpy() == saved.numpy()).all(), saved.path
    for a, b in zip(again.search.weight_optimizer.slots["momentum"],
                    first.search.weight_optimizer.slots["momentum"]):
        assert (a.numpy() == b.numpy()).all()


@pytest.mark.extended  # CI time (~130 s); tests/methods/test_conformance.py runs blank.
def test_blank_method_never_updates_the_alphas(tmp_path):
    """DARTS-PT's fix-alpha baseline (`--method=blank`): weights train, alphas stay
    at their initial values through the search and the perturbation tuning."""
    config = SearchConfig(output_dir=str(tmp_path / "run"), channels=4, layers=3, nodes=2,
                          batch_size=16, steps_per_epoch=2, eval_batch_size=256, epochs=1,
                          log_every=0, method="blank", primitives="darts_pt",
                          selection="perturbation", selection_settings={"proj_intv": 1})
    run = SearchRun(config)
    run.prepare()
    run.build()
    initial = [a.numpy().copy() for a in run.model.arch_variables]
    kernel = run.model.stem_conv.trainable_variables[0].numpy().copy()
    run = SearchRun(config)
    run.run()
    for alpha, start in zip(run.model.arch_variables, initial):
        assert (alpha.numpy() == start).all()
    assert not (run.model.stem_conv.trainable_variables[0].numpy() == kernel).all()
    assert int(run.global_step.numpy()) == 2 * (1 + 6)  # Search + 6 tuning epochs.


def _points(logdir):
    """Every (tag, step) written to the event files in `logdir`, with repeats."""
    points = []
    for path in glob.glob(os.path.join(logdir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            points += [(v.tag, event.step) for v in event.summary.value]
    return points


def test_a_crash_before_the_checkpoint_never_writes_a_step_twice(tmp_path, monkeypatch):
    config = SearchConfig(output_dir=str(tmp_path / "run"), channels=4, layers=3, nodes=2,
                          batch_size=16, steps_per_epoch=2, eval_batch_size=256, epochs=2,
                          log_every=0)
    real_save, calls = tf.train.CheckpointManager.save, []

    def save_fails_second_time(manager, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # Epoch 2's checkpoint: e.g. the disk is full, or SIGKILL.
            raise OSError("no space left on device")
        return real_save(manager, *args, **kwargs)

    monkeypatch.setattr(tf.train.CheckpointManager, "save", save_fails_second_time)
    with pytest.raises(OSError, match="no space"):
        run_search(config)
    monkeypatch.setattr(tf.train.CheckpointManager, "save", real_save)
    run_search(config, resume=True)  # Redoes epoch 2.
    points = _points(tmp_path / "run" / "tensorboard")
    assert ("search/loss/train", 2) in points and ("genotype/cells", 2) in points
    repeated = {p for p in points if points.count(p) > 1}
    assert not repeated, sorted(repeated)
