#!/usr/bin/env bash
# Run a command with Cassandra and the S3 object store running, e.g.
#
#   scripts/servers/with-servers.sh .venv/bin/pytest
#   NODES=3 scripts/servers/with-servers.sh .venv/bin/pytest tests/cluster
#
# Starts what is not running yet (NODES=1|3 Cassandra nodes, SeaweedFS S3),
# runs the command, and on exit (also on failure or Ctrl-C) stops only what
# it started, wiping their data so every run starts clean.  If a server
# cannot start, exits non-zero with the reason and does not run the
# command: the suite fails, it never skips.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export NODES="${NODES:-1}"

[ $# -gt 0 ] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }

started_cassandra=0
started_s3=0
cleanup() {
    local rc=$?
    if [ $started_s3 = 1 ]; then bash "$HERE/s3.sh" wipe || true; fi
    if [ $started_cassandra = 1 ]; then bash "$HERE/cassandra.sh" wipe || true; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

running_nodes() {
    bash "$HERE/cassandra.sh" status 2>/dev/null | grep -c ': running' || true
}

if [ "$(running_nodes)" != "$NODES" ]; then
    if [ "$(running_nodes)" != 0 ]; then
        echo "with-servers.sh: a Cassandra cluster of another size is running; stopping it" >&2
        bash "$HERE/cassandra.sh" stop
    fi
    started_cassandra=1
    bash "$HERE/cassandra.sh" start || { echo "with-servers.sh: Cassandra did not start (see above)" >&2; exit 1; }
fi
if ! bash "$HERE/s3.sh" status >/dev/null 2>&1; then
    started_s3=1
    bash "$HERE/s3.sh" start || { echo "with-servers.sh: the S3 object store did not start (see above)" >&2; exit 1; }
fi
"$@"
