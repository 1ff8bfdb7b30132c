#!/usr/bin/env bash
# One set-up for the demo, the tests and CI: a virtual environment with the
# package, plus PostgreSQL server binaries with HypoPG and pg_stat_statements.
# Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*" >&2; }

# Root installs directly, others through passwordless sudo; otherwise we can only advise.
as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo -n "$@"
    else return 1
    fi
}

apt_updated=""
apt_install() {
    command -v apt-get >/dev/null || return 1
    if [ -z "$apt_updated" ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null || return 1
        apt_updated=1
    fi
    say "installing $* from the distribution's packages"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- Python --------------------------------------------------------------
if ! python3 -m venv --help >/dev/null 2>&1; then
    apt_install python3-venv || { say "python3-venv is missing: run 'sudo apt-get install python3-venv'"; exit 1; }
fi
if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    python3 -m venv .venv
fi
stamp=.venv/.advisor-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    say "installing advisor and its test dependencies into .venv"
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    .venv/bin/python -m pip install -q -e '.[test,dask,remote]'
    touch "$stamp"
fi

# --- PostgreSQL server, pg_stat_statements (contrib) and HypoPG --------------
pg_bindir() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        [ -x "$d/postgres" ] && { echo "$d"; return 0; }
    done
    command -v postgres >/dev/null && dirname "$(command -v postgres)" && return 0
    return 1
}

if ! bindir=$(pg_bindir); then
    # The distribution's default server version: the 'postgresql' metapackage depends on it.
    if apt_install postgresql postgresql-contrib; then
        bindir=$(pg_bindir)
    else
        say "no PostgreSQL server found. Install one: sudo apt-get install postgresql postgresql-contrib postgresql-<version>-hypopg"
        exit 1
    fi
fi
pg_major=$("$bindir/postgres" --version | sed -E 's/.* ([0-9]+)(\.[0-9]+)?.*/\1/')
sharedir=$("$bindir/pg_config" --sharedir 2>/dev/null || echo "/usr/share/postgresql/$pg_major")
if [ ! -f "$sharedir/extension/hypopg.control" ]; then
    apt_install "postgresql-$pg_major-hypopg" \
        || say "HypoPG is missing and could not be installed: run 'sudo apt-get install postgresql-$pg_major-hypopg' (index advice falls back to real indexes on scratch databases)"
fi
say "PostgreSQL $pg_major at $bindir; HypoPG $( [ -f "$sharedir/extension/hypopg.control" ] && echo present || echo absent )"

# --- PgBouncer, for `advisor bench pool --local-pgbouncer` and its tests ------------------
pgbouncer_bin() { command -v pgbouncer || { [ -x /usr/sbin/pgbouncer ] && echo /usr/sbin/pgbouncer; }; }
if ! pgbouncer_bin >/dev/null; then
    if apt_install pgbouncer; then
        # The package starts a system PgBouncer on port 6432; the advisor starts its own, so stop that one
        # and keep it from starting at boot: nothing should listen that we did not start.
        as_root service pgbouncer stop >/dev/null 2>&1 || true
        as_root update-rc.d pgbouncer disable >/dev/null 2>&1 || true
        as_root systemctl disable --now pgbouncer >/dev/null 2>&1 || true
    else
        say "PgBouncer is missing and could not be installed: run 'sudo apt-get install pgbouncer' (bench pool --local-pgbouncer and its tests need it)"
    fi
fi
if pb=$(pgbouncer_bin); then say "$("$pb" --version | head -1) at $pb"; fi

# --- Chromium, to render the HTML report in its test (tests/test_report.py) ------------
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
    apt_install chromium \
        || say "chromium is missing and could not be installed: run 'sudo apt-get install chromium' (the HTML report test skips without it, and fails in CI)"
fi
