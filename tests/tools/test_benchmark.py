"""Smoke test of tools/benchmark.py on a tiny supernet (no timing assertions)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO


def run_benchmark(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "benchmark.py"), "--batch", "2",
         "--channels", "4", "--layers", "3", "--image_size", "8", "--steps", "2", *args],
        capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1
    return json.loads(lines[0])


@pytest.mark.extended  # CI time (~85 s); the benchmark's other modes are tested below.
def test_benchmark_single_edge_over_sharp_ops_with_max_w():
    report = run_benchmark("--relaxation", "single_edge", "--primitives", "sharp",
                           "--weighting", "max_w")
    assert report["relaxation"] == "single_edge" and report["step_s_median"] > 0
    assert (report["primitives"], report["weighting"]) == ("sharp", "max_w")
    assert report["gflop_per_step"] is None  # No single traced graph to count.


def test_benchmark_prints_one_json_line():
    report = run_benchmark()
    assert report["impl"] == "keras_darts" and report["batch"] == 2
    assert report["order"] == "first" and report["recompute"] == "all"
    assert report["graph_optimizer"] == "fast_compile"  # `auto` on a CPU.
    assert report["trace_s"] > 0 and report["step_s_min"] <= report["step_s_median"]
    assert report["peak_rss_mb"] > 100
    # C=4, 3 cells, 10 classes: counted like the 1,930,618 default, by the same code.
    assert report["params"] > 0
    assert report["gflop_per_step"] > 0
    assert report["step_nodes"] > 0 and report["call_sites"] > 0 and report["functions"] > 0
    expected = report["gflop_per_step"] / report["step_s_median"]
    assert abs(report["gflops_achieved"] - expected) <= 0.02 * expected


def test_benchmark_applies_the_methods_implied_graph_optimizer():
    report = run_benchmark("--method", "nao_v2", "--layers", "5", "--steps", "1")
    assert (report["method"], report["graph_optimizer"]) == ("nao_v2", "full")
    assert report["step_s_median"] > 0 and report["params"] > 0
