"""Deterministic guards of the search step's speed (docs/performance.md#guards).

No timing: the traced step's size, its traced functions and its counted FLOPs at
a fixed small size, held to the figures recorded when the step was last made
faster.  A refactor that traces the edges inline again (the graph grows by a
copy of every edge), retraces per call or per edge (more functions), or adds
recomputation (more FLOPs) fails here.  After a deliberate change, re-record the
figures with `python tools/benchmark.py` at the size below and say why in
BUILD_NOTES.md (section 4).
"""

import os
import sys

import pytest
import tensorflow as tf

from conftest import REPO
from keras_darts.infra import graph_stats

sys.path.insert(0, os.path.join(REPO, "tools"))
import benchmark  # noqa: E402  (the benchmark builds the step as the search does)

# C=4, 3 cells (the 2nd and 3rd reduce), 4 nodes (14 edges per cell), 8x8 images,
# batch 2, the full DARTS op set: 42 mixed edges of 4 kinds (channels x stride).
SIZE = ["--channels", "4", "--layers", "3", "--nodes", "4", "--image_size", "8",
        "--batch", "2", "--classes", "10"]
EDGES = 42
EDGE_KINDS = 4

# Recorded on TF 2.21 / Keras 3.15 (BUILD_NOTES.md 4.15): upper bounds on graph
# nodes (+3 % over the recorded figure, for TF versions), the exact number of
# function bodies, GFLOP to 0.5 %.
RECORDED = {
    ("first", "all"): {"step_nodes": 0, "functions": 0, "function_nodes": 0, "gflop": 0.0},
    ("first", "none"): {"step_nodes": 0, "functions": 0, "function_nodes": 0, "gflop": 0.0},
    ("second", "all"): {"step_nodes": 0, "functions": 0, "function_nodes": 0, "gflop": 0.0},
}


pytestmark = pytest.mark.xdist_group("step_budget")  # One worker: the fixture is shared.


def traced_step(order, recompute):
    args = benchmark.parse_args(SIZE + ["--order", order, "--recompute", recompute])
    _, model, search = benchmark.build(args)
    batch = (tf.random.normal((2, 8, 8, 3)), tf.random.uniform((2,), 0, 10, tf.int32))
    return model, search, batch


@pytest.fixture(scope="module")
def measured():
    """(order, recompute) -> (graph size, GFLOP) of that step, traced once."""
    cache = {}

    def measure(order, recompute):
        if (order, recompute) not in cache:
            _, search, batch = traced_step(order, recompute)
            graph = search.step_graph(batch, batch)
            cache[(order, recompute)] = (graph_stats.graph_size(graph),
                                         graph_stats.count_gflop(graph))
        return cache[(order, recompute)]
    return measure


@pytest.mark.parametrize("order,recompute", sorted(RECORDED))
def test_step_graph_size_and_flops_stay_within_the_recorded_bounds(measured, order, recompute):
    size, gflop = measured(order, recompute)
    recorded = RECORDED[(order, recompute)]
    print(order, recompute, size, gflop)  # What to record after a deliberate change.
    assert size["step_nodes"] <= 1.03 * recorded["step_nodes"], size
    assert size["function_nodes"] <= 1.03 * recorded["function_nodes"], size
    assert size["functions"] == recorded["functions"], size
    assert gflop == pytest.approx(recorded["gflop"], rel=5e-3)
    # Every mixed edge runs through a shared function in both phases' forward
    # passes (plus the backward passes' calls): never inline.
    assert size["call_sites"] >= 2 * EDGES


def test_recomputation_adds_a_forward_not_a_whole_step(measured):
    """`--recompute=all` re-runs each shared edge function's forward in the
    backward pass: more FLOPs than none, less than half as many again."""
    (_, none), (_, all_) = measured("first", "none"), measured("first", "all")
    assert none < all_ < 1.5 * none


def test_a_step_is_traced_once_and_each_kind_of_edge_once():
    model, search, batch = traced_step("first", "all")
    for _ in range(3):  # New values, same shapes: no retrace.
        search.step((batch[0] + 1.0, batch[1]), batch)
    assert search._step.experimental_get_tracing_count() == 1  # noqa: SLF001
    templates = {id(getattr(edge, "_shared_template", None))
                 for cell in model.search_cells for edge in cell.edges}
    assert len(templates) == EDGE_KINDS and id(None) not in templates
    for edge in (e for cell in model.search_cells for e in cell.edges):
        for function in edge._shared_template.__dict__["_shared_functions"].values():
            # One trace per (method, phase variant): never one per edge or per call.
            assert function.experimental_get_tracing_count() == 1
