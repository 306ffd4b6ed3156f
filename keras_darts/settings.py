"""The settings of a plug-in (a search method, a selection criterion): a frozen
dataclass whose fields say which command-line flag sets them.

    @dataclasses.dataclass(frozen=True)
    class EdasSettings:
        clamp: str = setting("derived", "edas_clamp", "How the other edges run: ...",
                             choices=CLAMPS)

`keras_darts.cli.flags` defines one flag per field of every registered plug-in
and builds the chosen plug-in's settings from them; the run's config.json holds
them as a nested section.  Plug-ins never import absl.
"""

import dataclasses
import math

from keras_darts.errors import ConfigError


def setting(default, flag, help, choices=None, lower=None, upper=None, free_on_resume=False):
    """A settings field with its flag.  `--resume` refuses a changed value (it
    would change what the run computes from its checkpoint on) unless
    free_on_resume (a setting that cannot change the results)."""
    return dataclasses.field(default=default, metadata={
        "flag": flag, "help": help, "choices": choices, "lower": lower, "upper": upper,
        "free_on_resume": free_on_resume})


@dataclasses.dataclass(frozen=True)
class NoSettings:
    """A plug-in without settings of its own."""


def fields(settings_cls):
    """The fields of a settings class (none for `NoSettings`)."""
    return dataclasses.fields(settings_cls)


def flag_name(field):
    return field.metadata["flag"]


def flagged_fields(settings_cls):
    """The fields a flag sets (the others are fixed by the plug-in at run time)."""
    return [f for f in fields(settings_cls) if "flag" in f.metadata]


def to_dict(settings):
    """The flag-set fields of `settings` as a dict (what config.json holds)."""
    return {f.name: getattr(settings, f.name) for f in flagged_fields(type(settings))}


def from_dict(settings_cls, data, what):
    """`settings_cls(**data)`; a ConfigError naming `what` if the keys or values are bad."""
    if isinstance(data, settings_cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{what}: expected an object of settings, got {data!r}")
    known = {f.name for f in fields(settings_cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{what}: unknown setting(s) {unknown}; known: {sorted(known)}")
    _check_values(settings_cls, data, what)  # First: its messages name the flags.
    try:
        return settings_cls(**data)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{what}: {e}") from None


def _check_values(settings_cls, data, what):
    """The choices and bounds a flag would enforce, for settings from a library
    call or a config file too (`data`: the values given)."""
    for field in flagged_fields(settings_cls):
        if field.name not in data:
            continue
        value, meta = data[field.name], field.metadata
        if field.type in (int, float) and (isinstance(value, bool)
                                           or not isinstance(value, (int, float))):
            raise ConfigError(f"{what}: --{flag_name(field)} must be a number, got {value!r}")
        name = flag_name(field)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{what}: --{name} must be a finite number, got {value!r}")
        if meta["choices"] and value not in meta["choices"]:
            raise ConfigError(f"{what}: --{name} must be one of {list(meta['choices'])}, "
                              f"got {value!r}")
        if meta["lower"] is not None and value < meta["lower"]:
            raise ConfigError(f"{what}: --{name} must be >= {meta['lower']}, got {value!r}")
        if meta["upper"] is not None and value > meta["upper"]:
            raise ConfigError(f"{what}: --{name} must be <= {meta['upper']}, got {value!r}")


def resume_changes(saved, now):
    """[(flag, saved value, new value, free_on_resume)] of the flag-set fields
    that differ (both settings of the same class)."""
    return [(flag_name(f), getattr(saved, f.name), getattr(now, f.name),
             bool(f.metadata.get("free_on_resume")))
            for f in flagged_fields(type(now)) if getattr(saved, f.name) != getattr(now, f.name)]
