"""The search CLI end to end on tiny configs, bad input, flagfiles, NaN handling."""

import dataclasses
import glob
import json
import os

import pytest
import tensorflow as tf
from absl import flags
from absl.testing import flagsaver
from conftest import REPO, event_tags, run_module, tiny_search_flags

from keras_darts.cli import flags as cli_flags
from keras_darts.config import SearchConfig
from keras_darts.errors import ConfigError, TrainingDivergedError
from keras_darts.methods.bilevel import BilevelSearch
from keras_darts.runs.search_run import SearchRun, run_search
from keras_darts.space import genotype as genotype_lib

cli_flags.define_search_flags()

TINY = tiny_search_flags()


@pytest.mark.slow
def test_search_end_to_end_then_resume(tmp_path):
    out = str(tmp_path / "run")
    first = run_module("keras_darts.search", *TINY, "--epochs=1", f"--output_dir={out}")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "epoch 1/1" in first.stderr and "ETA" in first.stderr
    genotype = genotype_lib.load(os.path.join(out, "genotype.json"))
    assert len(genotype.normal) == 4 and len(genotype.reduce) == 4
    # Checkpoints are numbered by the step count (3 steps per epoch).
    assert os.path.exists(os.path.join(out, "checkpoints", "ckpt-3.index"))
    tags = event_tags(os.path.join(out, "tensorboard"))
    assert {"search/loss/train", "search/accuracy/val", "eval/search_val_accuracy",
            "lr/weights", "alphas/normal", "alphas/reduce", "genotype/text",
            "genotype/cells", "eval/test_accuracy"} <= tags
    alphas = json.load(open(os.path.join(out, "alphas", "epoch_001.json")))
    assert len(alphas["softmax"]["normal"]) == 5  # 2 nodes -> 2 + 3 edges.
    results = json.load(open(os.path.join(out, "results.json")))
    assert 0.0 <= results["test_accuracy"] <= 1.0

    again = run_module("keras_darts.search", *TINY, "--epochs=1", f"--output_dir={out}")
    assert again.returncode == 2 and "already holds a search" in again.stderr

    resumed = run_module("keras_darts.search", *TINY, "--epochs=2", "--resume",
                         f"--output_dir={out}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr and "epoch 2/2" in resumed.stderr
    assert "epoch 1/2" not in resumed.stderr  # Epoch 1 was not run again.
    assert os.path.exists(os.path.join(out, "checkpoints", "ckpt-6.index"))
    assert json.load(open(os.path.join(out, "alphas", "epoch_001.json"))) == alphas
    assert os.path.exists(os.path.join(out, "alphas", "epoch_002.json"))


@pytest.mark.parametrize("args, message", [
    (["--layers=0"], "layers"),
    (["--selection=bogus"], "selection"),
    (["--selection=perturbation", "--pt_crit_normal=best"], "pt_crit_normal"),
    (["--selection=stable_rank", "--msr_shapes=other"], "msr_shapes"),
    (["--no_such_flag=1"], "no_such_flag"),
    (["--dataset=folder:/does/not/exist"], "/does/not/exist"),
    (["--dataset=mnist"], "digits"),
    (["--dataset=tfds:cifar10", "--data_dir=/nonexistent_tfds"], "cifar10"),
    (["--image_size=2", "--layers=8"], "--image_size"),
    (["--channels=5"], "--channels"),
])
def test_bad_input_exits_nonzero_before_writing(tmp_path, args, message):
    out = tmp_path / "run"
    result = run_module("keras_darts.search", *TINY, "--epochs=1", f"--output_dir={out}",
                        *args, timeout=300)
    assert result.returncode != 0
    assert message in result.stderr
    assert not out.exists()


@pytest.mark.parametrize("module, args, message", [
    ("keras_darts.search", ["--layers=2"], "--layers must be >= 3, got 2"),
    ("keras_darts.search", ["--a_beta_1=1"], "--a_beta_1 must be in [0.0, 1.0), got 1.0"),
    ("keras_darts.search", ["--w_lr=nan"], "--w_lr must be a finite number, got nan"),
    ("keras_darts.search", ["--seed=-1"], "--seed must be in [0, 4294967295], got -1"),
    ("keras_darts.search", ["--crop_padding=9"], "--crop_padding=9 is larger than the 8x8"),
    # The training's default --cutout=16 would zero every 8x8 digit.
    ("keras_darts.train", ["--genotype=DARTS_V2", "--layers=3", "--channels=4"],
     "--cutout=16 is larger than the 8x8 images"),
])
def test_out_of_domain_values_are_one_line_and_exit_2(tmp_path, module, args, message):
    out = tmp_path / "run"
    common = TINY + ["--epochs=1"] if module == "keras_darts.search" else ["--epochs=1"]
    result = run_module(module, *common, f"--output_dir={out}", *args, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_every_flagfile_parses():
    # The search's flagfiles; train_*.cfg are keras_darts.train's (tests/runs/test_train.py).
    paths = sorted(p for p in glob.glob(os.path.join(REPO, "flags", "*.cfg"))
                   if not os.path.basename(p).startswith("train_"))
    assert any(p.endswith("quickstart.cfg") for p in paths)
    configs = {}
    for path in paths:
        with flagsaver.flagsaver():
            flags.FLAGS.unparse_flags()
            flags.FLAGS(["search", f"--flagfile={path}"])
            configs[os.path.basename(path)] = cli_flags.to_search_config()
    paper = configs["darts_cifar10.cfg"]
    assert (paper.dataset, paper.epochs, paper.channels, paper.layers, paper.batch_size) == \
        ("tfds:cifar10", 50, 16, 8, 64)
    assert configs["quickstart.cfg"].dataset == "digits"
    pt = configs["darts_pt_cifar10.cfg"]
    assert (pt.selection, pt.primitives, pt.selection_settings.proj_intv, pt.epochs) == \
        ("perturbation", "darts_pt", 5, 50)
    edas_cfg = configs["edas_cifar10.cfg"]
    assert (edas_cfg.method, edas_cfg.layers, edas_cfg.channels, edas_cfg.batch_size,
            edas_cfg.epochs, edas_cfg.method_settings.clamp, edas_cfg.a_lr) == \
        ("edas", 20, 16, 64, 50, "derived", 3e-4)
    sharpsep, sharp = configs["sharpsep_darts_cifar10.cfg"], configs["sharp_darts_cifar10.cfg"]
    assert (sharpsep.primitives, sharpsep.weighting, sharpsep.epochs, sharpsep.w_lr_min) == \
        ("sharpsep_darts", "softmax", 60, 0.001)
    assert (sharp.primitives, sharp.batch_size, sharp.epochs, sharp.seed) == ("sharp", 32, 60, 2)
    sharper = configs["sharper_max_w_cifar10.cfg"]
    assert (sharper.primitives, sharper.weighting, sharper.epochs, sharper.batch_size,
            sharper.w_lr_schedule, sharper.w_lr_min, sharper.w_lr_power,
            sharper.w_lr_warmup_epochs) == \
        ("sharper", "max_w", 120, 16, "cosine_power", 1e-4, 2.0, 5)
    grid, quick = configs["hypercuboid_cifar10.cfg"], configs["hypercuboid_quickstart.cfg"]
    assert (grid.method, grid.channels, grid.layers, grid.weighting, grid.epochs,
            grid.batch_size, grid.method_settings.widths) == \
        ("hypercuboid", 36, 8, "max_w", 120, 64, 4)
    assert (quick.method, quick.dataset, quick.selection) == ("hypercuboid", "digits", "magnitude")


def _three_epoch_config(tmp_path):
    """A tiny 3-epoch search of 2 steps per epoch (the NaN-stop tests)."""
    return SearchConfig(output_dir=str(tmp_path / "run"), channels=4, layers=3, nodes=2,
                        batch_size=16, steps_per_epoch=2, eval_batch_size=256, epochs=3,
                        log_every=0)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    config = _three_epoch_config(tmp_path)
    real_step = BilevelSearch.step
    calls = {"n": 0}

    def step_then_nan(self, train_batch, val_batch):
        calls["n"] += 1
        metrics = dict(real_step(self, train_batch, val_batch))
        if calls["n"] == 3:  # The first step of epoch 2.
            metrics["loss/train"] = tf.constant(float("nan"))
        return metrics

    monkeypatch.setattr(BilevelSearch, "step", step_then_nan)
    with pytest.raises(TrainingDivergedError, match="loss/train became nan at epoch 2"):
        run_search(config)
    checkpoints = os.path.join(config.output_dir, "checkpoints")
    assert tf.train.latest_checkpoint(checkpoints).endswith("ckpt-2")  # 2 steps per epoch.
    assert not os.path.exists(os.path.join(config.output_dir, "genotype.json"))
    reader = tf.train.load_checkpoint(checkpoints)
    assert reader.get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE") == 1


def test_nan_evaluation_stops_like_a_nan_training_loss(tmp_path, monkeypatch):
    config = _three_epoch_config(tmp_path)
    real_evaluate = SearchRun.evaluate
    calls = {"n": 0}

    def evaluate_then_nan(self, dataset, **options):
        calls["n"] += 1
        loss, accuracy = real_evaluate(self, dataset, **options)
        return (float("nan"), accuracy) if calls["n"] == 2 else (loss, accuracy)

    monkeypatch.setattr(SearchRun, "evaluate", evaluate_then_nan)
    with pytest.raises(TrainingDivergedError, match="search-val loss became nan at epoch 2"):
        run_search(config)
    reader = tf.train.load_checkpoint(os.path.join(config.output_dir, "checkpoints"))
    assert reader.get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE") == 1  # Epoch 2 not saved.
    assert not os.path.exists(os.path.join(config.output_dir, "alphas", "epoch_002.json"))


def test_json_outputs_are_always_valid_json(tmp_path):
    from keras_darts.infra.fileio import write_json

    path = tmp_path / "r.json"
    write_json(str(path), {"loss": float("nan"), "all": [1.0, float("inf")], "ok": 2})
    assert json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(c)) == {
        "loss": None, "all": [1.0, None], "ok": 2}


def test_resumed_search_restores_every_weight(tmp_path):
    """The checkpoint holds the cells' weights too (not only the model's direct
    attributes): a restored supernet reproduces the final test loss exactly."""
    config = SearchConfig(output_dir=str(tmp_path / "run"), channels=4, layers=3, nodes=2,
                          batch_size=16, steps_per_epoch=2, eval_batch_size=256, epochs=1,
                          log_every=0)
    results = run_search(config)
    run = SearchRun(dataclasses.replace(config, epochs=2), resume=True)
    run.prepare()
    run.build()
    run.restore()
    assert run.evaluate(run.data.test) == pytest.approx(
        (results["test_loss"], results["test_accuracy"]), rel=1e-6)


def test_stable_rank_selection_end_to_end(tmp_path):
    out = tmp_path / "run"
    result = run_module("keras_darts.search", *TINY, "--epochs=1", "--selection=stable_rank",
                        f"--output_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    genotype = genotype_lib.load(str(out / "genotype.json"))
    weightless = {"none", "max_pool_3x3", "avg_pool_3x3", "skip_connect"}
    assert len(genotype.normal) == 4 and not weightless & {op for op, _ in genotype.normal}
    alphas = json.load(open(out / "alphas" / "epoch_001.json"))
    # The per-edge numbers it decided on: stable ranks, None for weightless ops.
    assert alphas["scores"]["normal"][0][0] is None and alphas["scores"]["normal"][0][4] > 0


def test_perturbation_selection_end_to_end(tmp_path):
    out = tmp_path / "run"
    result = run_module("keras_darts.search", *TINY, "--epochs=1", "--selection=perturbation",
                        "--pt_proj_intv=1", f"--output_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    genotype = genotype_lib.load(str(out / "genotype.json"))
    assert len(genotype.normal) == 4 and "none" not in {op for op, _ in genotype.normal}
    state = json.load(open(out / "perturbation" / "projection.json"))
    decisions = state["history"]
    # 2 nodes: 5 edge decisions + 1 node decision per cell type, at epochs 0..5.
    assert len(decisions) == 12
    assert sorted({d["epoch"] for d in decisions}) == [0, 1, 2, 3, 4, 5]
    op_decisions = [d for d in decisions if d["kind"] == "op"]
    assert all(d["chosen"] in d["ops"] and len(d["acc"]) == 7 for d in op_decisions)
    # 1 search epoch + 6 tuning epochs of 3 steps, each checkpointed.
    assert os.path.exists(out / "checkpoints" / "ckpt-21.index")
    assert "perturbation tuning epoch 6/6" in result.stderr


def test_select_runs_criteria_on_a_searched_supernet(tmp_path):
    search_dir = tmp_path / "search"
    searched = run_module("keras_darts.search", *TINY, "--epochs=1", f"--output_dir={search_dir}")
    assert searched.returncode == 0, searched.stderr[-3000:]
    before = sorted(os.listdir(search_dir / "checkpoints"))
    # The command line of a read-out; a phase (perturbation) through the same
    # `run_selection` is tools/compare_selection.py's test.
    out = tmp_path / "stable_rank"
    result = run_module("keras_darts.select", f"--checkpoint={search_dir}",
                        "--selection=stable_rank", f"--output_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    genotype = genotype_lib.load(str(out / "genotype.json"))
    assert len(genotype.reduce) == 4
    scores = json.load(open(out / "selection_scores.json"))
    assert scores["selection"] == "stable_rank" and scores["scores"]
    assert 0.0 <= json.load(open(out / "results.json"))["test_accuracy"] <= 1.0
    assert sorted(os.listdir(search_dir / "checkpoints")) == before  # Source untouched.


@pytest.mark.parametrize("args, message", [
    (["--checkpoint=/does/not/exist"], "not a keras_darts.search output"),
    (["--checkpoint=/tmp", "--channels=4"], "channels"),  # A search flag: not accepted here.
])
def test_select_bad_input(tmp_path, args, message):
    result = run_module("keras_darts.select", f"--output_dir={tmp_path / 'out'}", *args,
                        timeout=300)
    assert result.returncode != 0 and message in result.stderr


def test_select_keeps_the_searched_criterion_settings_unless_given():
    """`keras_darts.select` on a search that selected with stable_rank keeps its
    --msr_shapes (MSR-DARTS built its spectral norms at those sizes); a flag given
    on the select command line overrides it."""
    saved = SearchConfig(output_dir="searched", method="msr", primitives="msr",
                         selection="stable_rank", selection_settings={"msr_shapes": "actual"})
    fv = flags.FlagValues()
    cli_flags.define_select_flags(fv)
    fv(["select", "--checkpoint=searched", "--output_dir=out"])
    config = cli_flags.to_select_config(saved, fv)
    assert (config.selection, config.selection_settings.msr_shapes) == ("stable_rank", "actual")
    fv.unparse_flags()
    fv(["select", "--checkpoint=searched", "--output_dir=out", "--selection=magnitude",
        "--msr_shapes=actual"])
    with pytest.raises(ConfigError, match="--msr_shapes only applies to --selection=stable_rank"):
        cli_flags.to_select_config(saved, fv)
    fv.unparse_flags()
    fv(["select", "--checkpoint=searched", "--output_dir=out", "--msr_shapes=code"])
    assert cli_flags.to_select_config(saved, fv).selection_settings.msr_shapes == "code"
