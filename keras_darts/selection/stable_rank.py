"""`stable_rank`: minimum-stable-rank read-out of a trained supernet.

This is the `msr_readout` proposal of specs/selection.md 3.6, not MSR-DARTS
itself (no spectral normalisation, no srank mixing during training): every
parameterised candidate op is scored by the stable rank of its last pointwise
kernel as a periodic convolution (3.2), weightless ops score +inf, and the
genotype keeps the smallest scores (3.4).  MSR-DARTS's own search
(`--method=msr`, keras_darts.msr) mixes and selects by these same scores.

context["msr_shapes"] picks the (H, W) each edge is scored at:
  "code"   (default) the cell's input size, halved for stride-2 edges; stride-1
           edges of reduction cells keep the full size (the reference code's quirk);
  "actual" the size the edge really runs at (all edges of a reduction cell: half).
"""

import numpy as np

from keras_darts.cells import edge_inputs
from keras_darts.errors import GenotypeError
from keras_darts.genotype import Genotype
from keras_darts.selection import SelectionResult, register
from keras_darts.stable_rank import conv_stable_rank, scored_kernel

MSR_SHAPES = ("code", "actual")


def _halve(size):
    # Stride-2 ops here output ceil(size / 2) (pad k//2 convs and pools).
    return (size + 1) // 2


def _cells_with_input_size(model, msr_shapes):
    """(cell, its input (H, W), that halved) for every search cell."""
    if msr_shapes not in MSR_SHAPES:
        raise ValueError(f"msr_shapes must be one of {list(MSR_SHAPES)}, got {msr_shapes!r}")
    height, width = model.image_shape[:2]
    for cell in model.search_cells:
        half = (_halve(height), _halve(width))
        yield cell, (height, width), half
        if cell.reduction:  # The next cell's input is the reduced output.
            height, width = half


def edge_sizes(model, msr_shapes="code"):
    """Per search cell, the (H, W) every edge is scored at (specs/selection.md 3.2)."""
    return [[half if edge.stride == 2 or (cell.reduction and msr_shapes == "actual") else full
             for edge in cell.edges]
            for cell, full, half in _cells_with_input_size(model, msr_shapes)]


def edge_input_sizes(model, msr_shapes="code"):
    """Per search cell, the (H, W) every edge's input is taken to have: the
    cell's input size; under "actual", stride-1 edges of reduction cells read
    the halved nodes.  Following an op's strides from here reaches `edge_sizes`
    at its last conv (MSR-DARTS's spectral norm runs every conv at such sizes)."""
    return [[half if cell.reduction and edge.stride == 1 and msr_shapes == "actual" else full
             for edge in cell.edges]
            for cell, full, half in _cells_with_input_size(model, msr_shapes)]


def cell_sranks(cell, sizes):
    """[num_edges, num_ops] stable ranks of one cell; +inf for weightless ops."""
    sranks = np.full((len(cell.edges), len(cell.primitives)), np.inf)
    for e, (edge, (height, width)) in enumerate(zip(cell.edges, sizes)):
        for k, op in enumerate(edge.candidates):
            kernel = scored_kernel(op)
            if kernel is not None:
                sranks[e, k] = conv_stable_rank(kernel, height, width)
    return sranks


def derive_cell(sranks, primitives, num_nodes):
    """(op, input) pairs from a [num_edges, num_ops] srank matrix (specs/selection.md 3.4).

    Per node: the 2 incoming edges with the smallest min-over-ops srank
    (ascending; ties keep the lower input), each with its argmin op (first
    wins).  Edges with only weightless (+inf) ops are never kept.
    """
    sranks = np.asarray(sranks, dtype=np.float64)
    edges = edge_inputs(num_nodes)
    pairs = []
    for node in range(num_nodes):
        # Rows come in ascending input order and sorted() is stable.
        rows = [(e, j) for e, (n, j) in enumerate(edges)
                if n == node and np.isfinite(sranks[e]).any()]
        if len(rows) < 2:
            raise GenotypeError(
                f"stable_rank selection: node {node} has {len(rows)} incoming edge(s) with a "
                f"parameterised op, needs 2; the op set {list(primitives)} has no ops with a "
                "scorable pointwise kernel (sep/dil convs)")
        for e, j in sorted(rows, key=lambda row: sranks[row[0]].min())[:2]:
            pairs.append((primitives[int(np.argmin(sranks[e]))], j))
    return pairs


def per_cell_sranks(model, msr_shapes="code"):
    """[num_edges, num_ops] srank matrix of every search cell, in cell order."""
    return [cell_sranks(cell, sizes)
            for cell, sizes in zip(model.search_cells, edge_sizes(model, msr_shapes))]


def mean_sranks(model, msr_shapes="code", sranks=None):
    """{"normal", "reduce"}: srank matrices averaged element-wise over cells of that
    type (`sranks`: the `per_cell_sranks`, if already computed)."""
    if sranks is None:
        sranks = per_cell_sranks(model, msr_shapes)
    by_type = {"normal": [], "reduce": []}
    for cell, matrix in zip(model.search_cells, sranks):
        by_type["reduce" if cell.reduction else "normal"].append(matrix)
    for kind, matrices in by_type.items():
        if not matrices:
            raise GenotypeError(f"stable_rank selection: the supernet has no {kind} cell")
    return {kind: np.mean(matrices, axis=0) for kind, matrices in by_type.items()}


def _json_safe(matrix):
    return [[float(v) if np.isfinite(v) else None for v in row] for row in matrix]


@register("stable_rank")
def stable_rank(model, context):
    """Genotype of minimum stable rank; scores = mean srank per op, None for +inf,
    and under "cells" every cell's own srank matrix and cell genotype (3.4)."""
    cells = per_cell_sranks(model, context.get("msr_shapes", "code"))
    sranks = mean_sranks(model, sranks=cells)
    concat = list(range(2, 2 + model.num_nodes))
    genotype = Genotype(normal=derive_cell(sranks["normal"], model.primitives, model.num_nodes),
                        normal_concat=concat,
                        reduce=derive_cell(sranks["reduce"], model.primitives, model.num_nodes),
                        reduce_concat=concat)
    per_cell = [{"cell": i, "type": "reduce" if cell.reduction else "normal",
                 "pairs": [list(pair) for pair in derive_cell(matrix, model.primitives,
                                                              model.num_nodes)],
                 "concat": concat, "srank": _json_safe(matrix)}
                for i, (cell, matrix) in enumerate(zip(model.search_cells, cells))]
    scores = {kind: _json_safe(m) for kind, m in sranks.items()}
    return SelectionResult(genotype=genotype, scores={**scores, "cells": per_cell})
