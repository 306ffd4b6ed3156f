"""`stable_rank`: minimum-stable-rank read-out of a trained supernet.

This is this project's read-out proposal (docs/selection/stable_rank.md), not MSR-DARTS
itself (no spectral normalisation, no srank mixing during training): every
parameterised candidate op is scored by the stable rank of its last pointwise
kernel as a periodic convolution, weightless ops score +inf, and the
genotype keeps the smallest scores.  MSR-DARTS's own search
(`--method=msr`, keras_darts/methods/msr.py) mixes and selects by these same scores.

The setting `msr_shapes` (flag `--msr_shapes`) picks the (H, W) each edge is scored at:
  "code"   (default) the cell's input size, halved for stride-2 edges; stride-1
           edges of reduction cells keep the full size (the reference code's quirk);
  "actual" the size the edge really runs at (all edges of a reduction cell: half).
"""

import dataclasses

import numpy as np

from keras_darts.errors import GenotypeError
from keras_darts.selection import SelectionResult, register
from keras_darts.selection.conv_stable_rank import conv_stable_rank, scored_kernel
from keras_darts.settings import setting

MSR_SHAPES = ("code", "actual")


@dataclasses.dataclass(frozen=True)
class StableRankSettings:
    msr_shapes: str = setting(
        "code", "msr_shapes", "stable_rank (and --method=msr): spatial size each edge is "
        "scored at; 'code' = the MSR-DARTS code's (the cell's input size, halved for "
        "stride-2 edges), 'actual' = the size the edge runs at.", choices=MSR_SHAPES)


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
    """Per search cell, the (H, W) every edge is scored at
    (docs/selection/stable_rank.md#feature-map-sizes)."""
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


def derive_cell(sranks, space):
    """(op, input) pairs from a [num_edges, num_ops] srank matrix
    (docs/selection/stable_rank.md#derivation-rule): the space's rule on -srank,
    every op a candidate.

    Per node: the 2 incoming edges with the smallest min-over-ops srank
    (ascending; ties keep the lower input), each with its argmin op (first
    wins).  Edges with only weightless (+inf) ops are never kept.
    """
    scores = -np.asarray(sranks, dtype=np.float64)
    try:
        return space.derive_cell(scores, candidates=range(len(space.primitives)))
    except GenotypeError as e:
        raise GenotypeError(
            f"stable_rank selection: {e}; the op set {list(space.primitives)} has no ops "
            "with a scorable pointwise kernel (sep/dil convs) there") from None


def per_cell_sranks(model, msr_shapes="code"):
    """[num_edges, num_ops] srank matrix of every search cell, in cell order."""
    return [cell_sranks(cell, sizes)
            for cell, sizes in zip(model.search_cells, edge_sizes(model, msr_shapes))]


def mean_sranks(model, msr_shapes="code", sranks=None):
    """{"normal", "reduce"}: srank matrices averaged element-wise over cells of that
    type (`sranks`: the `per_cell_sranks`, if already computed)."""
    if sranks is None:
        sranks = per_cell_sranks(model, msr_shapes)
    by_type = {cell_type: [] for cell_type in model.space.cell_types}
    for cell, matrix in zip(model.search_cells, sranks):
        by_type[cell.cell_type].append(matrix)
    for kind, matrices in by_type.items():
        if not matrices:
            raise GenotypeError(f"stable_rank selection: the supernet has no {kind} cell")
    return {kind: np.mean(matrices, axis=0) for kind, matrices in by_type.items()}


def _json_safe(matrix):
    return [[float(v) if np.isfinite(v) else None for v in row] for row in matrix]


@register("stable_rank", settings=StableRankSettings)
def stable_rank(model, settings):
    """Genotype of minimum stable rank; scores = mean srank per op, None for +inf,
    and under "cells" every cell's own srank matrix and cell genotype."""
    space = model.space
    cells = per_cell_sranks(model, settings.msr_shapes)
    sranks = mean_sranks(model, sranks=cells)
    genotype = space.genotype({t: derive_cell(sranks[t], space) for t in space.cell_types})
    per_cell = []
    for i, (cell, matrix) in enumerate(zip(model.search_cells, cells)):
        pairs = derive_cell(matrix, space)
        per_cell.append({"cell": i, "type": cell.cell_type, "pairs": [list(p) for p in pairs],
                         "concat": list(space.concat_of(pairs)), "srank": _json_safe(matrix)})
    scores = {kind: _json_safe(m) for kind, m in sranks.items()}
    return SelectionResult(genotype=genotype, scores={**scores, "cells": per_cell})
