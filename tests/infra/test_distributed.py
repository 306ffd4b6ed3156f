"""MirroredStrategy on 2 logical CPUs gives the same search step as one device.

TF's devices can only be split before TF initialises them, and pytest runs all
test modules in one process, so the comparison runs in a fresh interpreter:
tests/infra/distributed_check.py (a helper script, not collected by pytest).
"""

import os

import pytest
from conftest import check_log, run_check_script

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distributed_check.py")
TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}

# ~30-100 s per check: a fresh TF process traces the step on 2 replicas; one worker
# runs the module (its checks are module fixtures).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("test_distributed")]


def _check(mode):
    return run_check_script(SCRIPT, "DISTRIBUTED_CHECK", mode)


# The second-order mirrored step is extended (CI time): it shares the replica
# mechanics of "first", and tests/methods/test_second_order.py checks its maths.
@pytest.fixture(scope="module", params=["first", pytest.param("second", marks=pytest.mark.extended),
                                        "sharp", "grid"])
def check_result(request):
    return _check(request.param)


def test_mirrored_step_equals_single_device(check_result):
    proc, result = check_result
    assert proc.returncode == 0 and result is not None, check_log(proc)
    assert result["num_replicas"] == 2 and result["order"] in ("first", "second")
    if result["mode"] == "sharp":  # sharpDARTS's op family and Max-W mixing.
        assert (result["op_family"], result["mixing"]) == ("sharp", "max_w")
    diffs = result["max_abs_diff"]
    for key in ("alphas", "weights", "bn_moving_stats", "slots:weight_sgd", "slots:arch_adam",
                "metric:loss/train", "metric:loss/val", "metric:grad_norm", "eval:loss_sum"):
        assert key in diffs, key
        assert diffs[key] <= TOLERANCE["atol"] * 10, (key, diffs[key])
    assert diffs["metric:accuracy/train"] == 0.0
    assert diffs["eval:correct"] == 0.0


def test_mirrored_replicas_hold_identical_copies(check_result):
    proc, result = check_result
    assert proc.returncode == 0 and result is not None
    assert result["replica_copies_identical"] is True
    # The step did real work: finite, non-zero gradient norms on both steps.
    assert len(result["grad_norms"]) == 2
    assert all(0.0 < g < 1e3 for g in result["grad_norms"])


def test_mirrored_training_step_equals_single_device():
    """keras_darts.train's step (auxiliary head, synchronised BatchNorm, momentum SGD)."""
    proc, result = _check("train")
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-6000:]}"
    assert result is not None and result["num_replicas"] == 2 and result["order"] == "train"
    diffs = result["max_abs_diff"]
    for key in ("weights", "bn_moving_stats", "slots:momentum", "metric:loss",
                "metric:grad_norm", "eval:loss_sum"):
        assert key in diffs, key
        assert diffs[key] <= TOLERANCE["atol"] * 10, (key, diffs[key])
    assert diffs["metric:accuracy"] == 0.0 and diffs["eval:correct"] == 0.0
