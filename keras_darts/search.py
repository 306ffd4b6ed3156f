"""Differentiable architecture search from the command line.

  python -m keras_darts.search --flagfile=flags/quickstart.cfg [--flag=value ...]

Writes to --output_dir: config.json, genotype.json (final), genotypes/ and
alphas/ per epoch, results.json, tensorboard/ and checkpoints/.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Keep TF's C++ logs at warnings.

from keras_darts.cli import quiet_start  # noqa: E402

quiet_start.import_tensorflow()  # Before anything else imports TF.

from keras_darts.cli import flags as cli_flags  # noqa: E402
from keras_darts.cli.guard import run_guarded, start  # noqa: E402
from keras_darts.infra import cluster  # noqa: E402
from keras_darts.runs.search_run import run_search  # noqa: E402

cli_flags.define_search_flags()


def main(argv):
    flags = cli_flags.FLAGS
    with cluster.exits_at_once():  # A worker of a cluster does not wait at exit.
        # The config is built inside the guard: a refused value is one line, exit 2.
        run_guarded("keras_darts.search", argv,
                    lambda: run_search(cli_flags.to_search_config(), resume=flags.resume),
                    lambda: (f"the last finished checkpoint is in {flags.output_dir}/"
                             "checkpoints: rerun with --resume to continue (a cluster "
                             "resumes by itself)"))


def run(argv=None):
    """The command's entry point (`python -m keras_darts.search`, `keras-darts search`)."""
    start(main, "keras_darts.search", argv)


if __name__ == "__main__":
    run()
