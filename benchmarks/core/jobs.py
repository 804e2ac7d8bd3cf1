"""Whether the worker that started a cell is still alive: a process on this host, or a cluster job.

The store asks this before it marks a ``started`` cell as failed (:meth:`benchmarks.core.store.Run.reap`).
A cluster job is named in the cell's event (``slurm:<id>`` written by a submitit worker,
``local:<controller pid>`` for submitit's local cluster); SLURM is asked through submitit's
``sacct`` watcher.
"""

from __future__ import annotations

import os
import socket

_ALIVE = ("READY", "PENDING", "RUNNING", "UNKNOWN", "REQUEUED", "COMPLETING", "PREEMPTED", "SUSPENDED",
          "CONFIGURING", "RESIZING", "REQUEUE_HOLD", "REQUEUE_FED", "STOPPED")  # fmt: skip


def job_gone(job: str, host: str | None = None) -> bool:
    """Whether the cluster job ``job`` (``slurm:<id>`` or ``local:<controller pid>``) has ended.

    A SLURM job is asked about through ``sacct`` (submitit's watcher); a state it cannot tell
    (``UNKNOWN``) counts as alive. A local submitit job is its controller process on ``host``:
    gone when that pid is dead; on another host it cannot be told and counts as alive.
    """
    kind, _, jid = job.partition(":")
    if kind == "slurm":
        from submitit.slurm.slurm import SlurmJob

        state = SlurmJob.watcher.get_state(jid, mode="force")
        return state.upper().split()[0] not in _ALIVE
    if kind == "local" and jid.isdigit():
        if host is not None and host != socket.gethostname():
            return False
        try:
            os.kill(int(jid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    return True  # a job kind this version does not know cannot be running it
