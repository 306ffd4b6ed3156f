"""What a traced step holds and does: op counts, called functions, FLOPs.

Deterministic stand-ins for speed (docs/performance.md#guards): tracing and
graph-preparation time grow with the number of graph nodes, a retrace shows as
a second concrete function, and recomputation as more FLOPs.  The benchmark
prints these figures and the tests hold them to recorded bounds.
"""

import numpy as np
from tensorflow.python.framework import ops as tf_ops  # Per-op FLOP statistics.

_CALLS = ("PartitionedCall", "StatefulPartitionedCall")
_CONDITIONALS = ("If", "StatelessIf", "Case", "StatelessCase")


def called_function(graph, op):
    """(name, FuncGraph) of the function a (Stateful)PartitionedCall op runs, or
    None.  The name identifies it: FuncGraph names repeat (every shared edge
    function's forward graph is called "run")."""
    if op.type not in _CALLS:
        return None
    name = op.get_attr("f").name
    function = graph._functions.get(name)  # noqa: SLF001 (no public lookup)
    body = getattr(function, "graph", None)
    return None if body is None else (name, body)


def graph_size(graph):
    """{"step_nodes": ops of `graph` itself, "call_sites": its calls of traced
    functions, "functions": distinct function bodies reachable from it (nested
    ones included), "function_nodes": their ops, each body counted once}."""
    bodies = {}

    def visit(g):
        calls = 0
        for op in g.get_operations():
            called = called_function(g, op)
            if called is None:
                continue
            calls += 1
            name, body = called
            if name not in bodies:
                bodies[name] = len(body.get_operations())
                visit(body)
        return calls

    call_sites = visit(graph)
    return {"step_nodes": len(graph.get_operations()), "call_sites": call_sites,
            "functions": len(bodies), "function_nodes": sum(bodies.values())}


def executed_ops(graph):
    """Ops that run: those the outputs or a side effect (an op without outputs,
    e.g. a variable update) depend on.  Gradient functions also emit gradients
    nobody asked for (e.g. conv filter gradients in the alpha phase); Grappler
    prunes them before execution, so they must not be counted."""
    seeds = [t.op for t in graph.outputs] + [op for op in graph.get_operations()
                                             if not op.outputs]
    seen, stack = set(), list(seeds)
    while stack:
        op = stack.pop()
        if op.name in seen:
            continue
        seen.add(op.name)
        stack.extend(t.op for t in op.inputs)
        stack.extend(op.control_inputs)
    return [op for op in graph.get_operations() if op.name in seen]


def _depthwise_grad_flops(op):
    """2 * (elements of the output gradient) * kh * kw, as the forward conv."""
    out_grad = op.inputs[2].shape
    kernel = op.inputs[1].shape if op.type.endswith("Input") else op.outputs[0].shape
    return 2 * int(np.prod(out_grad)) * int(kernel[0]) * int(kernel[1])


def count_gflop(graph, _cache=None):
    """FLOPs of one execution of `graph`, in GFLOP (2 per multiply-add), including
    the bodies of the shared edge functions it calls (and their recomputation).
    TF's registered per-op statistics, plus ours for the depthwise-conv gradients
    it has none for; element-wise ops (BN, ReLU) are not counted.  Raises
    ValueError for a graph with conditionals (what runs is data)."""
    cache = {} if _cache is None else _cache
    total = 0
    for op in executed_ops(graph):
        if op.type in _CONDITIONALS:  # Which branch runs is data (HyperCuboid's skipping).
            raise ValueError(f"{op.type} op {op.name}: its executed FLOPs are data-dependent")
        called = called_function(graph, op)
        if called is not None:
            name, body = called
            if name not in cache:
                cache[name] = count_gflop(body, cache) * 1e9
            total += cache[name]
            continue
        if op.type.startswith("DepthwiseConv2dNativeBackprop"):
            total += _depthwise_grad_flops(op)
            continue
        try:
            total += tf_ops.get_stats_for_node_def(graph, op.node_def, "flops").value or 0
        except (ValueError, TypeError):  # No statistics registered for this op.
            pass
    return total / 1e9
