#!/usr/bin/env bash
# Regenerates the named seed inputs of the hardening fuzz targets: fuzz/corpus/options/ (raw
# layout, written here byte for byte with printf, see fuzz_targets/options.rs), and the starting
# seeds of fuzz/corpus/session/ and fuzz/corpus/server_table/ (structured by `arbitrary`: the
# empty input is a plain exchange, resp. an empty run; the others are small byte patterns the
# fuzzer grows from). Run from anywhere:
#
#     bash fuzz/seed_hardening.sh
#
# Only files named here are (re)written; anything else in those folders is left alone.
set -euo pipefail

cd "$(dirname "$0")"
O=corpus/options
S=corpus/session
T=corpus/server_table
mkdir -p "$O" "$S" "$T"

# opt NAME FLAGS MAX_BLKSIZE MAX_WINDOWSIZE FILE_SIZE MAX_WRITE REQUEST_OPTIONS OACK_OPTIONS
# FLAGS: 1 write, 2 allow_timeout, 4 allow_tsize, 8 allow_rollover, 16 file size known,
# 32 write limit. Sizes are decimal; options are printf formats of name\0value\0 pairs.
opt() {
    local name=$1 flags=$2 mb=$3 mw=$4 fsize=$5 mwrite=$6 req=$7 oack=$8
    {
        printf "\\$(printf '%03o' "$flags")"
        printf "\\$(printf '%03o' $((mb >> 8)))\\$(printf '%03o' $((mb & 255)))"
        printf "\\$(printf '%03o' $((mw >> 8)))\\$(printf '%03o' $((mw & 255)))"
        local v i
        for v in "$fsize" "$mwrite"; do
            for i in 56 48 40 32 24 16 8 0; do
                printf "\\$(printf '%03o' $(((v >> i) & 255)))"
            done
        done
        # shellcheck disable=SC2059
        printf "$req"
        printf '\377'
        # shellcheck disable=SC2059
        printf "$oack"
    } >"$O/$name"
}

ALL=30 # allow timeout, tsize, rollover; file size known
opt read_all_options $ALL 1468 64 1234 0 \
    'blksize\0009000\000tsize\0000\000windowsize\000256\000timeout\0005\000rollover\0001\000' \
    'blksize\0001468\000tsize\0001234\000windowsize\00064\000timeout\0005\000rollover\0001\000'
opt read_no_options $ALL 65464 64 0 0 '' ''
opt read_tiny_blksize_all_options $ALL 65464 65535 18446744073709551615 0 \
    'blksize\0008\000timeout\000255\000tsize\0000\000windowsize\00065535\000rollover\0000\000' \
    'blksize\0008\000timeout\000255\000tsize\00018446744073709551615\000windowsize\00065535\000rollover\0000\000'
opt write_over_limit $((1 + 4 + 32)) 65464 64 0 1000 'tsize\00099999\000' 'tsize\00099999\000'
opt write_at_limit $((1 + 4 + 32)) 65464 64 0 1000 'tsize\0001000\000blksize\000512\000' 'tsize\0001000\000'
opt policy_caps_below_minimum $ALL 0 0 10 0 'blksize\0001024\000windowsize\0008\000' 'blksize\0008\000windowsize\0001\000'
opt oack_omits_small_blksize $ALL 65464 64 600 0 'blksize\0008\000tsize\0000\000' 'tsize\000600\000'
opt oack_lookalike_xblksizex $ALL 65464 64 10 0 'blksize\0008\000' 'xblksizex\0008\000'
opt oack_raises_blksize $ALL 65464 64 10 0 'blksize\000512\000' 'blksize\0001024\000'
opt oack_raises_windowsize $ALL 65464 64 10 0 'windowsize\0004\000' 'windowsize\0005\000'
opt oack_changes_timeout $ALL 65464 64 10 0 'timeout\0003\000' 'timeout\0004\000'
opt oack_unrequested_tsize $ALL 65464 64 10 0 'blksize\000512\000' 'tsize\00010\000'
opt oack_duplicate_blksize $ALL 65464 64 10 0 'blksize\000512\000' 'blksize\000512\000BLKSIZE\000256\000'
opt oack_missing_nul $ALL 65464 64 10 0 'blksize\000512\000' 'blksize\000512'
opt oack_reordered_mixed_case $ALL 65464 64 5000 0 \
    'blksize\0001024\000windowsize\0008\000tsize\0000\000timeout\0003\000' \
    'TIMEOUT\0003\000windowsize\0004\000Tsize\0005000\000blksize\000700\000'
opt request_malformed_values $ALL 65464 64 10 0 \
    'blksize\0007\000windowsize\0000\000timeout\000256\000tsize\000-1\000rollover\0002\000' ''
opt request_huge_values $ALL 65464 64 10 0 \
    'blksize\00099999999999999999999999\000windowsize\00018446744073709551616\000' ''
opt request_duplicates $ALL 65464 64 10 0 'blksize\000512\000blksize\0001024\000tsize\0000\000tsize\0005\000' ''

# Structured targets: the empty input, and a few byte patterns to grow from.
: >"$S/empty_plain_read"
printf '\001\000\001\000\002\001\004\001\000\001\003\000\100\007' >"$S/write_with_options"
printf '\000\001\001\000\010\001\002\001\001\000\001\002\000\040\011\000\000\000\000\001' >"$S/netascii_read_steps"
head -c 64 /dev/zero | tr '\0' '\125' >"$S/pattern_55"
: >"$T/empty"
printf '\000\000\000\000\000\000\001\000\000\000\000\001\000\000\000\000' >"$T/one_datagram"
head -c 96 /dev/zero | tr '\0' '\052' >"$T/pattern_2a"
