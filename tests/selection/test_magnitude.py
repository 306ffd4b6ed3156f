import numpy as np
import pytest

from keras_darts import selection
from keras_darts.ops import DARTS_PRIMITIVES
from keras_darts.space.darts_cell import darts_cell


def derive_cell(probs, primitives, num_nodes):
    """The magnitude rule: the DARTS space's derivation on softmax(alpha)."""
    return darts_cell(primitives, num_nodes).derive_cell(probs)


def derive_genotype(probs_by_cell, primitives, num_nodes):
    return darts_cell(primitives, num_nodes).derive_genotype(probs_by_cell)


def _probs(rows):
    """14 x 8 probabilities: uniform except the given (edge, op) -> weight entries."""
    p = np.full((14, 8), 0.1)
    for (e, k), v in rows.items():
        p[e, k] = v
    return p


def test_magnitude_picks_top2_edges_and_best_non_none_op():
    p = _probs({
        (0, 4): 0.5, (1, 5): 0.4,                 # node0: both edges (only two)
        (2, 0): 0.9, (3, 6): 0.3, (4, 3): 0.6,    # node1: 'none' is ignored -> edges 4, 3
        (5, 1): 0.7, (8, 7): 0.8,                 # node2: inputs 3 (row 8) then 0 (row 5)
        (9, 2): 0.2, (13, 4): 0.35, (11, 5): 0.3,  # node3: rows 13, 11
    })
    pairs = derive_cell(p, DARTS_PRIMITIVES, 4)
    assert pairs == [
        ("sep_conv_3x3", 0), ("sep_conv_5x5", 1),
        ("skip_connect", 2), ("dil_conv_3x3", 1),
        ("dil_conv_5x5", 3), ("max_pool_3x3", 0),
        ("sep_conv_3x3", 4), ("sep_conv_5x5", 2),
    ]


def test_ties_keep_lower_input_and_first_op():
    p = np.full((14, 8), 0.125)
    pairs = derive_cell(p, DARTS_PRIMITIVES, 4)
    # All equal: every node keeps inputs 0 and 1 and the first non-none op.
    assert pairs == [("max_pool_3x3", 0), ("max_pool_3x3", 1)] * 4


def test_derive_genotype_has_both_cells():
    p = np.random.default_rng(0).random((14, 8))
    g = derive_genotype({"normal": p, "reduce": p[::-1]}, DARTS_PRIMITIVES, 4)
    assert len(g.normal) == len(g.reduce) == 8
    assert g.normal_concat == g.reduce_concat == (2, 3, 4, 5)
    assert all(op != "none" for op, _ in g.normal + g.reduce)


def test_registry():
    assert "magnitude" in selection.names()
    with pytest.raises(KeyError, match="unknown selection criterion 'nope'"):
        selection.get("nope")
    with pytest.raises(ValueError, match="already registered"):
        selection.register("magnitude")(lambda m, c: None)


class _Model:
    """What the magnitude criterion reads of a supernet: its space and softmax(alpha)."""

    def __init__(self, probs, primitives=DARTS_PRIMITIVES):
        self.space = darts_cell(primitives, 4)
        self._probs = probs

    def arch_probabilities(self):
        return self._probs


def test_none_exclusion_is_an_option():
    """Node 1's edge 2 has 'none' as its strongest op: the DARTS rule ignores it
    and keeps edges 4 and 3; without the exclusion edge 2 wins with 'none'
    (docs/selection/magnitude.md#none-exclusion)."""
    p = _probs({(2, 0): 0.9, (3, 6): 0.3, (4, 3): 0.6})
    model = _Model({"normal": p, "reduce": p})
    with_rule = selection.select("magnitude", model)
    without = selection.select("magnitude", model, {"exclude_none": False})
    assert with_rule.genotype.normal[2:4] == (("skip_connect", 2), ("dil_conv_3x3", 1))
    assert without.genotype.normal[2:4] == (("none", 0), ("skip_connect", 2))
    # Node 0's uniform rows: the first of equal weights wins, 'none' (column 0) now.
    assert [op for op, _ in without.genotype.normal[:2]] == ["none", "none"]
    assert [op for op, _ in with_rule.genotype.normal[:2]] == ["max_pool_3x3"] * 2


def test_magnitude_keeps_the_op_family():
    from keras_darts import ops

    primitives = ops.op_set("sharp")
    p = np.random.default_rng(0).random((14, len(primitives)))
    model = _Model({"normal": p, "reduce": p})
    model.space = darts_cell("sharp", 4)
    genotype = selection.select("magnitude", model).genotype
    assert genotype.op_family == "sharp"
    assert {op for op, _ in genotype.normal} <= set(primitives) - {"none"}
