"""Samples the RSS and CPU time of this Ray cluster's processes while a job runs (psutil)."""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import psutil


_SYSTEM_WORKERS = ("DashboardAgent", "RuntimeEnvAgent")


def _role(proc: Any, driver_pid: int) -> str:
    if proc.pid == driver_pid:
        return "driver"
    try:
        cmdline = proc.cmdline()
        first = cmdline[0] if cmdline else proc.name()
    except Exception:  # noqa: BLE001 - a process that just exited
        return "gone"
    if first.startswith("ray::"):
        name = re.split(r"[.\s]", first[5:], maxsplit=1)[0] or "worker"
        return "system" if name in _SYSTEM_WORKERS else f"worker:{name}"
    return "system"


#: Worker roles that are the pipeline itself (idle pooled workers and Ray's own processes are reported apart).
APP_ROLES = ("driver", "worker:StreamWorker", "worker:SegmenterWorker")


def _machine_busy_seconds() -> float | None:
    """CPU-seconds all processes of the machine have used since boot (``/proc/stat``), None if unknown."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class ClusterSampler(threading.Thread):
    """Samples this Ray cluster's processes (the driver and its descendants) while a job runs.

    Per sample: RSS per role (``driver``, ``worker:<Actor class>``, ``worker:IDLE``, ``system`` for
    raylet, GCS, dashboard and agents) and, every ``store_interval``, the plasma store's bytes in use.
    Over the run: CPU-seconds per role (each process's CPU time from its first to its last sample;
    a process's role is the last actor class it hosted) and the machine's CPU-seconds (``/proc/stat``),
    so ``others_cpu_s`` is what other users of the machine took meanwhile.
    """

    def __init__(self, interval: float = 0.2, store_interval: float | None = 0.5) -> None:
        super().__init__(daemon=True)
        self.interval, self.store_interval = interval, store_interval
        self.driver = psutil.Process()
        self.stop_event = threading.Event()
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.store: list[tuple[float, float, int]] = []  # (t, MiB used, objects)
        self.store_error: str | None = None
        self._procs: dict[int, Any] = {}
        self._cpu: dict[int, list[Any]] = {}  # pid -> [role, cpu at first sample, cpu at last sample]
        self._taking_baseline = False
        self._store_reader = self._make_store_reader() if store_interval else None
        self.t0 = time.perf_counter()
        self._machine0 = _machine_busy_seconds()
        self.wall_s = 0.0
        self.machine_cpu_s: float | None = None

    def _make_store_reader(self) -> Callable[[], tuple[float, int]] | None:
        try:
            import ray
            from ray._private.internal_api import get_memory_info_reply, get_state_from_address

            state = get_state_from_address(ray.get_runtime_context().gcs_address)

            def read() -> tuple[float, int]:
                stats = get_memory_info_reply(state).store_stats
                return stats.object_store_bytes_used / 2**20, int(stats.num_local_objects)

            read()
            return read
        except Exception as exc:  # noqa: BLE001 - a private Ray API: report, do not fail
            self.store_error = f"{type(exc).__name__}: {exc}"
            return None

    def sample(self) -> dict[str, float]:
        """RSS (MiB) per role now; also updates the per-process CPU accounting."""
        roles: dict[str, float] = {}
        try:
            procs = [self.driver, *self.driver.children(recursive=True)]
        except psutil.Error:
            procs = [self.driver]
        for proc in procs:
            proc = self._procs.setdefault(proc.pid, proc)
            try:
                with proc.oneshot():
                    rss = proc.memory_info().rss / 2**20
                    times = proc.cpu_times()
            except psutil.Error:
                continue
            role = _role(proc, self.driver.pid)
            roles[role] = roles.get(role, 0.0) + rss
            cpu = times.user + times.system
            entry = self._cpu.setdefault(proc.pid, [role, cpu if self._taking_baseline else 0.0, cpu])
            if role not in ("gone", "worker:IDLE"):
                entry[0] = role
            entry[2] = cpu
        return roles

    def start(self) -> None:
        """Take the CPU baseline (processes alive now count from here, later ones from zero) and sample."""
        self._cpu, self._taking_baseline = {}, True
        self.sample()
        self._taking_baseline = False
        self.t0 = time.perf_counter()
        self._machine0 = _machine_busy_seconds()
        super().start()

    def run(self) -> None:
        next_store = 0.0
        while not self.stop_event.is_set():
            t = time.perf_counter() - self.t0
            self.samples.append((t, self.sample()))
            if self._store_reader is not None and t >= next_store:
                with contextlib.suppress(Exception):
                    used, objects = self._store_reader()
                    self.store.append((t, used, objects))
                next_store = t + (self.store_interval or 0)
            self.stop_event.wait(self.interval)

    def stop(self) -> None:
        self.stop_event.set()
        self.join()
        self.samples.append((time.perf_counter() - self.t0, self.sample()))
        self.wall_s = time.perf_counter() - self.t0
        end = _machine_busy_seconds()
        self.machine_cpu_s = None if end is None or self._machine0 is None else end - self._machine0

    def cpu_by_role(self) -> dict[str, float]:
        roles: dict[str, float] = {}
        for role, first, last in self._cpu.values():
            roles[role] = roles.get(role, 0.0) + max(0.0, last - first)
        return roles

    def cpu_report(self) -> dict[str, Any]:
        roles = self.cpu_by_role()
        ours = sum(roles.values())
        report: dict[str, Any] = {
            "cpu_s": round(ours, 2),
            "cpu_s_by_role": {k: round(v, 2) for k, v in sorted(roles.items())},
            "our_cpu_cores": round(ours / self.wall_s, 2) if self.wall_s else None,
        }
        if self.machine_cpu_s is not None and self.wall_s:
            report["others_cpu_cores"] = round(max(0.0, self.machine_cpu_s - ours) / self.wall_s, 2)
        return report

    @staticmethod
    def app_total(roles: dict[str, float]) -> float:
        return sum(v for k, v in roles.items() if k in APP_ROLES)


def wait_for_actors_to_exit(timeout: float = 15.0) -> float:
    """Block until the previous job's pipeline actors have exited (so runs do not overlap); seconds waited."""
    started = time.perf_counter()
    driver = psutil.Process()
    while time.perf_counter() - started < timeout:
        try:
            roles = {_role(p, driver.pid) for p in driver.children(recursive=True)}
        except psutil.Error:
            roles = set()
        if not roles & set(APP_ROLES):
            break
        time.sleep(0.1)
    return round(time.perf_counter() - started, 2)


def slope_mb_per_min(points: Sequence[tuple[float, float]], min_span_s: float = 20.0) -> float | None:
    """Least-squares slope of RSS between 25 % and 90 % of a run (start-up and shut-down cut), MB per minute.

    None for runs too short for a slope to mean anything.
    """
    if not points or points[-1][0] < min_span_s:
        return None
    end = points[-1][0]
    middle = [(t, v) for t, v in points if 0.25 * end <= t <= 0.9 * end]
    if len(middle) < 8:
        return None
    t = np.array([p[0] for p in middle])
    y = np.array([p[1] for p in middle])
    return round(float(np.polyfit(t, y, 1)[0]) * 60, 2)
