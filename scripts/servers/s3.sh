#!/usr/bin/env bash
# Build, start, stop and check a SeaweedFS S3 object store on loopback.
#
#   scripts/servers/s3.sh build          # go build, cached in ~/.cache/mailserver
#   scripts/servers/s3.sh start          # master + $S3_VOLUMES volume servers + filer/S3
#   scripts/servers/s3.sh status|stop
#   scripts/servers/s3.sh kill-volume N | start-volume N   # failover tests
#
# SeaweedFS (Apache-2.0) is built from the Go module proxy with the installed
# Go: its go.mod has replace directives, which only apply in the main module,
# so a small wrapper module under ~/.cache/mailserver/build/seaweedfs requires
# it, repeats them, and builds github.com/seaweedfs/seaweedfs/weed.  Why not
# MinIO's server: docs/decisions/0007-s3-test-server.md.
#
# Layout (all on 127.0.0.1): master :9333, volume servers :8081.. (one
# process each, replication 001 = a second copy on another server, so one
# server may die), filer :8888 with the S3 gateway on :$S3_PORT (8333).
# Credentials: access key "mailserver", secret "mailserver-secret".
set -euo pipefail

SEAWEEDFS_VERSION="${SEAWEEDFS_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}"
CACHE_DIR="${MAILSERVER_CACHE_DIR:-$HOME/.cache/mailserver}"
RUN_DIR="${MAILSERVER_RUN_DIR:-$CACHE_DIR/run}"
BUILD_DIR="$CACHE_DIR/build/seaweedfs"
WEED="$BUILD_DIR/weed"
BASE="$RUN_DIR/s3"
S3_PORT="${S3_PORT:-8333}"
VOLUMES="${S3_VOLUMES:-3}"
READY_TIMEOUT="${S3_READY_TIMEOUT:-120}"
ACCESS_KEY="${S3_ACCESS_KEY:-mailserver}"
SECRET_KEY="${S3_SECRET_KEY:-mailserver-secret}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"

PROG=s3.sh
# shellcheck source=lib.sh
. "$HERE/lib.sh"

build() {
    if [ -x "$WEED" ] && [ -f "$BUILD_DIR/.version" ] && [ "$(cat "$BUILD_DIR/.version")" = "$SEAWEEDFS_VERSION" ]; then
        return 0
    fi
    command -v go >/dev/null || die "go not found (apt-get install golang)"
    mkdir -p "$BUILD_DIR"
    export GOFLAGS="-mod=mod -buildvcs=false"
    echo "s3.sh: building SeaweedFS $SEAWEEDFS_VERSION (takes minutes the first time)" >&2
    if ! (cd "$BUILD_DIR" && timeout 600 go mod download -json "github.com/seaweedfs/seaweedfs@$SEAWEEDFS_VERSION" >download.json 2>build.log); then
        tail -20 "$BUILD_DIR/build.log" >&2
        die "could not download github.com/seaweedfs/seaweedfs@$SEAWEEDFS_VERSION"
    fi
    local gomod goversion
    gomod="$(sed -n 's/.*"GoMod": "\(.*\)".*/\1/p' "$BUILD_DIR/download.json")"
    [ -f "$gomod" ] || die "go.mod of seaweedfs not found after download"
    goversion="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod" | head -1)"
    {
        echo "module mailserver.test/seaweedfs-build"
        echo
        echo "go ${goversion:-1.24}"
        echo
        echo "require github.com/seaweedfs/seaweedfs $SEAWEEDFS_VERSION"
        echo
        # Replace directives of the main module apply only there: repeat them
        # (single-line ones pointing at module versions, not local paths).
        grep -E '^replace .* => [^./][^ ]* v[0-9]' "$gomod" || true
    } >"$BUILD_DIR/go.mod"
    printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/seaweedfs/seaweedfs/weed"\n' >"$BUILD_DIR/tools.go"
    rm -f "$WEED"
    if ! (cd "$BUILD_DIR" && timeout 1800 go build -o "$WEED" github.com/seaweedfs/seaweedfs/weed >>build.log 2>&1); then
        tail -30 "$BUILD_DIR/build.log" >&2
        die "go build of SeaweedFS failed (log: $BUILD_DIR/build.log)"
    fi
    echo "$SEAWEEDFS_VERSION" >"$BUILD_DIR/.version"
}

pid_of() { live_pid "$BASE/$1.pid"; }

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_port() {
    local name="$1" port="$2" deadline
    deadline=$(($(date +%s) + READY_TIMEOUT))
    until port_open "$port"; do
        pid_of "$name" >/dev/null || {
            tail -20 "$BASE/$name.log" >&2 || true
            die "$name exited during startup (log: $BASE/$name.log)"
        }
        [ "$(date +%s)" -lt "$deadline" ] || die "$name not listening on :$port after ${READY_TIMEOUT}s"
        sleep 0.2
    done
}

launch() {
    local name="$1"
    shift
    if pid_of "$name" >/dev/null; then
        return 0
    fi
    (
        cd "$BASE"
        exec setsid "$WEED" "$@" >"$BASE/$name.log" 2>&1 </dev/null
    ) &
    echo $! >"$BASE/$name.pid"
}

