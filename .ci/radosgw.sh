#!/usr/bin/env bash
# A throwaway single-node Ceph cluster (one mon, one memstore OSD, one radosgw) for the
# tests and benchmarks: a real S3 that enforces presigned POST policies.
#
#   bash .ci/radosgw.sh install          # apt-get the packages if radosgw is missing
#   bash .ci/radosgw.sh start [WORKDIR]  # start (no-op if already running), write radosgw.env
#   bash .ci/radosgw.sh env   [WORKDIR]  # print the env file
#   bash .ci/radosgw.sh stop  [WORKDIR]  # stop exactly the recorded daemons, remove WORKDIR
#
# WORKDIR defaults to .ci/work/radosgw beside this script. Environment knobs:
#   RADOSGW_PORT (7480), RADOSGW_MON_PORT (3300), RADOSGW_OSD_PORT_MIN (6800),
#   PYTHON (<repo>/.venv/bin/python), RADOSGW_MEMSTORE_BYTES (2 GiB).
# Everything listens on 127.0.0.1 only. Daemons run in the foreground (-f), in their own
# session, with every inherited descriptor above 2 closed, so a caller's lock or pipe is
# never held by them.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "$0")" && pwd)"
REPO_DIR="$(dirname "$SCRIPT_DIR")"
PORT="${RADOSGW_PORT:-7480}"
MON_PORT="${RADOSGW_MON_PORT:-3300}"
OSD_PORT_MIN="${RADOSGW_OSD_PORT_MIN:-6800}"
MEMSTORE_BYTES="${RADOSGW_MEMSTORE_BYTES:-2147483648}"
PYTHON="${PYTHON:-$REPO_DIR/.venv/bin/python}"

# Fixed test identities (throwaway, loopback only).
RGW_NAME="client.rgw.test"
USER_ID="pracsuite-test"
ACCESS_KEY="PRACSUITETESTACCESS0"
SECRET_KEY="pracsuite-test-secret-key-0000000000000000"
BUCKET="pracsuite-test"
REGION="us-east-1"
ROLE_NAME="pracsuite-upload"
ROLE_ARN="arn:aws:iam:::role/${ROLE_NAME}"
STS_KEY="pracsuitestskey1" # exactly 16 characters

usage() {
    echo "usage: $0 {install|start|stop|env} [WORKDIR]" >&2
    exit 2
}

log() { echo "radosgw.sh: $*" >&2; }

resolve_workdir() {
    local wd="${1:-$SCRIPT_DIR/work/radosgw}"
    mkdir -p "$wd"
    WORKDIR="$(cd "$wd" && pwd)"
    export CEPH_CONF="$WORKDIR/ceph.conf"
}

port_answers() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

pid_alive() { # pidfile -> true if the recorded process lives and belongs to this WORKDIR
    local f="$1" pid
    [[ -s "$f" ]] || return 1
    pid="$(cat "$f")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$WORKDIR/ceph.conf"
}

# launch NAME CMD...: run CMD in the background, in its own session, stdin from /dev/null,
# output to WORKDIR/log/NAME.out, every descriptor above 2 closed (a caller's flock or
# pipe must not be inherited), PID recorded in WORKDIR/NAME.pid.
launch() {
    local name="$1"
    shift
    (
        for fdpath in /proc/"$BASHPID"/fd/*; do
            fd="${fdpath##*/}"
            if [[ "$fd" =~ ^[0-9]+$ ]] && ((fd > 2)); then
                eval "exec $fd>&-" 2>/dev/null || true
            fi
        done
        # Not a process-group leader here, so setsid execs in place: $! is the daemon.
        exec setsid "$@" </dev/null >>"$WORKDIR/log/$name.out" 2>&1
    ) &
    echo "$!" >"$WORKDIR/$name.pid"
}

