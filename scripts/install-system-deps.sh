#!/usr/bin/env bash
# System packages the test suite needs beyond Python: a PostgreSQL server (initdb, pg_ctl) for the
# sample-store tests, which start their own throw-away cluster on 127.0.0.1 (tests/postgres.py).
#
# Idempotent and quiet: does nothing (exit 0) when /usr/lib/postgresql/*/bin already holds initdb
# and pg_ctl; otherwise installs Debian's postgresql package with apt-get (root, or sudo).
# The package's default cluster is not used by the tests.
set -euo pipefail

have_postgres() {
    local bin
    for bin in /usr/lib/postgresql/*/bin; do
        if [ -x "$bin/initdb" ] && [ -x "$bin/pg_ctl" ]; then
            return 0
        fi
    done
    return 1
}

if have_postgres; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-system-deps: PostgreSQL server binaries are missing and apt-get is not available;" >&2
    echo "install the PostgreSQL server (initdb, pg_ctl) with your system's package manager." >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-system-deps: run as root (or install sudo) to apt-get install postgresql." >&2
        exit 1
    fi
fi

echo "install-system-deps: installing the PostgreSQL server (apt-get install postgresql) ..."
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q \
        && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql; } \
        >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "install-system-deps: apt-get install postgresql failed (see above)." >&2
    exit 1
fi

if ! have_postgres; then
    echo "install-system-deps: postgresql was installed but no initdb/pg_ctl under /usr/lib/postgresql/*/bin." >&2
    exit 1
fi
echo "install-system-deps: PostgreSQL $(ls /usr/lib/postgresql | sort -V | tail -n 1) installed."
