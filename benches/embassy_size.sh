#!/usr/bin/env bash
# The embassy-net client's code size on a Cortex-M4F (thumbv7em-none-eabihf), next to the
# stack it runs on: examples/embassy_fetch.rs built three times, with the boot client
# (`EmbassyClient::boot_into`), with the engine (`get_into`), and with a plain UDP exchange on
# the same stack and socket in their place (the baseline). A client's share is its build's
# .text + .rodata minus the baseline's. The target's profile is .cargo/config.toml's (opt-level
# z, one codegen unit, fat LTO).
#
# Fails when `boot_into`'s share exceeds EMBASSY_BOOT_BUDGET bytes (default 5120: the boot
# client's own 3,598 B gate plus its async glue), so CI keeps the firmware download small.
#
# Usage: bash benches/embassy_size.sh
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
target=thumbv7em-none-eabihf
features=embassy-net
elf=${CARGO_TARGET_DIR:-target}/$target/release/examples/embassy_fetch
size_of() {
    EMBASSY_FETCH_VARIANT=$1 cargo build -q --release --example embassy_fetch --target "$target" \
        --no-default-features --features "$features"
    size -A "$elf" | awk '$1 == ".text" || $1 == ".rodata" { s += $2 } END { print s + 0 }'
}
baseline=$(size_of baseline)
boot=$(size_of boot)
engine=$(size_of engine)
if [ "$baseline" -eq 0 ] || [ "$boot" -le "$baseline" ] || [ "$engine" -le "$baseline" ]; then
    echo "embassy_size: could not measure (baseline $baseline, boot $boot, engine $engine)" >&2
    exit 1
fi
echo "features: $features (rustc $(rustc --version | cut -d' ' -f2))"
printf '%-44s %8s\n' "build (.text + .rodata)" bytes
printf '%-44s %8d\n' "embassy-net stack + one UDP exchange" "$baseline"
printf '%-44s %8d  (client: %d)\n' "with EmbassyClient::boot_into (BootClient)" "$boot" $((boot - baseline))
printf '%-44s %8d  (client: %d)\n' "with EmbassyClient::get_into (engine)" "$engine" $((engine - baseline))
budget=${EMBASSY_BOOT_BUDGET:-5120}
if [ $((boot - baseline)) -gt "$budget" ]; then
    echo "embassy_size: boot_into's share $((boot - baseline)) B is over its budget of $budget B" >&2
    exit 1
fi
