"""NAO-V2's search loop (keras_darts/methods/nao_v2/method.py): rounds, pool,
scoring, controller, generation, re-rank, outputs, and resume from a stop in
any phase."""

import json
import os
import signal

import numpy as np
import pytest
from conftest import (
    check_log,
    event_tags,
    finish,
    run_check_script,
    signal_after_line,
    start_module,
)

from keras_darts import methods, schedules
from keras_darts.config import SearchConfig
from keras_darts.errors import ConfigError, Interrupted
from keras_darts.methods.nao_v2.pool import ArchPool
from keras_darts.runs import search_run
from keras_darts.runs.search_run import run_search
from keras_darts.space import genotype as genotype_lib
from keras_darts.space import nao_arch

TINY = dict(dataset="digits", method="nao_v2", selection="pool", graph_optimizer="full",
            channels=4, layers=5,
            batch_size=16, steps_per_epoch=2, eval_batch_size=256, epochs=3, log_every=0,
            train_portion=0.8)
NAO = dict(rounds=2, initial_pool=6, new_archs=3, seed_archs=3, score_batch=32,
           controller_epochs=4, controller_batch=8, embedding_size=4, expand=2,
           rerank_top=2, rerank_epochs=1)
pytestmark = pytest.mark.xdist_group("nao_v2_search")


def _config(out, **nao):
    return SearchConfig(output_dir=str(out), **TINY, method_settings={**NAO, **nao})


