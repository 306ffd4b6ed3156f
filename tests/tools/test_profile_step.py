"""tools/profile_step.py on a tiny supernet: a kernel table that adds up."""

import json
import os
import subprocess
import sys

from conftest import REPO


def test_profile_lists_the_steps_kernels_and_busy_threads(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "profile_step.py"), "--batch", "2",
         "--channels", "4", "--layers", "3", "--image_size", "8", "--top", "50",
         "--trace_dir", str(tmp_path)],
        capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads([line for line in result.stdout.splitlines() if line.startswith("{")][-1])
    ops = {k["op"]: k for k in report["kernels"]}
    # The supernet's convolutions ran, forward and backward, as oneDNN or TF kernels.
    assert any(op.startswith("DepthwiseConv2dNative") for op in ops), sorted(ops)
    assert any("BackpropFilter" in op for op in ops), sorted(ops)
    assert all(k["s"] >= 0 and k["calls"] > 0 for k in report["kernels"])
    assert report["kernel_s_total"] >= sum(k["s"] for k in report["kernels"]) - 1e-3
    assert report["threads"] and all(0 < t["busy_s"] <= t["span_s"] + 1e-6
                                     for t in report["threads"])
    assert report["step_s"] > 0 and report["cores_busy"] > 0
    assert report["trace_dir"] == str(tmp_path)
