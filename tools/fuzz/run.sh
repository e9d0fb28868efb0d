#!/usr/bin/env bash
# Fuzzes the RESP request decoder and the destination parser with libFuzzer (QUALITY.md R5).
#
#   tools/fuzz/run.sh [RUNS] [-- extra libFuzzer flags]      (default: 10,000,000 runs)
#
# Builds tools/fuzz (a package of its own) with -sanitize=fuzzer,address, then runs it on a working copy
# of tools/fuzz/corpus. Every input is decoded all at once and in chunks; the two must agree. libFuzzer
# prints its progress; a crash leaves a crash-* file in the current directory and exits non-zero.
set -euo pipefail
cd "$(dirname "$0")"
runs=${1:-10000000}
shift || true
[ "${1:-}" = "--" ] && shift
scratch=${OTPD_FUZZ_BUILD:-/var/tmp/otpd-fuzz-build}
swift build -c release -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library --scratch-path "$scratch"
work=$(mktemp -d /var/tmp/otpd-fuzz-corpus-XXXXXX)
cp corpus/* "$work/"
echo "fuzzing $runs inputs; corpus in $work"
# Inputs up to 512 bytes: the limits are 64 bytes, so longer inputs only repeat requests, and feeding them a
# byte at a time re-parses the incomplete request on every byte.
"$scratch/release/RESPFuzzer" -runs="$runs" -max_len=512 -print_final_stats=1 "$@" "$work"
