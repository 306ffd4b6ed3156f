"""keras_darts.infra.graph_stats: FLOPs and sizes of traced graphs, on graphs
whose answer is known by hand."""

import tensorflow as tf

from keras_darts.infra import graph_stats


def test_flop_count_of_known_graph():
    x = tf.zeros((2, 8, 8, 4))
    pointwise = tf.zeros((1, 1, 4, 6))
    depthwise = tf.zeros((3, 3, 4, 1))

    @tf.function
    def step(x, kernel):
        with tf.GradientTape() as tape:
            tape.watch(kernel)
            total = tf.reduce_sum(tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "SAME"))
        grad = tape.gradient(total, kernel)  # Backprop filter only.
        # The gradient function also emits the input gradient, which nothing uses:
        # it must not be counted (Grappler prunes it before execution).
        return tf.nn.conv2d(x, pointwise, 1, "VALID"), grad, total

    graph = step.get_concrete_function(x, depthwise).graph
    assert "DepthwiseConv2dNativeBackpropFilter" in {op.type for op in graph.get_operations()}
    conv = 2 * 2 * 8 * 8 * 6 * 4            # 2 FLOP per MAC, 1x1 conv 4 -> 6.
    depthwise_fwd = 2 * 2 * 8 * 8 * 4 * 9   # 3x3 per channel.
    depthwise_filter_grad = depthwise_fwd
    counted = graph_stats.count_gflop(graph) * 1e9
    # Elementwise ops (the reduce_sum and its gradient) add a few hundred FLOPs at most.
    assert conv + depthwise_fwd + depthwise_filter_grad <= counted
    assert counted <= conv + depthwise_fwd + depthwise_filter_grad + 1000


def test_flop_count_includes_called_functions():
    x = tf.zeros((2, 8, 8, 4))
    kernel = tf.zeros((1, 1, 4, 6))
    # Shared edge functions are not inlined: their bodies must be counted per call.
    conv = tf.function(lambda x, k: tf.nn.conv2d(x, k, 1, "VALID"),
                       experimental_attributes={"_noinline": True})

    @tf.function
    def outer(x, k):
        return conv(x, k) + conv(x + 1.0, k)

    graph = outer.get_concrete_function(x, kernel).graph
    assert "PartitionedCall" in {op.type for op in graph.get_operations()}
    one_conv = 2 * 2 * 8 * 8 * 6 * 4
    counted = graph_stats.count_gflop(graph) * 1e9
    assert 2 * one_conv <= counted <= 2 * one_conv + 2000


def test_graph_size_counts_each_called_body_once():
    kernel = tf.zeros((1, 1, 4, 4))
    inner = tf.function(lambda x: tf.nn.relu(x), experimental_attributes={"_noinline": True})
    middle = tf.function(lambda x, k: inner(tf.nn.conv2d(x, k, 1, "VALID")),
                         experimental_attributes={"_noinline": True})

    @tf.function
    def outer(x, k):
        return middle(x, k) + middle(x + 1.0, k) + inner(x)

    graph = outer.get_concrete_function(tf.zeros((2, 8, 8, 4)), kernel).graph
    size = graph_stats.graph_size(graph)
    assert size["step_nodes"] == len(graph.get_operations())
    assert size["call_sites"] == 3  # Two of `middle`, one of `inner`; the nested call not here.
    assert size["functions"] == 2  # `middle` and `inner`, each once.
    bodies = dict(c for c in (graph_stats.called_function(graph, op)
                              for op in graph.get_operations()) if c is not None)
    assert len(bodies) == 2
    assert size["function_nodes"] == sum(len(b.get_operations()) for b in bodies.values())


def test_functions_whose_graphs_share_a_name_are_counted_apart():
    """FuncGraph names repeat (every shared edge function's forward is "run"):
    two bodies of one name but different sizes must each count their own FLOPs."""
    def run(x, k):
        return tf.nn.conv2d(x, k, 1, "VALID")

    small = tf.function(run, experimental_attributes={"_noinline": True})
    large = tf.function(run, experimental_attributes={"_noinline": True})

    @tf.function
    def outer(x, k_small, k_large):
        return tf.reduce_sum(small(x, k_small)) + tf.reduce_sum(large(x, k_large))

    graph = outer.get_concrete_function(
        tf.zeros((2, 8, 8, 4)), tf.zeros((1, 1, 4, 2)), tf.zeros((1, 1, 4, 16))).graph
    counted = graph_stats.count_gflop(graph) * 1e9
    convs = 2 * 2 * 8 * 8 * 4 * (2 + 16)
    sums = 2 * 8 * 8 * (2 + 16)  # The two reduce_sums: one add per element.
    assert convs <= counted <= convs + sums
    assert graph_stats.graph_size(graph)["functions"] == 2