fail() {
    log "FAILED: $*"
    local f
    for f in "$WORKDIR"/log/*; do
        [[ -s "$f" ]] || continue
        echo "----- tail of $f -----" >&2
        tail -n 15 "$f" >&2 || true
    done
    stop_daemons # leave nothing running; keep WORKDIR for the logs
    log "FAILED: $*"
    log "logs are in $WORKDIR/log/ (the cluster was stopped; '$0 stop' removes the folder)"
    exit 1
}

wait_for() { # seconds description command...
    local secs="$1" what="$2"
    shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            fail "timed out after ${secs}s waiting for $what"
        fi
        sleep 0.3
    done
}

ceph_cli() { timeout 30 ceph --connect-timeout 20 "$@"; }
admin_cli() { timeout 60 radosgw-admin "$@"; }

cmd_install() {
    if command -v radosgw >/dev/null 2>&1 && command -v ceph-mon >/dev/null 2>&1 \
        && command -v ceph-osd >/dev/null 2>&1; then
        return 0
    fi
    local sudo=""
    if [[ "$(id -u)" != 0 ]]; then sudo="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq >/dev/null
    $sudo apt-get install -y -qq --no-install-recommends radosgw ceph-mon ceph-osd >/dev/null
}

write_conf() {
    local fsid
    fsid="$(cat /proc/sys/kernel/random/uuid)"
    cat >"$WORKDIR/ceph.conf" <<EOF
[global]
fsid = $fsid
mon initial members = a
mon host = v2:127.0.0.1:$MON_PORT
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv4 = true
ms bind ipv6 = false
ms bind msgr1 = false
ms bind port min = $OSD_PORT_MIN
ms bind port max = $((OSD_PORT_MIN + 100))
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = true
keyring = $WORKDIR/keyring
run dir = $WORKDIR/run
admin socket = $WORKDIR/run/\$name.asok
log file = $WORKDIR/log/\$name.log
log to stderr = false
err to stderr = true
mon cluster log file = $WORKDIR/log/cluster.log
crash dir = $WORKDIR/crash
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon max pg per osd = 1000
osd crush chooseleaf type = 0
mon allow pool delete = true
mon warn on pool no redundancy = false

[mon]
mon data = $WORKDIR/mon/\$id
# Commit map changes at once (default: batched for 1 s): the gateway creates its pools
# one after the other, each waiting for a new osdmap, so this halves the start-up.
paxos propose interval = 0.05
paxos min wait = 0.01
mon data avail warn = 1
mon data avail crit = 0

[mon.a]
public addr = v2:127.0.0.1:$MON_PORT

[osd]
osd data = $WORKDIR/osd/\$id
osd objectstore = memstore
memstore device bytes = $MEMSTORE_BYTES
osd journal size = 0

[$RGW_NAME]
keyring = $WORKDIR/rgw.keyring
ms mon client mode = crc
rgw frontends = beast endpoint=127.0.0.1:$PORT
rgw s3 auth use sts = true
rgw sts key = $STS_KEY
rgw enable usage log = false
debug rgw = 1
EOF
}

running() {
    [[ -f "$WORKDIR/radosgw.env" ]] && pid_alive "$WORKDIR/mon.pid" \
        && pid_alive "$WORKDIR/osd.pid" && pid_alive "$WORKDIR/rgw.pid" && port_answers "$PORT"
}

cmd_start() {
    resolve_workdir "${1:-}"
    if running; then
        log "already running; env file: $WORKDIR/radosgw.env"
        return 0
    fi
    command -v radosgw >/dev/null 2>&1 || fail "radosgw is not installed: run '$0 install'"
    [[ -x "$PYTHON" ]] || fail "no python at $PYTHON (set PYTHON)"
    # Leftovers of a half-started or half-dead cluster in WORKDIR: stop them, start clean.
    stop_daemons
    if port_answers "$PORT"; then
        fail "port 127.0.0.1:$PORT is already taken by something else (set RADOSGW_PORT)"
    fi
    if port_answers "$MON_PORT"; then
        fail "port 127.0.0.1:$MON_PORT (monitor) is already taken (set RADOSGW_MON_PORT)"
    fi
    rm -rf "${WORKDIR:?}"/{mon,osd,run,log,crash,keyring,rgw.keyring,ceph.conf,radosgw.env,monmap}
    mkdir -p "$WORKDIR"/{mon/a,osd/0,run,log,crash}
    local t0=$SECONDS

    write_conf
    ceph-authtool --create-keyring "$WORKDIR/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    ceph-authtool "$WORKDIR/keyring" --gen-key -n client.admin \
        --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null

    # Monitor.
    ceph-mon --id a --mkfs --keyring "$WORKDIR/keyring" >>"$WORKDIR/log/mkfs.out" 2>&1 \
        || fail "ceph-mon --mkfs"
    launch mon ceph-mon --id a -f -c "$WORKDIR/ceph.conf"
    wait_for 30 "the monitor" ceph_cli mon stat

    # One OSD on memstore.
    local osd_id
    osd_id="$(ceph_cli osd create)" || fail "ceph osd create"
    [[ "$osd_id" == 0 ]] || fail "unexpected osd id '$osd_id'"
    ceph_cli osd crush add osd.0 1 root=default >/dev/null 2>&1 || fail "ceph osd crush add"
    ceph-osd --id 0 --mkjournal --mkfs -c "$WORKDIR/ceph.conf" >>"$WORKDIR/log/mkfs.out" 2>&1 \
        || fail "ceph-osd --mkfs"
    launch osd ceph-osd --id 0 -f -c "$WORKDIR/ceph.conf"
    wait_for 30 "the OSD to come up" osd_up

    # Gateway.
    ceph_cli auth get-or-create "$RGW_NAME" osd "allow rwx" mon "allow rw" \
        -o "$WORKDIR/rgw.keyring" >/dev/null 2>&1 || fail "ceph auth get-or-create $RGW_NAME"
    launch rgw radosgw -n "$RGW_NAME" -k "$WORKDIR/rgw.keyring" -f -c "$WORKDIR/ceph.conf"
    wait_for 60 "radosgw to answer on 127.0.0.1:$PORT" port_answers "$PORT"
    log "daemons up after $((SECONDS - t0))s"

    # User, STS role, bucket.
    admin_cli user create --uid "$USER_ID" --display-name "PracSuite test" \
        --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" >/dev/null 2>>"$WORKDIR/log/admin.out" \
        || fail "radosgw-admin user create"
    local sts_ok=1
    if ! setup_role; then
        sts_ok=0
        log "STS role set-up failed; falling back to plain keys (see $WORKDIR/log/admin.out)"
    fi
    local setup_args=(--endpoint "http://127.0.0.1:$PORT" --access-key "$ACCESS_KEY"
        --secret-key "$SECRET_KEY" --bucket "$BUCKET" --region "$REGION")
    if ((sts_ok)); then setup_args+=(--role-arn "$ROLE_ARN"); fi
    local out
    if ! out="$("$PYTHON" "$SCRIPT_DIR/radosgw_setup.py" "${setup_args[@]}" 2>>"$WORKDIR/log/setup.out")"; then
        fail "bucket/STS set-up ($SCRIPT_DIR/radosgw_setup.py)"
    fi
    if ((sts_ok)) && [[ "$out" != *"sts=ok"* ]]; then
        sts_ok=0
        log "STS assume_role did not work; falling back to plain keys (see $WORKDIR/log/setup.out)"
    fi

    {
        echo "RADOSGW_ENDPOINT=http://127.0.0.1:$PORT"
        echo "RADOSGW_ACCESS_KEY=$ACCESS_KEY"
        echo "RADOSGW_SECRET_KEY=$SECRET_KEY"
        echo "RADOSGW_BUCKET=$BUCKET"
        echo "RADOSGW_REGION=$REGION"
        if ((sts_ok)); then echo "RADOSGW_ROLE_ARN=$ROLE_ARN"; fi
        echo "RADOSGW_LOG_DIR=$WORKDIR/log"
    } >"$WORKDIR/radosgw.env.tmp"
    mv "$WORKDIR/radosgw.env.tmp" "$WORKDIR/radosgw.env"
    log "ready in $((SECONDS - t0))s; env file: $WORKDIR/radosgw.env"
}

osd_up() {
    ceph_cli osd dump 2>/dev/null | grep -q '^osd\.0 up '
}

setup_role() {
    admin_cli caps add --uid "$USER_ID" --caps "roles=*" >/dev/null 2>>"$WORKDIR/log/admin.out" \
        || return 1
    local trust perm
    trust='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":["arn:aws:iam:::user/'"$USER_ID"'"]},"Action":["sts:AssumeRole"]}]}'
    perm='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:*"],"Resource":"arn:aws:s3:::*"}]}'
    admin_cli role create --role-name "$ROLE_NAME" --assume-role-policy-doc "$trust" \
        >/dev/null 2>>"$WORKDIR/log/admin.out" || return 1
    admin_cli role-policy put --role-name "$ROLE_NAME" --policy-name allow-s3 \
        --policy-doc "$perm" >/dev/null 2>>"$WORKDIR/log/admin.out" || return 1
}

# Stop exactly the recorded daemons, one at a time (gateway, OSD, monitor: an OSD whose
# monitor is gone hangs in shutdown): TERM, then KILL after a few seconds. Then wait a
# little until the exited process is reaped, so that pgrep shows nothing.
stop_daemons() {
    local name pid deadline stopped=()
    for name in rgw osd mon; do
        if pid_alive "$WORKDIR/$name.pid"; then
            pid="$(cat "$WORKDIR/$name.pid")"
            kill -TERM "$pid" 2>/dev/null || true
            deadline=$((SECONDS + 5))
            while is_running "$pid"; do
                if ((SECONDS >= deadline)); then
                    log "$name (pid $pid) ignored TERM; killing it"
                    kill -KILL "$pid" 2>/dev/null || true
                    break
                fi
                sleep 0.1
            done
            stopped+=("$pid")
        fi
        rm -f "$WORKDIR/$name.pid"
    done
    deadline=$((SECONDS + 3))
    for pid in "${stopped[@]}"; do
        while [[ -e "/proc/$pid" ]] && ((SECONDS < deadline)); do sleep 0.1; done
    done
}

is_running() { # alive and not a zombie
    [[ -r "/proc/$1/stat" ]] && [[ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]]
}

cmd_stop() {
    resolve_workdir "${1:-}"
    stop_daemons
    # Remove the data only if WORKDIR looks like ours (never rm -rf an arbitrary folder).
    if [[ -f "$WORKDIR/ceph.conf" || -d "$WORKDIR/mon" || -z "$(ls -A "$WORKDIR")" ]]; then
        rm -rf "${WORKDIR:?}"
    else
        log "not removing $WORKDIR: it does not look like a radosgw.sh work folder"
    fi
    log "stopped"
}

cmd_env() {
    resolve_workdir "${1:-}"
    [[ -f "$WORKDIR/radosgw.env" ]] || {
        log "no env file at $WORKDIR/radosgw.env: run '$0 start'"
        exit 1
    }
    cat "$WORKDIR/radosgw.env"
}

# start/stop of one WORKDIR never run at once (e.g. parallel test workers): a lock beside
# it. The daemons never inherit its descriptor (launch closes every fd above 2).
with_lock() {
    local cmd="$1" wd="${2:-$SCRIPT_DIR/work/radosgw}"
    mkdir -p "$(dirname "$wd")"
    exec 9>"${wd%/}.lock"
    flock 9
    "$cmd" "$wd"
    exec 9>&-
}

case "${1:-}" in
install) cmd_install ;;
start) with_lock cmd_start "${2:-}" ;;
stop) with_lock cmd_stop "${2:-}" ;;
env) cmd_env "${2:-}" ;;
*) usage ;;
esac
