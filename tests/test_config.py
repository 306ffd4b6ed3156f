"""Run configs with plug-in sections, plug-in settings, and configs written by the
flat layout of earlier versions."""

import dataclasses
import json

import pytest

from keras_darts import settings as settings_lib
from keras_darts.config import SearchConfig
from keras_darts.errors import ConfigError
from keras_darts.methods.darts import DartsSettings
from keras_darts.methods.edas import EdasSettings
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
    later = dataclasses.replace(saved, epochs=80, method_settings=EdasSettings(tau0=3.0))
    later.check_resumable_from(saved)  # More epochs; tau0 is not fixed on resume.
    changed = dataclasses.replace(saved, method_settings=EdasSettings(clamp="per_edge_argmax"),
                                  seed=3)
    with pytest.raises(ConfigError, match="--seed: saved 2, now 3.*--clamp"):
        changed.check_resumable_from(saved)


def test_settings_fields_declare_their_flags():
    names = [settings_lib.flag_name(f) for f in settings_lib.flagged_fields(PTSettings)]
    assert names == ["pt_proj_intv", "pt_crit_normal", "pt_crit_reduce"]
    assert settings_lib.flagged_fields(settings_lib.NoSettings) == []
    with pytest.raises(ConfigError, match="expected an object"):
        settings_lib.from_dict(PTSettings, [1], "here")
