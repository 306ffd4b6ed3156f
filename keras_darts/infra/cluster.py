"""Multi-worker runs: the cluster TF_CONFIG describes, who the chief is, and where
each worker writes.

Every worker of a `MultiWorkerMirroredStrategy` run executes the same program;
only the chief may write the run's outputs.  The others must still take part
in everything collective (steps, evaluations, checkpoint saves), so they write
into a private temporary directory that `WorkerOutput.cleanup` deletes.
"""

import atexit
import contextlib
import dataclasses
import json
import logging as std_logging
import os
import shutil
import sys
import tempfile
import traceback

from keras_darts.errors import ConfigError

# Task types of a TF_CONFIG cluster that train (others, e.g. "ps", are not supported).
_TRAINING_JOBS = ("chief", "worker")


@dataclasses.dataclass(frozen=True)
class Cluster:
    """This process's place in the cluster described by TF_CONFIG."""

    task_type: str    # "chief" or "worker".
    task_index: int
    num_workers: int  # Training tasks, the chief included.
    has_chief_job: bool = False

    @property
    def is_chief(self):
        """The chief task, or worker 0 when the cluster has no "chief" job (TF's rule)."""
        return self.task_type == "chief" or (self.task_index == 0 and not self.has_chief_job)


SINGLE = Cluster("chief", 0, 1, has_chief_job=True)  # A process on its own.


def parse_tf_config(text):
    """The `Cluster` of a TF_CONFIG JSON string; SINGLE when `text` is empty.

    Raises ConfigError naming what is wrong: malformed JSON, no "cluster" or
    "task", a job type the search cannot run, or an index out of range.
    """
    if not text or not text.strip():
        return SINGLE
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise ConfigError("TF_CONFIG must be a JSON object with 'cluster' and 'task'")
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise ConfigError("TF_CONFIG has no 'cluster' (e.g. {\"worker\": [\"host1:port\", "
                          "\"host2:port\"]})")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ConfigError("TF_CONFIG has no 'task' with 'type' and 'index' (e.g. "
                          "{\"type\": \"worker\", \"index\": 0})")
    other = sorted(set(cluster) - set(_TRAINING_JOBS))
    if other:
        raise ConfigError(f"TF_CONFIG cluster has job(s) {other}: only 'chief' and 'worker' "
                          "tasks are supported (synchronous MultiWorkerMirroredStrategy)")
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not addresses or not all(
                isinstance(a, str) and ":" in a for a in addresses):
            raise ConfigError(f"TF_CONFIG cluster['{job}'] must be a non-empty list of "
                              f"'host:port' strings, got {addresses!r}")
    if len(cluster.get("chief", [])) > 1:
        raise ConfigError("TF_CONFIG cluster may have only one 'chief'")
    task_type, index = task["type"], task["index"]
    if task_type not in cluster:
        raise ConfigError(f"TF_CONFIG task type {task_type!r} is not a job of the cluster "
                          f"{sorted(cluster)}")
    if isinstance(index, bool) or not isinstance(index, int):
        raise ConfigError(f"TF_CONFIG task index must be an integer, got {index!r}")
    if not 0 <= index < len(cluster[task_type]):
        raise ConfigError(f"TF_CONFIG task index {index} is out of range: cluster"
                          f"['{task_type}'] has {len(cluster[task_type])} task(s)")
    return Cluster(task_type, index, sum(len(a) for a in cluster.values()),
                   has_chief_job="chief" in cluster)


def current():
    """The `Cluster` of this process (from the TF_CONFIG environment variable)."""
    return parse_tf_config(os.environ.get("TF_CONFIG", ""))


class WorkerOutput:
    """Where this worker writes: the run's output directory on the chief, a new
    temporary directory on every other worker (deleted by `cleanup`)."""

    def __init__(self, output_dir, cluster=SINGLE):
        self.cluster = cluster
        if cluster.is_chief:
            self.root = output_dir
        else:
            self.root = tempfile.mkdtemp(
                prefix=f"keras_darts_{cluster.task_type}{cluster.task_index}_")

    def cleanup(self):
        """Deletes a non-chief worker's directory (nothing on the chief)."""
        if not self.cluster.is_chief:
            shutil.rmtree(self.root, ignore_errors=True)


_joined = False  # Whether this process has joined a cluster (see `exits_at_once`).


def mark_joined():
    """Called once this process runs a MultiWorkerMirroredStrategy."""
    global _joined
    _joined = True


@contextlib.contextmanager
def exits_at_once():
    """Around a command line's work: once the process has joined a cluster, it
    leaves with os._exit when the work ends (its exit code kept, a traceback
    printed).  A normal interpreter exit garbage-collects TF functions, which
    under the cluster's eager context waits for the other workers, which are
    exiting too: each stalled until the coordination service's heartbeat
    timeout (~60 s, measured); so do TF's exit handlers.  Everything the run
    writes is closed by then.  The temporary files of the process (e.g.
    autograph's, which an exit handler would delete) go to a private
    directory deleted at the end either way."""
    private = tempfile.mkdtemp(prefix="keras_darts_process_")
    atexit.register(shutil.rmtree, private, True)  # Runs last: after TF's own handlers.
    tempfile.tempdir = private
    code = 0
    try:
        yield
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not _joined:
            raise
    except BaseException:
        if not _joined:
            raise
        traceback.print_exc()
        code = 1
    if _joined:
        shutil.rmtree(private, ignore_errors=True)
        std_logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
