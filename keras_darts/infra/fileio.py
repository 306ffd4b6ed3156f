"""The one file layer of everything a run reads and writes (docs/design.md#files).

Paths go through `tf.io.gfile`, so every filesystem TensorFlow supports works the
same: a local folder, `gs://bucket/run` on a cluster, TF's in-memory `ram://` in
the tests. Joining with `os.path.join` is fine for all of them ("/" separators);
what must not touch such a path is `os` / `open` / `shutil`, which would make a local
folder named `gs:`.
"""

import errno
import json
import math
import os

import tensorflow as tf
from absl import logging

gfile = tf.io.gfile


def is_local(path):
    """Whether `path` is on the local disk (no `scheme://` prefix)."""
    return "://" not in str(path)


def absolute(path):
    """`path` made absolute if local; a `scheme://` path already is."""
    return os.path.abspath(path) if is_local(path) else str(path)


def dirname(path):
    """The folder holding `path`; `scheme://` itself for a top-level remote path
    (os.path.dirname would answer `scheme:`, a local name)."""
    parent = os.path.dirname(str(path))
    return parent + "//" if parent.endswith(":") and not is_local(path) else parent


def exists(path):
    return gfile.exists(path)


def isdir(path):
    return gfile.isdir(path)


def isfile(path):
    return gfile.exists(path) and not gfile.isdir(path)


def makedirs(path):
    """Makes `path` and its parents; nothing if it exists."""
    gfile.makedirs(path)


def listdir(path):
    return gfile.listdir(path)


def is_empty_dir(path):
    return gfile.isdir(path) and not gfile.listdir(path)


def read_text(path):
    """The text of `path` (UTF-8); OSError subclasses (tf.errors map to them) if unreadable."""
    try:
        with gfile.GFile(path, "r") as f:
            return f.read()
    except tf.errors.NotFoundError as e:
        raise FileNotFoundError(errno.ENOENT, e.message, path) from None
    except tf.errors.PermissionDeniedError as e:
        raise PermissionError(errno.EACCES, e.message, path) from None
    except tf.errors.OpError as e:
        raise OSError(errno.EIO, e.message, path) from None


def read_json(path):
    return json.loads(read_text(path))


def copy(source, target):
    gfile.copy(source, target, overwrite=True)


def move_tree(source, target, last="saved_model.pb"):
    """Moves the folder `source` to `target` (which must not exist). Locally one
    atomic rename. Elsewhere folders are names, not objects (object stores, TF's
    ram://), so every file is renamed on its own, files called `last` at the end:
    a reader that looks for a SavedModel finds it only once it is complete."""
    if is_local(source):
        gfile.rename(source, target, overwrite=False)
        return
    files = [os.path.join(folder, name) for folder, _, names in gfile.walk(source)
             for name in names]
    for path in sorted(files, key=lambda p: os.path.basename(p) == last):
        moved = target + path[len(source):]
        gfile.makedirs(os.path.dirname(moved))
        gfile.rename(path, moved, overwrite=True)
    rmtree(source)


def rmtree(path):
    if gfile.exists(path):
        gfile.rmtree(path)


def atomic_write_text(path, text):
    """Writes `text` to `path` so that a crash never leaves a half-written file:
    a temporary file, then renamed over `path`. On the local disk the file is
    flushed to the disk (fsync) first, and the rename made durable by syncing the
    directory where the OS allows it; elsewhere the filesystem's own rename
    (object stores write an object whole or not at all)."""
    tmp = f"{path}.tmp"
    if not is_local(path):
        with gfile.GFile(tmp, "w") as f:
            f.write(text)
        gfile.rename(tmp, path, overwrite=True)
        return
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
