#!/usr/bin/env bash
# benches/peers.sh — download throughput and CPU cost of tftp-proto against the Debian TFTP peers,
# on loopback, tmpfs to tmpfs, with the CPUs pinned the same way for every comparison.
#
#   bash benches/peers.sh [--bytes N] [--quick] [options]
#
# What it does
#   1. `cargo build --release --features cli` (the repo's target dir, or $CARGO_TARGET_DIR) and checks the peers
#      (tests/interop/peers.sh; `bash tests/interop/peers.sh peers_install` installs them, as root).
#   2. Creates random test files on tmpfs (/dev/shm unless --dir): one of --bytes (default 1 GiB)
#      and a smaller one of --lockstep-bytes for the lock-step small-block sets (see below).
#   3. Starts every server once, pinned to CPU 0 (`taskset -c 0`): tftp-proto `serve`, tftpd-hpa,
#      atftpd (high ports on 127.0.0.1) and dnsmasq (port 69 only: needs root and a free port 69).
#   4. Runs each download with the client pinned to CPU 1 (the primary tables; the issue mandates
#      server CPU 0 / client CPU 1) and, with --same-cpu, again with the client on CPU 0 too:
#        * servers: tftp-proto, tftpd-hpa, atftpd, dnsmasq, each with the same clients (atftp —
#          the only peer client with windowsize — and tftp-proto);
#        * clients: tftp-proto, tftp-hpa, atftp, busybox, curl against the same server (tftpd-hpa
#          for the lock-step `x1` sets, atftpd for the windowed sets);
#        * option sets 512x1, 1468x1, 1468x16, 65464x1, 65464x64 (BLKSIZExWINDOWSIZE), "n/a"
#          where a peer cannot do them (tftp-hpa: 512 only, no options; windowsize: only atftp and
#          atftpd; busybox and curl: blksize only; dnsmasq: blksize only, up to 65464 thanks to
#          --edns-packet-max=65535).
#      Every download is verified with cmp; a failure, corruption or timeout is reported as such.
#      Every command runs under `timeout`.
#   5. Runs the TFTP-shaped UDP ceiling (`cargo bench --bench udp_ceiling`, same sizes and CPUs,
#      just before each set's transfers) and prints tftp-proto's throughput as a percentage of it
#      per option set.
#   6. Prints a markdown report to stdout and writes it to TARGET_DIR/peers-bench.md.
#
# Measurements
#   MB/s       = 10^6 bytes / wall second of the client process (start to exit, incl. its startup)
#   client CPU = user+sys of the client process (/usr/bin/time -f '%U %S'), in seconds per GiB
#   server CPU = CPU time of the long-running server (all its threads, and for tftpd-hpa the child
#                it forks per transfer) before and after the transfer, in seconds per GiB: from a
#                cgroup per server (v2 cpu.stat or v1 cpuacct.usage; root), else from
#                /proc/PID/stat utime+stime (then tftpd-hpa's children are missed: it says so)
#   load1      = the 1-minute load average when the transfer started (/proc/loadavg); it includes
#                this benchmark's own previous transfers (a server and a client: ~1-2)
#   other CPUs = CPUs kept busy by anything but the measured server and client, on average over
#                the transfer (/proc/stat busy time minus theirs): ~0 on a quiet machine; the
#                machine may be shared, so read the numbers with it
#   notes      = tftp-proto server's retransmissions and its own view of the rate (request to last
#                ACK, from its log line: no client start-up or exit) and the UDP datagrams the host
#                dropped for a full receive buffer during the transfer (/proc/net/snmp RcvbufErrors:
#                host-wide, so other UDP traffic on a shared machine shows up too)
#
# Sizes: lock-step transfers of small blocks are slow when the client and server sit on different
# CPUs (each block costs a cross-CPU wake-up, ~5-7 MB/s at 512 bytes), so by default the 512x1 and
# 1468x1 sets move --lockstep-bytes (default --bytes/16: 64 MiB of 1 GiB) to keep the full run
# under ~15 minutes; the table shows the bytes of each row. `--lockstep-bytes N` with N = --bytes
# makes every set move the same amount.
#
# Options
#   --bytes N            size of the big test file (default 1073741824 = 1 GiB)
#   --quick              --bytes 268435456 (256 MiB) unless --bytes is given
#   --lockstep-bytes N   bytes of the 512x1 and 1468x1 sets (default --bytes/16)
#   --same-cpu           also run everything with the client on CPU 0 (same CPU as the server)
#   --modes LIST         pinned (client CPU 1), same (client CPU 0) or pinned,same (= --same-cpu)
#   --repeat N           run every transfer (and the ceiling) N times; report the median run
#                        (the ceiling: the best), with the range in the notes
#   --sets LIST          comma-separated subset of 512x1,1468x1,1468x16,65464x1,65464x64
#   --servers LIST       subset of ours,hpa,atftpd,dnsmasq for the server table
#   --clients LIST       subset of ours,hpa,atftp,busybox,curl for the client table
#   --no-ceiling         skip the udp_ceiling bench
#   --no-build           use the existing release binary
#   --dir DIR            tmpfs directory for the files (default /dev/shm)
#   --timeout S          per-transfer limit in seconds (default: from the size, >= 60)
#   --out FILE           report file (default TARGET_DIR/peers-bench.md)
#
# Reproduce: `bash tests/interop/peers.sh peers_install` (root, Debian 12) once, then
# `bash benches/peers.sh` (full, ~10 min) or `bash benches/peers.sh --quick`.
# Needs: bash, taskset, /usr/bin/time (package "time"), ss, cmp, awk, pgrep, and 2+ CPUs.

