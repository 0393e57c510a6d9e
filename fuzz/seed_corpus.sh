#!/usr/bin/env bash
# Regenerates the named seed inputs of fuzz/corpus/parse/ and fuzz/corpus/netascii/.
#
# Every seed is one datagram (parse) or one structured input (netascii), written with printf
# so the files are byte-for-byte reproducible. Seeds cover the "Bad input" list of
# PROTOCOL.md plus one valid packet of each type. Run from anywhere:
#
#     bash fuzz/seed_corpus.sh
#
# Only files named here are (re)written; anything else in the corpus folders is left alone.
set -euo pipefail

cd "$(dirname "$0")"
P=corpus/parse
N=corpus/netascii
mkdir -p "$P" "$N"

# seed NAME PRINTF-FORMAT [ARGS...]: writes one parse seed.
seed() {
    local name=$1
    shift
    # shellcheck disable=SC2059
    printf "$@" >"$P/$name"
}

# repeat N CHAR: N copies of CHAR.
repeat() {
    head -c "$1" /dev/zero | tr '\0' "$2"
}

# ---- valid packets, one per type --------------------------------------------------------
seed valid_rrq '\0\001pxelinux.0\0octet\0'
seed valid_rrq_options '\0\001pxelinux.0\0octet\0blksize\0001468\0tsize\0000\0timeout\0005\0windowsize\00016\0'
seed valid_rrq_netascii_mixed_case '\0\001file.txt\0NetAscii\0'
seed valid_wrq '\0\002upload.bin\0octet\0tsize\00012345\0'
seed valid_data '\0\003\0\001hello, world\n'
seed valid_data_empty '\0\003\377\377'
seed valid_ack '\0\004\0\001'
seed valid_error '\0\005\0\001File not found\0'
seed valid_oack '\0\006blksize\0001468\0tsize\0001048576\0'
seed valid_oack_empty '\0\006'

# ---- ERROR packets too short, or without their NUL --------------------------------------
seed error_0_bytes ''
seed error_1_byte '\0'
seed error_2_bytes '\0\005'
seed error_3_bytes '\0\005\0'
seed error_4_bytes_no_text '\0\005\0\002'
seed error_text_without_nul '\0\005\0\002access denied'
seed error_text_with_trailing_garbage '\0\005\0\003disk full\0junk'

# ---- requests without their final NUL, or otherwise malformed ----------------------------
seed rrq_filename_without_nul '\0\001file.bin'
seed rrq_mode_without_nul '\0\001file.bin\0octet'
seed rrq_option_name_without_nul '\0\001file.bin\0octet\0blksize'
seed rrq_option_value_without_nul '\0\001file.bin\0octet\0blksize\0001024'
seed rrq_option_without_value '\0\001file.bin\0octet\0blksize\0'
seed rrq_empty_option_name '\0\001file.bin\0octet\0\0001024\0'
seed rrq_trailing_nul_padding '\0\001file.bin\0octet\0tsize\0000\0\0\0\0'
seed wrq_empty_filename_and_mode '\0\002\0\0'
seed unknown_opcode_7 '\0\007whatever\0'

# 513 bytes: one past the RFC 2347 limit.
seed rrq_513_bytes '\0\001%s\0octet\0' "$(repeat 504 f)"
# A 500-byte file name: 2 + 500 + 1 + 6 = 509 bytes, still a valid request.
seed rrq_500_byte_filename '\0\001%s\0octet\0' "$(repeat 500 n)"

# ---- option edge cases ------------------------------------------------------------------
seed rrq_tiny_blksize_8_with_options '\0\001f\0octet\0blksize\0008\0timeout\0001\0tsize\0000\0windowsize\0001\0'
seed rrq_reordered_options '\0\001f\0octet\0windowsize\0004\0tsize\0000\0BLKSIZE\000512\0timeout\0003\0'
seed rrq_duplicate_blksize '\0\001f\0octet\0blksize\0001024\0blksize\000512\0'
seed rrq_blksize_out_of_range '\0\001f\0octet\0blksize\00099999999999999999999999\0windowsize\00070000\0'
seed rrq_blksize_not_a_number '\0\001f\0octet\0blksize\0 512\0timeout\0000\0rollover\0002\0'
seed oack_xblksizex '\0\006xblksizex\0001024\0'
seed oack_missing_nuls '\0\006blksize\0001024tsize'
seed oack_blksize_too_small '\0\006blksize\0007\0'
seed oack_duplicate_tsize '\0\006tsize\0001\0tsize\0002\0'

# ---- DATA and ACK oddities --------------------------------------------------------------
seed data_600_bytes '\0\003\0\002%s' "$(repeat 596 d)"
seed data_3_bytes '\0\003\0'
seed ack_padded_with_zeros '\0\004\0\007\0\0\0\0\0\0\0\0'
seed ack_3_bytes '\0\004\0'

# ---- netascii: structured inputs ---------------------------------------------------------
# The netascii target reads its input with `arbitrary`; these seeds are just byte strings
# rich in CR, LF and NUL in various arrangements, which the fuzzer mutates from.
printf 'line one\nline two\r\nbare cr\r here\n' >"$N/text_lines"
printf '\r\n\r\0\r\r\n\n\r\0\r' >"$N/cr_lf_nul_mix"
printf '\001\000\007\000\004\000\r\r\r\n\n\n\0\0\0\rx' >"$N/small_sizes_many_cr"
printf '%s\n' "$(repeat 700 a)" "$(repeat 700 b)" >"$N/long_lines"
