"""tools/rank_correlation.py: the ranking metrics, the methods' sampling and
scoring hooks, the study end to end on a tiny DARTS and a tiny NAO-V2 run
(outputs, resume, refused reruns) and its bad input."""

import csv
import dataclasses
import glob
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, event_tags
from scipy import stats

from keras_darts import methods
from keras_darts.config import SearchConfig
from keras_darts.errors import ConfigError
from keras_darts.runs.search_run import SearchRun, run_search
from keras_darts.space import nao_arch

_spec = importlib.util.spec_from_file_location(
    "rank_correlation", os.path.join(REPO, "tools", "rank_correlation.py"))
rank_correlation = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rank_correlation)

DARTS_RUN = dict(dataset="digits", channels=4, layers=3, nodes=1, epochs=1, steps_per_epoch=2,
                 batch_size=8, eval_batch_size=720, log_every=0)
# One round: no controller, every pool entry scored by the last round's draws.
NAO_RUN = dict(dataset="digits", method="nao_v2", selection="pool", graph_optimizer="full",
               channels=4, layers=5,
               batch_size=16, steps_per_epoch=2, eval_batch_size=256, epochs=1, log_every=0,
               train_portion=0.8)
NAO = dict(rounds=1, initial_pool=4, new_archs=2, seed_archs=2, score_batch=32,
           controller_epochs=2, controller_batch=8, embedding_size=4, expand=2, rerank_top=0)
TAGS = {"rank_correlation/scatter", "rank_correlation/summary", "rank_correlation/kendall_tau",
        "rank_correlation/pairwise_accuracy", "rank_correlation/spearman_rho"}
pytestmark = pytest.mark.xdist_group("test_rank_correlation")


def _study(run_dir, num_archs=4, epochs=1, seed=0):
    return rank_correlation.Study(checkpoint=str(run_dir), num_archs=num_archs,
                                  standalone_epochs=epochs, seed=seed)


