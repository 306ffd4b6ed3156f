"""Learning-rate schedules, registered by name: the one home of every epoch-wise
schedule the search and the training of a genotype use.

A schedule is `schedule(epoch, epochs, lr, lr_min, **options) -> lr` for the
0-based `epoch` of `epochs`; the value holds for the whole epoch.  It declares
the options it takes when registered; `lr(...)` passes it those of the options
a caller has (a config offers all of its own).  New schedules register with
`@register(name, options)`; `check(...)` refuses settings a schedule cannot run
before a run writes anything (docs/schedules.md).
"""

import math

from keras_darts.errors import ConfigError
from keras_darts.registry import Registry

_SCHEDULES = Registry("lr schedule")
_OPTIONS = {}
get, names = _SCHEDULES.get, _SCHEDULES.names


def register(name, options=()):
    """Decorator: registers `schedule(epoch, epochs, lr, lr_min, **options)` under
    `name`; `options`: the keyword options it takes."""
    def decorate(schedule):
        _SCHEDULES.add(name, schedule)
        _OPTIONS[name] = tuple(options)
        return schedule
    return decorate


def lr(name, epoch, epochs, lr_max, lr_min=0.0, **available):
    """The learning rate of 0-based `epoch` under the schedule `name`, given the
    `available` options (those the schedule does not take are ignored)."""
    schedule = get(name)
    return schedule(epoch, epochs, lr_max, lr_min,
                    **{k: v for k, v in available.items() if k in _OPTIONS[name]})


@register("cosine", options=("stepped_before_epoch",))
def cosine(epoch, epochs, lr_max, lr_min=0.0, stepped_before_epoch=True):
    """Cosine annealing from lr_max to lr_min, as the reference code runs it.

    The DARTS reference steps PyTorch's CosineAnnealingLR at the start of every
    epoch, so epoch e uses the value for e + 1 and the last epoch runs at
    lr_min.  MSR-DARTS steps it after the epoch (`stepped_before_epoch=False`):
    epoch e uses cos(pi * e / epochs), the first epoch runs at lr_max
    (docs/methods/darts.md#learning-rate-schedule).
    """
    t = epoch + 1 if stepped_before_epoch else epoch
    return lr_min + 0.5 * (lr_max - lr_min) * (1.0 + math.cos(math.pi * t / epochs))


@register("exponential", options=("decay",))
def exponential(epoch, epochs, lr_max, lr_min=0.0, decay=0.97):
    """lr_max * decay**(e + 1): stepped at the start of every epoch as the
    ImageNet recipe's scheduler is (lr_min unused)."""
    del epochs, lr_min
    return lr_max * math.pow(decay, epoch + 1)


@register("cosine_power", options=("power", "warmup_epochs"))
def cosine_power(epoch, epochs, lr_max, lr_min=0.0, power=2.0, warmup_epochs=0):
    """sharpDARTS's cosine power annealing: the cosine's phase c in [0, 1] is
    mapped through power**c, so power > 1 drops the lr fast early and slowly
    late (power = 1: cosine).  Without warmup the first epoch runs at lr_max;
    with it epochs 1..warmup_epochs+1 ramp linearly up to lr_max.  The last
    epoch runs at lr_min (docs/schedules.md#cosine-power-annealing)."""
    e = epoch + 1
    if warmup_epochs and e <= warmup_epochs + 1:
        fraction = e / (warmup_epochs + 1)
    elif warmup_epochs:
        fraction = _power_ramp(_cosine_phase(e - warmup_epochs, epochs - warmup_epochs), power)
    else:
        fraction = (_power_ramp(_cosine_phase(e, epochs), power)
                    / _power_ramp(_cosine_phase(1, epochs), power))
    return lr_min + (lr_max - lr_min) * fraction


def _cosine_phase(e, epochs):
    """(1 + cos(pi * e / epochs)) / 2: 1 at e = 0, 0 at e = epochs."""
    return 0.5 * (1.0 + math.cos(math.pi * e / epochs))


def _power_ramp(phase, power):
    """(power**phase - 1) / (power - 1), and its limit `phase` at power = 1
    (expm1 keeps powers just above 1 accurate)."""
    if power == 1:
        return phase
    log_power = math.log(power)
    return math.expm1(phase * log_power) / math.expm1(log_power)


CONFIG_OPTIONS = ("power", "warmup_epochs")  # Config fields `{prefix}_{option}`.
_ANNEALED_TO_LR_MIN = ("cosine", "cosine_power")


def config_options(config, prefix):
    """{option: value} of the `{prefix}_power`-style fields of a config
    (prefix "w_lr": the search's weights, "lr": keras_darts.train), to pass to
    `lr(...)` and `check(...)`."""
    return {option: getattr(config, f"{prefix}_{option}") for option in CONFIG_OPTIONS}


def check_config(config, prefix):
    """`check(...)` of the schedule a config describes through its fields
    `{prefix}`, `{prefix}_min`, `{prefix}_schedule`, `{prefix}_<option>` and
    `epochs`; an option counts as given when it differs from the field's default."""
    options = config_options(config, prefix)
    changed = config.changed_fields([f"{prefix}_{option}" for option in options])
    given = [option for option in options if f"{prefix}_{option}" in changed]
    check(getattr(config, f"{prefix}_schedule"), config.epochs, getattr(config, prefix),
          getattr(config, f"{prefix}_min"), options, given, prefix)


def check(name, epochs, lr_max, lr_min, options, given=(), flag_prefix="lr"):
    """Raises ConfigError, naming the flag, for settings under which the
    schedule `name` cannot run or would silently ignore a flag, so that a run
    refuses them before writing any output.

    `options`: {option: value} the run passes to `lr(...)`; `given`: those the
    user set (a schedule that does not take one would ignore it); flags are
    spelled `--{flag_prefix}`, `--{flag_prefix}_min`, `--{flag_prefix}_schedule`
    and `--{flag_prefix}_<option>` (docs/schedules.md#checks).
    """
    flag = f"--{flag_prefix}"
    if name not in names():
        raise ConfigError(f"{flag}_schedule={name!r}: unknown lr schedule; registered: "
                          + ", ".join(names()))
    takes = _OPTIONS[name]
    for option in given:
        if option not in takes:
            owners = ", ".join(s for s in names() if option in _OPTIONS[s])
            raise ConfigError(f"{flag}_{option} is an option of {flag}_schedule={owners}; "
                              f"{flag}_schedule={name} would ignore it")
    if "power" in takes and options.get("power", 1.0) < 1:
        raise ConfigError(f"{flag}_power must be >= 1 (1 = cosine), got {options['power']}")
    warmup = options.get("warmup_epochs", 0) if "warmup_epochs" in takes else 0
    if not 0 <= warmup < epochs:
        raise ConfigError(f"{flag}_warmup_epochs must be >= 0 and below --epochs ({epochs}), "
                          f"got {warmup}")
    if name in _ANNEALED_TO_LR_MIN and lr_min > lr_max:
        raise ConfigError(f"{flag}_min ({lr_min}) must not exceed {flag} ({lr_max})")
