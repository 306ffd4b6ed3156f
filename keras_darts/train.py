"""Train a genotype's network from scratch from the command line.

  python -m keras_darts.train --genotype=DARTS_V2 --flagfile=flags/train_cifar10.cfg \
      --data_dir=/path/to/tfds [--flag=value ...]

Writes to --output_dir: config.json, genotype.json, dataset.json, results.json
(test accuracy), tensorboard/ and checkpoints/; with --export_dir also the
SavedModels of `python -m keras_darts.export`.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Keep TF's C++ start-up chatter out.

from absl import app  # noqa: E402

from keras_darts.cli import flags as cli_flags  # noqa: E402
from keras_darts.cli.guard import run_guarded  # noqa: E402
from keras_darts.runs.train_run import run_train  # noqa: E402

cli_flags.define_train_flags()


def main(argv):
    config = cli_flags.to_train_config()
    run_guarded("keras_darts.train", argv,
                lambda: run_train(config, resume=cli_flags.FLAGS.resume),
                lambda: (f"the last checkpoint is in {config.output_dir}/checkpoints: rerun "
                         "with --resume to continue"))


if __name__ == "__main__":
    app.run(main)