volume_port() { echo $((8080 + $1)); }

start_volume() {
    local n="$1" port
    port="$(volume_port "$n")"
    mkdir -p "$BASE/volume$n"
    launch "volume$n" volume -ip=127.0.0.1 -port="$port" -port.grpc=$((18080 + n)) \
        -dir="$BASE/volume$n" -max=200 -master=127.0.0.1:9333 -dataCenter=dc1 -rack=rack1 \
        -minFreeSpace=1GiB -preStopSeconds=0
    wait_port "volume$n" "$port"
}

# S3 ready: a signed ListBuckets with the test credentials succeeds and a
# small object can be written and read back.
wait_s3() {
    local deadline
    deadline=$(($(date +%s) + READY_TIMEOUT))
    while true; do
        if "$(python_bin)" - "$S3_PORT" "$ACCESS_KEY" "$SECRET_KEY" >"$BASE/ready.out" 2>&1 <<'EOF'; then
import io, sys
from minio import Minio
port, ak, sk = sys.argv[1:4]
c = Minio(f"127.0.0.1:{port}", access_key=ak, secret_key=sk, secure=False, region="us-east-1")
if not c.bucket_exists("readiness"):
    c.make_bucket("readiness")
c.put_object("readiness", "probe", io.BytesIO(b"ok"), 2)
r = c.get_object("readiness", "probe")
assert r.read() == b"ok"
r.close(); r.release_conn()
EOF
            return 0
        fi
        pid_of filer >/dev/null || {
            tail -20 "$BASE/filer.log" >&2 || true
            die "filer/S3 exited during startup (log: $BASE/filer.log)"
        }
        if [ "$(date +%s)" -ge "$deadline" ]; then
            cat "$BASE/ready.out" >&2 || true
            die "S3 gateway on :$S3_PORT not serving after ${READY_TIMEOUT}s (logs: $BASE)"
        fi
        sleep 0.5
    done
}

start() {
    build
    mkdir -p "$BASE/master" "$BASE/filer"
    local repl="000"
    if [ "$VOLUMES" -ge 2 ]; then repl="001"; fi
    cat >"$BASE/s3.json" <<EOF
{
  "identities": [
    {
      "name": "mailserver",
      "credentials": [{"accessKey": "$ACCESS_KEY", "secretKey": "$SECRET_KEY"}],
      "actions": ["Admin", "Read", "Write", "List", "Tagging"]
    }
  ]
}
EOF
    # Test-sized volume growth: each bucket is a collection and grows its own
    # volumes; the defaults (6 x 2 copies) would exhaust the slots quickly.
    cat >"$BASE/master.toml" <<EOF
[master.volume_growth]
copy_1 = 2
copy_2 = 2
copy_3 = 1
copy_other = 1
EOF
    launch master master -ip=127.0.0.1 -port=9333 -port.grpc=19333 -mdir="$BASE/master" \
        -defaultReplication="$repl" -volumeSizeLimitMB=64 -peers=none
    wait_port master 9333
    local i
    for i in $(seq 1 "$VOLUMES"); do
        start_volume "$i"
    done
    launch filer filer -ip=127.0.0.1 -port=8888 -port.grpc=18888 -master=127.0.0.1:9333 \
        -defaultStoreDir="$BASE/filer" -s3 -s3.port="$S3_PORT" -s3.config="$BASE/s3.json" \
        -defaultReplicaPlacement="$repl"
    wait_port filer 8888
    wait_s3
    echo "$VOLUMES" >"$BASE/volumes"
    echo "s3.sh: SeaweedFS S3 ready on 127.0.0.1:$S3_PORT ($VOLUMES volume servers, replication $repl)" >&2
}

stop_one() { stop_pid_file "$BASE/$1.pid" "${2:-TERM}" 30; }

stop() {
    [ -d "$BASE" ] || return 0
    stop_one filer
    local f
    for f in "$BASE"/volume*.pid; do
        [ -e "$f" ] || continue
        stop_one "$(basename "$f" .pid)"
    done
    stop_one master
    echo "s3.sh: stopped" >&2
}

status() {
    local rc=0 name
    for name in master filer $(cd "$BASE" 2>/dev/null && ls volume*.pid 2>/dev/null | sed 's/\.pid$//'); do
        if pid="$(pid_of "$name")"; then echo "seaweedfs $name: running (pid $pid)"; else
            echo "seaweedfs $name: stopped"
            rc=1
        fi
    done
    if [ $rc = 0 ] && ! port_open "$S3_PORT"; then
        echo "seaweedfs s3: not listening on :$S3_PORT"
        rc=1
    fi
    return $rc
}

case "${1:-}" in
    build) build ;;
    start) start ;;
    stop) stop ;;
    status) status ;;
    kill-volume)
        [ -n "${2:-}" ] || die "usage: kill-volume N"
        stop_one "volume$2" KILL
        ;;
    start-volume)
        [ -n "${2:-}" ] || die "usage: start-volume N"
        start_volume "$2"
        ;;
    wipe)
        stop
        rm -rf "$BASE"
        ;;
    *)
        echo "usage: $0 {build|start|stop|status|kill-volume N|start-volume N|wipe}" >&2
        exit 2
        ;;
esac
