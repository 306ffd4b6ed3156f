"""Train a genotype's network from scratch from the command line.

  python -m keras_darts.train --genotype=DARTS_V2 --flagfile=flags/train_cifar10.cfg \
      --data_dir=/path/to/tfds [--flag=value ...]

Writes to --output_dir: config.json, genotype.json, dataset.json, results.json
(test accuracy), tensorboard/ and checkpoints/; with --export_dir also the
SavedModels of `python -m keras_darts.export`.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Keep TF's C++ logs at warnings.

from keras_darts.cli import quiet_start  # noqa: E402

quiet_start.import_tensorflow()  # Before anything else imports TF.

from keras_darts.cli import flags as cli_flags  # noqa: E402
from keras_darts.cli.guard import run_guarded, start  # noqa: E402
from keras_darts.runs.train_run import run_train  # noqa: E402

cli_flags.define_train_flags()


def main(argv):
    flags = cli_flags.FLAGS
    # The config is built inside the guard: a refused value is one line, exit 2.
    run_guarded("keras_darts.train", argv,
                lambda: run_train(cli_flags.to_train_config(), resume=flags.resume),
                lambda: (f"the last checkpoint is in {flags.output_dir}/checkpoints: rerun "
                         "with --resume to continue"))


def run(argv=None):
    """The command's entry point (`python -m keras_darts.train`, `keras-darts train`)."""
    start(main, "keras_darts.train", argv)


if __name__ == "__main__":
    run()
