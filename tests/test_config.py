"""Run configs with plug-in sections, plug-in settings, and configs written by the
flat layout of earlier versions."""

import dataclasses
import json

import pytest

from keras_darts import settings as settings_lib
from keras_darts.config import SearchConfig, TrainConfig
from keras_darts.errors import ConfigError
from keras_darts.methods.darts import DartsSettings
from keras_darts.methods.edas import EdasSettings
from keras_darts.runs.search_run import run_search
from keras_darts.selection.magnitude import MagnitudeSettings
from keras_darts.selection.perturbation import PTSettings
from keras_darts.selection.stable_rank import StableRankSettings


def test_sections_default_to_the_plugins_settings():
    config = SearchConfig(output_dir="x")
    assert config.method_settings == DartsSettings()
    assert config.selection_settings == MagnitudeSettings()
    edas = SearchConfig(output_dir="x", method="edas", method_settings={"tau0": 2.0})
    assert edas.method_settings == EdasSettings(tau0=2.0)


def test_bad_sections_are_config_errors():
    with pytest.raises(ConfigError, match="unknown setting.*'orders'"):
        SearchConfig(output_dir="x", method_settings={"orders": "second"})
    with pytest.raises(ConfigError, match="--order must be one of"):
        SearchConfig(output_dir="x", method_settings={"order": "third"})
    with pytest.raises(ConfigError, match="--edas_tau0 must be >= 0.001"):
        SearchConfig(output_dir="x", method="edas", method_settings={"tau0": 1e-4})
    with pytest.raises(ConfigError, match="unknown search method 'nas'"):
        SearchConfig(output_dir="x", method="nas")
    with pytest.raises(ConfigError, match="unknown selection criterion"):
        SearchConfig(output_dir="x", selection="best")


def test_json_round_trip_keeps_only_flag_settings(tmp_path):
    config = SearchConfig(output_dir="x", selection="perturbation",
                          selection_settings={"proj_intv": 2, "crit_reduce": "loss"})
    path = str(tmp_path / "config.json")
    config.save(path)
    saved = json.load(open(path))
    assert saved["selection_settings"] == {"proj_intv": 2, "crit_normal": "acc",
                                           "crit_reduce": "loss"}  # No run-time seed.
    assert SearchConfig.load(path) == config


def test_flat_configs_of_earlier_versions_load(tmp_path):
    flat = dict(SearchConfig(output_dir="x").to_json_dict())
    del flat["method_settings"], flat["selection_settings"], flat["space"]
    cases = [
        ({"relaxation": "single_edge", "order": "first", "edas_clamp": "per_edge_argmax",
          "edas_edge_sampling": "round_robin", "edas_tau0": 2.0},
         "edas", EdasSettings(clamp="per_edge_argmax", sampling="round_robin", tau0=2.0)),
        ({"relaxation": "full", "order": "second"}, "darts", DartsSettings(order="second")),
    ]
    for extra, method, expected in cases:
        path = tmp_path / f"{method}.json"
        path.write_text(json.dumps({**flat, **extra, "msr_shapes": "code", "pt_proj_intv": 5}))
        config = SearchConfig.load(str(path))
        assert (config.method, config.method_settings) == (method, expected)
    path = tmp_path / "pt.json"
    path.write_text(json.dumps({**flat, "selection": "perturbation", "pt_proj_intv": 3,
                                "pt_crit_normal": "loss", "msr_shapes": "actual"}))
    assert SearchConfig.load(str(path)).selection_settings == PTSettings(proj_intv=3,
                                                                         crit_normal="loss")
    path.write_text(json.dumps({**flat, "method": "msr", "primitives": "msr",
                                "selection": "stable_rank", "msr_shapes": "actual"}))
    config = SearchConfig.load(str(path))
    assert config.selection_settings == StableRankSettings(msr_shapes="actual")


def test_resume_refuses_fixed_fields_and_fixed_method_settings():
    saved = SearchConfig(output_dir="x", method="edas")
    later = dataclasses.replace(saved, epochs=80, log_every=5)
    assert later.check_resumable_from(saved) == {"epochs": [50, 80], "log_every": [50, 5]}
    changed = dataclasses.replace(saved, method_settings=EdasSettings(clamp="per_edge_argmax"),
                                  seed=3, w_lr=0.1)
    with pytest.raises(ConfigError, match="--seed: saved 2, now 3.*--w_lr: saved 0.025, now "
                                          "0.1.*--edas_clamp: saved 'derived'"):
        changed.check_resumable_from(saved)
    with pytest.raises(ConfigError, match="--edas_tau0"):  # Every plug-in setting too.
        dataclasses.replace(saved, method_settings=EdasSettings(tau0=3.0)).check_resumable_from(
            saved)
    with pytest.raises(ConfigError, match="--epochs: saved 50, now 80"):  # A method's own.
        later.check_resumable_from(saved, also_fixed=("epochs",))


# What --resume lets change (docs/resume.md#what-may-change); every other field,
# and every plug-in setting, is refused.
FREE_ON_RESUME = {
    SearchConfig: {"output_dir", "epochs", "eval_batch_size", "strategy", "recompute",
                   "log_every", "keep_checkpoints", "profile_steps"},
    TrainConfig: {"output_dir", "epochs", "eval_batch_size", "eval_every", "export_dir",
                  "strategy", "log_every", "keep_checkpoints", "profile_steps"},
}


def _another_value(value):
    if value == "":  # --profile_steps, the one string field that may be empty.
        return "1,2"
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):  # Inside every float field's domain.
        return value / 2 if value else 0.5
    return f"{value}_other"


