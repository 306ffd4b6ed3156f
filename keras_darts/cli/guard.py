"""What every keras_darts command line does around its work: logging set-up,
clear errors (exit 2), and a resume hint on Ctrl-C or SIGTERM (exit 128 + signal
number: 130, 143)."""

import logging as std_logging
import os
import signal
import sys

from absl import app, logging

from keras_darts.errors import KerasDartsError

_TF_SOURCES = os.sep + os.path.join("tensorflow", "python") + os.sep


class _NoTensorFlowInfo(std_logging.Filter):
    """TF 2.21 logs every checkpoint shard and SavedModel detail at INFO through
    absl itself (not its "tensorflow" logger); keep its warnings only."""

    def filter(self, record):
        return record.levelno >= std_logging.WARNING or _TF_SOURCES not in record.pathname


def run_guarded(program, argv, work, interrupted_hint):
    """Runs `work()`; a KerasDartsError becomes one message and exit code 2."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.INFO)
    # TF logs every checkpoint shard at INFO through the "tensorflow" logger.
    std_logging.getLogger("tensorflow").setLevel(std_logging.WARNING)
    logging.get_absl_handler().addFilter(_NoTensorFlowInfo())
    try:
        return work()
    except KerasDartsError as e:
        logging.error("%s", e)
        print(f"{program}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as e:  # Also errors.Interrupted (SIGTERM too, after a save).
        reason = f" ({e})" if str(e) else ""
        print(f"{program}: interrupted{reason}; {interrupted_hint()}", file=sys.stderr)
        sys.exit(128 + getattr(e, "signum", signal.SIGINT))
