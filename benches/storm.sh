#!/usr/bin/env bash
# benches/storm.sh — a boot storm: N clients fetch the same file at once from tftp-proto's server,
# tftpd-hpa and dnsmasq, in the same run and with the same client (`tftp-proto get`), on loopback.
#
#   bash benches/storm.sh [--quick] [--rounds R] [--sets "N:BYTES:BLKSIZE:WINDOWSIZE ..."] [--servers "ours hpa dnsmasq"]
#
# Default sets (the server-scale issue's): 256 x 16 MiB at 1468x1, 2000 x 1 MiB at 512x1,
# 64 x 16 MiB at 8192x16. --quick divides every count by 8 (a smoke run). --rounds R (default
# 1) runs every set R times over, the servers' order reversed every other round (a shared
# machine's speed drifts by tens of percent over minutes), and ends each set with a row per
# server of its median MB/s over the rounds where every client got the whole file, and a row of
# each server's median against tftpd-hpa's.
#
# For each set and server it prints:
#   MB/s          N x BYTES / wall seconds from the first client's start to the last one's exit
#   server CPU    the server's CPU seconds per GiB moved, its children included: tftpd-hpa forks a
#                 process per transfer and lets them be reaped automatically, so the server runs in
#                 a cgroup of its own (v2 cpu.stat or v1 cpuacct.usage, root); without one, /proc/PID/stat (then
#                 tftpd-hpa's children are missed, and the table says "n/a")
#   machine CPU   the whole machine's busy seconds (/proc/stat) over the storm, clients included:
#                 what the storm cost, whoever spent it
#   memory/session  (the server's peak resident memory during the storm, sampled once a second, - before it) / N, in KiB;
#                 for tftpd-hpa the sum over its process group (one process per transfer)
#   ok            clients whose file arrived whole (compared with cmp)
# Our server runs with its defaults (one event loop per CPU), --max-sessions 4096, and OURS_ARGS
# (e.g. OURS_ARGS="--threads 1"); the server "ours-steered" (not in the default list) is the
# same with --steer-by-cpu, e.g. --servers "ours ours-steered hpa". dnsmasq needs
# root and a free 127.0.0.1:69; tftpd-hpa and dnsmasq come from `bash tests/interop/peers.sh
# peers_install`. Numbers depend on what else runs: compare the servers within one run.
set -euo pipefail
cd "$(dirname "$0")/.."

SETS="256:16777216:1468:1 2000:1048576:512:1 64:16777216:8192:16"
SERVERS="ours hpa dnsmasq"
DIV=1
ROUNDS=1
while [ $# -gt 0 ]; do
  case $1 in
    --quick) DIV=8 ;;
    --sets) SETS=$2; shift ;;
    --servers) SERVERS=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

PEERS_TASKSET=${PEERS_TASKSET:-}
PEERS_SERVER_TASKSET=${PEERS_SERVER_TASKSET:-}
# shellcheck source=../tests/interop/peers.sh
source tests/interop/peers.sh
# shellcheck source=storm_common.sh
source benches/storm_common.sh
cargo build --release --quiet --features cli
BIN=${CARGO_TARGET_DIR:-target}/release/tftp-proto
ulimit -n 65536 2>/dev/null || true

work=$(mktemp -d /dev/shm/tftp-storm.XXXXXX)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && server_stop "$server_pid" >/dev/null 2>&1 || true
  rm -rf "$work"
  [ -n "$CG" ] && rmdir "$CG" 2>/dev/null || true
}
trap cleanup EXIT
mkdir -p "$work/root"

CG='' CG_KIND=''
if [ -f /sys/fs/cgroup/cgroup.controllers ] && [ -w /sys/fs/cgroup ]; then
  CG=/sys/fs/cgroup/tftp-proto-storm-$$ CG_KIND=v2
elif [ -f /sys/fs/cgroup/cpuacct/cpuacct.usage ] && [ -w /sys/fs/cgroup/cpuacct ]; then
  CG=/sys/fs/cgroup/cpuacct/tftp-proto-storm-$$ CG_KIND=v1
