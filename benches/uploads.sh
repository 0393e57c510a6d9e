#!/usr/bin/env bash
# benches/uploads.sh — uploads against downloads through the same tftp-proto server, on loopback,
# tmpfs to tmpfs, server on CPU 0 and client on CPU 1 (as benches/peers.sh).
#
#   bash benches/uploads.sh [--bytes N] [--repeat N] [--sets LIST] [--clients LIST]
#
# For each option set (default 1468x16,65464x64,1468x1) and client (default ours,atftp: the only
# clients with windowsize), uploads the test file to the server and downloads it back, --repeat
# times (default 3), alternating, and reports the median MB/s of each direction, the ratio
# put/get, and the server's CPU seconds per GiB (utime+stime of the server process). Every
# transfer is verified with cmp. A ratio near 1 means uploads are as fast as downloads.
#
# MB/s = 10^6 bytes / wall second of the client process. Needs: taskset, cmp, awk, atftp for
# the atftp rows (`bash tests/interop/peers.sh peers_install`).
set -euo pipefail
cd "$(dirname "$0")/.."

BYTES=268435456
REPEAT=3
SETS=1468x16,65464x64,1468x1
CLIENTS=ours,atftp
while [ $# -gt 0 ]; do
  case $1 in
    --bytes) BYTES=$2; shift 2 ;;
    --repeat) REPEAT=$2; shift 2 ;;
    --sets) SETS=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

cargo build --release -q --features cli
TARGET=${CARGO_TARGET_DIR:-target}
case $TARGET in /*) ;; *) TARGET=$PWD/$TARGET ;; esac
BIN=$TARGET/release/tftp-proto
WORK=$(mktemp -d /dev/shm/tftp-uploads.XXXXXX)
SRV=$WORK/srv
mkdir -p "$SRV"
head -c "$BYTES" /dev/urandom >"$WORK/src.bin"
PORT=17301
taskset -c 0 "$BIN" serve --root "$SRV" --bind "127.0.0.1:$PORT" --allow-write --allow-overwrite \
  --max-windowsize 64 >"$WORK/server.log" 2>&1 &
SPID=$!
trap 'kill -INT $SPID 2>/dev/null; wait $SPID 2>/dev/null; rm -rf "$WORK"' EXIT
sleep 0.5
kill -0 "$SPID"

ticks() { awk '{print $14 + $15}' "/proc/$SPID/stat"; }
HZ=$(getconf CLK_TCK)

# one CLIENT DIRECTION SET -> "MB/s server-s/GiB"
one() {
  local c=$1 dir=$2 set=$3 blk=${3%x*} win=${3#*x} cmd=() t0 t1 c0 c1
  case $c in
    ours)
      cmd=("$BIN" "$dir" -q --blksize "$blk")
      [ "$win" != 1 ] && cmd+=(--windowsize "$win")
      if [ "$dir" = put ]; then cmd+=("127.0.0.1:$PORT" "$WORK/src.bin" up.bin)
      else cmd+=("127.0.0.1:$PORT" up.bin "$WORK/back.bin"); fi ;;
    atftp)
      cmd=(atftp --option "blksize $blk")
      [ "$win" != 1 ] && cmd+=(--option "windowsize $win")
      if [ "$dir" = put ]; then cmd+=(--put -l "$WORK/src.bin" -r up.bin)
      else cmd+=(--get -r up.bin -l "$WORK/back.bin"); fi
      cmd+=(127.0.0.1 "$PORT") ;;
  esac
  c0=$(ticks); t0=$(date +%s%N)
  timeout 300 taskset -c 1 "${cmd[@]}" >/dev/null 2>&1 || { echo "FAILED -"; return; }
  t1=$(date +%s%N); sleep 0.3; c1=$(ticks)
  if [ "$dir" = put ]; then cmp -s "$WORK/src.bin" "$SRV/up.bin" || { echo "CORRUPT -"; return; }
  else cmp -s "$WORK/src.bin" "$WORK/back.bin" || { echo "CORRUPT -"; return; }; fi
  awk -v b="$BYTES" -v ns=$((t1 - t0)) -v t=$((c1 - c0)) -v hz="$HZ" \
    'BEGIN { printf "%.1f %.2f\n", b / (ns / 1e9) / 1e6, t / hz / (b / 2^30) }'
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR ? a[int((NR + 1) / 2)] : "-")}'; }

echo "## Uploads against downloads, tftp-proto server (CPU 0), client CPU 1"
echo
echo "- $(date -u '+%F %T UTC'), $(nproc) CPUs, file $((BYTES >> 20)) MiB, median of $REPEAT, load1 $(cut -d' ' -f1 /proc/loadavg)"
echo
echo "| set | client | put MB/s | get MB/s | put/get | server CPU s/GiB put / get |"
echo "|---|---|---|---|---|---|"
for set in ${SETS//,/ }; do
  for c in ${CLIENTS//,/ }; do
    if [ "$c" = atftp ] && ! command -v atftp >/dev/null; then echo "| $set | atftp | not installed | | | |"; continue; fi
    put=() get=() pc=() gc=() bad=
    for _ in $(seq "$REPEAT"); do
      read -r r cpu < <(one "$c" put "$set"); [[ $r =~ ^[0-9] ]] || bad=$r; put+=("$r"); pc+=("$cpu")
      read -r r cpu < <(one "$c" get "$set"); [[ $r =~ ^[0-9] ]] || bad=$r; get+=("$r"); gc+=("$cpu")
    done
    if [ -n "$bad" ]; then echo "| $set | $c | $bad | | | |"; continue; fi
    mp=$(printf '%s\n' "${put[@]}" | median); mg=$(printf '%s\n' "${get[@]}" | median)
    cp=$(printf '%s\n' "${pc[@]}" | median); cg=$(printf '%s\n' "${gc[@]}" | median)
    echo "| $set | $c | $mp | $mg | $(awk -v p="$mp" -v g="$mg" 'BEGIN { printf "%.2f", p / g }') | $cp / $cg |"
  done
done
