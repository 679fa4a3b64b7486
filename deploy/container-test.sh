#!/usr/bin/env bash
# The container image as operators run it, with a real container runtime (`make container-test`).
#
# On a machine like the project's (Debian bookworm, root, no Docker engine, no image
# registry): Debian's podman with runc. The base image is python:3.11-slim-bookworm when a
# registry serves it; otherwise one made here to match it: Debian bookworm (debootstrap,
# minbase) with a CPython 3.11 in /usr/local that the distribution does not manage (this
# machine's own python3.11 build, its standard library only, then ensurepip), imported with
# `podman import`. Then it builds the image and checks, each one printed PASS or FAIL:
#   --version; the image's package is this tree's, file for file; a base whose Python is
#   marked EXTERNALLY-MANAGED is refused at the first step; `demo` with no flag
#   and no volume; `demo` into a mounted /data/reports; `demo` when the mounted
#   /data/reports is not writable (falls back, says so); an
#   unwritable --out (exit 2, no traceback); a folder of someone else's files as --out
#   (refused, untouched); the compose rehearsal (deploy/compose.yaml: sandbox + worker, both
#   --read-only --cap-drop ALL); and a rerun of the worker that sends nothing.
# It prints the build time and the image size. It is not part of `make check`/.ci/run: see
# the README ("Running in a container") for why.
#
# Environment: PYTHON_IMAGE (a base to use as is), DEBIAN_MIRROR (for debootstrap; default:
# this machine's apt source), CONTAINER_TEST_WORK (work folder, default .ci/work/container),
# KEEP_BASE=0 (make the local base again even if present), NO_CACHE=1 (build every step).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${CONTAINER_TEST_WORK:-$ROOT/.ci/work/container}
IMAGE=localhost/pracsuite-ingest:container-test
LOCAL_BASE=localhost/python:3.11-slim-bookworm-local
PREFIX=pit-$$  # container, pod and volume names of this run
mkdir -p "$WORK"

say() { printf '== %s\n' "$*"; }
die() { printf 'container-test: %s\n' "$*" >&2; exit 2; }

