"""The one file layer: local and any filesystem TF supports (TF's in-memory `ram://`
stands in for gs:// here), and a whole search -> train -> export on it."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from keras_darts.config import SearchConfig, TrainConfig
from keras_darts.errors import GenotypeError
from keras_darts.infra import fileio
from keras_darts.space import genotype as genotype_lib


@pytest.mark.parametrize("where", ["local", "ram"])
def test_atomic_write_replaces_whole_and_leaves_no_temporary(tmp_path, where):
    root = str(tmp_path) if where == "local" else f"ram://{tmp_path.name}"
    fileio.makedirs(root)
    path = os.path.join(root, "results.json")
    fileio.write_json(path, {"loss": float("nan"), "acc": 0.5})
    fileio.write_json(path, {"loss": 1.0, "acc": 0.75})
    assert fileio.read_json(path) == {"loss": 1.0, "acc": 0.75}
    assert not fileio.exists(path + ".tmp")


def test_remote_paths_are_never_made_local(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert fileio.absolute("ram://a/b") == "ram://a/b"
    assert fileio.dirname("ram://export") == "ram://"
    assert fileio.dirname("gs://bucket/run/x.json") == "gs://bucket/run"
    assert fileio.absolute("run") == str(tmp_path / "run")


def test_unreadable_files_become_oserrors_and_one_line_genotype_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        fileio.read_text(str(tmp_path / "nothing.json"))
    with pytest.raises(GenotypeError, match="genotype file not found: ram://no/such.json"):
        genotype_lib.load("ram://no/such.json")


@pytest.mark.slow
def test_search_resume_train_and_export_all_on_a_non_local_filesystem(tmp_path, monkeypatch):
    from keras_darts.runs.search_run import run_search
    from keras_darts.runs.train_run import run_train

    monkeypatch.chdir(tmp_path)  # Where a mistaken os call would make a "ram:" folder.
    root = f"ram://{tmp_path.name}"
    search = SearchConfig(output_dir=f"{root}/search", channels=4, layers=3, nodes=2,
                          batch_size=16, steps_per_epoch=2, eval_batch_size=256, epochs=1,
                          log_every=0)
    run_search(search)
    run_search(dataclasses.replace(search, epochs=2), resume=True)
    for name in ("config.json", "genotype.json", "results.json", "resume_history.json",
                 "genotypes/epoch_002.json", "alphas/epoch_002.json", "checkpoints/checkpoint"):
        assert fileio.isfile(f"{root}/search/{name}"), name
    assert fileio.read_json(f"{root}/search/resume_history.json")[0]["changes"] == {
        "epochs": [1, 2]}
    assert tf.io.gfile.glob(f"{root}/search/tensorboard/events.out.tfevents.*")

    train = TrainConfig(output_dir=f"{root}/train", genotype=f"{root}/search/genotype.json",
                        channels=4, layers=3, batch_size=16, steps_per_epoch=2,
                        eval_batch_size=256, epochs=1, cutout=0, log_every=0, auxiliary=False,
                        export_dir=f"{root}/export")
    run_train(train)
    classifier = tf.saved_model.load(f"{root}/export/classifier")
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    probabilities = classifier.signatures["serving_default"](
        images=tf.constant(pixels))["probabilities"].numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert os.listdir(tmp_path) == []  # Nothing of the run landed on the local disk.
