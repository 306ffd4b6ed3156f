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
from keras_darts.space.cells import MixedOp

sys.path.insert(0, os.path.join(REPO, "tools"))
import benchmark  # noqa: E402  (the benchmark builds the step as the search does)

# C=4, 3 cells (the 2nd and 3rd reduce), 4 nodes (14 edges per cell), 8x8 images,
# batch 2, the full DARTS op set: 42 mixed edges of 5 kinds (channels x stride).
SIZE = ["--channels", "4", "--layers", "3", "--nodes", "4", "--image_size", "8",
        "--batch", "2", "--classes", "10"]
EDGES = 42
EDGE_KINDS = 5  # (C, stride): (4, 1), (8, 2), (8, 1), (16, 2), (16, 1).

# Recorded on TF 2.21 / Keras 3.15 (BUILD_NOTES.md 4.15, 4.17): graph nodes as upper
# bounds (+3 %, for other TF versions); calls of shared functions (one per edge
# per forward and backward pass: 4 per edge in a first-order step, 10 in a
# second-order one) and distinct function bodies (5 kinds x 2 phases x forward
# and backward) exactly; GFLOP to 0.5 %.
RECORDED = {
    ("first", "all"): {"step_nodes": 8811, "call_sites": 168, "functions": 20,
                       "function_nodes": 10168, "gflop": 0.031314378},
    ("first", "none"): {"step_nodes": 8811, "call_sites": 168, "functions": 20,
                        "function_nodes": 8206, "gflop": 0.02334489},
    ("second", "all"): {"step_nodes": 29893, "call_sites": 420, "functions": 20,
                        "function_nodes": 10168, "gflop": 0.08111259},
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
    assert size["functions"] == recorded["functions"] == 2 * 2 * EDGE_KINDS, size
    assert size["call_sites"] == recorded["call_sites"], size
    assert size["call_sites"] % EDGES == 0  # Every edge alike: none inline.
    assert gflop == pytest.approx(recorded["gflop"], rel=5e-3)


def test_recomputation_adds_a_forward_not_a_whole_step(measured):
    """`--recompute=all` re-runs each shared edge function's forward in the
    backward pass: more FLOPs than none, less than half as many again."""
    (_, none), (_, all_) = measured("first", "none"), measured("first", "all")
    assert none < all_ < 1.5 * none


def test_a_step_is_traced_once_and_each_kind_of_edge_once():
    model, search, batch = traced_step("first", "all")
    edges = [edge for cell in model.search_cells for edge in cell.edges]
    search.step(batch, batch)
    templates = {id(edge.__dict__.get("_shared_template")) for edge in edges}
    assert len(templates) == EDGE_KINDS and id(None) not in templates
    # Keys are (method, constant variables, recompute): other live supernets of this
    # process may have added other methods or recompute settings to a template.
    functions = {id(f): f for edge in edges
                 for key, f in edge._shared_template.__dict__["_shared_functions"].items()
                 if key[0] is MixedOp.mix and key[2] is True}
    # A template may be shared with another live supernet of this process, whose
    # step traced its functions too: count the traces from here on.
    traces = {key: f.experimental_get_tracing_count() for key, f in functions.items()}
    assert len(functions) == 2 * EDGE_KINDS  # Alpha and weight phase of each kind.
    for _ in range(3):  # New values, same shapes: no retrace.
        search.step((batch[0] + 1.0, batch[1]), batch)
    assert search._step.experimental_get_tracing_count() == 1  # noqa: SLF001
    assert {key: f.experimental_get_tracing_count() for key, f in functions.items()} == traces
