"""Process-level TensorFlow settings: distribution strategy and graph optimisation."""

import os

import tensorflow as tf
from absl import logging
from tensorflow.core.protobuf import rewriter_config_pb2

from keras_darts.errors import ConfigError
from keras_darts.infra import cluster as cluster_lib

GRAPH_OPTIMIZER_MODES = ("auto", "fast_compile", "full")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker")


def configure_graph_optimizer(mode="auto"):
    """Chooses how hard Grappler optimises our (large) step graphs.

    `fast_compile` turns off the passes that cost most on the ~80k-node search
    step and bought nothing on CPU (measured, BUILD_NOTES.md): the memory
    optimizer alone took 26 s, a second meta-optimizer round ~15 s and the
    other rewriters ~15 s more; the step time did not change and peak RSS went
    down.  Only model pruning is kept.  `auto` uses it when no GPU is visible;
    with GPUs, layout (NCHW for cuDNN) and remapper fusions pay for themselves.
    The rewriters with a public switch are turned off through
    `tf.config.optimizer.set_experimental_options`; the memory optimizer, the
    meta-optimizer's iteration count and common-subgraph elimination have none
    (TF 2.18-2.21), so those three are set in the eager context's function-call
    config, which the public call rebuilds first (both apply to functions first
    run after).
    """
    if mode not in GRAPH_OPTIMIZER_MODES:
        raise ConfigError(f"--graph_optimizer must be one of {GRAPH_OPTIMIZER_MODES}, got {mode!r}")
    if mode == "auto":
        mode = "full" if tf.config.list_physical_devices("GPU") else "fast_compile"
    if mode == "full":
        return mode
    # Model pruning stays on: it shrinks the graph by 25 %.
    tf.config.optimizer.set_experimental_options({name: False for name in _PUBLIC_OFF})
    try:
        from tensorflow.python.eager import context  # No public switch for the rest.

        options = context.context().function_call_options
        config = tf.compat.v1.ConfigProto()
        config.ParseFromString(options.config_proto_serialized)
        rewrite = config.graph_options.rewrite_options
        rewrite.memory_optimization = rewriter_config_pb2.RewriterConfig.NO_MEM_OPT
        rewrite.meta_optimizer_iterations = rewriter_config_pb2.RewriterConfig.ONE
        rewrite.common_subgraph_elimination = rewriter_config_pb2.RewriterConfig.OFF
        options.config_proto_serialized = config
    except (ImportError, AttributeError) as e:  # A future TF moved the internals.
        logging.warning("could not turn off Grappler's memory optimizer (%s): slower "
                        "tracing, same results", e)
    return mode


# The `fast_compile` rewriters that tf.config.optimizer can switch off.
_PUBLIC_OFF = ("layout_optimizer", "remapping", "constant_folding", "arithmetic_optimization",
               "dependency_optimization", "loop_optimization", "function_optimization",
               "implementation_selector", "shape_optimization", "debug_stripper")


def configure_threads():
    """On CPU only: run independent ops in parallel, each on one thread.

    The supernet step is thousands of small ops; TF's default (every op may
    fan out over all cores, and several run at once) oversubscribes the cores.
    Measured on 2 cores, default supernet, batch 64: 4.1 -> 3.6 s per step
    (BUILD_NOTES.md); EDAS's traced single-edge step too.  Must run before TF
    executes its first op; later it is skipped with a warning.  GPU machines
    keep TF's defaults.
    """
    if tf.config.list_physical_devices("GPU"):
        return False
    cores = os.cpu_count() or 1
    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(cores)
    except RuntimeError as e:  # The runtime is already initialised (e.g. in tests).
        if tf.config.threading.get_intra_op_parallelism_threads() != 1:
            logging.warning("thread settings left as they are: %s", e)
        return False
    return True


def resolve_strategy(name, cluster=None, num_gpus=None):
    """The concrete strategy `name` stands for: `auto` is `multi_worker` when
    TF_CONFIG describes a cluster of several tasks, else `mirrored` with more
    than one GPU, else `default`.  `cluster` (a `cluster.Cluster`, default: from
    TF_CONFIG) and `num_gpus` (default: the visible GPUs) are for tests."""
    if name not in STRATEGIES:
        raise ConfigError(f"--strategy must be one of {STRATEGIES}, got {name!r}")
    if name in ("default", "mirrored"):
        return name
    if cluster is None:
        cluster = cluster_lib.current()  # Raises on a malformed TF_CONFIG.
    if name == "multi_worker":
        if cluster is cluster_lib.SINGLE:
            raise ConfigError("--strategy=multi_worker needs the TF_CONFIG environment "
                              "variable to describe the cluster and this task (README: "
                              "'Several GPUs and several machines')")
        return name
    if cluster.num_workers > 1:
        return "multi_worker"
    if num_gpus is None:
        num_gpus = len(tf.config.list_physical_devices("GPU"))
    return "mirrored" if num_gpus > 1 else "default"


def mirrored_devices():
    """The devices `mirrored` spans: every local GPU; without one, every logical
    CPU a program split the CPU into (tf.config.set_logical_device_configuration,
    how tests run 2 replicas on one CPU), else the CPU.  `None` lets
    MirroredStrategy choose (the GPUs, else /cpu:0)."""
    if tf.config.list_physical_devices("GPU"):
        return None
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    return cpus if len(cpus) > 1 else None


def make_strategy(name):
    """`default` (one device), `mirrored` (`mirrored_devices`), `multi_worker`
    (MultiWorkerMirroredStrategy over the TF_CONFIG cluster: every local GPU of
    every worker) or `auto` (`resolve_strategy`).

    MultiWorkerMirroredStrategy must be created before TensorFlow runs its first
    op in the process: the search and training create their strategy before
    anything else touches TF (only thread and Grappler settings come first).
    """
    name = resolve_strategy(name)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(mirrored_devices())
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    cluster_lib.mark_joined()
    return strategy


def start(strategy, graph_optimizer="auto"):
    """A run's process set-up, in the order TF needs: CPU threads, Grappler, then
    the distribution strategy (see `make_strategy`).  Returns the strategy."""
    configure_threads()
    configure_graph_optimizer(graph_optimizer)
    return make_strategy(strategy)