set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1

BYTES=
LOCKSTEP_BYTES=
QUICK=0
MODES=pinned
SETS="512x1,1468x1,1468x16,65464x1,65464x64"
SERVERS="ours,hpa,atftpd,dnsmasq"
CLIENTS="ours,hpa,atftp,busybox,curl"
CEILING=1
BUILD=1
REPEAT=1
TMPFS=/dev/shm
TIMEOUT=
OUT=

usage() { sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while [ $# -gt 0 ]; do
  case $1 in
    --bytes) BYTES=$2; shift ;;
    --quick) QUICK=1 ;;
    --lockstep-bytes) LOCKSTEP_BYTES=$2; shift ;;
    --same-cpu) MODES=pinned,same ;;
    --modes) MODES=$2; shift ;;
    --repeat) REPEAT=$2; shift ;;
    --sets) SETS=$2; shift ;;
    --servers) SERVERS=$2; shift ;;
    --clients) CLIENTS=$2; shift ;;
    --no-ceiling) CEILING=0 ;;
    --no-build) BUILD=0 ;;
    --dir) TMPFS=$2; shift ;;
    --timeout) TIMEOUT=$2; shift ;;
    --out) OUT=$2; shift ;;
    -h|--help) usage 0 ;;
    *) echo "peers.sh: unknown argument $1" >&2; usage 2 ;;
  esac
  shift
done
if [ -z "$BYTES" ]; then
  if [ "$QUICK" = 1 ]; then BYTES=268435456; else BYTES=1073741824; fi
fi
[ -n "$LOCKSTEP_BYTES" ] || LOCKSTEP_BYTES=$((BYTES / 16))
[ "$LOCKSTEP_BYTES" -le "$BYTES" ] || LOCKSTEP_BYTES=$BYTES

SERVER_CPU=0
CLIENT_CPU=1
HOST=127.0.0.1

