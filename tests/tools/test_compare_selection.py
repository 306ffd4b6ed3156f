"""tools/compare_selection.py end to end on a tiny searched supernet, and its bad input."""

import csv
import dataclasses
import glob
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO

from keras_darts import data as data_lib
from keras_darts import selection
from keras_darts.config import SearchConfig
from keras_darts.runs.lifecycle import checkpointable_weights
from keras_darts.runs.search_run import run_search, run_selection
from keras_darts.space import genotype as genotype_lib
from keras_darts.space import plans
from keras_darts.space.supernet import SearchNetwork

# One node per cell keeps perturbation cheap: 2 edges per cell, 2 tuning epochs.
TINY = SearchConfig(output_dir="", dataset="digits", channels=4, layers=3, nodes=1,
                    epochs=1, steps_per_epoch=2, batch_size=8, eval_batch_size=720,
                    log_every=0)
PT_FLAGS = ["--pt_proj_intv=1"]


# One worker builds the module fixture below for all of this module's tests.
pytestmark = pytest.mark.xdist_group("test_compare_selection")


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A search output directory (1 epoch on the tiny supernet)."""
    out = str(tmp_path_factory.mktemp("compare") / "search")
    run_search(dataclasses.replace(TINY, output_dir=out))
    return out


def run_tool(*args, timeout=600):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", "compare_selection.py"),
                           *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _snapshot(directory):
    return {os.path.relpath(p, directory): (os.path.getsize(p), os.path.getmtime(p))
            for p in glob.glob(os.path.join(directory, "**"), recursive=True)
            if os.path.isfile(p)}


def _tb_text(logdir, tag):
    texts = []
    for path in glob.glob(os.path.join(logdir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            texts += [tf.make_ndarray(v.tensor).item().decode("utf-8")
                      for v in event.summary.value if v.tag == tag]
    return texts


def _evaluate_discrete(source, genotype):
    """Mean loss and accuracy of `genotype` inside the searched supernet on search-val,
    BN in train mode, computed eagerly without the trainer or the search step."""
    cfg = SearchConfig.load_from_run(source)
    data = data_lib.load_search_data(cfg.dataset, cfg.batch_size, seed=cfg.seed,
                                     eval_batch_size=cfg.eval_batch_size)
    net = SearchNetwork(data.info.num_classes, channels=cfg.channels, num_layers=cfg.layers,
                        num_nodes=cfg.nodes, input_shape=data.info.image_shape)
    latest = tf.train.latest_checkpoint(os.path.join(source, "checkpoints"))
    tf.train.Checkpoint(network_weights=checkpointable_weights(net)).restore(
        latest).expect_partial().assert_existing_objects_matched()
    losses, hits = [], []
    for images, labels in data.search_val_eval:
        logits = net(images, training=True, plan=plans.Discrete(genotype)).numpy()
        labels = labels.numpy()
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        losses += list(-log_probs[np.arange(len(labels)), labels])
        hits += list(logits.argmax(axis=1) == labels)
    return float(np.mean(losses)), float(np.mean(hits))


@pytest.mark.slow
def test_compares_every_requested_criterion_from_the_untouched_checkpoint(searched, tmp_path):
    out = tmp_path / "compare"
    before = _snapshot(searched)
    # Perturbation first: it tunes the supernet, and magnitude after it must not see that.
    criteria = ["perturbation", "magnitude", "stable_rank"]
    result = run_tool(f"--checkpoint={searched}", f"--output_dir={out}",
                      f"--criteria={','.join(criteria)}", *PT_FLAGS)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _snapshot(searched) == before

    with open(out / "comparison.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["criterion"] for r in rows] == criteria
    markdown = (out / "comparison.md").read_text()
    table = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(criteria)  # Header + one row per criterion.
    assert _tb_text(str(out / "tensorboard"), "comparison/table") == [markdown]

    saved = SearchConfig.load_from_run(searched)
    source_magnitude = genotype_lib.load(os.path.join(searched, "genotype.json"))
    for row, line in zip(rows, table[1:]):
        name = row["criterion"]
        genotype = genotype_lib.load(str(out / name / "genotype.json"))
        assert row["genotype"] == genotype.to_text() and f"`{genotype.to_text()}`" in line
        # What `python -m keras_darts.select` runs, in a fresh directory.
        settings = {"proj_intv": 1} if selection.get(name).tunes_supernet else None
        selected = run_selection(dataclasses.replace(saved, selection=name,
                                                     selection_settings=settings,
                                                     output_dir=str(tmp_path / name)),
                                 searched)
        assert genotype.to_json_dict() == selected["genotype"], name
        loss, accuracy = _evaluate_discrete(searched, genotype)
        # At most one of the 719 predictions may flip between graph and eager float sums.
        assert float(row["val_accuracy"]) == pytest.approx(accuracy, abs=1.5 / 719)
        assert float(row["val_loss"]) == pytest.approx(loss, rel=1e-4)
        assert int(row["params"]) > 0 and float(row["total_seconds"]) > 0
    assert rows[1]["genotype"] == source_magnitude.to_text()
    assert os.path.exists(out / "perturbation" / "perturbation" / "projection.json")


@pytest.fixture
def corrupt_copy(searched, tmp_path):
    copy = tmp_path / "corrupt"
    shutil.copytree(searched, copy)
    [data_file] = glob.glob(str(copy / "checkpoints" / "*.data-*"))
    size = os.path.getsize(data_file)
    with open(data_file, "wb") as f:
        f.write(b"\x00garbage" * (size // 8))
    return str(copy)


@pytest.mark.parametrize("case, message", [
    ("unknown", "unknown criterion 'bogus' in --criteria"),
    ("missing", "is not a keras_darts.search output directory"),
    ("corrupt", "cannot restore the supernet"),
    ("not_empty", "already holds files"),
])
def test_bad_input_exits_2_with_one_message(searched, corrupt_copy, tmp_path, case, message):
    out = tmp_path / "compare"
    source, criteria = searched, "magnitude"
    if case == "unknown":
        criteria = "magnitude,bogus"
    elif case == "missing":
        source = str(tmp_path / "no_such_search")
    elif case == "corrupt":
        source = corrupt_copy
    else:
        out.mkdir()
        (out / "comparison.md").write_text("earlier results\n")
    result = run_tool(f"--checkpoint={source}", f"--output_dir={out}",
                      f"--criteria={criteria}", timeout=600)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines()
              if line.startswith("compare_selection: error:")]
    assert len(errors) == 1 and message in errors[0]
    if case == "not_empty":
        assert os.listdir(out) == ["comparison.md"]
    else:
        assert not out.exists()