def _rows(out):
    with open(os.path.join(out, "rank_correlation.csv"), encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _snapshot(directory):
    return {os.path.relpath(p, directory): (os.path.getsize(p), os.path.getmtime(p))
            for p in glob.glob(os.path.join(directory, "**"), recursive=True)
            if os.path.isfile(p)}


def _check_outputs(out, summary, num_archs):
    """The files of a finished study agree with each other and with scipy."""
    rows = _rows(out)
    assert [int(r["index"]) for r in rows] == list(range(num_archs))
    scores = [float(r["supernet_score"]) for r in rows]
    accuracies = [float(r["standalone_accuracy"]) for r in rows]
    assert all(0.0 <= v <= 1.0 for v in scores + accuracies)
    assert all(int(r["params"]) > 0 for r in rows) and len({r["genotype"] for r in rows}) == 4
    for r in rows:  # The accuracy is the stand-alone run's own result.
        results = json.load(open(os.path.join(out, "standalone", f"arch_{int(r['index']):03d}",
                                              "results.json")))
        assert float(r["standalone_accuracy"]) == results["validation_accuracy"]
    assert json.load(open(os.path.join(out, "summary.json"))) == summary
    tau = stats.kendalltau(scores, accuracies, variant="b").statistic
    if np.isfinite(tau):
        assert summary["kendall_tau"] == pytest.approx(tau, abs=1e-12)
    else:
        assert summary["kendall_tau"] is None
    assert 0.0 <= summary["pairwise_accuracy"] <= 1.0
    assert os.path.getsize(os.path.join(out, "scatter.png")) > 1000
    assert TAGS - {"rank_correlation/kendall_tau", "rank_correlation/spearman_rho"} <= \
        event_tags(os.path.join(out, "tensorboard"))
    return rows


# -- metrics ------------------------------------------------------------------------
def test_metrics_on_hand_made_rankings():
    # One of six pairs swapped, no ties: PA = 5/6, tau = 2 PA - 1, rho = 1 - 6*2/(4*15).
    m = rank_correlation.ranking_metrics([0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.8, 0.7])
    assert m["pairwise_accuracy"] == pytest.approx(5 / 6)
    assert m["kendall_tau"] == pytest.approx(2 / 3) and m["spearman_rho"] == pytest.approx(0.8)
    # A tie in the stand-alone accuracy counts as agreeing order; tau-b corrects
    # for it: (4 concordant - 1 discordant) / sqrt(6 * (6 - 1 tied pair)).
    m = rank_correlation.ranking_metrics([0.3, 0.1, 0.2, 0.4], [0.5, 0.5, 0.7, 0.8])
    assert m["pairwise_accuracy"] == pytest.approx(5 / 6)
    assert m["kendall_tau"] == pytest.approx(3 / np.sqrt(30))
    assert rank_correlation.ranking_metrics([0.2] * 3, [0.1, 0.3, 0.2])["kendall_tau"] is None


# -- the methods' hooks ----------------------------------------------------------------
@pytest.mark.parametrize("name", ["darts", "edas", "msr", "blank"])
def test_default_random_genotypes_are_distinct_valid_cells_of_the_space(name):
    config = SearchConfig(output_dir="", method=name, nodes=3)
    method = methods.get(name)(config)
    space = config.search_space()
    genotypes = method.random_genotypes(np.random.default_rng(5), 30)
    assert len(genotypes) == 30 and len(set(genotypes)) == 30
    assert genotypes == method.random_genotypes(np.random.default_rng(5), 30)  # Seeded.
    allowed = {space.primitives[k] for k in space.candidate_ops()}
    assert "none" in space.primitives and "none" not in allowed
    used = set()
    for g in genotypes:
        for reduction in (False, True):
            pairs, concat = g.cell(reduction)
            assert tuple(concat) == (2, 3, 4) and len(pairs) == 2 * 3
            for node in range(3):
                (op_a, a), (op_b, b) = pairs[2 * node:2 * node + 2]
                assert a < b < 2 + node  # Distinct earlier states.
                used |= {op_a, op_b}
    assert used == allowed  # 360 draws reach every candidate op, and only those.


def test_a_space_smaller_than_the_request_and_a_method_without_cells_are_refused():
    config = SearchConfig(output_dir="", nodes=1, primitives="msr")  # 4 ops.
    ops = len(config.search_space().candidate_ops())
    method = methods.get("darts")(config)
    assert len(method.random_genotypes(np.random.default_rng(0), ops ** 4)) == ops ** 4
    with pytest.raises(ConfigError, match="fewer than"):
        method.random_genotypes(np.random.default_rng(0), ops ** 4 + 1)
    hypercuboid = methods.get("hypercuboid")(SearchConfig(output_dir="", method="hypercuboid"))
    with pytest.raises(ConfigError, match="hypercuboid.*no cell space"):
        hypercuboid.random_genotypes(np.random.default_rng(0), 3)


def test_nao_random_genotypes_are_its_random_pool():
    config = SearchConfig(output_dir="", method="nao_v2", selection="pool")
    genotypes = methods.get("nao_v2")(config).random_genotypes(np.random.default_rng(3), 5)
    pool = nao_arch.random_pool(np.random.default_rng(3), 5)
    assert [nao_arch.from_genotype(g).tolist() for g in genotypes] == pool.tolist()


# -- bad input --------------------------------------------------------------------------
def test_bad_input_is_refused_before_anything_is_written(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    SearchConfig(output_dir=str(run_dir), **DARTS_RUN).save(str(run_dir / "config.json"))
    out = tmp_path / "out"
    cases = [(_study(run_dir, num_archs=2), "--num_archs=2"),
             (_study(run_dir, epochs=0), "--standalone_epochs=0"),
             (_study(tmp_path / "missing"), "not a keras_darts.search output directory")]
    for study, message in cases:
        with pytest.raises(ConfigError, match=message):
            rank_correlation.run_study(study, str(out))
    assert not out.exists()
    out.mkdir()
    (out / "notes.txt").write_text("another study")
    with pytest.raises(ConfigError, match="not a rank-correlation study"):
        rank_correlation.run_study(_study(run_dir), str(out))

    # The command line: one line on stderr, exit code 2.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "rank_correlation.py"),
         f"--checkpoint={tmp_path / 'missing'}", "--num_archs=4", "--standalone_epochs=1",
         f"--output_dir={tmp_path / 'cli'}"], cwd=REPO, env=env, capture_output=True,
        text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("rank_correlation:")]
    assert len(errors) == 1 and "not a keras_darts.search output directory" in errors[0]
    assert not (tmp_path / "cli").exists()


