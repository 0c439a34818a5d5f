"""The session-scoped real SLURM cluster of the launcher tests (tests/launchers/slurm_cluster.py).

Skips (with the reason) when SLURM is not installed or we are not root; fails when it is installed
but does not start, printing the daemons' logs.
"""

from __future__ import annotations

import os

import pytest

from tests.launchers.slurm_cluster import LocalSlurm, missing_requirements


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    previous = os.environ.get("SLURM_CONF")
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except Exception as e:
        cluster.stop()
        pytest.fail(f"the test SLURM cluster did not start: {e}")
    yield cluster
    cluster.stop()
    if previous is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = previous
