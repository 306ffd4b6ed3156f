"""The `keras-darts` command: `keras-darts search|select|train|export [--flag=value ...]`
runs the same code as `python -m keras_darts.<command>` (docs/cli.md)."""

import importlib
import sys

COMMANDS = {
    "search": "search an architecture (DARTS, EDAS, MSR-DARTS, sharpDARTS, NAO-V2, ...)",
    "select": "run a selection criterion on a searched supernet",
    "train": "train a genotype's network from scratch (and export it)",
    "export": "export a trained network as SavedModels",
}

USAGE = ("usage: keras-darts {search,select,train,export} [--flagfile=NAME] "
         "[--flag=value ...]\n\n"
         + "\n".join(f"  {name:<8}{what}" for name, what in COMMANDS.items())
         + "\n\n`keras-darts <command> --helpfull` lists a command's flags; "
         "docs/cli.md has more.")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if not argv or argv[0] not in COMMANDS:
        problem = f"unknown command {argv[0]!r}" if argv else "no command given"
        print(f"keras-darts: error: {problem}\n{USAGE}", file=sys.stderr)
        return 2
    command = importlib.import_module(f"keras_darts.{argv[0]}")
    command.run([f"keras-darts {argv[0]}", *argv[1:]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
