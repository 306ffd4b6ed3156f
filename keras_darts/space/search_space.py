"""What a search chooses from: the description of a cell search space.

A `SearchSpace` says which candidate ops every edge of the supernet offers
(the alpha columns), how the cell is wired (its inputs, its nodes, which
earlier states feed each node), what a discrete cell keeps (how many
(op, input) pairs per node, whether a node may read one state twice), what a
cell outputs (its concat rule) and which cell types there are.  The supernet,
the selection criteria (through `derive_cell`) and the genotype all read it,
so another cell is a new space entry, not new branches (docs/design.md).

Spaces are registered by name (`register`, `get`, `names`); `--space=NAME`
picks one.  The DARTS cell is in `keras_darts/space/darts_cell.py`.
"""

import dataclasses
import functools

import numpy as np

from keras_darts.errors import GenotypeError
from keras_darts.registry import Registry
from keras_darts.space.genotype import Genotype

# A cell outputs the channel concat of every intermediate node (DARTS), or of
# the states no node reads (NAO's "loose ends").
CONCAT_RULES = ("all_nodes", "loose_ends")

_SPACES = Registry("search space")


def dense_edges(num_nodes, num_cell_inputs=2):
    """(node, input_state) of every edge when each node reads every earlier state,
    in alpha row order: 4 nodes give 2 + 3 + 4 + 5 = 14 edges."""
    return tuple((node, j) for node in range(num_nodes) for j in range(num_cell_inputs + node))


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """A cell search space (see the module docstring).

    Args:
      name: the registered name it was made by.
      primitives: candidate op names of every edge, in alpha column order.
      op_family: the op family (keras_darts/ops/registry.py) the names refer to.
      num_nodes: intermediate nodes per cell.
      cell_types: the kinds of cells, each with its own architecture
        ("normal", "reduce": reduction cells halve the resolution).
      num_cell_inputs: states 0 .. num_cell_inputs-1 are the cell's inputs.
      inputs_per_node: (op, input) pairs a node of a discrete cell keeps.
      distinct_inputs: a node's pairs read different states (DARTS); False lets
        one state feed a node twice (NAO).
      concat: one of CONCAT_RULES.
      never_chosen: ops the derivation rule never picks (DARTS: "none").
    """

    name: str
    primitives: tuple
    num_nodes: int = 4
    op_family: str = "darts"
    cell_types: tuple = ("normal", "reduce")
    num_cell_inputs: int = 2
    inputs_per_node: int = 2
    distinct_inputs: bool = True
    concat: str = "all_nodes"
    never_chosen: tuple = ("none",)

    def __post_init__(self):
        object.__setattr__(self, "primitives", tuple(self.primitives))
        if self.concat not in CONCAT_RULES:
            raise ValueError(f"concat must be one of {CONCAT_RULES}, got {self.concat!r}")
        if self.num_nodes < 1:
            raise ValueError(f"a cell needs at least one node, got {self.num_nodes}")

    # -- wiring ----------------------------------------------------------------
    @functools.cached_property
    def edges(self):
        """(node, input_state) of every supernet edge, in alpha row order."""
        return dense_edges(self.num_nodes, self.num_cell_inputs)

    @property
    def num_edges(self):
        return len(self.edges)

    @property
    def alpha_shape(self):
        """[edges, ops]: one row of architecture weights per edge, per cell type."""
        return (self.num_edges, len(self.primitives))

    def rows_of_node(self, node):
        """Alpha rows of the edges into `node`, in input order."""
        return [e for e, (n, _) in enumerate(self.edges) if n == node]

    def multi_input_nodes(self):
        """{node: its rows} for the nodes with more incoming edges than a
        discrete node keeps (4 nodes: {1: [2, 3, 4], 2: [5, .., 8], 3: [9, .., 13]})."""
        rows = {node: self.rows_of_node(node) for node in range(self.num_nodes)}
        return {node: r for node, r in rows.items() if len(r) > self.inputs_per_node}

    def concat_of(self, pairs):
        """The states a discrete cell with these (op, input) pairs outputs."""
        first = self.num_cell_inputs
        nodes = range(first, first + self.num_nodes)
        if self.concat == "all_nodes":
            return tuple(nodes)
        used = {j for _, j in pairs}
        return tuple(i for i in nodes if i not in used)

    # -- derivation ------------------------------------------------------------
    def candidate_ops(self, exclude=None):
        """Op indices a derived cell may use (default: all but `never_chosen`)."""
        exclude = self.never_chosen if exclude is None else tuple(exclude)
        return [k for k, name in enumerate(self.primitives) if name not in exclude]

    def derive_cell(self, scores, candidates=None):
        """(op, input) pairs of one discrete cell from per-edge, per-op `scores`
        [num_edges, num_ops], higher = better, -inf = never choose.

        Per node: the `inputs_per_node` incoming edges whose best candidate op
        scores highest, strongest first (ties keep the lower input), each with
        that best op (the first of equal scores).  Edges without any finite
        candidate score are never kept (docs/spaces/darts.md#derivation-rule).
        """
        scores = np.asarray(scores)
        if scores.shape != self.alpha_shape:
            raise ValueError(f"scores of shape {scores.shape}, expected {self.alpha_shape}")
        candidates = self.candidate_ops() if candidates is None else list(candidates)
        pairs = []
        for node in range(self.num_nodes):
            rows = [(e, self.edges[e][1]) for e in self.rows_of_node(node)
                    if np.isfinite(scores[e, candidates]).any()]
            if len(rows) < self.inputs_per_node:
                raise GenotypeError(
                    f"node {node} has {len(rows)} incoming edge(s) with a choosable op "
                    f"(of {[self.primitives[k] for k in candidates]}); a cell keeps "
                    f"{self.inputs_per_node}")
            strength = {j: max(scores[e, k] for k in candidates) for e, j in rows}
            # sorted() is stable: equal strengths keep the lower input index first.
            kept = sorted((j for _, j in rows), key=lambda j: -strength[j])
            for j in kept[:self.inputs_per_node]:
                e = next(e for e, jj in rows if jj == j)
                best = max(candidates, key=lambda k: (scores[e, k], -k))
                pairs.append((self.primitives[best], j))
        return pairs

    def genotype(self, cells):
        """A `Genotype` from {cell_type: pairs}, each concat by the space's rule."""
        missing = [t for t in self.cell_types if t not in cells]
        if missing:
            raise ValueError(f"no pairs for cell type(s) {missing}")
        values = {}
        for cell_type in self.cell_types:
            values[cell_type] = cells[cell_type]
            values[f"{cell_type}_concat"] = self.concat_of(cells[cell_type])
        return Genotype(**values, op_family=self.op_family)

    def derive_genotype(self, scores_by_cell, candidates=None):
        """`genotype` of `derive_cell` applied to every cell type's scores."""
        return self.genotype({t: self.derive_cell(scores_by_cell[t], candidates)
                              for t in self.cell_types})


def register(name):
    """Decorator: registers `factory(primitives, num_nodes) -> SearchSpace` under `name`."""
    return _SPACES.register(name)


def names():
    return _SPACES.names()


def get(name, **options):
    """The space `name` built with `options` (e.g. primitives=..., num_nodes=...)."""
    return _SPACES.get(name)(**options)
