"""Mixed edges and the search cell of the DARTS supernet (docs/spaces/darts.md#supernet).

How each edge runs in a forward pass is the cell's plan (keras_darts/space/plans.py).
"""

import keras
import tensorflow as tf

from keras_darts import ops
from keras_darts.infra import tracing
from keras_darts.space.search_space import dense_edges

# Edge modes of a clamped cell (EDAS): an op index k >= 0 runs candidate k alone
# with coefficient 1; these two run every candidate mixed, or nothing.
EDGE_MIXED = -1
EDGE_OFF = -2


class MixedOp(ops.BuiltLayer):
    """One edge of the supernet: sum_k weights[k] * op_k(x).

    `none` ops are never computed (their term is exactly zero).  Ops that start
    with a ReLU read the shared, already rectified input `relu_x`.
    """

    def __init__(self, channels, stride, primitives, recompute=False,
                 op_family=ops.DEFAULT_FAMILY, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.stride = stride
        self.primitives = tuple(primitives)
        self.op_family = op_family
        self.candidates = [ops.make_op(name, channels, stride, affine=False, family=op_family)
                           for name in self.primitives]
        # Gradient checkpointing: backprop re-runs this edge instead of keeping
        # its intermediates (only inside shared traces, see `call`).
        self.recompute = recompute

    @property
    def needs_relu(self):
        return any(op.starts_with_relu for op in self.candidates)

    def run_op(self, k, x, relu_x, training=False, weight=None):
        """weight * (output of candidate k alone), or None for a zero op."""
        op = self.candidates[k]
        if op.is_zero:
            return None
        x = relu_x if op.starts_with_relu else x
        if op.fuses_weight:
            return op(x, training=training, weight=weight)
        y = op(x, training=training)
        return y if weight is None else weight * y

    def run_mode(self, mode, x, relu_x, weights, training=False, weight_grads=True):
        """The edge as a clamped cell runs it (EDAS): `mode` (a scalar int32
        tensor) = op index k (candidate k alone, coefficient 1), EDGE_MIXED
        (sum_k weights[k] * op_k(x)) or EDGE_OFF (zeros).  Only the chosen
        branch executes; shared per kind of edge where `tracing.can_share()`,
        so a traced step serves every clamping and sampled edge."""
        if not tracing.can_share():
            return self.switch(mode, x, relu_x, weights, training)
        key = (type(self), "switch", self.channels, self.stride, self.op_family, self.primitives,
               tuple((tuple(v.shape), v.dtype) for v in self.variables))
        return tracing.call_shared(self, key, MixedOp.switch, mode, x, relu_x, weights,
                                   training, constant_variables=not weight_grads,
                                   recompute=self.recompute)

    def switch(self, mode, x, relu_x, weights, training=False):
        """`run_mode` as one `tf.switch_case`.  Each branch returns the edge's
        state (BatchNorm statistics) besides its output: an update made inside a
        branch only exists there (and under `tracing`'s stateless scope an
        update is a value, which must leave the branch as an output)."""
        variables = self.variables
        state = [v for v in variables if not v.trainable]

        def branch(run):
            def body():
                current = [(v, v.value) for v in variables]
                with keras.StatelessScope(state_mapping=current) as scope:
                    out = run()
                return out, [scope.get_current_value(v) for v in state]
            return body

        def off():
            return tf.zeros(self._output_shape(x), x.dtype)

        def alone(k):
            return lambda: self.run_op(k, x, relu_x, training)

        branches = [off, lambda: self.mix(x, relu_x, weights, training)]
        branches += [off if op.is_zero else alone(k) for k, op in enumerate(self.candidates)]
        with ops.self_contained_gradients():  # Each branch's gradient is its own graph.
            out, new_state = tf.switch_case(tf.cast(mode, tf.int32) - EDGE_OFF,
                                            [branch(run) for run in branches])
        for v, value in zip(state, new_state):
            v.assign(value)
        return out

    def _output_shape(self, x):
        spatial = [(d + self.stride - 1) // self.stride for d in x.shape[1:3]]
        return tf.concat([tf.shape(x)[:1], spatial, [self.channels]], axis=0)

    def call(self, x, relu_x, weights, training=False, weight_grads=True):
        """sum_k weights[k] * op_k(x); `weight_grads=False`: no gradient w.r.t.
        this edge's weights will be asked for (the architecture step)."""
        if not tracing.can_share():
            return self.mix(x, relu_x, weights, training)
        # One traced function per kind of edge for the ops that allow it; the
        # others run inline (their fast kernels pair forward and backward).
        inline = tuple(k for k, op in enumerate(self.candidates) if op.inline_only)
        shared = tuple(k for k in range(len(self.candidates)) if k not in inline)
        terms = []
        if any(not self.candidates[k].is_zero for k in shared):
            # Variable shapes too: state sized by the input (MSR-DARTS's spectral
            # norm vectors) must not differ between the edges of one function.
            key = (type(self), self.channels, self.stride, self.op_family, self.primitives,
                   tuple((tuple(v.shape), v.dtype) for v in self.variables))
            terms.append(tracing.call_shared(
                self, key, MixedOp.mix, x, relu_x, weights, training, inline,
                constant_variables=not weight_grads, recompute=self.recompute))
        terms.append(self.mix(x, relu_x, weights, training, skip=shared))
        terms = [t for t in terms if t is not None]
        return tf.add_n(terms) if terms else None

    def mix(self, x, relu_x, weights, training=False, skip=()):
        """sum_k weights[k] * op_k(x) over the candidates not in `skip`."""
        weights = tf.unstack(weights)
        terms = [self.run_op(k, x, relu_x, training, weight=weights[k])
                 for k in range(len(self.candidates)) if k not in skip]
        terms = [t for t in terms if t is not None]
        return tf.add_n(terms) if terms else None


class SearchCell(ops.BuiltLayer):
    """A supernet cell: preprocess the two inputs, `num_nodes` nodes, concat.

    Every node sums its incoming edges; how each edge runs (all its ops mixed,
    one op alone, or not at all) is the `plan` passed to `call`, a cell plan of
    keras_darts/space/plans.py.  `edges`: (node, input state) of every edge
    (default: every node reads every earlier state, the DARTS cell).
    """

    def __init__(self, num_nodes, prev_prev_channels, prev_channels, channels, reduction,
                 reduction_prev, primitives, recompute=False, edges=None,
                 op_family=ops.DEFAULT_FAMILY, **kwargs):
        super().__init__(**kwargs)
        self.num_nodes = num_nodes
        self.channels = channels
        self.reduction = reduction
        self.cell_type = "reduce" if reduction else "normal"
        self.primitives = tuple(primitives)
        if reduction_prev:
            self.preprocess0 = ops.FactorizedReduce(channels, in_channels=prev_prev_channels)
        else:
            self.preprocess0 = ops.ReLUConvBN(channels, in_channels=prev_prev_channels)
        self.preprocess1 = ops.ReLUConvBN(channels, in_channels=prev_channels)
        self.edge_inputs = list(dense_edges(num_nodes) if edges is None else edges)
        self.edges = [MixedOp(channels, 2 if reduction and j < 2 else 1, self.primitives,
                              recompute=recompute, op_family=op_family)
                      for _, j in self.edge_inputs]

    @property
    def out_channels(self):
        return self.num_nodes * self.channels

    def call(self, s0, s1, plan, training=False, weight_grads=True):
        states = [self.preprocess0(tf.nn.relu(s0), training=training),
                  self.preprocess1(tf.nn.relu(s1), training=training)]
        # ReLU(state) once per state, shared by every edge and op that starts with it.
        relu_states = {}

        def relu_of(j):
            if j not in relu_states:
                relu_states[j] = tf.nn.relu(states[j])
            return relu_states[j]

        terms_of = plan.terms(self, states, relu_of, training, weight_grads)
        for node in range(self.num_nodes):
            terms = [t for t in terms_of(node) if t is not None]
            if terms:
                states.append(tf.add_n(terms))
            else:  # Every input of this node is `none`.
                states.append(tf.zeros_like(states[1][:, ::1 + self.reduction,
                                                      ::1 + self.reduction]))
        return tf.concat(states[2:], axis=-1)

    def chosen_ops(self, pairs):
        """(node, input state, edge, op index) of each (op_name, input) pair of a
        discrete cell, in pair order: where that architecture's ops live in here."""
        index = {ij: e for e, ij in enumerate(self.edge_inputs)}
        chosen = []
        for position, (op_name, j) in enumerate(pairs):
            node = position // 2
            edge = self.edges[index[(node, j)]]
            chosen.append((node, j, edge, edge.primitives.index(op_name)))
        return chosen