@pytest.mark.parametrize("cls", [SearchConfig, TrainConfig], ids=lambda c: c.__name__)
def test_every_field_is_fixed_on_resume_except_the_free_ones(cls):
    saved = cls(output_dir="x")
    free = set()
    for field in dataclasses.fields(cls):
        if field.name in cls.SECTIONS:
            continue
        later = dataclasses.replace(saved, **{field.name: _another_value(
            getattr(saved, field.name))}) if field.name not in ("method", "selection") else None
        if later is None:  # A plug-in name: its own section follows it.
            continue
        try:
            changes = later.check_resumable_from(saved)
        except ConfigError as e:
            assert f"--{field.name}: saved" in str(e)
        else:
            assert list(changes) == [field.name]
            free.add(field.name)
    assert free == FREE_ON_RESUME[cls]


def test_resume_records_its_changes_and_rewrites_config_json(tmp_path):
    config = SearchConfig(output_dir=str(tmp_path / "run"), channels=4, layers=3, nodes=2,
                          batch_size=16, steps_per_epoch=2, eval_batch_size=256, epochs=1,
                          log_every=0)
    run_search(config)
    more = dataclasses.replace(config, epochs=2, log_every=1)
    run_search(more, resume=True)
    history = json.loads((tmp_path / "run" / "resume_history.json").read_text())
    assert [h["changes"] for h in history] == [{"epochs": [1, 2], "log_every": [0, 1]}]
    assert history[0]["step"] == 2 and history[0]["resumed_at"].endswith("+00:00")
    assert SearchConfig.load(str(tmp_path / "run" / "config.json")) == more
    with pytest.raises(ConfigError, match="--w_lr: saved 0.025, now 0.5"):
        run_search(dataclasses.replace(more, w_lr=0.5), resume=True)
    assert len(json.loads((tmp_path / "run" / "resume_history.json").read_text())) == 1


def test_settings_fields_declare_their_flags():
    names = [settings_lib.flag_name(f) for f in settings_lib.flagged_fields(PTSettings)]
    assert names == ["pt_proj_intv", "pt_crit_normal", "pt_crit_reduce"]
    assert settings_lib.flagged_fields(settings_lib.NoSettings) == []
    with pytest.raises(ConfigError, match="expected an object"):
        settings_lib.from_dict(PTSettings, [1], "here")


# One value outside each numeric field's domain (keras_darts/config.py DOMAINS).
OUT_OF_DOMAIN = {
    "image_size": -1, "crop_padding": -2, "cutout": -1, "channels": 1, "layers": 2,
    "nodes": 0, "stem_multiplier": 0, "epochs": 0, "batch_size": 0, "eval_batch_size": -1,
    "steps_per_epoch": -1, "train_portion": 1.0, "validation_portion": 0.95, "seed": -1,
    "w_lr": -0.1, "w_lr_min": -1e-4, "lr": -0.1, "lr_min": -1.0, "a_lr": -1.0,
    "w_lr_power": 0.5, "lr_power": 0.5, "w_lr_warmup_epochs": -1, "lr_warmup_epochs": -1,
    "lr_decay": 0.0, "w_momentum": 1.0, "momentum": 1.0, "a_beta_1": 1.0, "a_beta_2": 1.0,
    "w_weight_decay": -1.0, "a_weight_decay": -1.0, "weight_decay": -1.0,
    "w_grad_clip": -1.0, "grad_clip": -1.0, "auxiliary_weight": -0.4,
    "drop_path_prob": 1.0, "dropout_rate": 1.0, "label_smoothing": 1.0, "mid_channels": -1,
    "eval_every": -1, "log_every": -1, "keep_checkpoints": 0,
}
NUMERIC_FIELDS = [(cls, f.name) for cls in (SearchConfig, TrainConfig)
                  for f in dataclasses.fields(cls) if f.type in (int, float)]


@pytest.mark.parametrize("cls, name", NUMERIC_FIELDS,
                         ids=[f"{c.__name__}.{n}" for c, n in NUMERIC_FIELDS])
def test_every_numeric_field_refuses_values_outside_its_domain(cls, name):
    field = cls.__dataclass_fields__[name]
    with pytest.raises(ConfigError, match=f"^--{name} must be "):
        cls(output_dir="x", **{name: OUT_OF_DOMAIN[name]})
    if field.type is float:
        for value in (float("nan"), float("inf"), -float("inf")):
            with pytest.raises(ConfigError, match=f"^--{name} must be a finite number"):
                cls(output_dir="x", **{name: value})
    cls(output_dir="x", **{name: field.default})  # The default is inside.


def _plugin_numeric_settings():
    from keras_darts import methods, selection

    classes = [methods.get(m).Settings for m in methods.names()]
    classes += [selection.get(c).Settings for c in selection.names()]
    return [(cls, f) for cls in classes for f in settings_lib.flagged_fields(cls)
            if f.type in (int, float)]


@pytest.mark.parametrize("cls, field", _plugin_numeric_settings(),
                         ids=lambda x: getattr(x, "__name__", None) or getattr(x, "name", ""))
def test_every_plugin_setting_refuses_values_outside_its_bounds(cls, field):
    flag, meta = settings_lib.flag_name(field), field.metadata
    bad = [meta["lower"] - 1] if meta["lower"] is not None else []
    bad += [meta["upper"] + 1] if meta["upper"] is not None else []
    if field.type is float:
        bad += [float("nan"), float("inf")]
    for value in bad:
        with pytest.raises(ConfigError, match=f"--{flag} must be"):
            settings_lib.from_dict(cls, {field.name: value}, "here")
    settings_lib.from_dict(cls, {field.name: field.default}, "here")
