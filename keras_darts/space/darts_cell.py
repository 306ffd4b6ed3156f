"""The DARTS cell space (docs/spaces/darts.md): two cell inputs, `num_nodes`
intermediate nodes, every node fed by an edge from every earlier state, each
edge offering the ops of one op set; a discrete node keeps its 2 strongest
edges (never `none`), and a cell outputs the concat of all its nodes."""

from keras_darts import ops
from keras_darts.space.search_space import SearchSpace, register


@register("darts")
def darts_cell(primitives="darts", num_nodes=4):
    """The DARTS cell over the op set `primitives` (a registered op-set name or
    a sequence of op names)."""
    if isinstance(primitives, str):
        primitives = ops.op_set(primitives)
    return SearchSpace("darts", tuple(primitives), num_nodes=num_nodes)