# -- end to end -------------------------------------------------------------------------
@pytest.mark.slow
def test_darts_study_end_to_end_resumes_and_refuses_other_flags(tmp_path):
    run_dir = tmp_path / "search"
    run_search(SearchConfig(output_dir=str(run_dir), **DARTS_RUN))
    before = _snapshot(run_dir)
    out = str(tmp_path / "study")
    summary = rank_correlation.run_study(_study(run_dir), out)
    assert _snapshot(run_dir) == before  # The run is only read.
    assert summary["method"] == "darts" and summary["num_archs"] == 4
    rows = _check_outputs(out, summary, 4)
    candidates = json.load(open(os.path.join(out, "candidates.json")))
    assert [c["supernet_score"] for c in candidates["candidates"]] == \
        [float(r["supernet_score"]) for r in rows]

    # Resume: only the deleted candidate is trained again, to the same result.
    results = {i: os.path.join(out, "standalone", f"arch_{i:03d}", "results.json")
               for i in range(4)}
    mtimes = {i: os.path.getmtime(p) for i, p in results.items() if i != 2}
    shutil.rmtree(os.path.dirname(results[2]))
    again = rank_correlation.run_study(_study(run_dir), out)
    assert os.path.exists(results[2])
    assert {i: os.path.getmtime(results[i]) for i in mtimes} == mtimes
    assert {k: v for k, v in again.items() if k != "seconds"} == \
        {k: v for k, v in summary.items() if k != "seconds"}
    assert _rows(out) == rows

    # Other flags into the same directory are refused, naming the flag.
    for study, flag in [(_study(run_dir, num_archs=5), "--num_archs"),
                        (_study(run_dir, seed=1), "--seed"),
                        (_study(run_dir, epochs=2), "--standalone_epochs")]:
        with pytest.raises(ConfigError, match=f"holds a study with {flag}="):
            rank_correlation.run_study(study, out)
    other_run = tmp_path / "other"
    shutil.copytree(run_dir, other_run)
    with pytest.raises(ConfigError, match="holds a study with --checkpoint="):
        rank_correlation.run_study(_study(other_run), out)


@pytest.mark.slow
def test_nao_study_end_to_end_scores_as_the_search_does(tmp_path):
    run_dir = tmp_path / "nao"
    run_search(SearchConfig(output_dir=str(run_dir), **NAO_RUN, method_settings=NAO))
    before = _snapshot(run_dir)
    out = str(tmp_path / "study")
    summary = rank_correlation.run_study(_study(run_dir, seed=2), out)
    assert _snapshot(run_dir) == before
    assert summary["method"] == "nao_v2"
    rows = _check_outputs(out, summary, 4)
    expected = nao_arch.random_pool(np.random.default_rng(2), 4)
    candidates = json.load(open(os.path.join(out, "candidates.json")))["candidates"]
    assert [nao_arch.from_genotype(rank_correlation.genotype_lib.from_json_dict(
        c["genotype"])).tolist() for c in candidates] == expected.tolist()

    # The hook scores as the search's last round did: the pool's own scores
    # come back, and the study's scores are those of the same hook.
    run = SearchRun(dataclasses.replace(SearchConfig.load_from_run(str(run_dir)),
                                        output_dir=str(tmp_path / "restore")))
    run.restore_searched(str(run_dir))
    pool = json.load(open(run_dir / "arch_pool.json"))["entries"]
    for i, entry in enumerate(pool):
        genotype = nao_arch.to_genotype(entry["arch"])
        assert run.method.score_genotype(run, genotype, i) == entry["score"]
    for c, row in zip(candidates, rows):
        genotype = rank_correlation.genotype_lib.from_json_dict(c["genotype"])
        assert run.method.score_genotype(run, genotype, c["index"]) == \
            float(row["supernet_score"])

