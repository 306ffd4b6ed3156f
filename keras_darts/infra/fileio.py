"""Small file helpers shared by the modules that write results."""

import json
import os


def atomic_write_text(path, text):
    """Writes `text` to `path` so that a crash never leaves a half-written file."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json(path, payload):
    atomic_write_text(path, json.dumps(payload, indent=1) + "\n")
