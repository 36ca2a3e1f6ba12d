"""Fixtures for the replication and failover tests on real servers.

They need the three-node Cassandra cluster (127.0.0.1-3) and SeaweedFS with
three volume servers, as ``NODES=3 scripts/servers/with-servers.sh`` starts
them (``make test`` does).  Missing servers fail the test with the reason.
"""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVERS = os.path.join(ROOT, "scripts", "servers")
NODE_ADDRS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")


def port_open(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except OSError:
        return False


def server_script(name: str, *args: str, timeout: float = 300) -> str:
    """Run scripts/servers/<name> with arguments; fail with its output if
    it fails.  (Blocking: call through run_blocking from async tests.)"""
    proc = subprocess.run(
        ["bash", os.path.join(SERVERS, name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "NODES": "3"},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{name} {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr


@pytest.fixture
def three_nodes() -> tuple[str, ...]:
    """The three Cassandra nodes, all answering; fails with the reason if not."""
    down = [a for a in NODE_ADDRS if not port_open(a, 9042)]
    if down:
        pytest.fail(
            f"Cassandra nodes {', '.join(down)} are not running: the replication test needs "
            "three nodes (`NODES=3 scripts/servers/with-servers.sh .venv/bin/pytest "
            "tests/cluster`, as `make test` runs it)",
            pytrace=False,
        )
    return NODE_ADDRS


@pytest.fixture
def s3_servers() -> None:
    """SeaweedFS with at least two volume servers; fails with the reason if not."""
    if not port_open("127.0.0.1", 8333) or not port_open("127.0.0.1", 8082):
        pytest.fail(
            "SeaweedFS with replicated volume servers is not running on 127.0.0.1 "
            "(`scripts/servers/s3.sh start` starts master, 3 volume servers, filer + S3)",
            pytrace=False,
        )
