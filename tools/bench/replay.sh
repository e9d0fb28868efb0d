#!/usr/bin/env bash
# P7: `otpctl replay --all` and `otpctl verify --all` over a large log, in events per second, beside a
# baseline measured in the same run: psql reading the same rows in the same order to /dev/null (what
# PostgreSQL and libpq alone take to hand the log over).
#
#   tools/bench/replay.sh [EVENTS] [ROUNDS]      (defaults: 1000000 events, 3 rounds)
#
# Starts otpd (release build, or BUILD=debug, or OTPD_BIN) on an embedded PostgreSQL in a temporary directory with
# the null driver, records a few real sessions through it (each lifecycle: cancelled after a wrong code and a
# delivery receipt, failed over to e-mail, locked after five wrong codes, just sent), then
# `bench-replay-load` copies them under new stream ids until the log holds about EVENTS events: every copy
# re-sealed under a fresh session key and re-hashed with the keyed chain, so it verifies and folds like a real
# one. Then per round it times the baseline, `verify --all` and `replay --all` (release builds).
set -euo pipefail
cd "$(dirname "$0")/../.."
events=${1:-1000000}
rounds=${2:-3}
# BUILD=debug uses the debug builds as they are (for a quick look; the figures to quote are release ones).
build=${BUILD:-release}
if [ "$build" = release ]; then
  for product in otpctl bench-replay-load otpd; do nice -n 10 swift build -c release --product $product >/dev/null; done
fi
export OTPD_BIN=${OTPD_BIN:-.build/$build/otpd}
. tools/bench/lib.sh
start_otpd 3600
cli() { redis-cli -p "$port" "$@" >/dev/null; }
for i in 1 2 3 4 5 6 7 8; do
  cli ISSUE "c$i" "sms:+1555100000$i" "email:c$i@example.com"
  cli ISSUE "f$i" "sms:+1555200000$i" "email:f$i@example.com"
  cli ISSUE "l$i" "email:l$i@example.com"
  cli ISSUE "s$i" "sms:+1555300000$i"
done
sleep 2  # the dispatcher hands every first message off (`sent`)
for i in 1 2 3 4 5 6 7 8; do
  cli RECEIPT "c$i" sms delivered; cli VERIFY "c$i" 0000000; cli CANCEL "c$i"
  cli RECEIPT "f$i" sms failed
  for _ in 1 2 3 4 5; do cli VERIFY "l$i" 0000000; done
done
sleep 2
for i in 1 2 3 4 5 6 7 8; do cli RECEIPT "f$i" email delivered; done
template_events=$(psql "$db" -Atc "SELECT count(*) FROM events")
sessions=$((events * 32 / template_events))
echo "templates: 32 sessions, $template_events events; loading $sessions copies"
".build/$build/bench-replay-load" "$db" "$work/data/secret" "$sessions"
total=$(psql "$db" -Atc "SELECT count(*) FROM events")
streams=$(psql "$db" -Atc "SELECT count(*) FROM stream_heads")
echo "log: $total events in $streams streams (otpd idle beside it; the machine is shared)"
ctl=(".build/$build/otpctl")
args=(--database-url "$db" --secret-file "$work/data/secret")
rate() { python3 -c "import sys; print('%.0f' % ($total / float(sys.argv[1])))" "$1"; }
for round in $(seq 1 "$rounds"); do
  s=$(date +%s.%N)
  psql "$db" -Atc "SELECT stream_id, version, type, data::text, at_ms, prev_hash, hash FROM events ORDER BY stream_id, version" >/dev/null
  base=$(python3 -c "import sys; print('%.2f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$s" "$(date +%s.%N)")
  v=$("${ctl[@]}" verify --all "${args[@]}" | tail -1)
  r=$("${ctl[@]}" replay --all "${args[@]}" | head -1)
  echo "round $round: baseline psql $base s ($(rate "$base") events/s)"
  echo "  verify: $v"
  echo "  replay: $r"
done
