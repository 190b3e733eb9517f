"""gunicorn settings for Herald's web process (the Procfile and scripts/dev use them).

Prometheus multiprocess mode: every worker (and a sender on the same host given the same
directory) writes its counters to files in PROMETHEUS_MULTIPROC_DIR, and /metrics sums them.
The variable must be in the environment before a worker imports prometheus_client, so it is set
here, in the master, before the workers fork. Files of processes that are gone are removed when
gunicorn starts (their counts would otherwise be kept forever; Prometheus' rate() treats the
drop as a counter reset); a live sender's files are kept.
"""

import contextlib
import glob
import os
import tempfile

os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR", os.path.join(tempfile.gettempdir(), "herald-prometheus")
)
METRICS_DIR = os.environ["PROMETHEUS_MULTIPROC_DIR"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prune_dead(directory: str) -> list:
    """Remove the metric files (name_<pid>.db) of processes no longer running."""
    removed = []
    for path in glob.glob(os.path.join(directory, "*.db")):
        pid = os.path.basename(path)[: -len(".db")].rpartition("_")[2]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
                removed.append(path)
    return removed


def on_starting(server):
    os.makedirs(METRICS_DIR, exist_ok=True)
    prune_dead(METRICS_DIR)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, METRICS_DIR)
