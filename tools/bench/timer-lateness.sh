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
. tools/bench/lib.sh
start_otpd "$timeout_s"
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
