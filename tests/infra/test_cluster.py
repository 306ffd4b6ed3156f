"""TF_CONFIG parsing, the choice of `--strategy=auto`, and the errors of a cluster
set-up that cannot work (all without starting a cluster)."""

import json
import os
import tempfile

import pytest

from keras_darts.config import SearchConfig, TrainConfig
from keras_darts.errors import ConfigError
from keras_darts.infra import cluster, runtime
from keras_darts.runs.search_run import SearchRun
from keras_darts.runs.train_run import TrainRun


def _tf_config(cluster_spec, task_type, index):
    return json.dumps({"cluster": cluster_spec, "task": {"type": task_type, "index": index}})


TWO_WORKERS = {"worker": ["host1:2222", "host2:2222"]}


def test_no_tf_config_is_a_single_process():
    assert cluster.parse_tf_config("") is cluster.SINGLE
    assert cluster.SINGLE.is_chief and cluster.SINGLE.num_workers == 1


@pytest.mark.parametrize("spec, task_type, index, chief, workers", [
    (TWO_WORKERS, "worker", 0, True, 2),   # No "chief" job: worker 0 is the chief.
    (TWO_WORKERS, "worker", 1, False, 2),
    ({"chief": ["a:1"], "worker": ["b:1", "c:1"]}, "chief", 0, True, 3),
    ({"chief": ["a:1"], "worker": ["b:1", "c:1"]}, "worker", 0, False, 3),
    ({"worker": ["a:1"]}, "worker", 0, True, 1),
])
def test_tasks_and_chief(spec, task_type, index, chief, workers):
    parsed = cluster.parse_tf_config(_tf_config(spec, task_type, index))
    assert (parsed.task_type, parsed.task_index) == (task_type, index)
    assert parsed.is_chief is chief
    assert parsed.num_workers == workers


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    (json.dumps({"task": {"type": "worker", "index": 0}}), "no 'cluster'"),
    (json.dumps({"cluster": TWO_WORKERS}), "no 'task'"),
    (json.dumps({"cluster": TWO_WORKERS, "task": {"type": "worker"}}), "no 'task'"),
    (_tf_config(TWO_WORKERS, "worker", 2), "index 2 is out of range"),
    (_tf_config(TWO_WORKERS, "worker", -1), "out of range"),
    (_tf_config(TWO_WORKERS, "worker", "1"), "must be an integer"),
    (_tf_config(TWO_WORKERS, "chief", 0), "not a job of the cluster"),
    (_tf_config({"worker": ["a:1"], "ps": ["b:1"]}, "worker", 0), "'ps'"),
    (_tf_config({"worker": []}, "worker", 0), "non-empty list"),
    (_tf_config({"worker": ["no_port"]}, "worker", 0), "host:port"),
    (_tf_config({"chief": ["a:1", "b:1"]}, "chief", 0), "only one 'chief'"),
])
def test_malformed_tf_config_is_a_clear_error(text, message):
    with pytest.raises(ConfigError, match=message):
        cluster.parse_tf_config(text)


@pytest.mark.parametrize("name, workers, gpus, expected", [
    ("auto", 2, 0, "multi_worker"),
    ("auto", 3, 8, "multi_worker"),
    ("auto", 1, 2, "mirrored"),
    ("auto", 1, 1, "default"),
    ("auto", 1, 0, "default"),
    ("default", 2, 2, "default"),    # An explicit choice is kept.
    ("mirrored", 2, 0, "mirrored"),
    ("multi_worker", 1, 0, "multi_worker"),  # A one-task cluster is still a cluster.
])
def test_auto_strategy_choice(name, workers, gpus, expected):
    spec = cluster.Cluster("worker", 0, workers)
    assert runtime.resolve_strategy(name, cluster=spec, num_gpus=gpus) == expected


def test_multi_worker_without_tf_config_is_refused(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="needs the TF_CONFIG"):
        runtime.resolve_strategy("multi_worker")
    with pytest.raises(ConfigError, match="--strategy must be one of"):
        runtime.resolve_strategy("parameter_server")


def test_search_refuses_a_malformed_tf_config_before_writing(monkeypatch, tmp_path):
    monkeypatch.setenv("TF_CONFIG", _tf_config(TWO_WORKERS, "worker", 5))
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="out of range"):
        SearchRun(SearchConfig(output_dir=str(out), strategy="auto")).prepare()
    assert not out.exists()


def test_training_refuses_multi_worker(monkeypatch, tmp_path):
    """keras_darts.train runs on one machine: a cluster is a clear error, never
    a silently unsynchronised run."""
    monkeypatch.setenv("TF_CONFIG", _tf_config(TWO_WORKERS, "worker", 0))
    for strategy in ("multi_worker", "auto"):
        config = TrainConfig(output_dir=str(tmp_path / strategy), strategy=strategy)
        with pytest.raises(ConfigError, match="runs on one machine"):
            TrainRun(config).prepare()


def test_worker_output_dirs(tmp_path, monkeypatch):
    os.makedirs(tmp_path / "tmp")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    chief = cluster.WorkerOutput(str(tmp_path / "out"), cluster.Cluster("worker", 0, 2))
    assert chief.root == str(tmp_path / "out")
    worker = cluster.WorkerOutput(str(tmp_path / "out"), cluster.Cluster("worker", 1, 2))
    assert worker.root.startswith(str(tmp_path / "tmp")) and os.path.isdir(worker.root)
    open(os.path.join(worker.root, "x"), "w").close()
    worker.cleanup()
    chief.cleanup()
    assert os.listdir(tmp_path / "tmp") == []
    assert not (tmp_path / "out").exists()  # The chief's directory is never created here.
