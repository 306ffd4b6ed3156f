"""Differentiable architecture search from the command line.

  python -m keras_darts.search --flagfile=flags/quickstart.cfg [--flag=value ...]

Writes to --output_dir: config.json, genotype.json (final), genotypes/ and
alphas/ per epoch, results.json, tensorboard/ and checkpoints/.
"""

import logging as std_logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Keep TF's C++ start-up chatter out.

from absl import app, logging  # noqa: E402

from keras_darts import cli_flags  # noqa: E402
from keras_darts.errors import KerasDartsError  # noqa: E402
from keras_darts.trainer import run_search  # noqa: E402

cli_flags.define_search_flags()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.INFO)
    # TF logs every checkpoint shard at INFO through the "tensorflow" logger.
    std_logging.getLogger("tensorflow").setLevel(std_logging.WARNING)
    config = cli_flags.to_search_config()
    try:
        run_search(config, resume=cli_flags.FLAGS.resume)
    except KerasDartsError as e:
        logging.error("%s", e)
        print(f"keras_darts.search: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("keras_darts.search: interrupted; the last finished epoch is checkpointed in "
              f"{config.output_dir}/checkpoints: rerun with --resume to continue",
              file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    app.run(main)
