#!/usr/bin/env bash
# P4: projector lag under command load, and the rebuild's events/s.
#
#   tools/bench/projector.sh [SESSIONS] [CLIENTS] [COPIES]   (defaults: 5000 sessions, 16 connections, 0)
#
# Starts otpd (debug build unless OTPD_BIN is set; OTPCTL_BIN likewise for otpctl) on an embedded PostgreSQL
# with the null driver, then drives SESSIONS sessions as fast as CLIENTS pipelined redis-py connections can
# (ISSUE, then RECEIPT delivered), and prints the command rate. The lag of each session's last event is read
# from the read model itself: applied_ms (when the projector wrote the row) - last_event_ms (when the event
# was appended), over every session, as p50/p90/p99/max. Then `otpctl rebuild` on the same database prints
# its events/s. With COPIES > 0 the log is then copied COPIES times under new stream ids by SQL (one
# transaction; the copies' hash chains do not verify, which a rebuild does not check) and rebuilt again, for
# the rebuild's rate on a log of a realistic size. Needs redis-py (pip install redis).
set -euo pipefail
cd "$(dirname "$0")/../.."
sessions=${1:-5000}
clients=${2:-16}
copies=${3:-0}
. tools/bench/lib.sh
start_otpd 3600
otpctl=${OTPCTL_BIN:-$(dirname "$bin")/otpctl}
[ -x "$otpctl" ] || swift build --product otpctl
echo "otpd ($bin) on :$port; $sessions sessions (ISSUE + RECEIPT) over $clients connections"
python3 - "$port" "$sessions" "$clients" <<'PY'
import sys, threading, time, redis
port, n, clients = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def drive(k):
    r = redis.Redis(port=port, protocol=2)
    mine = list(range(k, n, clients))
    for chunk in range(0, len(mine), 100):
        p = r.pipeline(transaction=False)
        for i in mine[chunk:chunk + 100]:
            p.execute_command('ISSUE', 'p%d' % i, 'sms:+1555%07d' % i, 'email:p%d@example.com' % i)
        p.execute()
        p = r.pipeline(transaction=False)
        for i in mine[chunk:chunk + 100]:
            p.execute_command('RECEIPT', 'p%d' % i, 'sms', 'delivered')
        p.execute()
start = time.time()
threads = [threading.Thread(target=drive, args=(k,)) for k in range(clients)]
for t in threads: t.start()
for t in threads: t.join()
elapsed = time.time() - start
print("  %d commands in %.1f s: %.0f commands/s" % (2 * n, elapsed, 2 * n / elapsed))
PY
# Wait until every session's last event is applied (the dispatcher's `sent` may come after the RECEIPT).
for _ in $(seq 1 120); do
  behind=$(psql "$db" -XAtc "SELECT count(*) FROM events e, checkpoints c WHERE c.subscriber = 'projector' AND (e.tx_id, e.position) > (c.tx_id, c.position)")
  [ "$behind" = 0 ] && break
  sleep 0.5
done
psql "$db" -XAtc "
  SELECT format('  projector lag over %s sessions: p50 %s ms, p90 %s ms, p99 %s ms, max %s ms',
    count(*),
    percentile_disc(0.5) WITHIN GROUP (ORDER BY applied_ms - last_event_ms),
    percentile_disc(0.9) WITHIN GROUP (ORDER BY applied_ms - last_event_ms),
    percentile_disc(0.99) WITHIN GROUP (ORDER BY applied_ms - last_event_ms),
    max(applied_ms - last_event_ms))
  FROM projections.session_view"
echo "  $("$otpctl" rebuild --database-url "$db")"
if [ "$copies" -gt 0 ]; then
  psql "$db" -XAtqc "INSERT INTO events (stream_id, version, type, data, at_ms, prev_hash, hash)
    SELECT stream_id || '-' || g, version, type, data, at_ms, prev_hash, hash
    FROM events, generate_series(1, $copies) AS g ORDER BY g, stream_id, version" >/dev/null
  echo "  log copied $copies times: $(psql "$db" -XAtc 'SELECT count(*) FROM events') events"
  echo "  $("$otpctl" rebuild --database-url "$db")"
fi
