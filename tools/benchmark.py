"""Times complete search steps of the default DARTS supernet on random data.

  python tools/benchmark.py [--batch 64] [--channels 16] [--layers 8] [--steps 5]
                            [--method NAME] [--relaxation full|single_edge]
                            [--primitives darts|sharpsep_darts|sharp|sharper|...]
                            [--weighting softmax|max_w]

Builds the supernet and the step with the same method plug-in
(keras_darts/methods/) as `python -m keras_darts.search`, runs the same
`step`, and prints one JSON line.  trace_s = process launch to the first finished step (imports,
model build, tracing, graph optimisation, first step); peak_rss_mb from
`resource.getrusage`; gflop_per_step is counted on the traced step graph (TF's
registered per-op FLOP statistics, plus our count for the depthwise-conv gradient
ops TF has none for; element-wise ops such as BN and ReLU are not counted);
step_nodes / call_sites / functions / function_nodes: the traced step's size
(keras_darts/infra/graph_stats.py), what the tests hold to recorded bounds.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time

LAUNCH = time.time()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_darts import methods, ops  # noqa: E402
from keras_darts import settings as settings_lib  # noqa: E402
from keras_darts.config import SearchConfig  # noqa: E402
from keras_darts.errors import ConfigError  # noqa: E402
from keras_darts.infra import graph_stats, runtime  # noqa: E402
from keras_darts.methods.bilevel import ORDERS  # noqa: E402
from keras_darts.space import mixing  # noqa: E402
from keras_darts.space.supernet import RECOMPUTE_POLICIES  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--steps", type=int, default=5, help="timed steps after the first",
                        choices=range(1, 10001), metavar="N")
    parser.add_argument("--method", choices=methods.names(), default="darts")
    parser.add_argument("--order", choices=ORDERS, default="first",
                        help="a setting of --method=darts")
    parser.add_argument("--relaxation", choices=methods.relaxations(), default="full",
                        help="as the search's flag: a relaxation may stand for a method")
    parser.add_argument("--primitives", choices=ops.op_sets(), default=None,
                        help="op set of the supernet (default: the method's, else darts)")
    parser.add_argument("--weighting", choices=mixing.names(), default=None,
                        help="mixing rule of the edges (default: the method's, else softmax)")
    parser.add_argument("--recompute", choices=RECOMPUTE_POLICIES, default="all")
    parser.add_argument("--graph_optimizer", choices=runtime.GRAPH_OPTIMIZER_MODES,
                        default=None, help="default: the method's implied mode, else auto "
                        "(as the search sets it)")
    return parser.parse_args(argv)


def build(args):
    """(method, supernet, step) as the search's method plug-in builds them."""
    method = methods.by_relaxation(args.relaxation) or args.method
    Settings = methods.get(method).Settings  # noqa: N806
    given = {f.name: getattr(args, f.name) for f in settings_lib.fields(Settings)
             if hasattr(args, f.name)}
    if args.order != "first" and "order" not in given:
        raise ConfigError(f"--order does not apply to --method={method}")
    # The method's implied settings, then what was asked for (its check refuses a clash).
    space = dict(methods.get(method).implied)
    space.update({name: getattr(args, name) for name in ("primitives", "weighting")
                  if getattr(args, name) is not None})
    config = SearchConfig(output_dir="", channels=args.channels, layers=args.layers,
                          nodes=args.nodes, batch_size=args.batch, recompute=args.recompute,
                          seed=0, method=method, method_settings=given, **space)
    plugin = methods.get(method)(config)
    plugin.check("default")
    strategy = tf.distribute.get_strategy()
    shape = (args.image_size, args.image_size, 3)
    with strategy.scope():
        model = plugin.build_supernet(args.classes, shape)
        step = plugin.build_step(model, strategy)
    return plugin, model, step


def prepare(args):
    """Threads, Grappler mode (the method's implied one unless asked), seed, then
    (plugin, model, step object, train batch, val batch or None) of random data:
    what the benchmark and tools/profile_step.py time."""
    runtime.configure_threads()
    method = methods.by_relaxation(args.relaxation) or args.method
    graph_optimizer = runtime.configure_graph_optimizer(
        args.graph_optimizer or methods.get(method).implied.get("graph_optimizer", "auto"))
    keras.utils.set_random_seed(0)
    try:
        plugin, model, search = build(args)
    except ConfigError as e:
        sys.exit(f"benchmark: {e}")
    shape = (args.image_size, args.image_size, 3)
    batch = (tf.random.normal((args.batch,) + shape),
             tf.random.uniform((args.batch,), 0, args.classes, tf.int32))
    return graph_optimizer, plugin, model, search, batch, batch if plugin.trains_alphas else None


def main(argv=None):
    args = parse_args(argv)
    graph_optimizer, plugin, model, search, batch, val_batch = prepare(args)
    float(search.step(batch, val_batch)["loss/train"])
    trace_s = time.time() - LAUNCH
    # The single-edge step's graphs hold every branch of every edge's switch; counting
    # them would count ops that do not run.
    try:
        graph = search.step_graph(batch, val_batch)
    except ValueError:  # A step of several graphs (EDAS): not counted.
        graph = None
    size = graph_stats.graph_size(graph) if graph is not None else {}
    try:
        gflop = graph_stats.count_gflop(graph) if graph is not None else None
    except ValueError:  # Conditionals (HyperCuboid's skipping): not countable.
        gflop = None
    times = []
    for _ in range(args.steps):
        start = time.time()
        float(search.step(batch, val_batch)["loss/train"])
        times.append(time.time() - start)
    median = statistics.median(times) if times else None
    print(json.dumps({
        "impl": "keras_darts", "tf": tf.__version__, "keras": keras.__version__,
        "batch": args.batch, "channels": args.channels, "layers": args.layers,
        "method": plugin.name, "order": args.order, "relaxation": args.relaxation,
        "primitives": plugin.config.primitives, "weighting": plugin.config.weighting,
        "recompute": args.recompute, "graph_optimizer": graph_optimizer,
        "trace_s": round(trace_s, 2),
        "step_s_median": round(median, 3) if times else None,
        "step_s_min": round(min(times), 3) if times else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "params": model.count_weight_params(),
        "step_s_mean": round(statistics.mean(times), 3) if times else None,
        "gflop_per_step": round(gflop, 4) if gflop is not None else None,
        "gflops_achieved": round(gflop / median, 4) if times and gflop is not None else None,
        **size}))


if __name__ == "__main__":
    main()
