#!/usr/bin/env bash
# Builds tftp-proto, serves a folder on a local port with one command and fetches a file from it
# with another, then checks the copy. Needs only cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --features cli --bin tftp-proto
bin=target/release/tftp-proto
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/root"
head -c 5000000 /dev/urandom > "$work/root/boot.img"

# 1. Serve the folder (read-only) on 127.0.0.1:6969.
"$bin" serve --root "$work/root" --bind 127.0.0.1:6969 &
server=$!
sleep 0.5

# 2. Fetch a file from it (blksize 1468, windowsize 16).
"$bin" get --blksize 1468 --windowsize 16 127.0.0.1:6969 boot.img "$work/boot.img"

cmp "$work/root/boot.img" "$work/boot.img" && echo "quickstart: fetched boot.img, byte-identical"
