#!/usr/bin/env bash
# benches/tokio.sh — the tokio adapter against the blocking one, in the same run: downloads of
# one file on loopback (tmpfs to tmpfs), server pinned to CPU 0 and client to CPU 1, for the
# tftp-proto server and client on the std adapter (`--runtime std`: the mio server and the
# blocking client) and on tokio (`--runtime tokio`), interleaved, REPEAT times each; prints the
# median MB/s of each and the ratio tokio/std per option set. Every download is compared with
# `cmp`.
#
#   bash benches/tokio.sh [BYTES] [REPEAT] [SETS]
#
# BYTES (default 268435456 = 256 MiB), REPEAT (default 5), SETS (default "1468x16 65464x1").
# Needs 2+ CPUs, taskset, cmp. MB/s = 10^6 bytes per wall second of the client process.
set -euo pipefail
cd "$(dirname "$0")/.."

BYTES=${1:-268435456}
REPEAT=${2:-5}
SETS=${3:-"1468x16 65464x1"}
cargo build --release --quiet --features cli,tokio
BIN=${CARGO_TARGET_DIR:-target}/release/tftp-proto
DIR=$(mktemp -d /dev/shm/tftp-tokio-bench.XXXXXX)
trap 'pkill -f "$DIR/srv" 2>/dev/null || true; rm -rf "$DIR"' EXIT
mkdir -p "$DIR/srv" "$DIR/out"
head -c "$BYTES" /dev/urandom >"$DIR/srv/big.bin"

port=17400
serve() { # RUNTIME -> starts a server, echoes its port
    port=$((port + 1))
    taskset -c 0 "$BIN" serve --runtime "$1" --threads 1 --root "$DIR/srv" --bind "127.0.0.1:$port" \
        --max-windowsize 64 2>"$DIR/serve-$1.log" &
    sleep 0.3
}

median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

echo "tokio vs std adapters: $BYTES bytes, $REPEAT runs each, server CPU 0, client CPU 1, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '| set | std server + client MB/s | tokio server + client MB/s | tokio / std |\n|---|---|---|---|\n'
for set in $SETS; do
    blk=${set%x*}
    win=${set#*x}
    declare -A runs=([std]="" [tokio]="")
    for rt in std tokio; do
        serve "$rt"
        eval "port_$rt=$port"
    done
    for _ in $(seq "$REPEAT"); do
        for rt in std tokio; do
            p=$(eval echo "\$port_$rt")
            s=$(date +%s.%N)
            taskset -c 1 timeout 120 "$BIN" get -q --runtime "$rt" --blksize "$blk" --windowsize "$win" \
                "127.0.0.1:$p" big.bin "$DIR/out/big.bin"
            e=$(date +%s.%N)
            cmp -s "$DIR/srv/big.bin" "$DIR/out/big.bin" || { echo "CORRUPT: $rt $set" >&2; exit 1; }
            rm -f "$DIR/out/big.bin"
            runs[$rt]+="$(echo "$BYTES / ($e - $s) / 1000000" | bc -l) "
        done
    done
    pkill -f "$DIR/srv" || true
    sleep 0.3
    std=$(echo "${runs[std]}" | tr ' ' '\n' | grep . | median)
    tok=$(echo "${runs[tokio]}" | tr ' ' '\n' | grep . | median)
    printf '| %s | %.1f | %.1f | %.2f |\n' "$set" "$std" "$tok" "$(echo "$tok / $std" | bc -l)"
done
