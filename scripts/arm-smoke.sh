#!/bin/sh
# Build and smoke-test Edge Data Broker on ARM boards, emulated: a Debian 13 (trixie) rootfs
# for arm64 and/or armhf (debootstrap + qemu-user-static), Debian's own nodejs and npm, then
# inside it `npm ci` (TypeScript and the AssemblyScript/Wasm build) and scripts/smoke.mjs
# (start, MQTT over TCP and WebSocket, a rule, state-store SET/GET, SIGTERM backup, restart,
# durable storage). Not run in CI: it needs root, binfmt_misc and about 10 minutes per rootfs
# the first time; emulation is about 20x slower than native, so this is for "does it build
# and run", never for timing. Results: docs/operations.md, "ARM boards".
#
#   sudo sh scripts/arm-smoke.sh [arm64|armhf|all]      (default: all)
#
# ARM_ROOT (default /tmp/arm) holds one rootfs per architecture (rootfs-arm64, rootfs-armhf),
# built once and reused; MIRROR overrides the Debian mirror (default: this machine's apt one,
# else deb.debian.org). The project is copied into the rootfs (without node_modules, dist and
# build), so the host's checkout and its x64 modules are never touched. Logs:
# $ARM_ROOT/smoke-<arch>.log. Exit code: 0 when every architecture asked for passed.
set -eu
HERE=$(cd "$(dirname "$0")/.." && pwd)
ARM_ROOT=${ARM_ROOT:-/tmp/arm}
ARCHES=${1:-all}
[ "$ARCHES" = all ] && ARCHES="arm64 armhf"
[ "$(id -u)" = 0 ] || { echo "arm-smoke: run as root (debootstrap, chroot, mount)" >&2; exit 2; }

mirror() {
  [ -n "${MIRROR:-}" ] && { echo "$MIRROR"; return; }
  m=$(grep -rhE '^URIs: *https?://[^ ]+/debian/?$' /etc/apt/sources.list.d/ 2>/dev/null | head -1 | sed 's/^URIs: *//')
  [ -n "$m" ] || m=$(grep -rhE '^deb +(\[[^]]*\] +)?https?://[^ ]+/debian/? ' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null | head -1 | grep -oE 'https?://[^ ]+' | head -1)
  echo "${m:-http://deb.debian.org/debian}"
}

binfmt() {
  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  update-binfmts --enable qemu-aarch64 2>/dev/null || true
  update-binfmts --enable qemu-arm 2>/dev/null || true
}

mount_pseudo() { # $1 = rootfs
  mountpoint -q "$1/proc" || mount -t proc proc "$1/proc"
  mountpoint -q "$1/sys" || mount -t sysfs sys "$1/sys"
  mountpoint -q "$1/dev" || mount --rbind /dev "$1/dev"
  mountpoint -q "$1/tmp" || mount -t tmpfs tmpfs "$1/tmp"
  cp -L /etc/resolv.conf "$1/etc/resolv.conf"
}

umount_all() { # $1 = rootfs
  for m in $(awk -v r="$1" '$2 ~ "^"r"/" {print $2}' /proc/mounts | sort -r); do umount -l "$m"; done
}

in_root() { # $1 = rootfs, $2 = command
  chroot "$1" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root CI=1 DEBIAN_FRONTEND=noninteractive sh -c "$2"
}

make_rootfs() { # $1 = arch, $2 = rootfs
  [ -x "$2/usr/bin/node" ] && return 0
  echo "arm-smoke: building the $1 rootfs in $2 (about 10 minutes)"
  command -v debootstrap >/dev/null && [ -e /usr/bin/qemu-aarch64-static ] || apt-get install -y -q qemu-user-static binfmt-support debootstrap >/dev/null
  binfmt
  rm -rf "$2"
  debootstrap --arch="$1" --foreign --variant=minbase trixie "$2" "$(mirror)"
  chroot "$2" /debootstrap/debootstrap --second-stage
  printf 'deb %s trixie main\ndeb %s trixie-updates main\n' "$(mirror)" "$(mirror)" > "$2/etc/apt/sources.list"
  mount_pseudo "$2"
  mkdir -p "$2/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$2/usr/local/share/ca-certificates/" 2>/dev/null || true
  [ -f /etc/npmrc ] && cp /etc/npmrc "$2/etc/npmrc"
  [ -f ~/.npmrc ] && grep -v nodedir ~/.npmrc > "$2/root/.npmrc"
  in_root "$2" 'apt-get update -q && apt-get install -y -q --no-install-recommends nodejs npm ca-certificates && update-ca-certificates'
  umount_all "$2"
}

