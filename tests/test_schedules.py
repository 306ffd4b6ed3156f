"""The learning-rate schedule registry shared by the search and the training."""

import math

import pytest

from keras_darts import schedules
from keras_darts.errors import ConfigError


def test_cosine_as_the_reference_steps_it():
    lrs = [schedules.lr("cosine", e, 50, 0.025, 0.001) for e in range(50)]
    assert lrs[0] == pytest.approx(0.001 + 0.012 * (1 + math.cos(math.pi / 50)))
    assert lrs[-1] == pytest.approx(0.001)  # The last epoch runs at lr_min.
    after = [schedules.lr("cosine", e, 50, 0.025, 0.001, stepped_before_epoch=False)
             for e in range(50)]
    assert after[0] == pytest.approx(0.025) and after[1:] == pytest.approx(lrs[:-1])


def test_exponential_and_options_a_schedule_does_not_take():
    assert schedules.lr("exponential", 0, 250, 0.1, decay=0.97) == pytest.approx(0.097)
    # A caller offers all its options; each schedule takes its own.
    assert schedules.lr("cosine", 9, 10, 0.1, 0.0, decay=0.5) == pytest.approx(0.0)
    assert schedules.lr("exponential", 1, 10, 0.1, stepped_before_epoch=False) == \
        pytest.approx(0.1 * 0.97 ** 2)


def test_registry():
    assert {"cosine", "exponential"} <= set(schedules.names())
    with pytest.raises(ConfigError, match="unknown lr schedule 'linear'"):
        schedules.get("linear")
    with pytest.raises(ValueError, match="already registered"):
        schedules.register("cosine")(schedules.cosine)
