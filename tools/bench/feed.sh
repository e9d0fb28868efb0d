#!/usr/bin/env bash
# The live feed's latency across two instances (issue 11: within 250 ms, p99).
#
#   tools/bench/feed.sh [SESSIONS] [RATE]        (defaults: 1000 sessions, 50 ISSUEs a second)
#
# Starts two otpd processes on one embedded PostgreSQL (release builds when built, else debug; null driver).
# A redis-py subscriber on instance B subscribes to SESSIONS session ids before they exist; a client on
# instance A ISSUEs them at RATE a second. For each session the latency is the time from ISSUE's reply on A to
# its first message (`issued`) on B, on one clock (one process does both). Prints p50, p95, p99 and the largest,
# and the sessions whose message never came.
set -euo pipefail
cd "$(dirname "$0")/../.."
sessions=${1:-1000}
rate=${2:-50}
for v in "$sessions" "$rate"; do
  [[ $v =~ ^[1-9][0-9]*$ ]] || { echo "feed.sh: '$v' is not a positive whole number" >&2; exit 2; }
done
if [ -z "${OTPD_BIN:-}" ] && [ -x .build/release/otpd ]; then OTPD_BIN=.build/release/otpd; fi
. tools/bench/lib.sh
start_otpd 600
start_another_otpd 2
trap 'kill $another_pid $pid 2>/dev/null; wait 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
echo "otpd ($bin) x 2 on one embedded PostgreSQL: ISSUE on :$port, SUBSCRIBE on :$another_port"
python3 - "$port" "$another_port" "$sessions" "$rate" <<'PY'
import sys, threading, time, json, redis
pa, pb, n, rate = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ids = ['feed%d' % i for i in range(n)]
sub = redis.Redis(port=pb, protocol=2).pubsub()
for i in range(0, n, 63):
    sub.subscribe(*ids[i:i + 63])
confirmed = 0
while confirmed < n:
    m = sub.get_message(timeout=10)
    if m is None:
        sys.exit('feed.sh: the subscriptions were not confirmed')
    confirmed += m['type'] == 'subscribe'
arrived = {}
def listen():
    while len(arrived) < n:
        m = sub.get_message(timeout=5)
        if m is None:
            return
        if m['type'] == 'message' and json.loads(m['data'])['type'] == 'issued':
            arrived.setdefault(m['channel'].decode(), time.monotonic())
t = threading.Thread(target=listen)
t.start()
issuer = redis.Redis(port=pa, protocol=2)
replied = {}
start = time.monotonic()
for i, s in enumerate(ids):
    delay = start + i / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    issuer.execute_command('ISSUE', s, 'sms:+1555%07d' % i)
    replied[s] = time.monotonic()
    if i % rate == 0:
        print('\r%d of %d issued' % (i, n), end='', file=sys.stderr, flush=True)
print(file=sys.stderr)
t.join()
lat = sorted((arrived[s] - replied[s]) * 1000 for s in ids if s in arrived)
def pct(p):
    return lat[min(len(lat) - 1, int(p * len(lat)))]
print('%d sessions at %d ISSUE/s: p50 %.1f ms, p95 %.1f ms, p99 %.1f ms, max %.1f ms; %d without a message'
      % (n, rate, pct(0.5), pct(0.95), pct(0.99), lat[-1], n - len(lat)))
PY
