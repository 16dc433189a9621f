"""Shared fixtures: a local Ray on loopback, started once for the session."""

import os

import pytest

# Every Ray listener on 127.0.0.1, no token prompts in tests (see shared/spec/environment.md).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="session")
def ray_local():
    import ray

    from pipeline.runtime import init_ray

    init_ray(None)
    yield ray
    ray.shutdown()
