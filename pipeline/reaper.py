"""Takes a local Ray cluster down with the driver that started it, however the driver ends.

Ray ties its GCS and raylet to the driver's life (they die with it, even on SIGKILL), but two children of
the raylet, ``DashboardAgent`` and ``RuntimeEnvAgent``, then block reporting to the dead GCS and live on,
re-parented to init. The driver cannot clean up after a SIGKILL, so :func:`reap_with_driver` starts a small
process of its own session (a signal to the driver's process group does not reach it) that notes the
driver's descendants twice a second and, once the driver is gone, kills whichever of them still run.

It learns that the driver is gone from a pipe: the driver holds its only write end (Python's descriptors are
not inherited by the processes Ray starts), so the reaper's read returns end-of-file when the driver dies.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys

import psutil

#: Seconds between two looks at the driver's descendants: a process that lived less than this may be missed.
POLL_S = 0.5

_started: subprocess.Popen | None = None


def reap_with_driver() -> None:
    """Start this process's reaper, once per process."""
    global _started
    if _started is None:
        _started = subprocess.Popen([sys.executable, "-m", __name__, str(os.getpid())], stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def watch(driver_pid: int, driver_gone: int) -> list[psutil.Process]:
    """The descendants of ``driver_pid`` seen until ``driver_gone`` (a descriptor) reads end-of-file."""
    seen: dict[int, psutil.Process] = {}
    try:
        driver = psutil.Process(driver_pid)
    except psutil.NoSuchProcess:
        return []
    while True:
        try:
            for process in driver.children(recursive=True):
                seen.setdefault(process.pid, process)  # a Process knows its start time: a reused pid is not it
        except psutil.NoSuchProcess:
            break
        readable, _, _ = select.select([driver_gone], [], [], POLL_S)
        if readable and not os.read(driver_gone, 1):
            break
    return [p for p in seen.values() if p.pid != os.getpid()]


def kill_remaining(processes: list[psutil.Process]) -> int:
    """SIGKILL each of ``processes`` that still runs (``is_running`` checks it is the same process); how many."""
    killed = 0
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                process.kill()
                killed += 1
        except psutil.NoSuchProcess:
            pass
    return killed


if __name__ == "__main__":
    kill_remaining(watch(int(sys.argv[1]), sys.stdin.fileno()))
