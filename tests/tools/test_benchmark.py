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
    expected = report["gflop_per_step"] / report["step_s_median"]
    assert abs(report["gflops_achieved"] - expected) <= 0.02 * expected


def test_benchmark_applies_the_methods_implied_graph_optimizer():
    report = run_benchmark("--method", "nao_v2", "--layers", "5", "--steps", "1")
    assert (report["method"], report["graph_optimizer"]) == ("nao_v2", "full")
    assert report["step_s_median"] > 0 and report["params"] > 0


def test_flop_count_of_known_graph():
    import tensorflow as tf
    sys.path.insert(0, os.path.join(REPO, "tools"))
    import benchmark

    x = tf.zeros((2, 8, 8, 4))
    pointwise = tf.zeros((1, 1, 4, 6))
    depthwise = tf.zeros((3, 3, 4, 1))

    @tf.function
    def step(x, kernel):
        with tf.GradientTape() as tape:
            tape.watch(kernel)
            total = tf.reduce_sum(tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "SAME"))
        grad = tape.gradient(total, kernel)  # Backprop filter only.
        # The gradient function also emits the input gradient, which nothing uses:
        # it must not be counted (Grappler prunes it before execution).
        return tf.nn.conv2d(x, pointwise, 1, "VALID"), grad, total

    graph = step.get_concrete_function(x, depthwise).graph
    assert "DepthwiseConv2dNativeBackpropFilter" in {op.type for op in graph.get_operations()}
    conv = 2 * 2 * 8 * 8 * 6 * 4            # 2 FLOP per MAC, 1x1 conv 4 -> 6.
    depthwise_fwd = 2 * 2 * 8 * 8 * 4 * 9   # 3x3 per channel.
    depthwise_filter_grad = depthwise_fwd
    counted = benchmark.count_gflop(graph) * 1e9
    # Elementwise ops (the reduce_sum and its gradient) add a few hundred FLOPs at most.
    assert conv + depthwise_fwd + depthwise_filter_grad <= counted
    assert counted <= conv + depthwise_fwd + depthwise_filter_grad + 1000


def test_flop_count_includes_called_functions():
    import tensorflow as tf
    sys.path.insert(0, os.path.join(REPO, "tools"))
    import benchmark

    x = tf.zeros((2, 8, 8, 4))
    kernel = tf.zeros((1, 1, 4, 6))
    # Shared edge functions are not inlined: their bodies must be counted per call.
    conv = tf.function(lambda x, k: tf.nn.conv2d(x, k, 1, "VALID"),
                       experimental_attributes={"_noinline": True})

    @tf.function
    def outer(x, k):
        return conv(x, k) + conv(x + 1.0, k)

    graph = outer.get_concrete_function(x, kernel).graph
    assert "PartitionedCall" in {op.type for op in graph.get_operations()}
    one_conv = 2 * 2 * 8 * 8 * 6 * 4
    counted = benchmark.count_gflop(graph) * 1e9
    assert 2 * one_conv <= counted <= 2 * one_conv + 2000
