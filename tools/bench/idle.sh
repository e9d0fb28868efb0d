#!/usr/bin/env bash
# Idle connections (QUALITY.md P6, second half): otpd's VmRSS before and after N connections that each sent one
# PING and then stay open, as tools/bench/run measures it, alone and repeated.
#
#   tools/bench/idle.sh [CONNECTIONS] [ROUNDS]        (defaults: 10000 connections, 3 rounds)
#
# Uses the release builds (swift build -c release --product otpd / otpbench) unless OTPD_BIN / OTPBENCH_BIN are
# set. Each round starts otpd afresh, reads its RSS, opens the connections and reads it again.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-10000}
rounds=${2:-3}
export OTPD_BIN=${OTPD_BIN:-.build/release/otpd}
otpbench=${OTPBENCH_BIN:-.build/release/otpbench}
[ -x "$OTPD_BIN" ] || swift build -c release --product otpd
[ -x "$otpbench" ] || swift build -c release --product otpbench
ulimit -n $((n + 1000)) 2>/dev/null || { echo "idle.sh: cannot raise ulimit -n to $((n + 1000))" >&2; exit 1; }
. tools/bench/lib.sh
start_otpd 60
sed -i "1i max_connections = $((n + 1000))" "$work/otpd.toml"
kill $pid; wait $pid 2>/dev/null || true
rss() { awk '/^VmRSS/ {print $2}' "/proc/$pid/status"; }
# A fresh otpd each round: a process that has freed its connections' memory keeps it for the next ones.
for r in $(seq 1 "$rounds"); do
  "$OTPD_BIN" --config "$work/otpd.toml" > "$work/out.log" 2> "$work/err.log" &
  pid=$!
  for _ in $(seq 1 120); do grep -q "listening" "$work/out.log" && break; sleep 0.5; done
  sleep 2
  before=$(rss)
  "$otpbench" --port "$port" --mode idle --connections "$n" --seconds 300 > "$work/idle.json" 2> /dev/null &
  ipid=$!
  for _ in $(seq 1 240); do [ -s "$work/idle.json" ] && break; sleep 0.25; done
  sleep 1
  after=$(rss)
  kill $ipid 2>/dev/null || true
  wait $ipid 2>/dev/null || true
  printf 'round %d: %d connections: RSS %d MB -> %d MB, +%d MB (%.1f KB each)\n' "$r" "$n" $((before / 1024)) \
    $((after / 1024)) $(((after - before) / 1024)) "$(awk -v a="$after" -v b="$before" -v n="$n" 'BEGIN {print (a - b) / n}')"
  rm -f "$work/idle.json"
  kill $pid; wait $pid 2>/dev/null || true
done
