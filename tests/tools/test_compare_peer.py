"""tools/compare_peer.py: alternation, medians over rounds and ratios (a stand-in
for the original's bench; the real comparison is a measurement, BUILD_NOTES.md)."""

import json
import os
import sys

from conftest import REPO

sys.path.insert(0, os.path.join(REPO, "tools"))
import compare_peer  # noqa: E402

FAKE_BENCH = """
import json, sys
steps = int(sys.argv[sys.argv.index("--steps") + 1])
second = "--unrolled" in sys.argv
print(json.dumps({"step_s_median": 20.0 if second else 10.0, "step_s_all": [0.0] * (steps + 1),
                  "peak_rss_mb": 8000.0, "params": 1930618}))
"""


def test_rounds_alternate_and_ratios_are_ours_over_the_original(tmp_path, monkeypatch, capsys):
    (tmp_path / "step_bench.py").write_text(FAKE_BENCH)
    order = []
    figures = iter([1.0, 3.0, 2.0])  # Our step medians over three rounds: median 2.0.

    def fake_ours(args):
        order.append("ours")
        return {"step_s": next(figures), "launch_s": 20.0, "peak_rss_mb": 2000.0,
                "params": 1930618}

    real_original = compare_peer.original

    def original(args):
        order.append("original")
        return real_original(args)

    monkeypatch.setattr(compare_peer, "ours", fake_ours)
    monkeypatch.setattr(compare_peer, "original", original)
    code = compare_peer.main(["--peer_dir", str(tmp_path), "--peer_python", sys.executable,
                              "--rounds", "3", "--steps", "2"])
    assert code == 0
    assert order == ["ours", "original"] * 3
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["ours"]["step_s"] == 2.0 and report["original"]["step_s"] == 10.0
    assert report["ratio_ours_over_original"]["step_s"] == 0.2
    assert report["ratio_ours_over_original"]["peak_rss_mb"] == 0.25
    assert report["original"]["launch_s"] > 0  # Wall time minus the two timed steps.


def test_a_missing_harness_is_one_line_and_exit_2(tmp_path, capsys):
    assert compare_peer.main(["--peer_dir", str(tmp_path)]) == 2
    assert "must hold step_bench.py" in capsys.readouterr().err
