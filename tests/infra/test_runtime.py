"""Grappler's `fast_compile` mode: public switches where TF has them, the rest in
the function-call config, and the same effective rewriter set either way."""

import tensorflow as tf

from keras_darts.infra import runtime

OFF = {"layout_optimizer", "remapping", "constant_folding", "arithmetic_optimization",
       "dependency_optimization", "loop_optimization", "function_optimization",
       "implementation_selector", "shape_optimization", "debug_stripper",
       "common_subgraph_elimination"}


def test_fast_compile_turns_off_the_measured_rewriters_and_keeps_pruning():
    from tensorflow.core.protobuf import rewriter_config_pb2
    from tensorflow.python.eager import context

    assert runtime.configure_graph_optimizer("fast_compile") == "fast_compile"
    public = tf.config.optimizer.get_experimental_options()
    assert {k for k, v in public.items() if v is False} >= OFF - {"common_subgraph_elimination"}
    assert not public.get("disable_model_pruning", False)
    config = tf.compat.v1.ConfigProto()
    config.ParseFromString(context.context().function_call_options.config_proto_serialized)
    rewrite = config.graph_options.rewrite_options
    Rewriter = rewriter_config_pb2.RewriterConfig
    assert {name for name in OFF if getattr(rewrite, name) == Rewriter.OFF} == OFF
    assert rewrite.memory_optimization == Rewriter.NO_MEM_OPT
    assert rewrite.meta_optimizer_iterations == Rewriter.ONE
    assert rewrite.disable_model_pruning is False
