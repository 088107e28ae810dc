#!/usr/bin/env bash
# Shared setup for scripts/run.sh and scripts/test.sh: a virtualenv with the project installed,
# and (when root on Debian/Ubuntu) the DICOM peer tools the tests talk to. Safe to run repeatedly.
# Source it: `source scripts/setup.sh [--peers] [--services]`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MIPGW_VENV:-$ROOT/.venv}"
PEERS=0
SERVICES=0
for arg in "$@"; do
    [[ "$arg" == "--peers" ]] && PEERS=1
    [[ "$arg" == "--services" ]] && SERVICES=1
done

log() { printf '[setup] %s\n' "$*" >&2; }

as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"; else return 1; fi
}

apt_install() {
    command -v apt-get >/dev/null || return 1
    # Debian's orthanc package would start a system service on 0.0.0.0: forbid service starts
    # during the install unless a policy is already in place.
    local policy=/usr/sbin/policy-rc.d added=0
    if [[ ! -e $policy ]]; then
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod +x $policy" && added=1 || return 1
    fi
    local rc=0
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1; then
        as_root apt-get update -qq >/dev/null 2>&1 || true
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 || rc=$?
    fi
    [[ $added -eq 1 ]] && as_root rm -f $policy
    return $rc
}

find_python() {
    for candidate in "${PYTHON:-}" python3 python3.13 python3.12 python3.11; do
        [[ -n "$candidate" ]] || continue
        if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
            echo "$candidate"; return 0
        fi
    done
    return 1
}

PY="$(find_python)" || { log "Python 3.11 or newer is required"; exit 1; }

if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating virtualenv $VENV with $PY"
    if ! "$PY" -m venv "$VENV" 2>/dev/null; then
        # Debian ships venv separately
        version="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
        apt_install "python${version}-venv" || apt_install python3-venv || { log "cannot create a virtualenv: install python3-venv"; exit 1; }
        rm -rf "$VENV"; "$PY" -m venv "$VENV"
    fi
fi

# Reinstall only when the project's dependencies changed.
stamp="$VENV/.mipgw-installed"
want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    log "installing mip-gateway and its dependencies into $VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$VENV/bin/python" -m pip install -q -e "$ROOT[dev]"
    echo "$want" > "$stamp"
fi

if [[ $PEERS -eq 1 ]]; then
    # Look past the virtualenv: pynetdicom installs Python apps named storescu etc. into it.
    system_path="$(printf '%s' "$PATH" | tr ':' '\n' | grep -vxF "$VENV/bin" | paste -sd: -)"
    system_has() { PATH="$system_path:/usr/sbin:/sbin" command -v "$1" >/dev/null; }
    missing=()
    system_has storescu || missing+=(dcmtk)
    system_has dciodvfy || missing+=(dicom3tools)
    system_has dcm2niix || missing+=(dcm2niix)
    system_has Orthanc || missing+=(orthanc orthanc-dicomweb)
    if [[ ${#missing[@]} -gt 0 ]]; then
        log "installing peer tools: ${missing[*]}"
        apt_install "${missing[@]}" || log "could not install ${missing[*]} (not root?): the tests that need them will skip"
    fi
fi

# Redis (the production broker) and PostgreSQL (the production store): the tests use the real ones
if [[ $SERVICES -eq 1 ]]; then
    if ! "$VENV/bin/python" - <<'PY' 2>/dev/null
import socket; socket.create_connection(("127.0.0.1", 6379), 1).close()
PY
    then
        command -v redis-server >/dev/null || apt_install redis-server || true
        if command -v redis-server >/dev/null; then
            log "starting redis-server on 127.0.0.1:6379"
            mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
            as_root redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
                --dir /var/lib/redis --logfile /var/log/redis/ci.log >/dev/null 2>&1 \
                || log "could not start redis-server: the Celery tests will skip"
        else
            log "redis-server is not installed and cannot be: the Celery tests will skip"
        fi
    fi
    if ! "$VENV/bin/python" - <<'PY' 2>/dev/null
import socket; socket.create_connection(("127.0.0.1", 5432), 1).close()
PY
    then
        command -v pg_ctlcluster >/dev/null || apt_install postgresql || true
        if command -v pg_ctlcluster >/dev/null && [[ -n "$(ls /etc/postgresql 2>/dev/null)" ]]; then
            log "starting PostgreSQL"
            as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start \
                >/dev/null 2>&1 || log "could not start PostgreSQL: its tests will skip"
        else
            log "PostgreSQL is not installed and cannot be: its tests will skip"
        fi
    fi
fi

export PATH="$VENV/bin:$PATH"
export TCP_NODELAY=1  # dcmtk 3.6.7 leaves Nagle on otherwise (29x slower transfers)
