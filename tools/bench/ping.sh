#!/usr/bin/env bash
# Wire speed (QUALITY.md P5): redis-benchmark -P 16 PING (inline and bulk) against otpd and against
# redis-server on the same machine, in the same run.
#
#   tools/bench/ping.sh [REQUESTS] [CLIENTS]        (defaults: 1000000 requests, 50 clients)
#
# Uses the release build (swift build -c release --product otpd) unless OTPD_BIN is set. Needs
# redis-server and redis-benchmark (apt-get install redis-server). otpd runs single-tenant on an embedded
# PostgreSQL in a temporary directory (PING never touches the database).
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-1000000}
c=${2:-50}
bin=${OTPD_BIN:-.build/release/otpd}
[ -x "$bin" ] || swift build -c release --product otpd
work=$(mktemp -d /var/tmp/otpd-ping-XXXXXX)
chmod 755 "$work"  # the postgres user must reach the embedded cluster inside it
. tools/bench/lib.sh
oport=$(free_port)
rport=$(free_port)
"$bin" --listen "127.0.0.1:$oport" --data-dir "$work/data" > "$work/otpd.log" 2>&1 &
opid=$!
redis-server --port "$rport" --save '' --appendonly no --daemonize no > "$work/redis.log" 2>&1 &
rpid=$!
trap 'kill $opid $rpid 2>/dev/null; wait $opid $rpid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 120); do grep -q "listening" "$work/otpd.log" && break; sleep 0.5; done
sleep 0.5
for target in "redis-server:$rport" "otpd:$oport"; do
  name=${target%%:*}; port=${target##*:}
  for test in ping_inline ping_mbulk; do
    rps=$(redis-benchmark -p "$port" -n "$n" -c "$c" -P 16 -t "$test" -q 2>/dev/null | grep -o '[0-9.]* requests per second' | head -1)
    echo "$name $test: $rps"
  done
done
