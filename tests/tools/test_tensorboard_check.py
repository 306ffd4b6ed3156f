"""A real TensorBoard on a real (tiny) search: every dashboard keras_darts writes
answers with data (tools/tensorboard_check.py), and the tags behind them."""

import glob
import os
import sys

import pytest

from conftest import REPO, event_tags, run_module, tiny_search_flags


@pytest.mark.slow
def test_tensorboard_serves_every_view_of_a_search(tmp_path):
    out = tmp_path / "tiny_search_flags"
    result = run_module("keras_darts.search", *tiny_search_flags(
        epochs=2, log_every=2, profile_steps="2,3", output_dir=out))
    assert result.returncode == 0, result.stderr[-3000:]
    tags = event_tags(out / "tensorboard")
    assert {"steps/search/loss/train", "steps/search/images_per_second",
            "search/images_per_second", "alpha_histogram/normal", "config",
            "alpha_trajectory/reduce/04_n1<-n0/skip_connect"} <= tags
    assert glob.glob(str(out / "tensorboard" / "plugins" / "profile" / "*" / "*.xplane.pb"))

    sys.path.insert(0, os.path.join(REPO, "tools"))
    import tensorboard_check

    report, _ = tensorboard_check.check([str(out / "tensorboard")], timeout=90)
    assert report["ok"], report
    views = report["views"]
    assert views["custom_scalar_charts"] == 2 * 5  # A chart per edge of both cells.
    assert views["hparams_sessions"] == 1 and views["hparams_metrics"] == 4
