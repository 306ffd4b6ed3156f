"""Trace once, run many: one tf.function shared by all layers of one configuration.

The default supernet has 112 mixed edges but only 5 distinct kinds (channels,
stride, op list).  Traced inline, every edge put its own copy of ~350 ops into
the step graph (~78k nodes, most of the 55 s before the first step).  With
`call_shared`, the first layer of a kind is traced once as a nested
tf.function (its gradient function too), and every layer of that kind calls it
with its own variables: the step graph holds one call op per edge.

The variables are passed in as arguments (resource handles): reads and the
BatchNorm moving-average updates happen inside the function, and gradients
flow to the caller's variables as to any captured variable.
"""

import weakref

import keras
import tensorflow as tf

# key -> a live layer of that kind, whose `_shared_function` the others reuse.
_TEMPLATES = weakref.WeakValueDictionary()


def can_share():
    """True where a shared trace is valid: inside a tf.function on one replica.

    Under several replicas the layers all-reduce BatchNorm statistics; a
    collective traced once and called from many places would be unsafe, so
    those graphs trace every layer inline.
    """
    if not tf.inside_function():
        return False
    replica_ctx = tf.distribute.get_replica_context()
    return replica_ctx is not None and replica_ctx.num_replicas_in_sync == 1


def call_shared(layer, key, method, *args, constant_variables=False, recompute=False):
    """Returns `method(layer, *args)`, run through the function shared by `key`.

    `key` must determine everything `method` does apart from its tensor
    arguments and the values of `layer.variables` (whose structure must then be
    the same for all layers of the key); `method` must return a tensor or a
    (nested) structure of tensors.

    constant_variables: no gradient w.r.t. the layer's variables will be asked
      for.  The shared functions are not inlined, so their backward pass is
      only spared that work if told.
    recompute: keep only the inputs for the backward pass and run the forward
      again there (gradient checkpointing): less memory, one more forward.
    """
    template = _TEMPLATES.get(key)
    if template is None:
        template = layer
        _TEMPLATES[key] = layer
    functions = template.__dict__.setdefault("_shared_functions", {})
    function_key = (method, constant_variables, recompute)
    if function_key not in functions:
        # Not inlined: each shared function is optimised and prepared once, not
        # once per call site (the first step's set-up time is proportional to
        # the size of the graph the runtime sees: 17 s -> 7 s for the supernet).
        functions[function_key] = tf.function(
            _shared_body(template, method, constant_variables, recompute), autograph=False,
            experimental_attributes={"_noinline": True})
    # Keep the template alive as long as a layer that uses it.
    layer.__dict__["_shared_template"] = template
    return functions[function_key]([v.value for v in layer.variables], *args)


def _shared_body(template, method, constant_variables, recompute):
    """`method` of `template` with its variables replaced by the passed ones."""

    def stateless(values, args):
        """(outputs, variable values after the call) with variables := values."""
        mapping = list(zip(template.variables, values))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            outputs = method(template, *args)
        return outputs, [scope.state_mapping[id(v)] for v in template.variables]

    def run(variables, *args):
        values = [tf.convert_to_tensor(v) for v in variables]
        if constant_variables:
            values = [tf.stop_gradient(v) for v in values]
        if recompute:
            outputs, new_values = _checkpointed(stateless, values, args, constant_variables)
        else:
            outputs, new_values = stateless(values, args)
        # Updates made under the scope (BN statistics) go to the passed variables.
        for passed, old, new in zip(variables, values, new_values):
            if new is not old:
                passed.assign(new)
        return outputs

    return run


def _checkpointed(stateless, values, args, constant_variables):
    """`stateless(values, args)` whose gradient recomputes it instead of storing
    its intermediates.  Variable updates made by the recomputation are dropped."""
    positions = [i for i, a in enumerate(args) if tf.is_tensor(a)]
    num_values = len(values)
    traced = {}  # Structure of the results, known once the forward has run.

    def call(flat):
        full = list(args)
        for i, tensor in zip(positions, flat[num_values:]):
            full[i] = tensor
        return stateless(list(flat[:num_values]), full)

    @tf.custom_gradient
    def forward(*flat):
        outputs, new_values = call(flat)
        traced["outputs"] = outputs
        traced["updated"] = [i for i in range(num_values) if new_values[i] is not flat[i]]
        out_flat = tf.nest.flatten(outputs)

        def grad(*upstream):
            sources = list(flat[num_values:] if constant_variables else flat)
            # Integer state (e.g. an RNG counter) has no gradient; asking for
            # one only makes TF warn.
            floating = [s for s in sources if s.dtype.is_floating]
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(floating)
                again = tf.nest.flatten(call(flat)[0])
            found = iter(tape.gradient(again, floating,
                                       output_gradients=list(upstream[:len(out_flat)])))
            grads = [next(found) if s.dtype.is_floating else None for s in sources]
            return [None] * num_values + grads if constant_variables else grads

        return out_flat + [new_values[i] for i in traced["updated"]], grad

    results = forward(*values, *[args[i] for i in positions])
    num_outputs = len(tf.nest.flatten(traced["outputs"]))
    outputs = tf.nest.pack_sequence_as(traced["outputs"], results[:num_outputs])
    new_values = list(values)
    for i, value in zip(traced["updated"], results[num_outputs:]):
        new_values[i] = value
    return outputs, new_values