# ------------------------------------------------------------------------- the runtime
setup_runtime() {
  local need=()
  command -v podman >/dev/null || need+=(podman)
  command -v runc >/dev/null || need+=(runc)
  command -v debootstrap >/dev/null || need+=(debootstrap)
  if ((${#need[@]})); then
    [[ $(id -u) == 0 ]] || die "needs ${need[*]} (apt-get install ${need[*]}) or root to install them"
    say "installing ${need[*]} (Debian's packages)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  # Podman gives containers nofile=1048576 by default, and runc then fails at setrlimit
  # where it may not raise the limits (this VM: nofile hard limit 20000; an nproc above
  # 32768 is refused too). Our own containers.conf (CONTAINERS_CONF: nothing under /etc
  # changes) asks for what is allowed: this shell's open-file limit, 4096 processes.
  local nofile
  nofile=$(ulimit -Hn)
  [[ $nofile == unlimited || $nofile -gt 65536 ]] && nofile=65536
  cat >"$WORK/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=4096:4096"]

[engine]
runtime = "runc"
EOF
  export CONTAINERS_CONF=$WORK/containers.conf
}

# ---------------------------------------------------------------------- the base image
debian_mirror() {
  if [[ -n ${DEBIAN_MIRROR:-} ]]; then echo "$DEBIAN_MIRROR"; return; fi
  # This machine's own apt source for Debian (deb822 or one-line format).
  local uri
  uri=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [[ -n $uri ]] || uri=$(awk '/^deb / && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [[ -n $uri ]] || die "no Debian mirror found in /etc/apt; set DEBIAN_MIRROR"
  echo "$uri"
}

build_local_base() {
  # debootstrap bookworm + a CPython 3.11 outside the distribution's package manager, as in
  # the official image (there: built from source into /usr/local; here: this machine's
  # build of 3.11, its interpreter and standard library only, no site-packages).
  local py pyprefix rootfs=$WORK/base-rootfs
  py=$(command -v python3.11 || true)
  [[ -n $py ]] || die "no python3.11 on this machine to put in the base image; set PYTHON_IMAGE"
  pyprefix=$("$py" -c 'import sys; print(sys.base_prefix)')
  [[ $pyprefix != /usr ]] || die "python3.11 here is the distribution's ($pyprefix); set PYTHON_IMAGE"
  say "base: debootstrap bookworm ($(debian_mirror)) + CPython $("$py" -c 'import platform; print(platform.python_version())') from $pyprefix"
  rm -rf "$rootfs"
  debootstrap --variant=minbase \
    --include=ca-certificates,netbase,tzdata,libbz2-1.0,libcrypt1,libexpat1,libffi8,libgssapi-krb5-2,liblzma5,libncursesw6,libnsl2,libreadline8,libsqlite3-0,libssl3,libtirpc3,libuuid1,zlib1g \
    bookworm "$rootfs" "$(debian_mirror)" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap failed (log: $WORK/debootstrap.log)"; }
  mkdir -p "$rootfs/usr/local/bin" "$rootfs/usr/local/lib"
  cp -a "$pyprefix/bin/python3.11" "$rootfs/usr/local/bin/"
  cp -a "$pyprefix"/lib/libpython3* "$rootfs/usr/local/lib/"
  # the standard library; not the tests, Tk (X11) or IDLE, nor this machine's packages
  (cd "$pyprefix/lib" && tar -c --exclude='python3.11/site-packages/*' \
      --exclude='python3.11/test' --exclude='python3.11/idlelib' --exclude='python3.11/tkinter' \
      --exclude='python3.11/turtledemo' --exclude='python3.11/lib-dynload/_tkinter*' \
      --exclude='python3.11/config-3.11-*/*.a' --exclude='__pycache__' python3.11) \
    | tar -C "$rootfs/usr/local/lib" -x
  # as slim images do: no debug symbols, documentation or translations
  find "$rootfs/usr/local" -name '*.so*' -type f -exec strip --strip-unneeded {} +
  strip --strip-unneeded "$rootfs/usr/local/bin/python3.11"
  rm -rf "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/usr/share/locale/*
  ln -sf python3.11 "$rootfs/usr/local/bin/python3"
  ln -sf python3 "$rootfs/usr/local/bin/python"
  chroot "$rootfs" /sbin/ldconfig
  chroot "$rootfs" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin \
    /usr/local/bin/python3 -m ensurepip --default-pip >/dev/null
  chroot "$rootfs" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin \
    /usr/local/bin/python3 -c 'import ssl, sqlite3, ctypes, lzma, bz2, zlib, uuid' \
    || die "the base's Python misses a library (see above)"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | podman import \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$LOCAL_BASE" >/dev/null
  rm -rf "$rootfs"
}

choose_base() {
  if [[ -n ${PYTHON_IMAGE:-} ]]; then BASE=$PYTHON_IMAGE; say "base: $BASE (PYTHON_IMAGE)"; return; fi
  if timeout 20 podman pull -q docker.io/library/python:3.11-slim-bookworm >/dev/null 2>&1; then
    BASE=docker.io/library/python:3.11-slim-bookworm; say "base: $BASE (pulled)"; return
  fi
  BASE=$LOCAL_BASE
  if [[ ${KEEP_BASE:-1} == 1 ]] && podman image exists "$BASE"; then
    say "base: $BASE (no registry reachable; made earlier with debootstrap)"; return
  fi
  local t0=$SECONDS
  build_local_base
  BASE_SECONDS=$((SECONDS - t0))
  say "base: $BASE made in ${BASE_SECONDS} s (no registry reachable)"
}

# ---------------------------------------------------------------------------- the image
build_image() {
  # Where TLS to PyPI goes through a proxy that re-signs it (as on this machine), pip in
  # the build needs that CA: PIP_CERT's bundle is mounted for the RUN steps only (with a
  # pip.conf naming it), so it never becomes part of the image, and the Dockerfile is
  # the one operators build.
  local extra=() ca=${CONTAINER_TEST_CA:-${PIP_CERT:-}}
  if [[ -n $ca && -f $ca ]]; then
    printf '[global]\ncert = /etc/ssl/certs/container-test-ca.pem\n' >"$WORK/pip.conf"
    extra+=(--volume "$ca:/etc/ssl/certs/container-test-ca.pem:ro"
            --volume "$WORK/pip.conf:/etc/pip.conf:ro")
  fi
  local t0=$SECONDS old
  [[ ${NO_CACHE:-0} == 1 ]] && extra+=(--no-cache)
  old=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
  podman build --pull=never --build-arg "PYTHON_IMAGE=$BASE" "${extra[@]}" -t "$IMAGE" . \
    >"$WORK/build.log" 2>&1 || { tail -30 "$WORK/build.log" >&2; die "the image did not build (log: $WORK/build.log)"; }
  BUILD_SECONDS=$((SECONDS - t0))
  # the previous build of this tag, now untagged (its build-stage layers stay: the cache)
  if [[ -n $old && $old != "$(podman image inspect --format '{{.Id}}' "$IMAGE")" ]]; then
    podman rmi "$old" >/dev/null 2>&1 || true
  fi
  IMAGE_MB=$(( $(podman image inspect --format '{{.Size}}' "$IMAGE") / 1000000 ))
  BASE_MB=$(( $(podman image inspect --format '{{.Size}}' "$BASE") / 1000000 ))
  CACHED=$(grep -c '^--> Using cache' "$WORK/build.log" || true)
  STEPS=$(grep -c '^\[[0-9]/[0-9]\] STEP' "$WORK/build.log" || true)
  say "image: $IMAGE built in ${BUILD_SECONDS} s ($CACHED of $STEPS steps from podman's cache; NO_CACHE=1 for none): ${IMAGE_MB} MB (the base: ${BASE_MB} MB)"
}

# ---------------------------------------------------------------------------- the checks
RESULTS=()
FAILED=0
check() {  # check NAME COMMAND...: PASS when the command exits 0
  local name=$1 t0=$SECONDS
  shift
  if "$@" >"$WORK/check.log" 2>&1; then
    RESULTS+=("PASS  $name ($((SECONDS - t0)) s)")
  else
    RESULTS+=("FAIL  $name ($((SECONDS - t0)) s)")
    FAILED=$((FAILED + 1))
    sed 's/^/    /' "$WORK/check.log" | tail -25 >&2
  fi
  printf '%s\n' "${RESULTS[-1]}"
}

run() { podman run --rm --network none "$@"; }

# expect CODE PATTERN COMMAND...: the exit code is CODE, the output matches PATTERN and
# holds no traceback
expect() {
  local want=$1 pattern=$2 out code=0
  shift 2
  out=$("$@" 2>&1) || code=$?
  printf '%s\n' "$out"
  [[ $code == "$want" ]] || { echo "exit $code, expected $want"; return 1; }
  ! grep -q Traceback <<<"$out" || { echo "a traceback"; return 1; }
  grep -Eq "$pattern" <<<"$out" || { echo "no line matches /$pattern/"; return 1; }
}

# A base whose Python is marked EXTERNALLY-MANAGED (PEP 668, as Debian's python3 is): the
# build stops at its first RUN and says why, before any pip runs.
check_managed_base() {
  local base=localhost/pracsuite-ingest:container-test-managed-base
  # shellcheck disable=SC2016  # $(...) is for the Containerfile's shell
  printf 'FROM %s\nRUN touch "$(python3 -c "import sysconfig; print(sysconfig.get_path(%s))")/EXTERNALLY-MANAGED"\n' \
    "$BASE" "'stdlib'" | podman build --pull=never -t "$base" -f - "$WORK" >/dev/null || return 1
  expect 1 "^the Python of this base image is managed by the distribution" podman build --pull=never --no-cache \
    --build-arg "PYTHON_IMAGE=$base" -t localhost/pracsuite-ingest:container-test-refused .
  local code=$?
  podman rmi -f "$base" localhost/pracsuite-ingest:container-test-refused >/dev/null 2>&1 || true
  return $code
}

# Every file of the package in the image is this tree's, byte for byte: a stale layer
# cache (see the Dockerfile on RUN --mount) would show here.
HASH_PACKAGE='import hashlib, pathlib, sys
root = pathlib.Path(sys.argv[1])
for p in sorted(root.rglob("*.py")):
    print(hashlib.sha256(p.read_bytes()).hexdigest(), p.relative_to(root))'
check_code() {
  diff <("$PY" -c "$HASH_PACKAGE" src/pracsuite_ingest) \
    <(run --entrypoint python "$IMAGE" -c "$HASH_PACKAGE" /opt/venv/lib/python3.11/site-packages/pracsuite_ingest)
}

owned_dir() {  # a fresh host folder for a mount; owner uid (10001: the image's user)
  rm -rf "$1" && mkdir -p "$1" && chown "$2:$2" "$1" && chmod 0700 "$1"
}

check_demo_mounted() {
  owned_dir "$WORK/reports" 10001
  expect 0 "demo ok" run -v "$WORK/reports:/data/reports" "$IMAGE" demo --files 6 || return 1
  test -s "$WORK/reports/demo/reports/latest.html" || { echo "no report on the host"; return 1; }
}

check_demo_unwritable_mount() {
  owned_dir "$WORK/reports-root" 0  # root's, 0700: uid 10001 cannot write there
  expect 0 "/tmp/pracsuite-ingest-demo" run --read-only --tmpfs /tmp \
    -v "$WORK/reports-root:/data/reports" "$IMAGE" demo --files 6 || return 1
  [[ -z $(ls -A "$WORK/reports-root") ]] || { echo "wrote into the unwritable folder"; return 1; }
}

check_demo_foreign_folder() {
  owned_dir "$WORK/reports-foreign" 10001
  echo "a real report" >"$WORK/reports-foreign/latest.json"
  chown 10001:10001 "$WORK/reports-foreign/latest.json"
  expect 2 "demo" run -v "$WORK/reports-foreign:/data/reports" "$IMAGE" \
    demo --files 6 --out /data/reports || return 1
  [[ $(cat "$WORK/reports-foreign/latest.json") == "a real report" ]] \
    && [[ $(ls -A "$WORK/reports-foreign") == latest.json ]] \
    || { echo "the folder was changed"; return 1; }
}

# The compose rehearsal as deploy/compose.yaml writes it, in podman terms: each service's
# command, environment, secrets (files under /run/secrets), volumes, read-only root,
# tmpfs, dropped capabilities, no-new-privileges and init; the worker in the sandbox's
# network namespace. Ports are not published (nothing outside the pod needs them).
compose_args() {  # compose_args SERVICE: one argument a line
  "$PY" - "$1" "$PREFIX" "$IMAGE" <<'PYEOF'
import os, re, sys
import yaml
service, prefix, image = sys.argv[1:]
compose = yaml.safe_load(open("deploy/compose.yaml"))
spec = compose["services"][service]
args = ["--name", f"{prefix}-{service}"]
if spec.get("read_only"):
    args.append("--read-only")
for path in spec.get("tmpfs", []):
    args += ["--tmpfs", path]
for cap in spec.get("cap_drop", []):
    args += ["--cap-drop", cap]
for opt in spec.get("security_opt", []):
    args += ["--security-opt", opt]
if spec.get("init"):
    args.append("--init")
if spec.get("stop_signal"):
    args += ["--stop-signal", spec["stop_signal"]]
mode = spec.get("network_mode", "")
if mode.startswith("service:"):
    args += ["--network", f"container:{prefix}-{mode.split(':', 1)[1]}"]
for key, value in spec.get("environment", {}).items():
    args += ["-e", f"{key}={value}"]
for name in spec.get("secrets", []):
    path = os.path.abspath(os.path.join("deploy", compose["secrets"][name]["file"]))
    args += ["-v", f"{path}:/run/secrets/{name}:ro"]
for volume in spec.get("volumes", []):  # ${VAR:-default} as Compose reads it, first
    volume = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: os.environ.get(m[1]) or m[2], volume)
    source, rest = volume.split(":", 1)
    if source.startswith((".", "/")):
        source = os.path.abspath(os.path.join("deploy", source))
    else:
        source = f"{prefix}-{source}"  # a named volume of this run
    args += ["-v", f"{source}:{rest}"]
args.append(image)
args += [str(a) for a in spec.get("command", [])]
print("\n".join(args))
PYEOF
}

sandbox_stat() {  # sandbox_stat KEY: a number from the sandbox's /_sandbox/stats
  podman exec "$PREFIX-sandbox" python -c "import json, urllib.request; \
print(json.load(urllib.request.urlopen('http://127.0.0.1:8700/_sandbox/stats'))['$1'])"
}

start_rehearsal() {
  local args
  mapfile -t args < <(compose_args sandbox)
  podman run -d --network bridge "${args[@]}" >/dev/null
  for _ in $(seq 30); do  # the compose healthcheck's test, every second
    podman exec "$PREFIX-sandbox" python -c \
      "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8700/_sandbox/stats')" \
      2>/dev/null && return 0
    sleep 1
  done
  podman logs "$PREFIX-sandbox" | tail -20
  return 1
}

worker() {
  local args
  mapfile -t args < <(compose_args worker)
  podman run --rm "${args[@]}"
}

check_rehearsal() {
  local files
  files=$(find "${REHEARSAL_INPUT:-deploy/rehearsal/input}" -type f | wc -l)
  start_rehearsal || return 1
  expect 0 "validated $files" worker || return 1
  UPLOADS_AFTER_FIRST=$(sandbox_stat uploads_stored)
  PRESIGNED_AFTER_FIRST=$(sandbox_stat presigned)
  echo "sandbox: $UPLOADS_AFTER_FIRST uploads stored, $PRESIGNED_AFTER_FIRST presigned"
  [[ $UPLOADS_AFTER_FIRST == "$files" ]]
}

check_rerun() {
  local files
  files=$(find "${REHEARSAL_INPUT:-deploy/rehearsal/input}" -type f | wc -l)
  expect 0 "skipped $files" worker || return 1
  [[ $(sandbox_stat uploads_stored) == "$UPLOADS_AFTER_FIRST" ]] \
    && [[ $(sandbox_stat presigned) == "$PRESIGNED_AFTER_FIRST" ]] \
    || { echo "the rerun sent something"; return 1; }
}

cleanup() {
  podman rm -f -v -t 5 "$PREFIX-sandbox" >/dev/null 2>&1 || true  # -v: its anonymous volumes
  podman volume rm -f "$PREFIX-state" "$PREFIX-reports" >/dev/null 2>&1 || true
}

# ---------------------------------------------------------------------------- main
PY=${PY:-$ROOT/.venv/bin/python}
"$PY" -c 'import yaml' 2>/dev/null || die "needs the dev venv (make .venv/.installed) for PyYAML"
setup_runtime
if [[ ${1:-} == base-only ]]; then choose_base; exit 0; fi
T_START=$SECONDS
choose_base
build_image
trap cleanup EXIT
say "checks"
check "--version prints the version" expect 0 "^pracsuite-ingest [0-9]" run "$IMAGE" --version
check "the image holds this tree's code (no stale build cache)" check_code
check "a distribution-managed Python as the base: the build stops, saying so" check_managed_base
check "demo, no flag and no volume" expect 0 "demo ok" run "$IMAGE" demo
check "demo into a mounted /data/reports (report on the host)" check_demo_mounted
check "demo with /data/reports not writable: falls back to /tmp, says so" check_demo_unwritable_mount
check "demo --out unwritable: exit 2, a message, no traceback" \
  expect 2 "not writable" run "$IMAGE" demo --out /app/demo
check "demo --out a folder of other files: refused (exit 2), untouched" check_demo_foreign_folder
check "compose rehearsal: sandbox + worker, read-only, no capabilities" check_rehearsal
check "compose rehearsal rerun: sends nothing" check_rerun
cleanup

say "summary"
[[ -n ${BASE_SECONDS:-} ]] && echo "base image made in ${BASE_SECONDS} s"
echo "build: ${BUILD_SECONDS} s ($CACHED of $STEPS steps cached); image: ${IMAGE_MB} MB (base ${BASE_MB} MB); all: $((SECONDS - T_START)) s"
printf '%s\n' "${RESULTS[@]}"
echo "$(( ${#RESULTS[@]} - FAILED )) passed, $FAILED failed"
((FAILED == 0))
