"""The DARTS cell space (docs/spaces/darts.md): two cell inputs, `num_nodes`
intermediate nodes, every node fed by an edge from every earlier state, each
edge offering the ops of one op set; a discrete node keeps its 2 strongest
edges (never `none`), and a cell outputs the concat of all its nodes."""

from keras_darts import ops
from keras_darts.space.search_space import SearchSpace, register


@register("darts")
def darts_cell(primitives="darts", num_nodes=4, op_family=None):
    """The DARTS cell over the op set `primitives`: a registered op-set name
    (which also names its op family) or a sequence of op names of `op_family`
    (default: the DARTS family)."""
    if isinstance(primitives, str):
        if op_family not in (None, ops.op_set_family(primitives)):
            raise ValueError(f"op set '{primitives}' belongs to op family "
                             f"'{ops.op_set_family(primitives)}', not '{op_family}'")
        op_family = ops.op_set_family(primitives)
        primitives = ops.op_set(primitives)
    return SearchSpace("darts", tuple(primitives), num_nodes=num_nodes,
                       op_family=op_family or ops.DEFAULT_FAMILY)
