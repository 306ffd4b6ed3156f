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


# docs/schedules.md#test-vectors: max 0.1, min 0.001, 10 epochs.
CPA_VECTORS = {
    (10, 0): [0.1, 0.083298, 0.062159, 0.042153, 0.026327, 0.015238, 0.008114, 0.003881,
              0.001679, 0.001],
    (2, 0): [0.1, 0.090324, 0.076169, 0.059812, 0.043435, 0.028720, 0.016733, 0.008010,
             0.002753, 0.001],
    (10, 2): [0.034, 0.067, 0.1, 0.068514, 0.044042, 0.024785, 0.012390, 0.005411, 0.002008,
              0.001],
}


def _cpa(epochs=10, lr_max=0.1, lr_min=0.001, **options):
    return [schedules.lr("cosine_power", e, epochs, lr_max, lr_min, **options)
            for e in range(epochs)]


@pytest.mark.parametrize("power, warmup", sorted(CPA_VECTORS))
def test_cosine_power_reproduces_the_sharpdarts_values(power, warmup):
    lrs = _cpa(power=power, warmup_epochs=warmup)
    assert lrs == pytest.approx(CPA_VECTORS[power, warmup], abs=1e-6)


def test_cosine_power_of_the_cifar_eval_recipe():
    lr = schedules.lr("cosine_power", 999, 2000, 0.025, 1e-8, power=2, warmup_epochs=5)
    assert lr == pytest.approx(0.0104036, abs=1e-6)


def test_cosine_power_one_is_cosine_rescaled_to_start_at_lr_max():
    cosine = [schedules.lr("cosine", e, 10, 0.1, 0.001, stepped_before_epoch=True)
              for e in range(10)]
    first = (cosine[0] - 0.001) / 0.099
    rescaled = [0.001 + (lr - 0.001) / first for lr in cosine]
    assert _cpa(power=1) == pytest.approx(rescaled, abs=1e-12)
    # With warmup, power 1 is plain cosine over the epochs after it.
    assert _cpa(power=1, warmup_epochs=2)[3:] == pytest.approx(
        [schedules.lr("cosine", e, 8, 0.1, 0.001) for e in range(1, 8)], abs=1e-12)
    assert _cpa(power=1 + 1e-12) == pytest.approx(_cpa(power=1), abs=1e-9)


@pytest.mark.parametrize("power, warmup", [(1, 0), (2, 0), (10, 0), (2, 5), (10, 3)])
def test_cosine_power_decreases_after_warmup(power, warmup):
    lrs = _cpa(epochs=50, power=power, warmup_epochs=warmup)
    ramp, decay = lrs[:warmup + 1], lrs[warmup:]
    assert all(a < b for a, b in zip(ramp, ramp[1:]))
    assert all(a > b for a, b in zip(decay, decay[1:]))
    assert decay[0] == pytest.approx(0.1) and decay[-1] == pytest.approx(0.001)


CPA = {"power": 2.0, "warmup_epochs": 5}


@pytest.mark.parametrize("name, options, given, message", [
    ("linear", CPA, (), "--lr_schedule='linear': unknown lr schedule"),
    ("cosine_power", {**CPA, "power": 0.5}, ("power",), "--lr_power must be >= 1"),
    ("cosine_power", {**CPA, "warmup_epochs": -1}, ("warmup_epochs",),
     "--lr_warmup_epochs must be >= 0 and below --epochs (10), got -1"),
    ("cosine_power", {**CPA, "warmup_epochs": 10}, ("warmup_epochs",),
     "--lr_warmup_epochs must be >= 0 and below --epochs (10), got 10"),
    ("cosine", {**CPA, "power": 3.0}, ("power",),
     "--lr_power is an option of --lr_schedule=cosine_power; --lr_schedule=cosine would "
     "ignore it"),
    ("exponential", CPA, ("warmup_epochs",), "--lr_warmup_epochs is an option of"),
])
def test_check_refuses_what_a_schedule_cannot_run_or_would_ignore(name, options, given,
                                                                   message):
    with pytest.raises(ConfigError) as err:
        schedules.check(name, 10, 0.1, 0.001, options, given, "lr")
    assert message in str(err.value)


@pytest.mark.parametrize("name", ["cosine", "cosine_power"])
def test_check_refuses_lr_min_above_lr_max_naming_the_flags(name):
    with pytest.raises(ConfigError, match=r"--w_lr_min \(0.5\) must not exceed --w_lr \(0.1\)"):
        schedules.check(name, 10, 0.1, 0.5, CPA, (), "w_lr")
    schedules.check("exponential", 10, 0.1, 0.5, CPA, (), "w_lr")  # lr_min unused.


def test_check_accepts_defaults_an_unused_schedule_would_not_run():
    # Search defaults: warmup 5 over a 3-epoch cosine search is never used, so not refused.
    schedules.check("cosine", 3, 0.025, 0.001, CPA, (), "w_lr")
    with pytest.raises(ConfigError, match="--w_lr_warmup_epochs must be"):
        schedules.check("cosine_power", 3, 0.025, 0.001, CPA, (), "w_lr")


def test_search_config_gives_the_weight_lr_the_cosine_power_values():
    from keras_darts import methods
    from keras_darts.config import SearchConfig

    for method in ("darts", "msr"):  # MSR's cosine option does not reach cosine_power.
        cfg = SearchConfig(output_dir="unused", method=method, epochs=10, w_lr=0.1,
                           w_lr_min=0.001, w_lr_schedule="cosine_power", w_lr_power=10.0,
                           w_lr_warmup_epochs=2)
        schedules.check_config(cfg, "w_lr")
        weight_lr = methods.get(cfg.method)(cfg).weight_lr
        assert [weight_lr(e, 10) for e in range(10)] == pytest.approx(CPA_VECTORS[10, 2],
                                                                        abs=1e-6)


def test_search_config_refuses_cosine_power_options_under_cosine():
    from keras_darts.config import SearchConfig

    schedules.check_config(SearchConfig(output_dir="unused", epochs=3), "w_lr")
    cfg = SearchConfig(output_dir="unused", epochs=10, w_lr_power=3.0)
    with pytest.raises(ConfigError, match="--w_lr_power is an option of --w_lr_schedule"):
        schedules.check_config(cfg, "w_lr")
