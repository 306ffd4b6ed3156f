"""Runs a selection criterion on an already searched supernet, without searching again.

  python -m keras_darts.select --checkpoint=RUN_DIR --selection=stable_rank \
      --output_dir=RUN_DIR/select_stable_rank

RUN_DIR is the --output_dir of `keras_darts.search` (its config.json and latest
checkpoint are read, never written).  Writes config.json, genotype.json,
results.json (supernet test accuracy), selection_scores.json, tensorboard/ and,
for perturbation (which tunes the supernet), checkpoints/ and perturbation/.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Keep TF's C++ logs at warnings.

from keras_darts.cli import quiet_start  # noqa: E402

quiet_start.import_tensorflow()  # Before anything else imports TF.

from keras_darts.cli import flags as cli_flags  # noqa: E402
from keras_darts.cli.guard import run_guarded, start  # noqa: E402
from keras_darts.config import SearchConfig  # noqa: E402
from keras_darts.errors import ConfigError  # noqa: E402
from keras_darts.infra import fileio  # noqa: E402
from keras_darts.runs.search_run import run_selection  # noqa: E402

cli_flags.define_select_flags()


def select(source):
    config = cli_flags.to_select_config(SearchConfig.load_from_run(source))
    if fileio.absolute(config.output_dir) == fileio.absolute(source):
        raise ConfigError("--output_dir must differ from --checkpoint (the search is only read)")
    return run_selection(config, source)


def main(argv):
    source = cli_flags.FLAGS.checkpoint
    run_guarded("keras_darts.select", argv, lambda: select(source),
                lambda: f"{source} is unchanged; rerun into a new --output_dir")


def run(argv=None):
    """The command's entry point (`python -m keras_darts.select`, `keras-darts select`)."""
    start(main, "keras_darts.select", argv)


if __name__ == "__main__":
    run()
