"""Exceptions that mean "the user gave us something we cannot use".

Command-line entry points catch `KerasDartsError`, print its message and exit
non-zero; anything else is a bug and keeps its traceback.
"""


class KerasDartsError(Exception):
    """Base class for errors caused by user input (flags, data, files)."""


class ConfigError(KerasDartsError):
    """A flag or config value is invalid."""


class DataError(KerasDartsError):
    """A dataset is missing, empty, unreadable or unsuitable."""


class GenotypeError(KerasDartsError):
    """A genotype (JSON file or object) is malformed."""


class TrainingDivergedError(KerasDartsError):
    """The loss became NaN or infinite."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; the work was saved and the run stops."""

    def __init__(self, signum, message):
        super().__init__(message)
        self.signum = signum
