"""Keeps TensorFlow's start-up lines out of the console (docs/cli.md#console).

The full TF wheel writes its start-up notes ("Could not find cuda drivers", "failed
call to cuInit" on every machine without a GPU, oneDNN and CPU-feature notes) straight
to file descriptor 2 before absl logging exists, so TF_CPP_MIN_LOG_LEVEL cannot hide
them and a new user reads an `E0000` line as a failure. The import and the device
probe run with descriptor 2 captured; `release` replays the capture, without the
known notes unless --tf_startup_logs asks for them. Anything else (a real error, a
Python warning) is always shown, and everything is shown if the import fails.
"""

import atexit
import os
import re
import sys
import tempfile

# The notes TF prints on a healthy start (seen with TF 2.18-2.21, CPU and GPU-less).
_NOTES = re.compile(
    r"All log messages before absl::InitializeLog|oneDNN custom operations are on"
    r"|cudart_stub\.cc|cpu_feature_guard\.cc|To enable the following instructions"
    r"|cuda_platform\.cc.*cuInit|cuda_executor\.cc.*(NUMA|cuInit)"
    r"|Unable to register cu(DNN|FFT|BLAS) factory|computation_placer\.cc"
    r"|TF-TRT Warning: Could not find TensorRT")

_held = []


def import_tensorflow():
    """Imports TF and lists its devices (where the CUDA probe happens) with
    descriptor 2 captured; the captured lines wait for `release`."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
            failed = False
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            _held.append(capture.read().decode("utf-8", "replace"))
            if failed:
                release(show_notes=True)
    atexit.register(release)


def is_note(line):
    """Whether `line` is one of TF's healthy start-up notes."""
    return bool(_NOTES.search(line))


def release(show_notes=False):
    """Writes the captured start-up output to stderr (once), TF's notes only if asked."""
    text = "".join(_held)
    _held.clear()
    kept = [line for line in text.splitlines(keepends=True) if show_notes or not is_note(line)]
    sys.stderr.write("".join(kept))
    sys.stderr.flush()
