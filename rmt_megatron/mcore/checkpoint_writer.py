"""The checkpoint writer's helper process ends with the run.

megatron-core's torch_dist save collects its writer processes' results through a queue served by
a multiprocessing manager: a spawned process (about 450 MB, as it re-imports the launching
script) made at the first save and kept for the life of the run. A run killed with SIGKILL left
it behind for minutes. `install_write_results_queue` makes that manager itself before the first
save, with Linux's parent-death signal set in it (prctl PR_SET_PDEATHSIG), so it ends when the
run's process ends, however that happens. Elsewhere megatron-core's own queue is used.

This module imports only the standard library at the top: the manager process imports it to run
`die_with_parent`.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from multiprocessing.managers import SyncManager

PR_SET_PDEATHSIG = 1
"""prctl option: the signal this process gets when its parent dies (linux/prctl.h)."""


def die_with_parent(parent: int) -> None:
    """In a child of `parent`: be killed when the parent dies (and exit at once if it already
    has)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:
        os._exit(0)


def install_write_results_queue() -> None:
    """Give megatron-core's checkpoint writer a results queue whose manager dies with this
    process (once per process; Linux only)."""
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    if filesystem_async._results_queue is not None or not sys.platform.startswith("linux"):
        return
    manager = SyncManager(ctx=multiprocessing.get_context("spawn"))
    manager.start(initializer=die_with_parent, initargs=(os.getpid(),))
    filesystem_async._results_queue = manager.Queue()
