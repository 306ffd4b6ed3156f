"""A search on a cluster of 2 worker processes on localhost (MultiWorkerMirroredStrategy,
one CPU replica each) equals a single-process search with the same global batch
and seed; a SIGTERM to one worker stops both at the same step with a checkpoint,
and the restarted cluster resumes from it by itself.

TF's multi_process_runner needs Bazel, so the workers are plain `python -m
keras_darts.search` processes, each with its own TF_CONFIG.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, event_tags, run_module, tiny_search_flags

from keras_darts.space import genotype as genotype_lib

pytestmark = pytest.mark.slow  # ~2 min: 2 cluster launches + 1 single process.

# 3 cells of 1 node (6 mixed edges): the MWMS step traces ~5x slower than a
# single-device one (every synchronised BatchNorm adds a collective).
TINY = tiny_search_flags(nodes=1, epochs=2)
# All-reduce sums in another order than one device: alphas agree to float round-off.
ALPHA_ATOL = 1e-5
SIGTERM_AFTER = "epoch 2/2 step 1/3"  # Worker 1 is signalled when it logs this line.


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _run_cluster(out, tmpdir, sigterm_worker=None, timeout=900):
    """Runs the tiny search on 2 localhost workers; returns ([exit codes], [logs]).
    `out`: the --output_dir of both, or a list of one per worker."""
    outs = out if isinstance(out, list) else [out, out]
    hosts = [f"localhost:{port}" for port in _free_ports(2)]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO, TMPDIR=str(tmpdir),
                   TF_CONFIG=json.dumps(tf_config))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "keras_darts.search", *TINY, f"--output_dir={outs[index]}",
             "--strategy=multi_worker"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True))
    logs = [[], []]

    def read(index):
        for line in procs[index].stderr:
            logs[index].append(line)
            if index == sigterm_worker and SIGTERM_AFTER in line:
                procs[index].send_signal(signal.SIGTERM)

    readers = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(2)]
    for reader in readers:
        reader.start()
    try:
        codes = [proc.wait(timeout=timeout) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for reader in readers:
        reader.join(timeout=10)
    return codes, ["".join(log) for log in logs]


def _alphas(out, epoch):
    with open(os.path.join(out, "alphas", f"epoch_{epoch:03d}.json"), encoding="utf-8") as f:
        alpha = json.load(f)["alpha"]
    return {cell: np.array(alpha[cell]) for cell in ("normal", "reduce")}


def _assert_alphas_close(out, reference, epoch):
    got, expected = _alphas(out, epoch), _alphas(reference, epoch)
    for cell in ("normal", "reduce"):
        np.testing.assert_allclose(got[cell], expected[cell], rtol=0, atol=ALPHA_ATOL,
                                   err_msg=f"epoch {epoch} {cell}")


def test_two_workers_equal_one_process_and_survive_sigterm(tmp_path):
    single = tmp_path / "single"
    reference = run_module("keras_darts.search", *TINY, f"--output_dir={single}", timeout=900)
    assert reference.returncode == 0, reference.stderr[-3000:]
    out, tmpdir = tmp_path / "cluster", tmp_path / "tmp"
    tmpdir.mkdir()

    # SIGTERM to worker 1 in the middle of epoch 2: both save the same step and stop.
    codes, logs = _run_cluster(out, tmpdir, sigterm_worker=1)
    assert codes == [128 + signal.SIGTERM] * 2, logs[0][-3000:] + logs[1][-3000:]
    assert "received by another worker" in logs[0]
    checkpoint = tf.train.latest_checkpoint(str(out / "checkpoints"))
    step = int(tf.train.load_checkpoint(checkpoint).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"))
    assert 3 < step < 6, step  # Saved mid-epoch 2, not at an epoch end.
    assert os.listdir(tmpdir) == []  # The non-chief removed its directory.
    assert not (out / "genotype.json").exists()
    _assert_alphas_close(out, single, 1)

    # The same command again: the cluster resumes from the chief's checkpoint.
    codes, logs = _run_cluster(out, tmpdir)
    assert codes == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    for log in logs:
        assert f"resumed from {checkpoint}" in log
    _assert_alphas_close(out, single, 2)
    assert (genotype_lib.load(str(out / "genotype.json"))
            == genotype_lib.load(str(single / "genotype.json")))
    results = [json.load(open(d / "results.json")) for d in (out, single)]
    assert results[0]["test_accuracy"] == pytest.approx(results[1]["test_accuracy"], abs=1e-6)

    # Only the chief wrote the run's outputs; worker 1 wrote into its temporary
    # directory, which is gone.
    assert "genotype written to " + str(tmpdir) in logs[1]
    assert f"genotype written to {out}" in logs[0]
    assert os.listdir(tmpdir) == []
    assert {"search/loss/train", "alphas/normal", "eval/test_accuracy"} <= event_tags(
        str(out / "tensorboard"))
    assert sorted(os.listdir(out / "genotypes")) == ["epoch_001.json", "epoch_002.json"]

    # Workers that do not see the same --output_dir (here: worker 1 an empty one)
    # would start at different steps: both refuse, instead of hanging.
    other = tmp_path / "not_shared"
    codes, logs = _run_cluster([out, other], tmpdir, timeout=600)
    assert codes == [2, 2], logs[0][-3000:] + logs[1][-3000:]
    for log in logs:
        assert "start at different steps (0 to 6" in log
