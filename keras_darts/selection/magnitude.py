"""Classic DARTS read-out by alpha magnitude (specs/darts.md sect. 4)."""

import numpy as np

from keras_darts.cells import edge_inputs
from keras_darts.genotype import Genotype
from keras_darts.selection import SelectionResult, register


def derive_cell(probs, primitives, num_nodes):
    """(op, input) pairs of one cell from softmax(alpha) rows [num_edges, num_ops].

    Per node: the 2 incoming edges with the strongest non-`none` op weight,
    strongest first (ties keep the lower input), each with its strongest
    non-`none` op (first maximum wins).
    """
    probs = np.asarray(probs)
    candidates = [k for k, name in enumerate(primitives) if name != "none"]
    edges = edge_inputs(num_nodes)
    pairs = []
    for node in range(num_nodes):
        rows = [(e, j) for e, (n, j) in enumerate(edges) if n == node]
        strength = {j: max(probs[e, k] for k in candidates) for e, j in rows}
        # sorted() is stable: equal strengths keep the lower input index first.
        kept = sorted((j for _, j in rows), key=lambda j: -strength[j])[:2]
        for j in kept:
            e = next(e for e, jj in rows if jj == j)
            best = max(candidates, key=lambda k: (probs[e, k], -k))
            pairs.append((primitives[best], j))
    return pairs


def derive_genotype(probs_by_cell, primitives, num_nodes):
    concat = list(range(2, 2 + num_nodes))
    return Genotype(normal=derive_cell(probs_by_cell["normal"], primitives, num_nodes),
                    normal_concat=concat,
                    reduce=derive_cell(probs_by_cell["reduce"], primitives, num_nodes),
                    reduce_concat=concat)


@register("magnitude")
def magnitude(model, context):
    probs = model.arch_probabilities()
    genotype = derive_genotype(probs, model.primitives, model.num_nodes)
    return SelectionResult(genotype=genotype,
                           scores={cell: p.tolist() for cell, p in probs.items()})
