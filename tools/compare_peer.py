"""Times our search step and the original DARTS's alternately, in one run, as ratios.

  python tools/compare_peer.py --peer_dir PATH/peer_darts [--rounds 3] [--batch 64] \
      [--steps 3] [--order first|second] [--relaxation full|single_edge] \
      [--peer_python PY] [--log runs.jsonl]

PATH/peer_darts is the CPU harness of the unmodified original (its `step_bench.py`;
`--peer_python` defaults to $PEER_VENV/bin/python, else <temp dir>/peer_darts_venv/bin/python,
which its setup script builds). Each round runs `tools/benchmark.py` and then the
original's bench as separate processes, one after the other (never two at once), with
the same batch, C=16, 8 cells, first or second order. Prints one JSON line: per side
the medians over rounds of the step median, of the launch (process start -> first
finished step, measured from outside the same way for both: wall time minus the timed
steps) and of the peak RSS, and ours / original for each (BUILD_NOTES.md,
"Side by side with the original"). Exit code 2 for a missing harness.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

OURS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "benchmark.py")


def _default_peer_python():
    venv = os.environ.get("PEER_VENV") or os.path.join(tempfile.gettempdir(), "peer_darts_venv")
    return os.path.join(venv, "bin", "python")


def _run(command):
    """(the JSON line the command prints last, wall seconds)."""
    start = time.time()
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.time() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n"
                           f"{result.stderr[-3000:]}")
    line = [line for line in result.stdout.splitlines() if line.startswith("{")][-1]
    return json.loads(line), wall


def ours(args):
    command = [sys.executable, OURS, "--batch", str(args.batch), "--steps", str(args.steps),
               "--order", args.order, "--relaxation", args.relaxation]
    report, wall = _run(command)
    timed = report["step_s_mean"] * args.steps
    return {"step_s": report["step_s_median"], "launch_s": wall - timed,
            "peak_rss_mb": report["peak_rss_mb"], "params": report["params"]}


def original(args):
    command = [args.peer_python, os.path.join(args.peer_dir, "step_bench.py"),
               "--batch", str(args.batch), "--steps", str(args.steps)]
    if args.order == "second":
        command.append("--unrolled")
    report, wall = _run(command)
    timed = sum(report["step_s_all"][-args.steps:])
    return {"step_s": report["step_s_median"], "launch_s": wall - timed,
            "peak_rss_mb": report["peak_rss_mb"], "params": report["params"]}


def _medians(runs):
    return {key: round(statistics.median(r[key] for r in runs), 3)
            for key in ("step_s", "launch_s", "peak_rss_mb")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer_dir", default=os.environ.get("PEER_DARTS_DIR"),
                        help="the original's CPU harness (holds step_bench.py)")
    parser.add_argument("--peer_python", default=_default_peer_python())
    parser.add_argument("--rounds", type=int, default=3, choices=range(1, 101),
                        metavar="N", help="alternations (ours, original) to take medians of")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, choices=range(1, 101), metavar="N",
                        help="timed steps per run, after the first")
    parser.add_argument("--order", choices=("first", "second"), default="first")
    parser.add_argument("--relaxation", choices=("full", "single_edge"), default="full",
                        help="ours only (EDAS); the original has the full relaxation")
    parser.add_argument("--log", help="append every run's figures to this JSON-lines file")
    args = parser.parse_args(argv)
    bench = os.path.join(args.peer_dir or "", "step_bench.py")
    if not args.peer_dir or not os.path.isfile(bench):
        print(f"compare_peer: error: --peer_dir must hold step_bench.py, got {args.peer_dir!r}",
              file=sys.stderr)
        return 2
    if not os.path.isfile(args.peer_python):
        print(f"compare_peer: error: no interpreter at {args.peer_python}: build the "
              "original's venv with its setup script, or pass --peer_python", file=sys.stderr)
        return 2
    runs = {"ours": [], "original": []}
    for round_number in range(args.rounds):
        for side, run in (("ours", ours), ("original", original)):
            figures = run(args)
            runs[side].append(figures)
            print(f"round {round_number + 1}/{args.rounds} {side}: {json.dumps(figures)}",
                  file=sys.stderr, flush=True)
            if args.log:
                with open(args.log, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"round": round_number + 1, "side": side,
                                        **vars(args), **figures}) + "\n")
    medians = {side: _medians(r) for side, r in runs.items()}
    ratios = {key: round(medians["ours"][key] / medians["original"][key], 3)
              for key in medians["ours"]}
    print(json.dumps({"batch": args.batch, "order": args.order,
                      "relaxation": args.relaxation, "rounds": args.rounds,
                      "steps": args.steps, "ours": medians["ours"],
                      "original": medians["original"], "ratio_ours_over_original": ratios,
                      "params": {side: r[0]["params"] for side, r in runs.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