fi
# Puts the server in a cgroup of its own (when there is one); prints its CPU microseconds so far.
cg_join() { [ -n "$CG" ] && mkdir -p "$CG" && echo "$1" >"$CG/cgroup.procs" 2>/dev/null || CG=''; }
server_usec() {
  if [ "$CG_KIND" = v2 ] && [ -n "$CG" ]; then
    awk '$1 == "usage_usec" { print $2 }' "$CG/cpu.stat"
  elif [ -n "$CG" ]; then
    awk '{ print $1 / 1000 }' "$CG/cpuacct.usage"
  else
    awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15 + $16 + $17) * 1e6 / hz }' "/proc/$1/stat" 2>/dev/null || echo 0
  fi
}
HZ=$(getconf CLK_TCK)

echo "# Boot storm on loopback, $(nproc) CPUs, $(date -u '+%Y-%m-%d %H:%M UTC'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| set | server | ok | MB/s | server CPU s/GiB | machine CPU s | memory/session KiB |"
echo "|---|---|---|---|---|---|---|"
for set in $SETS; do
  IFS=: read -r n bytes blk win <<<"$set"
  n=$(((n + DIV - 1) / DIV))
  file="f$bytes"
  [ -f "$work/root/$file" ] || head -c "$bytes" /dev/urandom >"$work/root/$file"
  : >"$work/rates"
  order=$SERVERS
  for round in $(seq "$ROUNDS"); do
    if [ "$round" -gt 1 ]; then
      # Reverse the order each round: the same server does not always go first.
      order=$(echo "$order" | tr ' ' '\n' | tac | tr '\n' ' ')
    fi
    for server in $order; do
      case $server in
        ours | ours-steered)
          port=$((19000 + RANDOM % 1000))
          extra=()
          [ "$server" = ours-steered ] && extra=(--steer-by-cpu)
          # shellcheck disable=SC2086 # OURS_ARGS: extra serve arguments, word-split on purpose
          setsid "$BIN" serve --root "$work/root" --bind "127.0.0.1:$port" --max-sessions 4096 "${extra[@]}" ${OURS_ARGS:-} \
            </dev/null 2>"$work/ours.log" &
          server_pid=$!
          _peers_wait_udp 127.0.0.1 "$port" ;;
        hpa)
          port=$((20000 + RANDOM % 1000))
          server_pid=$(server_start hpa "$work/root" "$port") ;;
        dnsmasq)
          port=69
          server_pid=$(server_start dnsmasq "$work/root" 69) || { echo "| ${n}x$bytes ${blk}x$win | dnsmasq | (cannot start: root and a free port 69) | | | | |"; server_pid=; continue; } ;;
      esac
      cg_join "$server_pid"
      storm_begin "$server_pid"
      for i in $(seq "$n"); do
        timeout 600 "$BIN" get -q --blksize "$blk" --windowsize "$win" "127.0.0.1:$port" "$file" - \
          >"$work/out$i" 2>"$work/err$i" &
        pids+=($!)
      done
      rss_sampler_start "$server_pid" "$rss0" "$work/peak"
      for p in "${pids[@]}"; do wait "$p" || true; done
      end=$(date +%s.%N)
      rss_sampler_stop
      peak=$RSS_PEAK
      busy1=$(busy_jiffies)
      sleep 0.5 # tftpd-hpa's last children exit
      cpu1=$(server_usec "$server_pid")
      ok=0
      for i in $(seq "$n"); do
        if cmp -s "$work/root/$file" "$work/out$i"; then
          ok=$((ok + 1))
        else
          { head -c 200 "$work/err$i"; echo; } | head -1 >>"$work/failures" || true # (head may close the pipe first)
        fi
        rm -f "$work/out$i" "$work/err$i"
      done
      if [ -s "$work/failures" ]; then
        # Why clients failed, most frequent first (on stderr, after the table row).
        sed 's/[0-9][0-9.]*/N/g' "$work/failures" | sort | uniq -c | sort -rn | head -5 | sed "s/^/  $server failures: /" >&2 || true
        rm -f "$work/failures"
      fi
      server_stop "$server_pid" >/dev/null 2>&1 || true
      server_pid=
      if [ "$server" = ours-steered ] && grep -q -- '--steer-by-cpu is off' "$work/ours.log"; then
        echo "  ours-steered: steering was off on this machine (see serve --steer-by-cpu); the row is ours at its defaults, pinned" >&2
      fi
      storm_row
    done
  done
  if [ "$ROUNDS" -gt 1 ]; then
    # Per server: the median MB/s over the rounds; then each against tftpd-hpa's median.
    awk -F'|' -v set="${n}x$bytes ${blk}x$win" -f benches/storm_medians.awk "$work/rates"
  fi
done