# Seed the rootfs's npm cache from the host's: the host's cache has every package of the lock
# file but the ARM binaries of the optional ones, which are added to it first. Under emulation
# npm's TLS downloads are about 20x slower, and armhf hit ERR_SOCKET_TIMEOUT without this.
seed_npm_cache() { # $1 = arch, $2 = rootfs
  case "$1" in arm64) want='linux-arm64|lmdb-linux-arm64|extract-linux-arm64|binding-linux-arm64-gnu' ;;
               armhf) want='esbuild/linux-arm"|lmdb-linux-arm"|extract-linux-arm"|binding-linux-arm-gnueabihf' ;; esac
  specs=$(cd "$HERE" && node -e '
    const lock = require("./package-lock.json").packages, re = new RegExp(process.argv[1]);
    for (const [k, v] of Object.entries(lock)) if (k.startsWith("node_modules/") && re.test(JSON.stringify(k))) console.log(k.slice(13) + "@" + v.version);
  ' "$want" 2>/dev/null) || specs=""
  for s in $specs; do npm cache add "$s" >/dev/null 2>&1 || echo "arm-smoke: could not add $s to the npm cache (npm ci will fetch it)"; done
  host_cache=$(npm config get cache 2>/dev/null || echo "$HOME/.npm")
  if [ -d "$host_cache/_cacache" ]; then
    mkdir -p "$2/root/.npm"
    rm -rf "$2/root/.npm/_cacache"
    cp -a "$host_cache/_cacache" "$2/root/.npm/_cacache"
  fi
}

run_arch() { # $1 = arch
  R="$ARM_ROOT/rootfs-$1"
  LOG="$ARM_ROOT/smoke-$1.log"
  make_rootfs "$1" "$R"
  binfmt
  rm -rf "$R/project"
  mkdir -p "$R/project"
  # the working tree as it is (committed or not), without host build outputs and modules
  tar -C "$HERE" --exclude=./node_modules --exclude=./dist --exclude=./build --exclude=./.git -cf - . | tar -C "$R/project" -xf -
  mount_pseudo "$R"
  seed_npm_cache "$1" "$R"
  rc=0
  {
    echo "arm-smoke: $1, $(date -u +%FT%TZ), host $(uname -m)"
    in_root "$R" 'echo "uname -m: $(uname -m); node $(node --version); npm $(npm --version); $(ldd --version | head -1)"'
    start=$(date +%s)
    # --prefer-offline: the tarballs come from the seeded cache; npm's registry fetches under
    # emulation are slow enough to hit its default socket timeout (seen on armhf).
    in_root "$R" 'cd /project && npm ci --no-audit --no-fund --prefer-offline --fetch-timeout=600000 --fetch-retries=5' || rc=$?
    echo "arm-smoke: npm ci (install + TypeScript + Wasm build) exit $rc after $(( $(date +%s) - start )) s"
    if [ $rc -eq 0 ]; then
      in_root "$R" 'cd /project && node -e "import(\"./dist/src/transport/uws.js\").then(m => console.log(\"uWebSockets.js:\", JSON.stringify(m.loadUws().ok ? \"loads\" : m.loadUws().reason)))"' || true
      in_root "$R" 'cd /project && node scripts/smoke.mjs --timeout-scale 20' || rc=$?
    fi
  } 2>&1 | tee "$LOG"
  umount_all "$R"
  # tee hides the exit code of the block; the smoke prints "ok":true on success
  grep -q '"ok":true' "$LOG" && echo "arm-smoke: $1 PASSED (log: $LOG)" && return 0
  echo "arm-smoke: $1 FAILED (log: $LOG)"
  return 1
}

failed=""
for a in $ARCHES; do
  case "$a" in arm64|armhf) ;; *) echo "arm-smoke: unknown architecture $a (arm64, armhf, all)" >&2; exit 2 ;; esac
  run_arch "$a" || failed="$failed $a"
done
[ -z "$failed" ] || { echo "arm-smoke: failed on:$failed"; exit 1; }
echo "arm-smoke: all passed ($ARCHES)"
