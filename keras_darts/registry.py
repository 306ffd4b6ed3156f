"""One registry of plug-ins by name, used by every kind of plug-in here (methods,
spaces, ops, op sets, mixing rules, criteria, schedules): registering a name
twice is an error, and looking up an unknown one names the known ones."""

from keras_darts.errors import ConfigError


class Registry:
    """Plug-ins of one `kind` ("search method", "mixing rule", ...) by name.

    `error`: the exception an unknown name raises (ConfigError for what a flag
    or a config chooses).
    """

    def __init__(self, kind, error=ConfigError):
        self.kind = kind
        self.error = error
        self._entries = {}

    def add(self, name, entry):
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        self._entries[name] = entry
        return entry

    def register(self, name):
        """Decorator: registers the decorated object under `name`."""
        return lambda entry: self.add(name, entry)

    def get(self, name):
        if name not in self._entries:
            raise self.error(f"unknown {self.kind} '{name}'; registered: {list(self._entries)}")
        return self._entries[name]

    def names(self):
        return tuple(self._entries)

    def remove(self, name):
        """Unregisters `name` (for tests that register a plug-in of their own)."""
        del self._entries[name]

    def __contains__(self, name):
        return name in self._entries