log() { echo "[peers.sh $(date +%T)] $*" >&2; }
die() { log "error: $*"; exit 1; }
has() { [[ ,$1, == *,$2,* ]]; }
load1() { cut -d' ' -f1 /proc/loadavg; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# ---- prerequisites ------------------------------------------------------------------------------

for tool in taskset /usr/bin/time ss cmp awk pgrep timeout; do
  command -v "$tool" >/dev/null 2>&1 || die "missing $tool"
done
[ "$(nproc --all)" -ge 2 ] || die "needs at least 2 CPUs (server on CPU 0, client on CPU 1)"
[ "$(stat -f -c %T "$TMPFS" 2>/dev/null)" = tmpfs ] || die "$TMPFS is not a tmpfs (use --dir)"
need=$(((BYTES + LOCKSTEP_BYTES) * 2 + (64 << 20)))
avail=$(($(stat -f -c '%a * %S' "$TMPFS")))
[ "$avail" -ge "$need" ] || die "$TMPFS has $avail bytes free, needs $need"

PEERS_LIB=$ROOT/tests/interop/peers.sh
[ -f "$PEERS_LIB" ] || die "missing $PEERS_LIB"
# shellcheck source=SCRIPTDIR/../tests/interop/peers.sh
. "$PEERS_LIB"
if [ ! -x "$ATFTPD_BIN" ] && [ -x /tmp/interop/atftpd/root/usr/sbin/atftpd ]; then
  ATFTPD_BIN=/tmp/interop/atftpd/root/usr/sbin/atftpd
fi
MISSING=$(peers_missing | tr '\n' ' ')
[ -z "$MISSING" ] || log "missing peers (their rows will say so): $MISSING"

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case $TARGET_DIR in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
BIN=$TARGET_DIR/release/tftp-proto
[ -n "$OUT" ] || OUT=$TARGET_DIR/peers-bench.md

# What was measured, without git: a digest of the sources the binary is built from.
SRC_DIGEST=$(find Cargo.toml src -type f -print0 | sort -z | xargs -0 cat | sha256sum | cut -c1-12)
SRC_NEWEST=$(find Cargo.toml src -type f -printf '%TF %TT %p\n' | sort | tail -n 1 | cut -c1-19,31-)
if [ "$BUILD" = 1 ]; then
  log "cargo build --release (load $(loadavg))"
  timeout 1800 cargo build --release --quiet --features cli || die "cargo build failed"
  if [ "$CEILING" = 1 ]; then
    timeout 1800 cargo bench --quiet --no-run --bench udp_ceiling || die "cargo bench --no-run failed"
  fi
fi
[ -x "$BIN" ] || die "no $BIN (build it, or drop --no-build)"

CLK_TCK=$(getconf CLK_TCK)
WORK=$(mktemp -d "$TMPFS/tftp-proto-bench.XXXXXX") || die "mktemp in $TMPFS"
chmod 755 "$WORK"
SRV=$WORK/srv
OUTDIR=$WORK/out
LOGS=$WORK/logs
mkdir -p "$SRV" "$OUTDIR" "$LOGS"
export PEERS_LOGDIR=$LOGS

declare -A SPID=() SPORT=() SNOTE=() SCG=()   # SCG: server -> its cgroup directory
cleanup() {
  local s
  for s in "${!SPID[@]}"; do server_stop "${SPID[$s]}"; done
  for s in "${!SCG[@]}"; do cg_remove "${SCG[$s]}"; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- test files ---------------------------------------------------------------------------------

log "creating $BYTES + $LOCKSTEP_BYTES random bytes in $WORK"
timeout 300 head -c "$BYTES" /dev/urandom >"$SRV/big.bin" || die "cannot create the test file"
timeout 300 head -c "$LOCKSTEP_BYTES" "$SRV/big.bin" >"$SRV/small.bin" || die "cannot create the test file"
chmod 644 "$SRV"/*.bin   # dnsmasq serves only world-readable files

# The file and byte count of a set: the lock-step small-block sets use the small file.
set_file() { case $1 in 512x1|1468x1) echo small.bin ;; *) echo big.bin ;; esac; }
set_bytes() { case $1 in 512x1|1468x1) echo "$LOCKSTEP_BYTES" ;; *) echo "$BYTES" ;; esac; }
# Per-transfer limit: generous (>= 60 s, ~4 MB/s for lock-step sets, ~20 MB/s for the others,
# which run at 100+ MB/s when they work: below that, a transfer has collapsed).
set_timeout() {
  if [ -n "$TIMEOUT" ]; then echo "$TIMEOUT"; return; fi
  local b; b=$(set_bytes "$1")
  case $1 in
    512x1|1468x1) echo $((60 + b / 4000000)) ;;
    *) echo $((60 + b / 20000000)) ;;
  esac
}

# ---- servers ------------------------------------------------------------------------------------

port_free() { ! ss -Hlun 2>/dev/null | awk '{print $4}' | grep -qxF "$HOST:$1"; }
pick_port() {
  local p=$1
  while ! port_free "$p"; do p=$((p + 1)); done
  echo "$p"
}

start_ours() {
  local port=$1
  setsid taskset -c "$SERVER_CPU" "$BIN" serve --root "$SRV" --bind "$HOST:$port" --max-windowsize 64 \
    </dev/null >"$LOGS/ours-$port.log" 2>&1 &
  local pid=$!
  for _ in $(seq 50); do
    port_free "$port" || { echo "$pid"; return 0; }
    sleep 0.1
  done
  cat "$LOGS/ours-$port.log" >&2
  server_stop "$pid"
  return 1
}

start_servers() {
  local s port pid
  export PEERS_SERVER_TASKSET="taskset -c $SERVER_CPU"
  for s in ours hpa atftpd dnsmasq; do
    case $s in
      ours) port=$(pick_port 17101); pid=$(start_ours "$port") ;;
      hpa) port=$(pick_port 17102); pid=$(server_start hpa "$SRV" "$port") ;;
      atftpd) port=$(pick_port 17103); pid=$(server_start atftpd "$SRV" "$port") ;;
      dnsmasq)
        port=69
        if [ "$(id -u)" != 0 ]; then SNOTE[$s]="not root (port 69)"; continue; fi
        if ! port_free 69; then SNOTE[$s]="port 69 busy"; continue; fi
        pid=$(server_start dnsmasq "$SRV" 69) ;;
    esac
    if [ -n "${pid:-}" ]; then
      SPID[$s]=$pid
      SPORT[$s]=$port
      cg_join "$s" "$pid"
      log "server $s: pid $pid port $port on CPU $SERVER_CPU"
    else
      SNOTE[$s]="did not start"
      log "server $s did not start"
    fi
    pid=
  done
}

# Server CPU accounting. tftpd-hpa forks a child per transfer and ignores SIGCHLD (children are
# reaped automatically, so their time never reaches the parent's cutime): the robust way is a
# cgroup of its own per server, which every child and thread inherits and whose CPU usage counter
# keeps the time of exited processes. cgroup v2 (cpu.stat usage_usec) or v1 (cpuacct.usage);
# without a writable cgroup filesystem, /proc/PID/stat of the process group (children's time is
# then lost for tftpd-hpa, which the report says).
CG_BASE='' CG_KIND=''
if [ -f /sys/fs/cgroup/cgroup.controllers ] && [ -w /sys/fs/cgroup ]; then
  CG_BASE=/sys/fs/cgroup CG_KIND=v2
else
  for d in /sys/fs/cgroup/cpuacct /sys/fs/cgroup/cpu,cpuacct; do
    if [ -f "$d/cpuacct.usage" ] && [ -w "$d" ]; then CG_BASE=$d CG_KIND=v1; break; fi
  done
fi
cg_join() {
  local s=$1 pid=$2 dir
  [ -n "$CG_BASE" ] || return 0
  dir=$CG_BASE/tftp-proto-bench-$$-$s
  if mkdir "$dir" 2>/dev/null && echo "$pid" >"$dir/cgroup.procs" 2>/dev/null; then
    SCG[$s]=$dir
  else
    rmdir "$dir" 2>/dev/null
    log "no cgroup for $s: its CPU comes from /proc/PID/stat"
  fi
}
cg_remove() {
  local dir=$1
  for _ in $(seq 30); do
    rmdir "$dir" 2>/dev/null && return 0
    sleep 0.1
  done
  log "could not remove cgroup $dir"
}
cpu_method() {
  case $CG_KIND in
    v2) echo "cgroup v2 cpu.stat usage_usec of a cgroup per server" ;;
    v1) echo "cgroup v1 cpuacct.usage of a cgroup per server" ;;
    *) echo "/proc/PID/stat of the server's process group (tftpd-hpa's per-transfer children not counted)" ;;
  esac
}

# CPU nanoseconds used so far by a server (see above).
server_ns() {
  local s=$1 leader=$2 dir=${SCG[$1]:-}
  if [ -n "$dir" ]; then
    if [ "$CG_KIND" = v2 ]; then
      awk '$1 == "usage_usec" { printf "%d\n", $2 * 1000 }' "$dir/cpu.stat"
    else
      cat "$dir/cpuacct.usage"
    fi
    return
  fi
  local p line total=0
  local -a f
  for p in $(pgrep -g "$leader"); do
    line=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    read -ra f <<<"${line##*) }"
    total=$((total + f[11] + f[12]))
    [ "$p" = "$leader" ] && total=$((total + f[13] + f[14]))
  done
  echo $((total * 1000000000 / CLK_TCK))
}

# Waits (bounded, 5 s) until a server has no per-transfer child left, then a little more.
server_settle() {
  local leader=$1
  for _ in $(seq 50); do
    [ "$(pgrep -g "$leader" | wc -l)" -le 1 ] && break
    sleep 0.1
  done
  sleep 0.2
}

# ---- clients ------------------------------------------------------------------------------------

# Datagrams the host dropped because a socket's receive buffer was full (system-wide
# /proc/net/snmp Udp RcvbufErrors: on a quiet loopback, this transfer's).
udp_drops() {
  awk '$1 == "Udp:" { if (!n) { for (i = 2; i <= NF; i++) if ($i == "RcvbufErrors") c = i; n = 1 } else print $c }' /proc/net/snmp
}

# Busy CPU ticks of the whole machine so far (/proc/stat: user nice system irq softirq steal).
busy_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }

# Why a server or a client cannot do a set ("" = it can).
server_na() {
  local s=$1 win=${2#*x}
  [ -n "${SNOTE[$s]:-}" ] && { echo "${SNOTE[$s]}"; return; }
  [ -n "${SPID[$s]:-}" ] || { echo "not running"; return; }
  case $s in
    hpa|dnsmasq) [ "$win" = 1 ] || echo "no windowsize" ;;
  esac
}
client_na() {
  local c=$1 win=${2#*x}
  case $c in
    hpa) command -v tftp >/dev/null || { echo "not installed"; return; }
         [ "$2" = 512x1 ] || echo "no options (512x1 only)" ;;
    atftp) command -v atftp >/dev/null || echo "not installed" ;;
    busybox) busybox --list 2>/dev/null | grep -qx tftp || { echo "not installed"; return; }
             [ "$win" = 1 ] || echo "no windowsize" ;;
    curl) command -v curl >/dev/null || { echo "not installed"; return; }
          [ "$win" = 1 ] || echo "no windowsize" ;;
    ours) ;;
  esac
}

# The command line of a client download: client_cmd CLIENT SET PORT REMOTE LOCAL LIMIT.
# Options are sent only when they differ from RFC 1350's (512, lock-step), except that busybox
# always asks for tsize.
client_cmd() {
  local c=$1 set=$2 port=$3 remote=$4 local_=$5 limit=$6
  local blk=${set%x*} win=${set#*x}
  CMD=()
  case $c in
    ours)
      CMD=("$BIN" get -q)
      [ "$blk" != 512 ] && CMD+=(--blksize "$blk")
      [ "$win" != 1 ] && CMD+=(--windowsize "$win")
      CMD+=("$HOST:$port" "$remote" "$local_") ;;
    hpa) CMD=(tftp "$HOST" "$port" -m binary -c get "$remote" "$local_") ;;
    atftp)
      CMD=(atftp --get -r "$remote" -l "$local_")
      [ "$blk" != 512 ] && CMD+=(--option "blksize $blk")
      [ "$win" != 1 ] && CMD+=(--option "windowsize $win")
      CMD+=("$HOST" "$port") ;;
    busybox)
      CMD=(busybox tftp -g -r "$remote" -l "$local_")
      [ "$blk" != 512 ] && CMD+=(-b "$blk")
      CMD+=("$HOST" "$port") ;;
    curl)
      CMD=(curl -sS --max-time "$limit")
      if [ "$blk" != 512 ]; then CMD+=(--tftp-blksize "$blk"); else CMD+=(--tftp-no-options); fi
      CMD+=(-o "$local_" "tftp://$HOST:$port/$remote") ;;
  esac
}

# ---- one transfer -------------------------------------------------------------------------------

declare -A RES=()   # "mode|server|client|set" -> "status|MB/s|server s/GiB|client s/GiB|load|bytes|notes"

# run_one MODE SERVER CLIENT SET: MODE pinned (client CPU 1) or same (client CPU 0).
run_one() {
  local mode=$1 s=$2 c=$3 set=$4
  local key="$mode|$s|$c|$set"
  [ -n "${RES[$key]:-}" ] && return
  local bytes na
  bytes=$(set_bytes "$set")
  na=$(server_na "$s" "$set")
  [ -z "$na" ] && na=$(client_na "$c" "$set")
  if [ -n "$na" ]; then
    RES[$key]="n/a ($na)|||||$bytes|"
    return
  fi
  # --repeat N: the run with the median throughput, or the first failure.
  local runs=() r ok=0 failed=""
  for ((r = 0; r < REPEAT; r++)); do
    transfer_once "$mode" "$s" "$c" "$set"
    runs+=("$ONE")
    if [[ $ONE == ok\|* ]]; then ok=$((ok + 1)); else [ -n "$failed" ] || failed=$ONE; fi
  done
  if [ -n "$failed" ]; then
    [ "$REPEAT" -gt 1 ] && failed="${failed%%|*} ($((REPEAT - ok)) of $REPEAT runs)|${failed#*|}"
    RES[$key]=$failed
  elif [ "$REPEAT" -gt 1 ]; then
    local sorted range median notes
    sorted=$(printf '%s\n' "${runs[@]}" | sort -t'|' -k2,2 -g)
    range=$(cut -d'|' -f2 <<<"$sorted" | sed -n '1p;$p' | paste -sd'-')
    median=$(sed -n "$(((REPEAT + 1) / 2))p" <<<"$sorted")
    notes=${median##*|}
    RES[$key]="${median%|*}|${notes:+$notes; }median of $REPEAT runs ($range MB/s)"
  else
    RES[$key]=${runs[0]}
  fi
}

# One download; the result in ONE ("status|MB/s|server s/GiB|client s/GiB|load|bytes|notes").
transfer_once() {
  local mode=$1 s=$2 c=$3 set=$4 bytes
  bytes=$(set_bytes "$set")
  local ccpu=$CLIENT_CPU
  [ "$mode" = same ] && ccpu=$SERVER_CPU
  local pid=${SPID[$s]} port=${SPORT[$s]} file limit
  file=$(set_file "$set")
  limit=$(set_timeout "$set")
  local out=$OUTDIR/$file tfile=$LOGS/time.txt clog=$LOGS/client-$c-$s-$set-$mode.log
  rm -f "$out" "$tfile"
  client_cmd "$c" "$set" "$port" "$file" "$out" "$limit"
  local l0 s0 t0 t1 s1 rc d0 d1 b0 b1
  server_settle "$pid"
  l0=$(load1)
  d0=$(udp_drops)
  b0=$(busy_ticks)
  s0=$(server_ns "$s" "$pid")
  t0=$EPOCHREALTIME
  timeout -k 5 "$limit" /usr/bin/time -f '%U %S' -o "$tfile" taskset -c "$ccpu" "${CMD[@]}" \
    </dev/null >"$clog" 2>&1
  rc=$?
  t1=$EPOCHREALTIME
  server_settle "$pid"
  s1=$(server_ns "$s" "$pid")
  d1=$(udp_drops)
  b1=$(busy_ticks)
  local status
  if [ $rc = 124 ] || [ $rc = 137 ]; then
    status="TIMEOUT (${limit}s)"
  elif [ $rc != 0 ]; then
    status="FAILED (exit $rc)"
  elif ! cmp -s "$out" "$SRV/$file"; then
    status="CORRUPT/incomplete ($(stat -c %s "$out" 2>/dev/null || echo 0) bytes)"
  else
    status=ok
  fi
  local ucpu scpu mbps ccpu_g scpu_g
  # /usr/bin/time is killed with the client on a timeout: no figures then.
  read -r ucpu scpu < <(tail -n 1 "$tfile" 2>/dev/null)
  [[ ${ucpu:-} =~ ^[0-9.]+$ ]] || ucpu=""
  mbps=$(awk -v b="$bytes" -v a="$t0" -v z="$t1" 'BEGIN { printf "%.1f", b / (z - a) / 1e6 }')
  ccpu_g=-
  [ -n "$ucpu" ] && ccpu_g=$(awk -v u="$ucpu" -v s="${scpu:-0}" -v b="$bytes" 'BEGIN { printf "%.2f", (u + s) * 1073741824 / b }')
  scpu_g=$(awk -v t=$((s1 - s0)) -v b="$bytes" 'BEGIN { printf "%.2f", t / 1e9 * 1073741824 / b }')
  if [ "$status" != ok ]; then
    # A failed transfer's rate means nothing; its CPU is still shown.
    mbps="-"
    log "  $status: $(tail -n 3 "$clog" | tr '\n' ' ')"
  fi
  local notes=""
  if [ "$s" = ours ]; then
    # The server's one-line report of this transfer.
    # Its own time runs from the request to the last ACK: without the client's start-up and exit
    # (tftp-proto's client dallies after its final ACK before it exits).
    notes=$(grep 'retransmissions=' "$LOGS/ours-$port.log" | tail -n 1 |
      sed -n 's/.* bytes=\([0-9]*\) time=\([0-9.]*\)s retransmissions=\([0-9]*\).*/\1 \2 \3/p' |
      awk '{ printf "server rexmit %d, server-side %.1f MB/s", $3, ($2 > 0 ? $1 / $2 / 1e6 : 0) }')
  fi
  if [ $((d1 - d0)) -gt 0 ]; then
    notes="${notes:+$notes; }host UDP receive-buffer drops $((d1 - d0))"
  fi
  # CPUs kept busy by anything but this server and client, on average over the transfer.
  local other
  other=$(awk -v b=$((b1 - b0)) -v h="$CLK_TCK" -v s=$((s1 - s0)) -v u="${ucpu:-0}" -v y="${scpu:-0}" \
    -v a="$t0" -v z="$t1" 'BEGIN { o = (b / h - s / 1e9 - u - y) / (z - a); if (o < 0) o = 0; printf "%.2f", o }')
  ONE="$status|$mbps|$scpu_g|$ccpu_g|$l0 / $other|$bytes|$notes"
  log "$mode $s <- $c $set: $status ${mbps} MB/s, server ${scpu_g} s/GiB, client ${ccpu_g} s/GiB, load $l0, other CPUs $other"
  rm -f "$out"
}

