"""Helper script for test_nao_v2.py (not a test module; run it in a fresh process):
a whole tiny NAO-V2 search (training rounds, scoring, controller, generation,
re-rank) through `run_search` with --strategy=mirrored on 2 logical CPUs, then
the same search on one device.  Argument: the output folder.  Prints
`NAO_SEARCH_MIRRORED {json}` with both runs' pools; the test compares them.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

# First: it splits the CPU into 2 devices before anything initialises them.
from replica_check import report  # noqa: E402

import json  # noqa: E402

import tensorflow as tf  # noqa: E402
from absl import logging  # noqa: E402

from keras_darts.config import SearchConfig  # noqa: E402
from keras_darts.runs.search_run import SearchRun  # noqa: E402

TINY = dict(dataset="digits", method="nao_v2", selection="pool", graph_optimizer="full",
            channels=4, layers=5, batch_size=16, steps_per_epoch=2, eval_batch_size=256,
            epochs=2, log_every=0, train_portion=0.8)
NAO = dict(rounds=2, initial_pool=4, new_archs=2, seed_archs=2, score_batch=32,
           controller_epochs=3, controller_batch=8, embedding_size=4, expand=2,
           rerank_top=1, rerank_epochs=1)


def search(out, strategy):
    run = SearchRun(SearchConfig(output_dir=out, strategy=strategy, **TINY,
                                 method_settings=NAO))
    summary = run.run()
    with open(os.path.join(out, "arch_pool.json"), encoding="utf-8") as f:
        pool = json.load(f)
    return run.strategy.num_replicas_in_sync, summary, pool


def main():
    logging.set_verbosity(logging.INFO)  # The phases' progress, for a failing test's log.
    root = sys.argv[1]
    replicas, summary, pool = search(os.path.join(root, "mirrored"), "mirrored")
    single_replicas, single_summary, single_pool = search(os.path.join(root, "single"),
                                                          "default")
    report("NAO_SEARCH_MIRRORED", {
        "replicas": [replicas, single_replicas], "pools": [pool, single_pool],
        "archs": [summary["nao_arch"], single_summary["nao_arch"]],
        "devices": [d.name for d in tf.config.list_logical_devices("CPU")]})


if __name__ == "__main__":
    main()
