#!/usr/bin/env bash
# benches/device_storm.sh — the boot storm of benches/storm.sh on a machine with nothing
# installed: our server (default settings: one event loop per CPU) and tftpd-hpa (a process per
# transfer, from the bundle's own libraries), the same client for both (`tftp-proto get`, one
# process per client, its output compared byte for byte), on loopback.
#
#   bash BUNDLE/device_storm.sh BUNDLE [SETS] [ROUNDS]
#
# BUNDLE comes from benches/device_bundle.sh. SETS: "N:BYTES:BLKSIZE:WINDOWSIZE ..." (default:
# 512 x 16 MiB at 1468x1, 3000 x 1 MiB at 512x1, 64 x 16 MiB at 8192x16). Prints a Markdown
# table: aggregate MB/s, the server's CPU seconds per GiB (its cgroup when one can be made,
# else /proc: then tftpd-hpa's children are missed and it says n/a), the whole machine's busy
# CPU seconds over the storm (clients included), the server's memory growth per session, and
# how many downloads arrived whole. ROUNDS (default 1) repeats every set, the servers' order
# reversed every other round, and ends each set with the medians (benches/storm_medians.awk).
# OURS_ARGS: more arguments for our server (e.g. OURS_ARGS=--pin-threads). SERVERS (default
# "ours ours-steered hpa"): which servers run; "ours-steered" is ours with --steer-by-cpu.
set -uo pipefail
bundle=$(cd "${1:?bundle dir}" && pwd)
SETS=${2:-"512:16777216:1468:1 3000:1048576:512:1 64:16777216:8192:16"}
ROUNDS=${3:-1}
BIN=$bundle/tftp-proto
HPA=$bundle/hpa
LDSO=$(ls "$HPA"/ld-linux*.so* | head -1)
ulimit -n 1048576 2>/dev/null || ulimit -n 65536 2>/dev/null || true
work=$(mktemp -d /dev/shm/tftp-storm.XXXXXX)
server_pid=
CG='' CG_KIND=''
cleanup() {
  [ -n "$server_pid" ] && kill -KILL -- "-$server_pid" 2>/dev/null
  rm -rf "$work"
  [ -n "$CG" ] && rmdir "$CG" 2>/dev/null
}
trap cleanup EXIT
mkdir -p "$work/root"
if [ -f /sys/fs/cgroup/cgroup.controllers ] && mkdir /sys/fs/cgroup/tftp-storm-$$ 2>/dev/null; then
  CG=/sys/fs/cgroup/tftp-storm-$$ CG_KIND=v2
fi
server_usec() {
  if [ -n "$CG" ]; then
    awk '$1 == "usage_usec" { print $2 }' "$CG/cpu.stat"
  else
    awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15 + $16 + $17) * 1e6 / hz }' "/proc/$1/stat" 2>/dev/null || echo 0
  fi
}
# shellcheck source=storm_common.sh
source "$bundle/storm_common.sh"
# Waits for a UDP socket bound to 127.0.0.1:PORT (from /proc/net/udp: no ss needed).
wait_udp() {
  local want
  want=$(printf '0100007F:%04X' "$1")
  for _ in $(seq 50); do
    awk '{print $2}' /proc/net/udp | grep -qx "$want" && return 0
    sleep 0.1
  done
  return 1
}
stop() {
  kill -TERM -- "-$1" 2>/dev/null
  for _ in $(seq 30); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$1" 2>/dev/null
  wait "$1" 2>/dev/null
}
HZ=$(getconf CLK_TCK)
echo "# Boot storm on loopback, $(nproc) CPUs, $(uname -r), $(date -u '+%Y-%m-%d %H:%M UTC'), load $(cut -d' ' -f1-3 /proc/loadavg), cgroup: ${CG_KIND:-none}, user $(id -un)"
echo
echo "| set | server | ok | MB/s | server CPU s/GiB | machine CPU s | memory/session KiB |"
echo "|---|---|---|---|---|---|---|"
for set in $SETS; do
  IFS=: read -r n bytes blk win <<<"$set"
  file="f$bytes"
  [ -f "$work/root/$file" ] || head -c "$bytes" /dev/urandom >"$work/root/$file"
  : >"$work/rates"
  order=${SERVERS:-ours ours-steered hpa}
  for round in $(seq "$ROUNDS"); do
    [ "$round" -gt 1 ] && order=$(echo "$order" | tr ' ' '\n' | tac | tr '\n' ' ')
    for server in $order; do
      port=$((19000 + RANDOM % 2000))
      case $server in
        ours | ours-steered)
          extra=()
          [ "$server" = ours-steered ] && extra=(--steer-by-cpu)
          # shellcheck disable=SC2086 # OURS_ARGS: extra serve arguments, word-split on purpose
          setsid "$BIN" serve --root "$work/root" --bind "127.0.0.1:$port" --max-sessions 8192 "${extra[@]}" ${OURS_ARGS:-} \
            </dev/null 2>"$work/$server.log" &
          server_pid=$! ;;
        hpa)
          setsid "$LDSO" --library-path "$HPA" "$HPA/in.tftpd" -L -a "127.0.0.1:$port" -s -c -p \
            -u "$(id -un)" -U 022 "$work/root" </dev/null >"$work/hpa.log" 2>&1 &
          server_pid=$! ;;
      esac
      if ! wait_udp "$port"; then
        echo "| ${n}x$bytes ${blk}x$win | $server | (did not start: $(tail -c 300 "$work/$server.log" | tr '\n' ' ')) | | | | |"
        stop "$server_pid"; server_pid=; continue
      fi
      [ -n "$CG" ] && echo "$server_pid" >"$CG/cgroup.procs" 2>/dev/null
      storm_begin "$server_pid"
      for i in $(seq "$n"); do
        ( timeout 600 "$BIN" get -q --blksize "$blk" --windowsize "$win" "127.0.0.1:$port" "$file" - 2>/dev/null \
            | cmp -s - "$work/root/$file" && : >"$work/ok$i" ) &
        pids+=($!)
      done
      rss_sampler_start "$server_pid" "$rss0" "$work/peak"
      for p in "${pids[@]}"; do wait "$p"; done
      end=$(date +%s.%N)
      rss_sampler_stop
      peak=$RSS_PEAK
      busy1=$(busy_jiffies)
      sleep 0.5
      cpu1=$(server_usec "$server_pid")
      ok=$(ls "$work" | grep -c '^ok' || true)
      rm -f "$work"/ok*
      stop "$server_pid"; server_pid=
      if [ "$server" = ours-steered ] && grep -q -- '--steer-by-cpu is off' "$work/$server.log"; then
        echo "  ours-steered: steering was off on this machine (see serve --steer-by-cpu); the row is ours at its defaults, pinned" >&2
      fi
      storm_row
    done
  done
  if [ "$ROUNDS" -gt 1 ]; then
    awk -F'|' -v set="${n}x$bytes ${blk}x$win" -f "$bundle/storm_medians.awk" "$work/rates"
  fi
done