# ---- ceiling ------------------------------------------------------------------------------------

declare -A CEIL=()      # key "mode|set" -> MB/s, the best of the repeats
declare -A CEIL_RUNS=() # key "mode|set" -> every repeat's MB/s, space-separated
declare -A CEIL_CPU=()  # key "mode|set" -> the ceiling sender's CPU s/GiB, the least of the repeats
# run_ceiling MODE SET: run just before the set's transfers, so that both see the same machine.
run_ceiling() {
  local mode=$1 set=$2 cpus="$SERVER_CPU,$CLIENT_CPU" list="" r
  [ "$mode" = same ] && cpus="$SERVER_CPU,$SERVER_CPU"
  for ((r = 0; r < REPEAT; r++)); do list+="$set:$(set_bytes "$set"),"; done
  log "udp_ceiling $set ($mode, CPUs $cpus, load $(loadavg))"
  local lines
  lines=$(TFTP_BENCH_SETS=${list%,} TFTP_BENCH_CPUS=$cpus timeout 900 \
    cargo bench --quiet --bench udp_ceiling 2>"$LOGS/ceiling-$mode.err" | grep '^ceiling ')
  [ -n "$lines" ] || { log "udp_ceiling failed: $(tail -n 5 "$LOGS/ceiling-$mode.err")"; return; }
  echo "$lines" >&2
  local line b w m c k
  while read -r line; do
    b=$(sed -n 's/.* blksize=\([0-9]*\).*/\1/p' <<<"$line")
    w=$(sed -n 's/.* windowsize=\([0-9]*\).*/\1/p' <<<"$line")
    m=$(sed -n 's/.* mbps=\([0-9.]*\).*/\1/p' <<<"$line")
    c=$(sed -n 's/.* sender_s_per_gib=\([0-9.]*\).*/\1/p' <<<"$line")
    k="$mode|${b}x$w"
    CEIL_RUNS[$k]+="$m "
    # The best of the repeats.
    if awk -v a="$m" -v b="${CEIL[$k]:-0}" 'BEGIN { exit !(a > b) }'; then
      CEIL[$k]=$m
    fi
    # The sender's CPU: the least of the repeats (the floor it shows is then the lowest seen).
    if [ -n "$c" ] && { [ -z "${CEIL_CPU[$k]:-}" ] || awk -v a="$c" -v b="${CEIL_CPU[$k]}" 'BEGIN { exit !(a < b) }'; }; then
      CEIL_CPU[$k]=$c
    fi
  done <<<"$lines"
}

