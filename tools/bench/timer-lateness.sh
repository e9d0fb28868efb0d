#!/usr/bin/env bash
# Timer lateness: how late a step timeout fires (timed_out event time minus due time), with N pending timers.
#
#   tools/bench/timer-lateness.sh [SESSIONS] [TIMEOUT_SECONDS]      (defaults: 10000 sessions, 120 s)
#
# Starts otpd (debug build unless OTPD_BIN is set) on an embedded PostgreSQL in a temporary data directory,
# with the null driver, ISSUEs SESSIONS sessions whose SMS step times out after TIMEOUT_SECONDS (so all
# their timers are pending at once; it reports how many were pending at the peak), waits until every one has fired, and prints p50/p90/p99/max lateness
# from the database's own timestamps. Needs redis-py (pip install redis) and psql.
set -euo pipefail
cd "$(dirname "$0")/../.."
sessions=${1:-10000}
timeout_s=${2:-120}
bin=${OTPD_BIN:-.build/debug/otpd}
[ -x "$bin" ] || swift build --product otpd
work=$(mktemp -d /var/tmp/otpd-bench-XXXXXX)
chmod 755 "$work"  # the postgres user must reach the embedded cluster inside it
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/otpd.toml" <<TOML
listen = "127.0.0.1:$port"
data_dir = "$work/data"
[channel.sms]
driver = "null"
[channel.email]
driver = "null"
[[policy]]
name = "default"
steps = [ { channel = "sms", timeout = "${timeout_s}s", until = "delivered" }, { channel = "email" } ]
[limits]
prefix_sends_per_minute = 100000000
sessions_per_destination_day = 100000000
sends_per_destination_10m = 100000000
TOML
"$bin" --config "$work/otpd.toml" > "$work/out.log" 2> "$work/err.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 120); do grep -q "listening" "$work/out.log" && break; sleep 0.5; done
pgport=$(grep -o 'PostgreSQL on 127.0.0.1:[0-9]*' "$work/err.log" | head -1 | cut -d: -f2)
db="postgresql://otpd@127.0.0.1:$pgport/otpd"
echo "otpd on :$port, PostgreSQL on :$pgport; issuing $sessions sessions (step timeout ${timeout_s}s)"
start=$(date +%s.%N)
python3 - "$port" "$sessions" <<'PY'
import sys, threading, redis
port, n = int(sys.argv[1]), int(sys.argv[2])
clients = 8
def issue(k):
    r = redis.Redis(port=port, protocol=2)
    p = r.pipeline(transaction=False)
    for i in range(k, n, clients):
        p.execute_command('ISSUE', 'b%d' % i, 'sms:+1555%07d' % i, 'email:b%d@example.com' % i)
        if len(p) == 200:
            p.execute()
    p.execute()
threads = [threading.Thread(target=issue, args=(k,)) for k in range(clients)]
for t in threads: t.start()
for t in threads: t.join()
PY
echo "issued in $(python3 -c "import time; print(round(time.time() - $start, 1))") s over 8 connections; $(psql -At "$db" -c "SELECT count(*) FROM timers WHERE name = 'step'") step timers pending, $(psql -At "$db" -c "SELECT count(*) FROM events WHERE type = 'timed_out'") fired; waiting"
while true; do
  fired=$(psql -At "$db" -c "SELECT count(*) FROM events WHERE type = 'timed_out'")
  pending=$(psql -At "$db" -c "SELECT count(*) FROM timers WHERE name = 'step'")
  echo "  fired $fired / $sessions (pending step timers: $pending)"
  [ "$fired" -ge "$sessions" ] && break
  sleep 2
done
psql -At "$db" <<SQL
WITH late AS (
  SELECT t.at_ms - (s.at_ms + ${timeout_s}000) AS ms
  FROM events t JOIN events s ON s.stream_id = t.stream_id AND s.type = 'sent' AND s.version = t.version - 1
  WHERE t.type = 'timed_out')
SELECT format('lateness over %s timers: p50 %s ms, p90 %s ms, p99 %s ms, max %s ms; doubled: %s',
  count(*), percentile_disc(0.5) WITHIN GROUP (ORDER BY ms), percentile_disc(0.9) WITHIN GROUP (ORDER BY ms),
  percentile_disc(0.99) WITHIN GROUP (ORDER BY ms), max(ms),
  (SELECT count(*) FROM (SELECT stream_id FROM events WHERE type = 'timed_out' GROUP BY stream_id HAVING count(*) > 1) d))
FROM late;
SQL
