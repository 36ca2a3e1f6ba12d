#!/usr/bin/env bash
# Install the Debian packages listed in scripts/test-deps.txt (one per line,
# "#" starts a comment) plus any given as arguments, but only those that are
# not installed yet.  "apt-get update" runs only when an install fails on
# missing or stale package lists.  Non-interactive; needs root (or sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=("$@")
if [[ -f scripts/test-deps.txt ]]; then
    while IFS= read -r line || [[ -n "$line" ]]; do
        line="${line%%#*}"
        line="${line//[[:space:]]/}"
        [[ -n "$line" ]] && pkgs+=("$line")
    done < scripts/test-deps.txt
fi

missing=()
for p in ${pkgs[@]+"${pkgs[@]}"}; do
    status="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
    [[ "$status" == "install ok installed" ]] || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi

if ! command -v apt-get >/dev/null; then
    echo "test-deps: missing Debian packages: ${missing[*]} (and no apt-get to install them)" >&2
    exit 1
fi
SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
    SUDO=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
echo "test-deps: installing ${missing[*]}"
install() { "${SUDO[@]+"${SUDO[@]}"}" apt-get install -y -q --no-install-recommends "${missing[@]}"; }
if ! install; then
    echo "test-deps: refreshing package lists"
    "${SUDO[@]+"${SUDO[@]}"}" apt-get update -q
    install
fi
