"""What every keras_darts command line does around its work: logging set-up,
clear errors (exit 2), and a resume hint on Ctrl-C or SIGTERM (exit 128 + signal
number: 130, 143)."""

import logging as std_logging
import os
import signal
import sys

from absl import app, flags, logging

from keras_darts.cli import flagfiles, quiet_start
from keras_darts.errors import KerasDartsError

flags.DEFINE_boolean("tf_startup_logs", False, "Also show TensorFlow's start-up notes "
                     "(CUDA probe, oneDNN, CPU features); other output is always shown.")

_TF_SOURCES = os.sep + os.path.join("tensorflow", "python") + os.sep


class _NoTensorFlowInfo(std_logging.Filter):
    """TF 2.21 logs every checkpoint shard and SavedModel detail at INFO through
    absl itself (not its "tensorflow" logger); keep its warnings only."""

    def filter(self, record):
        return record.levelno >= std_logging.WARNING or _TF_SOURCES not in record.pathname


def _refuse(program, error):
    """One line on stderr and exit code 2: how every refusal ends."""
    quiet_start.release()
    print(f"{program}: error: {error}", file=sys.stderr)
    sys.exit(2)


def start(main, program, argv=None):
    """Parses the command line (packaged flag files resolved, a bad value refused in
    one line) and runs `main` under absl, as `python -m` and `keras-darts` both do."""
    argv = list(sys.argv if argv is None else argv)
    try:
        argv = [argv[0], *flagfiles.resolve(argv[1:])]
    except flagfiles.UnknownFlagFile as e:
        _refuse(program, e)

    def parse(args):
        try:
            rest = flags.FLAGS(args)
        except flags.Error as e:
            _refuse(program, e)
        quiet_start.release(show_notes=flags.FLAGS.tf_startup_logs)
        return rest

    app.run(main, argv, flags_parser=parse)


def run_guarded(program, argv, work, interrupted_hint):
    """Runs `work()`; a KerasDartsError becomes one message and exit code 2."""
    if len(argv) > 1:
        _refuse(program, f"unexpected arguments {argv[1:]} (every setting is a --flag)")
    logging.set_verbosity(logging.INFO)
    # TF logs every checkpoint shard at INFO through the "tensorflow" logger.
    std_logging.getLogger("tensorflow").setLevel(std_logging.WARNING)
    logging.get_absl_handler().addFilter(_NoTensorFlowInfo())
    try:
        return work()
    except KerasDartsError as e:
        _refuse(program, e)
    except KeyboardInterrupt as e:  # Also errors.Interrupted (SIGTERM too, after a save).
        reason = f" ({e})" if str(e) else ""
        print(f"{program}: interrupted{reason}; {interrupted_hint()}", file=sys.stderr)
        sys.exit(128 + getattr(e, "signum", signal.SIGINT))