def _pool(out):
    with open(os.path.join(out, "arch_pool.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted tiny search, and the phase of every stop-signal check."""
    out = tmp_path_factory.mktemp("nao") / "reference"
    phases = []
    original = search_run.SearchRun.stop_signal

    def recording(run):
        phases.append(run.method.state.phase)
        return original(run)

    search_run.SearchRun.stop_signal = recording
    try:
        summary = run_search(_config(out))
    finally:
        search_run.SearchRun.stop_signal = original
    return out, summary, phases


def test_rounds_pool_and_outputs(reference):
    out, summary, _ = reference
    pool = _pool(out)
    entries = pool["entries"]
    # Round 0: the random pool; round 1: the controller's new architectures.
    assert [e["round"] for e in entries] == [0] * 6 + [1] * 3
    assert len({tuple(e["arch"]) for e in entries}) == 9
    assert all(0.0 <= e["score"] <= 1.0 for e in entries)
    assert all(e["predicted"] is not None for e in entries)
    assert all(e["eta"] is None for e in entries[:6]) and all(e["eta"] >= 1 for e in entries[6:])
    assert all(e["params"] > 0 for e in entries)
    ranked = sorted(range(9), key=lambda i: (-entries[i]["score"], i))
    reranked = [i for i, e in enumerate(entries) if e["standalone_accuracy"] is not None]
    assert sorted(reranked) == sorted(ranked[:2])
    best = max(reranked, key=lambda i: (entries[i]["standalone_accuracy"], -i))
    genotype = genotype_lib.load(str(out / "genotype.json"))
    assert genotype == nao_arch.to_genotype(entries[best]["arch"])
    assert open(out / "arch.txt").read().split() == [str(v) for v in entries[best]["arch"]]
    assert summary["pool_size"] == 9 and summary["nao_arch"] == entries[best]["text"]
    for rank in (1, 2):
        results = json.load(open(out / "rerank" / f"rank_{rank}" / "results.json"))
        assert "validation_accuracy" in results and "test_accuracy" not in results
    assert {"nao/pool_scores", "nao/best_score", "controller/loss", "genotype/cells",
            "eval/search_val_accuracy"} <= event_tags(str(out / "tensorboard"))
    assert os.path.exists(out / "alphas" / "epoch_003.json")


def test_rounds_split_the_epochs_and_restart_the_schedule():
    config = SearchConfig(output_dir="x", **{**TINY, "epochs": 50},
                          method_settings={**NAO, "rounds": 4})
    method = methods.get("nao_v2")(config)
    assert [method.round_epochs(r) for r in range(4)] == [(0, 13), (13, 26), (26, 38),
                                                          (38, 50)]
    cosine = lambda e, n: schedules.lr("cosine", e, n, config.w_lr, config.w_lr_min)
    assert [method.weight_lr(e, 50) for e in (0, 12, 13, 38, 49)] == [
        cosine(0, 13), cosine(12, 13), cosine(0, 13), cosine(0, 12), cosine(11, 12)]


def test_size_balanced_and_uniform_sampling_probabilities():
    method = methods.get("nao_v2")(_config("x"))
    method.num_classes = 10
    rng = np.random.default_rng(0)
    archs = nao_arch.random_pool(rng, 5)
    method.pool.add(archs, 0, [100, 200, 300, 400, 1000])
    np.testing.assert_allclose(method._sampling_probs(range(5)), [0.05, 0.1, 0.15, 0.2, 0.5])
    method = methods.get("nao_v2")(_config("x", sampling="uniform"))
    method.pool.add(archs, 0, [100, 200, 300, 400, 1000])
    np.testing.assert_allclose(method._sampling_probs(range(5)), [0.2] * 5)


@pytest.mark.parametrize("changes, message", [
    (dict(layers=6), "needs --layers = 3N \\+ 2"),
    (dict(epochs=1), "fewer than --nao_rounds"),
])
def test_bad_settings_are_refused(changes, message):
    config = SearchConfig(output_dir="x", **{**TINY, **changes}, method_settings=NAO)
    with pytest.raises(ConfigError, match=message):
        methods.get("nao_v2")(config).check("default")
    config = SearchConfig(output_dir="x", **TINY, method_settings={**NAO, "seed_archs": 7})
    with pytest.raises(ConfigError, match="--nao_seed_archs=7 exceeds the pool"):
        methods.get("nao_v2")(config).check("default")


def test_pool_json_round_trip_is_exact():
    rng = np.random.default_rng(1)
    pool = ArchPool()
    pool.add(nao_arch.random_pool(rng, 4), 0, [1, 2, 3, 4])
    pool.set_scores([0.1, 1 / 3, 0.7, 0.7])
    again = ArchPool.from_json(pool.to_json())
    assert [e.score for e in again.entries] == [0.1, 1 / 3, 0.7, 0.7]
    assert again.ranked() == [2, 3, 1, 0] and again.best().arch == pool.entries[2].arch
    with pytest.raises(ValueError, match="already in the pool"):
        pool.add(pool.archs([0]), 1, [5])


@pytest.mark.extended  # CI time: the SIGKILL test below and the conformance test stop it too.
def test_stops_in_every_phase_resume_to_the_same_search(reference, tmp_path):
    """SIGTERM (as the stop check sees it) while scoring, while training the
    controller and inside the re-rank; each resume continues, and the end is the
    uninterrupted run's pool and genotype."""
    ref_out, _, phases = reference
    stops = [phases.index(phase) for phase in ("score", "controller", "rerank")]
    out = tmp_path / "run"
    state = {"calls": 0, "pending": False}
    original = search_run.SearchRun.stop_signal

    def stopping(run):
        state["calls"] += 1
        if state["calls"] - 1 in stops and not state["pending"]:
            state["pending"] = True
            stopped_in.append(run.method.state.phase)
        return signal.SIGTERM if state["pending"] else original(run)

    stopped_in = []
    search_run.SearchRun.stop_signal = stopping
    try:
        resume = False
        while True:
            try:
                run_search(_config(out), resume=resume)
                break
            except Interrupted:
                state["pending"], resume = False, True
    finally:
        search_run.SearchRun.stop_signal = original
    assert stopped_in == ["score", "controller", "rerank"]
    for name in ("arch_pool.json", "genotype.json", "arch.txt"):  # Byte for byte.
        assert (out / name).read_bytes() == (ref_out / name).read_bytes(), name


def _cli_flags(out):
    nao = {f"nao_{k}": v for k, v in NAO.items()}
    return [f"--{k}={v}" for k, v in {**TINY, **nao}.items()] + [f"--output_dir={out}"]


@pytest.mark.slow
@pytest.mark.extended  # CI time (~130 s); SIGTERM resume: tests/methods/test_conformance.py.
def test_sigkill_in_the_rerank_resumes_to_the_same_search(reference, tmp_path):
    """A command-line search killed (SIGKILL: no handler runs) inside the first
    re-rank training, after every round, and resumed, ends with the
    uninterrupted (in-process) run's files, byte for byte.  (SIGTERM in the other
    phases: test_stops_in_every_phase_resume_to_the_same_search.)"""
    ref_out = reference[0]
    killed = tmp_path / "killed"
    proc = start_module("keras_darts.search", *_cli_flags(killed))
    code, log = signal_after_line(proc, signal.SIGKILL, "re-rank 1/2", 3.0)
    assert code == -signal.SIGKILL and "round 2: pool of 9 scored" in log, log[-3000:]
    code, log = finish(start_module("keras_darts.search", *_cli_flags(killed), "--resume"))
    assert code == 0 and "resumed from" in log, log[-3000:]
    for name in ("arch_pool.json", "genotype.json", "arch.txt"):
        assert (killed / name).read_bytes() == (ref_out / name).read_bytes(), name


@pytest.mark.extended
def test_whole_search_under_mirrored_strategy_on_two_cpus(tmp_path):
    """Every phase through the run harness on 2 replicas (data split, scoring,
    controller, generation, the re-rank under the search's own strategy) gives
    the one-device search's pool: same architectures, scores and answer,
    predictions within float noise.  ~10 min (the 2-replica step traces every
    masked branch), so outside the default run: `pytest -m extended`."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "search_mirrored_check.py")
    proc, result = run_check_script(script, "NAO_SEARCH_MIRRORED", str(tmp_path), timeout=1800)
    assert proc.returncode == 0 and result is not None, check_log(proc)
    assert result["replicas"] == [2, 1]
    mirrored, single = (pool["entries"] for pool in result["pools"])
    assert [e["arch"] for e in mirrored] == [e["arch"] for e in single]
    assert [e["score"] for e in mirrored] == [e["score"] for e in single]
    np.testing.assert_allclose([e["predicted"] for e in mirrored],
                               [e["predicted"] for e in single], atol=1e-5)
    assert result["archs"][0] == result["archs"][1]
    # The re-rank's dropout masks depend on the replica split: close, not equal.
    reranked = [(a["standalone_accuracy"], b["standalone_accuracy"]) for a, b in
                zip(mirrored, single) if a["standalone_accuracy"] is not None]
    assert reranked and all(abs(a - b) < 0.05 for a, b in reranked)
