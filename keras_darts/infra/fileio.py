"""Small file helpers shared by the modules that write results."""

import json
import math
import os

from absl import logging


def atomic_write_text(path, text):
    """Writes `text` to `path` so that a crash never leaves a half-written file:
    a temporary file, flushed to the disk (fsync), then renamed over `path`; the
    rename is made durable by syncing the directory where the OS allows it."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        directory = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except OSError:  # E.g. a platform without directory handles.
        return
    try:
        os.fsync(directory)
    except OSError:
        pass
    finally:
        os.close(directory)


def json_safe(payload):
    """`payload` with every NaN or infinite float replaced by None (JSON null):
    `json.dumps` would otherwise write `NaN`, which is not JSON."""
    if isinstance(payload, float) and not math.isfinite(payload):
        return None
    if isinstance(payload, dict):
        return {k: json_safe(v) for k, v in payload.items()}
    if isinstance(payload, (list, tuple)):
        return [json_safe(v) for v in payload]
    return payload


def write_json(path, payload):
    """`payload` as valid JSON (non-finite numbers become null, with a warning)."""
    atomic_write_text(path, json_text(payload, path) + "\n")


def json_text(payload, what="JSON output", **dumps_options):
    """json.dumps that always gives valid JSON: a NaN or infinity becomes null,
    with a warning naming `what`."""
    options = {"indent": 1, **dumps_options}
    try:
        return json.dumps(payload, allow_nan=False, **options)
    except ValueError:
        logging.warning("%s: non-finite numbers written as null", what)
        return json.dumps(json_safe(payload), allow_nan=False, **options)
