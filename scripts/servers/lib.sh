# Helpers shared by cassandra.sh and s3.sh (sourced; PROG names the caller).

die() {
    echo "$PROG: $*" >&2
    exit 1
}

# The project's venv python if installed, else python3 (readiness probes).
python_bin() {
    if [ -x "$ROOT/.venv/bin/python" ]; then echo "$ROOT/.venv/bin/python"; else echo python3; fi
}

# Print the pid recorded in FILE if that process is alive; fail otherwise.
live_pid() {
    local f="$1" pid
    [ -f "$f" ] || return 1
    pid="$(cat "$f")"
    kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

# Signal the process recorded in FILE (default TERM), wait up to TIMEOUT
# seconds for it to exit, then KILL it; remove FILE.
stop_pid_file() {
    local f="$1" sig="${2:-TERM}" timeout="${3:-30}" pid
    if pid="$(live_pid "$f")"; then
        kill -"$sig" "$pid" 2>/dev/null || true
        local deadline=$(($(date +%s) + timeout))
        while kill -0 "$pid" 2>/dev/null; do
            if [ "$(date +%s)" -ge "$deadline" ]; then kill -KILL "$pid" 2>/dev/null || true; fi
            sleep 0.1
        done
    fi
    rm -f "$f"
}
