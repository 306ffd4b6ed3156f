"""A real TensorBoard on a real (tiny) search: every dashboard keras_darts writes
answers with data (tools/tensorboard_check.py), and the tags behind them."""

import glob
import os
import sys

import pytest

from conftest import REPO, event_tags, run_module


@pytest.mark.slow
def test_tensorboard_serves_every_view_of_a_search(tmp_path):
    out = tmp_path / "tiny_search"
    result = run_module("keras_darts.search", "--dataset=digits", "--channels=4", "--layers=3",
                        "--nodes=2", "--batch_size=16", "--steps_per_epoch=3",
                        "--eval_batch_size=256", "--epochs=2", "--log_every=2",
                        "--profile_steps=2,3", f"--output_dir={out}")
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
