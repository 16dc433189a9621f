"""Shared fixtures: a local Ray on loopback for the session; no run outlives its tests."""

import os
import sys
import threading

import pytest

# Every Ray listener on 127.0.0.1, no token prompts in tests (see shared/spec/environment.md).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="session")
def _ray_session():
    yield
    import ray

    ray.shutdown()


@pytest.fixture
def ray_local(_ray_session):
    """The session's local Ray, as the pipeline starts it (``init_ray``: the project's worker environment).
    A no-op while it runs; started again if a test shut it down (the multi-node tests do)."""
    import ray

    from pipeline.runtime import init_ray

    init_ray(None)
    return ray


_exit_status = {"code": 0}


def pytest_sessionfinish(session, exitstatus):
    _exit_status["code"] = int(exitstatus)


def pytest_unconfigure(config):
    """A thread a failed test left running (a job in flight, say) must not keep the run from ending.

    Python waits for non-daemon threads at exit; one blocked on a stopped Ray would hold CI until its
    limit. They are named, and the process exits with the session's own status.
    """
    stray = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    for thread in stray:
        thread.join(timeout=10)
    stray = [t.name for t in stray if t.is_alive()]
    if stray:
        sys.stderr.write(f"\nthreads still running after the tests: {stray}; exiting without them\n")
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(_exit_status["code"])
