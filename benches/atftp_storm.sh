#!/usr/bin/env bash
# benches/atftp_storm.sh — N concurrent atftp clients (default 200) downloading the same 1 MiB
# file at once, lock-step with 512-byte blocks, from tftp-proto's server and from tftpd-hpa in the
# same run: how many blocks the clients got out of order or twice (atftp's trace says "got wrong
# block" for each), how many the server resent, and whether every file arrived whole.
#
#   bash benches/atftp_storm.sh [CLIENTS] [BYTES] [RUNS]
#   TFTP_PROTO_BIN=/path/to/tftp-proto bash benches/atftp_storm.sh    # another build, e.g. older
#
# A client that gets a block it already has, or one past the next, was sent a block it did not
# need: a retransmission to a live peer (the client's ACK was on its way, the server was busy
# elsewhere). The goal is 0 against tftp-proto, as against tftpd-hpa (whose one-second timer
# never fires that early). Needs the interop peers (`bash tests/interop/peers.sh peers_install`,
# root). Loopback only; every client runs under `timeout`.
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${1:-200}
BYTES=${2:-1048576}
RUNS=${3:-3}

PEERS_TASKSET=${PEERS_TASKSET:-}
PEERS_SERVER_TASKSET=${PEERS_SERVER_TASKSET:-}
# shellcheck source=../tests/interop/peers.sh
source tests/interop/peers.sh
command -v atftp >/dev/null || { echo "atftp is not installed (peers.sh peers_install)" >&2; exit 1; }
# TFTP_PROTO_BIN: another build to compare (e.g. an older commit's); default: build this one.
BIN=${TFTP_PROTO_BIN:-}
if [ -z "$BIN" ]; then
  cargo build --release --quiet --features cli
  BIN=${CARGO_TARGET_DIR:-target}/release/tftp-proto
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/tftp-storm.XXXXXX")
server_pid=
cleanup() {
  [ -n "$server_pid" ] && server_stop "$server_pid" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/root"
head -c "$BYTES" /dev/urandom >"$work/root/f"
ulimit -n 65536 2>/dev/null || true

# Runs CLIENTS atftp downloads from 127.0.0.1:PORT at once; prints "ok/N wrong-blocks".
storm() {
  local port=$1 out=$2 i pids=()
  rm -rf "$out" && mkdir -p "$out"
  for i in $(seq "$CLIENTS"); do
    timeout 300 atftp --get -r f -l "$out/f$i" --trace 127.0.0.1 "$port" >"$out/log$i" 2>&1 &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i" || true; done
  local ok=0 wrong=0
  for i in $(seq "$CLIENTS"); do
    cmp -s "$work/root/f" "$out/f$i" && ok=$((ok + 1))
    wrong=$((wrong + $(grep -c 'got wrong block' "$out/log$i" || true)))
  done
  echo "$ok/$CLIENTS $wrong"
}

echo "# $CLIENTS concurrent atftp downloads of $BYTES bytes (blksize 512, lock-step), $RUNS runs; load $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| server | run | files whole | blocks clients got out of order or twice | server retransmissions (spurious) |"
echo "|---|---|---|---|---|"
for run in $(seq "$RUNS"); do
  port=$((17000 + run))
  "$BIN" serve --root "$work/root" --bind "127.0.0.1:$port" --max-sessions 4096 2>"$work/ours.log" &
  server_pid=$!
  _peers_wait_udp 127.0.0.1 "$port"
  read -r whole wrong < <(storm "$port" "$work/ours")
  kill -TERM "$server_pid" && wait "$server_pid" 2>/dev/null || true
  server_pid=
  # Older builds log no spurious= field.
  rt=$(sed -n 's/.* retransmissions=\([0-9]*\)\( spurious=\([0-9]*\)\)\{0,1\}.*/\1 \3/p' "$work/ours.log" |
    awk '{ r += $1; s += $2 } END { printf "%d (%d)", r, s }')
  echo "| tftp-proto | $run | $whole | $wrong | $rt |"

  port=$((17100 + run))
  server_pid=$(server_start hpa "$work/root" "$port")
  read -r whole wrong < <(storm "$port" "$work/hpa")
  server_stop "$server_pid" >/dev/null 2>&1 || true
  server_pid=
  echo "| tftpd-hpa | $run | $whole | $wrong | (not logged) |"
done
