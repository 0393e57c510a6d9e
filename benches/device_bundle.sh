#!/usr/bin/env bash
# benches/device_bundle.sh — packs what benches/device_storm.sh needs on a machine with no
# compiler and no package registry (the `device` machine of the project's tooling: a 16-core
# Ubuntu host): our release binary, and tftpd-hpa's in.tftpd with every shared library it
# loads and the dynamic loader (it runs as `ld.so --library-path DIR in.tftpd`).
#
#   bash benches/device_bundle.sh [OUT]      (default target/device-bundle)
#
# tftpd-hpa comes from `bash tests/interop/peers.sh peers_install`.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/device-bundle}
cargo build --release --quiet --features cli
rm -rf "$out"
mkdir -p "$out/hpa"
cp target/release/tftp-proto "$out/"
# The flood benchmark's binary (run it with TFTP_PROTO_BIN=BUNDLE/tftp-proto).
flood=$(cargo bench --features cli --bench flood --no-run --message-format=json 2>/dev/null \
  | sed -n 's/.*"executable":"\([^"]*flood[^"]*\)".*/\1/p' | tail -1)
[ -n "$flood" ] && cp "$flood" "$out/flood"
cp benches/device_storm.sh benches/storm_common.sh benches/storm_medians.awk "$out/"
tftpd=$(command -v in.tftpd || echo /usr/sbin/in.tftpd)
cp "$tftpd" "$out/hpa/in.tftpd"
ldd "$tftpd" | awk '/=> \// { print $3 } /^\t\/.*ld-linux/ { print $1 }' | while read -r lib; do
  cp -L "$lib" "$out/hpa/"
done
du -sh "$out"
