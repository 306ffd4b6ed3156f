"""Flag files that ship inside the package, so `--flagfile=quickstart` works after a
plain `pip install` as well as in a checkout (docs/cli.md#packaged-flag-files)."""

import os
from importlib import resources

from keras_darts.errors import KerasDartsError

_SUFFIX = ".cfg"


class UnknownFlagFile(KerasDartsError):
    """A --flagfile that is neither an existing file nor a packaged name."""


def packaged_dir():
    """The folder of the packaged flag files (`keras_darts/flagfiles`)."""
    return str(resources.files("keras_darts") / "flagfiles")


def packaged_names():
    """The packaged flag files' names, without `.cfg`, sorted."""
    return sorted(name[:-len(_SUFFIX)] for name in os.listdir(packaged_dir())
                  if name.endswith(_SUFFIX))


def _packaged_path(value):
    """The packaged file `value` names (`quickstart`, `quickstart.cfg` or
    `flags/quickstart.cfg`, as README writes it), or None."""
    name = value[len("flags/"):] if value.startswith("flags/") else value
    if os.sep in name or "/" in name:
        return None
    if not name.endswith(_SUFFIX):
        name += _SUFFIX
    path = os.path.join(packaged_dir(), name)
    return path if os.path.isfile(path) else None


def locate(value):
    """The path absl should read for `--flagfile=value`: an existing file wins,
    then a packaged name; anything else is refused with the names that exist."""
    if os.path.isfile(value):
        return value
    path = _packaged_path(value)
    if path is None:
        raise UnknownFlagFile(
            f"--flagfile: {value!r} is neither a file nor a packaged flag file "
            f"(packaged: {', '.join(packaged_names())})")
    return path


def resolve(argv):
    """`argv` with every `--flagfile=X` / `--flagfile X` pointed at a real file."""
    resolved, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--flagfile="):
            resolved.append("--flagfile=" + locate(arg[len("--flagfile="):]))
        elif arg == "--flagfile" and i + 1 < len(argv):
            resolved.append("--flagfile=" + locate(argv[i + 1]))
            i += 1
        else:
            resolved.append(arg)
        i += 1
    return resolved
