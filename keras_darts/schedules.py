"""Learning-rate schedules, registered by name: the one home of every epoch-wise
schedule the search and the training of a genotype use.

A schedule is `schedule(epoch, epochs, lr, lr_min, **options) -> lr` for the
0-based `epoch` of `epochs`; the value holds for the whole epoch.  It declares
the options it takes when registered; `lr(...)` passes it those of the options
a caller has (a config offers all of its own).  New schedules (e.g.
sharpDARTS's cosine power annealing) register with `@register(name, options)`.
"""

import math

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