# ---- report -------------------------------------------------------------------------------------

sname() {
  case $1 in ours) echo tftp-proto ;; hpa) echo tftpd-hpa ;; *) echo "$1" ;; esac
}
cname() {
  case $1 in ours) echo tftp-proto ;; hpa) echo tftp-hpa ;; *) echo "$1" ;; esac
}

row() {
  local key=$1 label=$2 status mbps scpu ccpu l bytes notes
  IFS='|' read -r status mbps scpu ccpu l bytes notes <<<"${RES[$key]}"
  if [[ $status == n/a* ]]; then
    echo "| $label | $status | | | | | |"
  else
    echo "| $label | $status | ${mbps} | ${scpu} | ${ccpu} | ${l} | ${notes} |"
  fi
}

report_mode() {
  local mode=$1 title set s c
  if [ "$mode" = pinned ]; then
    title="server CPU $SERVER_CPU, client CPU $CLIENT_CPU"
  else
    title="server and client both on CPU $SERVER_CPU"
  fi
  echo
  echo "### Servers, same clients ($title)"
  echo
  echo "| set | server | client | MiB moved | result | MB/s | server CPU s/GiB | client CPU s/GiB | load1 / other CPUs | notes |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  for set in ${SETS//,/ }; do
    for s in ours hpa atftpd dnsmasq; do
      has "$SERVERS" "$s" || continue
      for c in atftp ours; do
        row "$mode|$s|$c|$set" "$set | $(sname "$s") | $(cname "$c") | $(($(set_bytes "$set") >> 20))"
      done
    done
  done
  echo
  echo "### Clients, same server ($title; tftpd-hpa for x1 sets, atftpd for windowed sets)"
  echo
  echo "| set | client | server | MiB moved | result | MB/s | server CPU s/GiB | client CPU s/GiB | load1 / other CPUs | notes |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  for set in ${SETS//,/ }; do
    s=hpa
    [ "${set#*x}" = 1 ] || s=atftpd
    for c in ours hpa atftp busybox curl; do
      has "$CLIENTS" "$c" || continue
      row "$mode|$s|$c|$set" "$set | $(cname "$c") | $(sname "$s") | $(($(set_bytes "$set") >> 20))"
    done
  done
  if [ "$CEILING" = 1 ]; then
    echo
    echo "### tftp-proto against the TFTP-shaped UDP ceiling ($title)"
    echo
    echo "The ceiling's MB/s is the best of its repeats, the transfers' the median. CPU columns are server"
    echo "CPU s/GiB: the ceiling's is its sender's (two system calls per window, no protocol, no file; the"
    echo "least of its repeats), the floor for any server that sleeps between windows."
    echo
    echo "| set | ceiling MB/s (all runs) | tftp-proto server + client MB/s | % of ceiling | tftp-proto server + atftp MB/s | % | best peer pair MB/s | ceiling sender CPU | tftp-proto server CPU | least peer server CPU |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    local ceil runs ours_m atftp_m best k st m pct1 pct2 ours_c least_c c
    for set in ${SETS//,/ }; do
      ceil=${CEIL[$mode|$set]:-}
      runs=${CEIL_RUNS[$mode|$set]:-}
      IFS='|' read -r st ours_m ours_c _ <<<"${RES[$mode|ours|ours|$set]:-|}"
      [ "$st" = ok ] || { ours_m=-; ours_c=-; }
      IFS='|' read -r st atftp_m _ <<<"${RES[$mode|ours|atftp|$set]:-|}"
      [ "$st" = ok ] || atftp_m=-
      best="-"
      least_c="-"
      for k in "${!RES[@]}"; do
        [[ $k == "$mode|"*"|$set" ]] || continue
        [[ $k == "$mode|ours|"* || $k == "$mode|"*"|ours|$set" ]] && continue
        IFS='|' read -r st m c _ <<<"${RES[$k]}"
        [ "$st" = ok ] || continue
        if [ "$c" != "" ] && [ "$c" != "-" ] && { [ "$least_c" = "-" ] || awk -v a="$c" -v b="${least_c%% *}" 'BEGIN { exit !(a < b) }'; }; then
          least_c="$c ($(sname "$(cut -d'|' -f2 <<<"$k")"))"
        fi
        local pair
        pair="$(cname "$(cut -d'|' -f3 <<<"$k")") <- $(sname "$(cut -d'|' -f2 <<<"$k")")"
        if [ "$best" = "-" ] || awk -v a="$m" -v b="${best%% *}" 'BEGIN { exit !(a > b) }'; then
          best="$m ($pair)"
        fi
      done
      pct1=$(awk -v a="$ours_m" -v c="$ceil" 'BEGIN { if (a == "-" || c == "" || c == 0) print "-"; else printf "%.0f%%", 100 * a / c }')
      pct2=$(awk -v a="$atftp_m" -v c="$ceil" 'BEGIN { if (a == "-" || c == "" || c == 0) print "-"; else printf "%.0f%%", 100 * a / c }')
      echo "| $set | ${ceil:--} (${runs% }) | $ours_m | $pct1 | $atftp_m | $pct2 | $best | ${CEIL_CPU[$mode|$set]:--} | $ours_c | $least_c |"
    done
  fi
}

report() {
  echo "## tftp-proto vs Debian TFTP peers: downloads on loopback, tmpfs to tmpfs"
  echo
  echo "- $(date -u '+%F %T UTC'), $(uname -sr), $(nproc --all) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"
  echo "- tftp-proto $("$BIN" --version 2>/dev/null | awk '{print $2}') (release; source digest $SRC_DIGEST = sha256 of Cargo.toml and src/, newest file $SRC_NEWEST); peers: $(peers_versions 2>/dev/null | awk '{printf "%s %s; ", $1, $2}')"
  echo "- file: $((BYTES >> 20)) MiB random (512x1 and 1468x1: $((LOCKSTEP_BYTES >> 20)) MiB); every download verified with cmp"
  echo "- load averages (1/5/15 min): start $LOAD_START, end $(loadavg); per row: load1 at the start of the transfer (includes this benchmark's own previous transfers) / CPUs busy with other work during it"
  echo "- MB/s = 10^6 bytes/s; CPU = user+sys seconds per GiB moved (server: $(cpu_method); client: /usr/bin/time)"
  echo "- command: bash benches/peers.sh $ARGS"
  local m
  for m in ${MODES//,/ }; do report_mode "$m"; done
  echo
}

# ---- main ---------------------------------------------------------------------------------------

ARGS="--bytes $BYTES --lockstep-bytes $LOCKSTEP_BYTES --sets $SETS --servers $SERVERS --clients $CLIENTS"
[ "$MODES" = pinned ] || ARGS+=" --modes $MODES"
[ "$REPEAT" = 1 ] || ARGS+=" --repeat $REPEAT"
[ "$CEILING" = 1 ] || ARGS+=" --no-ceiling"
LOAD_START=$(loadavg)
start_servers

for mode in ${MODES//,/ }; do
  case $mode in pinned|same) ;; *) die "unknown mode $mode (pinned|same)" ;; esac
  for set in ${SETS//,/ }; do
    [ "$CEILING" = 1 ] && run_ceiling "$mode" "$set"
    for s in ours hpa atftpd dnsmasq; do
      has "$SERVERS" "$s" || continue
      for c in atftp ours; do run_one "$mode" "$s" "$c" "$set"; done
    done
    srv=hpa
    [ "${set#*x}" = 1 ] || srv=atftpd
    for c in ours hpa atftp busybox curl; do
      has "$CLIENTS" "$c" || continue
      run_one "$mode" "$srv" "$c" "$set"
    done
  done
done

mkdir -p "$(dirname "$OUT")"
report | tee "$OUT"
log "report written to $OUT"
