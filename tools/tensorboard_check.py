"""Starts TensorBoard on run directories and checks that its dashboards answer with data.

  python tools/tensorboard_check.py runs/quickstart/tensorboard [more logdirs ...] \
      [--timeout 120] [--keep_running]

Asks TensorBoard's own HTTP endpoints, as the browser pages do, for every view a
keras_darts run writes (docs/tensorboard.md): scalars (one point read back), images
(one PNG fetched), text, histograms, the Custom Scalars layout of the softmax(alpha)
trajectories, and the HParams experiment with its runs. Prints one JSON line with what
each view holds; exit code 0 if every view has data, 1 otherwise (the line says which
is empty). `--keep_running` leaves TensorBoard up (its URL is in the line), e.g. for
tools/tensorboard_screenshots.py.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

# A view -> whether the answer of its endpoint holds data (see `_views`).
REQUIRED = ("scalars", "scalar_points", "images", "image_png", "text", "histograms",
            "custom_scalar_charts", "hparams_columns", "hparams_sessions")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_tensorboard(logdirs, port=None):
    """A TensorBoard process serving `logdirs` (run name = folder name); returns
    (process, base URL)."""
    port = port or _free_port()
    spec = ",".join(f"{os.path.basename(os.path.dirname(os.path.abspath(d))) or 'run'}:"
                    f"{os.path.abspath(d)}" for d in logdirs)
    command = [os.path.join(os.path.dirname(sys.executable), "tensorboard"),
               "--logdir_spec" if len(logdirs) > 1 else "--logdir",
               spec if len(logdirs) > 1 else os.path.abspath(logdirs[0]),
               "--host", "127.0.0.1", "--port", str(port), "--reload_interval", "1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    return process, f"http://127.0.0.1:{port}"


def _get(url, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={
        "Content-Type": "application/json", "X-TensorBoard-Feature-Flags": "{}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.headers.get("Content-Type", ""), response.read()


def _json(url, body=None):
    return json.loads(_get(url, body)[1])


def _first(tags_by_run):
    """(run, tag) of the first tag of the first run that has one, or None."""
    for run, tags in sorted(tags_by_run.items()):
        for tag in sorted(tags):
            return run, tag
    return None


def _views(base):
    """What each dashboard's endpoints answer: {view: count}."""
    q = urllib.parse.quote
    views = {}
    scalars = _json(f"{base}/data/plugin/scalars/tags")
    views["scalars"] = sum(len(t) for t in scalars.values())
    first = _first(scalars)
    views["scalar_points"] = len(_json(
        f"{base}/data/plugin/scalars/scalars?run={q(first[0])}&tag={q(first[1])}")) if first else 0
    images = _json(f"{base}/data/plugin/images/tags")
    views["images"] = sum(len(t) for t in images.values())
    first = _first(images)
    views["image_png"] = 0
    if first:
        entries = _json(f"{base}/data/plugin/images/images?run={q(first[0])}&tag={q(first[1])}"
                        "&sample=0")
        kind, blob = _get(f"{base}/data/plugin/images/individualImage?{entries[-1]['query']}")
        views["image_png"] = len(blob) if kind.startswith("image/") else 0
    views["text"] = sum(len(t) for t in _json(f"{base}/data/plugin/text/tags").values())
    views["histograms"] = sum(len(t) for t in
                              _json(f"{base}/data/plugin/histograms/tags").values())
    layout = _json(f"{base}/data/plugin/custom_scalars/layout")
    views["custom_scalar_charts"] = sum(len(c.get("chart", []))
                                        for c in layout.get("category", []))
    experiment = _json(f"{base}/data/plugin/hparams/experiment", {"experimentName": ""})
    views["hparams_columns"] = len(experiment.get("hparamInfos", []))
    views["hparams_metrics"] = len(experiment.get("metricInfos", []))
    groups = _json(f"{base}/data/plugin/hparams/session_groups", {
        "experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS",
                                                  "STATUS_FAILURE", "STATUS_RUNNING"],
        "colParams": [], "startIndex": 0, "sliceSize": 100})
    views["hparams_sessions"] = int(groups.get("totalSize", 0))
    return views


def check(logdirs, timeout=120, keep_running=False):
    """Starts TensorBoard on `logdirs`, waits until every view has data (or
    `timeout` s); returns the report dict (and the process if `keep_running`)."""
    process, base = start_tensorboard(logdirs)
    deadline, views, error = time.time() + timeout, {}, None
    try:
        while time.time() < deadline:
            if process.poll() is not None:
                error = "TensorBoard exited: " + process.stderr.read()[-2000:]
                break
            try:
                views = _views(base)
                error = None
                if all(views.get(v, 0) > 0 for v in REQUIRED):
                    break
            except (OSError, ValueError, KeyError) as e:  # Not up yet, or still loading.
                error = f"{type(e).__name__}: {e}"
            time.sleep(1)
        empty = [v for v in REQUIRED if views.get(v, 0) <= 0]
        report = {"url": base, "views": views, "empty": empty, "ok": not empty and not error}
        if error:
            report["error"] = error
        return report, (process if keep_running else None)
    finally:
        if not keep_running:
            process.terminate()
            process.wait(timeout=30)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("logdirs", nargs="+", help="tensorboard/ folders of keras_darts runs")
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--keep_running", action="store_true")
    args = parser.parse_args(argv)
    missing = [d for d in args.logdirs if not os.path.isdir(d)]
    if missing:
        print(f"tensorboard_check: error: not a folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    report, process = check(args.logdirs, args.timeout, args.keep_running)
    print(json.dumps(report))
    if process is not None:
        print(f"TensorBoard keeps running at {report['url']} (pid {process.pid})",
              file=sys.stderr)
        try:
            process.wait()
        except KeyboardInterrupt:
            process.terminate()
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
