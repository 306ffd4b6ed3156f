"""Times complete search steps of the default DARTS supernet on random data.

  python tools/benchmark.py [--batch 64] [--channels 16] [--layers 8] [--steps 5]

Uses the same `BilevelSearch.step` as `python -m keras_darts.search` and prints
one JSON line.  trace_s = process launch to the first finished step (imports,
model build, tracing, graph optimisation, first step); peak_rss_mb from
`resource.getrusage`.
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

from keras_darts import runtime  # noqa: E402
from keras_darts.search_step import BilevelSearch  # noqa: E402
from keras_darts.supernet import SearchNetwork  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--steps", type=int, default=5, help="timed steps after the first")
    parser.add_argument("--order", choices=["first"], default="first")
    parser.add_argument("--graph_optimizer", choices=runtime.GRAPH_OPTIMIZER_MODES,
                        default="auto")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    runtime.configure_graph_optimizer(args.graph_optimizer)
    keras.utils.set_random_seed(0)
    strategy = tf.distribute.get_strategy()
    shape = (args.image_size, args.image_size, 3)
    model = SearchNetwork(args.classes, channels=args.channels, num_layers=args.layers,
                          num_nodes=args.nodes, input_shape=shape)
    search = BilevelSearch(model, strategy, args.batch)
    batch = (tf.random.normal((args.batch,) + shape),
             tf.random.uniform((args.batch,), 0, args.classes, tf.int32))
    float(search.step(batch, batch)["loss/train"])
    trace_s = time.time() - LAUNCH
    times = []
    for _ in range(args.steps):
        start = time.time()
        float(search.step(batch, batch)["loss/train"])
        times.append(time.time() - start)
    print(json.dumps({
        "impl": "keras_darts", "tf": tf.__version__, "keras": keras.__version__,
        "batch": args.batch, "channels": args.channels, "layers": args.layers,
        "order": args.order, "trace_s": round(trace_s, 2),
        "step_s_median": round(statistics.median(times), 3) if times else None,
        "step_s_min": round(min(times), 3) if times else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "params": model.count_weight_params()}))


if __name__ == "__main__":
    main()
