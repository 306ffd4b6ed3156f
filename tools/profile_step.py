"""Where one search step's time goes: kernel time per op type, and how busy each core is.

  python tools/profile_step.py [benchmark flags: --batch 64 --channels 16 --layers 8 ...]
                               [--top 25] [--trace_dir DIR]

Builds the step as tools/benchmark.py does (same flags), runs two warm-up steps,
times two more (wall and CPU time: CPU / wall = cores kept busy), then records one
step with the TensorFlow profiler and prints one JSON line: per executor thread
its busy time and span, and the op types by total kernel time (summed over
threads).  The trace stays in --trace_dir for TensorBoard's Profile tab.
BUILD_NOTES.md 4.15 has the table of the default supernet.
"""

import argparse
import collections
import glob
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchmark  # noqa: E402  (builds the step as the search does; sets up the import path)
import tensorflow as tf  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=25, help="op types to list")
    parser.add_argument("--trace_dir", default=None, help="default: a new temporary directory")
    own, rest = parser.parse_known_args(argv)
    return own, benchmark.parse_args(rest)


def _union(intervals):
    """Total length covered by (start, end) intervals."""
    covered, end = 0, None
    for start, stop in sorted(intervals):
        if end is None or start >= end:
            covered, end = covered + stop - start, stop
        elif stop > end:
            covered, end = covered + stop - end, stop
    return covered


def kernel_table(trace_dir):
    """(threads, op types) of the host plane of the newest trace in trace_dir:
    threads = [{name, events, busy_s, span_s}], op types = {type: (seconds, count)}."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2  # Ships with TensorFlow.

    files = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True),
                   key=os.path.getmtime)
    if not files:
        raise RuntimeError(f"the profiler wrote no trace under {trace_dir}")
    space = xplane_pb2.XSpace()
    with open(files[-1], "rb") as f:
        space.ParseFromString(f.read())
    threads, by_type = [], collections.defaultdict(lambda: [0.0, 0])
    for plane in space.planes:
        if "host" not in plane.name.lower():
            continue
        names = plane.event_metadata
        for line in plane.lines:
            if not line.name.startswith("tf_Compute") or not line.events:
                continue
            events = [(e.offset_ps, e.offset_ps + e.duration_ps, names[e.metadata_id].name)
                      for e in line.events]
            threads.append({"name": line.name, "events": len(events),
                            "busy_s": round(_union((s, e) for s, e, _ in events) / 1e12, 3),
                            "span_s": round((max(e for _, e, _ in events)
                                             - min(s for s, _, _ in events)) / 1e12, 3)})
            for start, stop, name in events:
                if "::" in name or ":" not in name:
                    continue  # Executor bookkeeping; kernels are "op name:op type".
                op_type = name.split(":")[-1]
                by_type[op_type][0] += (stop - start) / 1e12
                by_type[op_type][1] += 1
    return threads, dict(by_type)


def main(argv=None):
    own, args = parse_args(argv)
    _, plugin, _, search, batch, val_batch = benchmark.prepare(args)

    def step():
        float(search.step(batch, val_batch)["loss/train"])

    for _ in range(2):
        step()
    wall, cpu = time.time(), time.process_time()
    for _ in range(2):
        step()
    wall, cpu = (time.time() - wall) / 2, (time.process_time() - cpu) / 2
    trace_dir = own.trace_dir or tempfile.mkdtemp(prefix="profile_step_")
    tf.profiler.experimental.start(trace_dir)
    step()
    tf.profiler.experimental.stop()
    threads, by_type = kernel_table(trace_dir)
    ranked = sorted(by_type.items(), key=lambda item: -item[1][0])
    print(json.dumps({
        "batch": args.batch, "channels": args.channels, "layers": args.layers,
        "method": plugin.name, "order": args.order, "recompute": args.recompute,
        "step_s": round(wall, 3), "cpu_s_per_step": round(cpu, 3),
        "cores_busy": round(cpu / wall, 2), "threads": threads,
        "kernel_s_total": round(sum(s for s, _ in by_type.values()), 3),
        "kernels": [{"op": op.removeprefix("_MklNative").removeprefix("_Mkl"),
                     "s": round(s, 3), "calls": n} for op, (s, n) in ranked[:own.top]],
        "trace_dir": trace_dir}))


if __name__ == "__main__":
    main()
