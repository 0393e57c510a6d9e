#!/usr/bin/env bash
# benches/concurrency.sh — 1,000 concurrent 1 MiB downloads from one server process on loopback
# (tests/concurrency.rs, #[ignore]d): every download byte-identical, the peak number of concurrent
# sessions, the server's peak memory and its memory per session.
#
#   bash benches/concurrency.sh [CLIENTS] [BLKSIZE] [THREADS] [FILE_LEN] [SERVE_ARGS]
#
# CLIENTS (default 1000), BLKSIZE (default: none requested, i.e. 512; "" for the default) and
# THREADS (the CLI server's --threads, default 1) and FILE_LEN (default 1 MiB) become TFTP_CONCURRENCY,
# TFTP_CONCURRENCY_BLKSIZE, TFTP_CONCURRENCY_THREADS and TFTP_CONCURRENCY_FILE_LEN; SERVE_ARGS (e.g. "--runtime tokio":
# the tokio server) becomes TFTP_CONCURRENCY_SERVE_ARGS. Runs the two tests one after the other in release mode and
# prints their report lines ("library server: ..." and "cli server ...: ... memory per session").
# The load averages are printed before and after: the numbers depend on what else runs.
set -euo pipefail
cd "$(dirname "$0")/.."

export TFTP_CONCURRENCY=${1:-1000}
if [ -n "${2:-}" ]; then export TFTP_CONCURRENCY_BLKSIZE=$2; fi
if [ -n "${3:-}" ]; then export TFTP_CONCURRENCY_THREADS=$3; fi
if [ -n "${4:-}" ]; then export TFTP_CONCURRENCY_FILE_LEN=$4; fi
if [ -n "${5:-}" ]; then export TFTP_CONCURRENCY_SERVE_ARGS=$5; fi
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
timeout 1800 cargo test --release --all-features --test concurrency -- --ignored --nocapture --test-threads=1
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
