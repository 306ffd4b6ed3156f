"""Export a trained network as SavedModels that load without keras_darts.

  python -m keras_darts.export --checkpoint=runs/train_quickstart \
      --export_dir=runs/train_quickstart_export

--checkpoint is the --output_dir of `keras_darts.train` (its latest checkpoint
is exported).  Writes --export_dir/classifier (serving_default: images ->
logits, probabilities) and --export_dir/feature_extractor (a reusable module
without the classifier); see keras_darts/serving.py for the input contract.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Keep TF's C++ logs at warnings.

from keras_darts.cli import quiet_start  # noqa: E402

quiet_start.import_tensorflow()  # Before anything else imports TF.

from keras_darts.cli import flags as cli_flags  # noqa: E402
from keras_darts.cli.guard import run_guarded, start  # noqa: E402
from keras_darts.runs.train_run import export_run  # noqa: E402

cli_flags.define_export_flags()


def main(argv):
    flags = cli_flags.FLAGS
    export_dir = flags.export_dir
    run_guarded("keras_darts.export", argv,
                lambda: export_run(flags.checkpoint, export_dir, flags.genotype or None),
                lambda: f"nothing was written to {export_dir}")


def run(argv=None):
    """The command's entry point (`python -m keras_darts.export`, `keras-darts export`)."""
    start(main, "keras_darts.export", argv)


if __name__ == "__main__":
    run()
