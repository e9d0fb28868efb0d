#!/usr/bin/env bash
# R1 and R2 under sustained load: ISSUE load on pipelining connections for the whole run while otpd is killed
# with SIGKILL and restarted, and its PostgreSQL is restarted and then stopped for a while.
#
#   tools/reliability/faults.sh [SECONDS] [CONNECTIONS]      (defaults: 60 s, 8 connections)
#
# Starts otpd (debug build unless OTPD_BIN is set) on an embedded PostgreSQL with the null driver and a 2 s
# SMS step before e-mail. The faults, at fixed points of the run: at 20 % `kill -9` of otpd and a restart; at
# 45 % a PostgreSQL restart (`pg_ctl restart -m fast`); at 65 % PostgreSQL stopped for 5 s, then started.
# A request counts as answered when its reply arrived; one that got no answer within 10 s counts as hung.
# At the end, every answered session is read back through HISTORY (from otpd, as an auditor would): it must
# exist (nothing answered is lost) and, once its step timeout has passed (after a kill, a message in flight
# fails over after its 30 s lease), it must have escalated exactly once and timed out at most once.
# Prints the figures; exits 1 if anything answered was lost or doubled. Needs redis-py.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-60}
connections=${2:-8}
. tools/bench/lib.sh
start_otpd 2
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
pgdata=$(dirname "$(find "$work/data" -name postmaster.pid | head -1)")
# The server's own options (its port, its settings) as otpd started it, to start it again the same way.
echo "PostgreSQL options: $(cat "$pgdata/postmaster.opts")"
opts=$(cat "$pgdata/postmaster.opts")
opts=${opts#*\"-D\" \"$pgdata\"}
pg_start() { as_postgres "$pgbin/pg_ctl" -D "$pgdata" -w start -l "$pgdata/restart.log" -o "$opts" > /dev/null; }
pg_stop() { as_postgres "$pgbin/pg_ctl" -D "$pgdata" -m fast -w stop > /dev/null; }
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
restart_otpd() {
  "$bin" --config "$work/otpd.toml" >> "$work/out.log" 2>> "$work/err.log" &
  pid=$!
  for _ in $(seq 1 120); do [ "$(grep -c listening "$work/out.log")" -ge "$1" ] && break; sleep 0.25; done
}
echo "otpd ($bin) on :$port, PostgreSQL in $pgdata; ${seconds} s of ISSUE load over $connections connections"

python3 - "$port" "$seconds" "$connections" "$work/answered" > "$work/load.txt" <<'PY' &
import sys, threading, time, collections, redis
port, seconds, connections, path = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
end = time.monotonic() + seconds
lock = threading.Lock()
answered, errors, hung, slowest = [], collections.Counter(), [0], [0.0]
def worker(k):
    r, n = redis.Redis(port=port, protocol=2, socket_timeout=10), 0
    while time.monotonic() < end:
        ids = ['F%d_%d' % (k, n + i) for i in range(10)]
        p = r.pipeline(transaction=False)
        for j, s in enumerate(ids):
            p.execute_command('ISSUE', s, 'sms:+1555%02d%06d' % (k, n + j), 'email:%s@x.example' % s)
        n += 10
        started = time.monotonic()
        try:
            replies = p.execute(raise_on_error=False)
        except redis.TimeoutError:
            with lock: hung[0] += 1
            r = redis.Redis(port=port, protocol=2, socket_timeout=10)
            continue
        except redis.ConnectionError:
            with lock: errors['no connection'] += 1  # otpd is down (killed): not an answer
            time.sleep(0.1)
            continue
        with lock:
            slowest[0] = max(slowest[0], time.monotonic() - started)
            for s, reply in zip(ids, replies):
                if isinstance(reply, Exception):
                    errors[str(reply).split(' ')[0]] += 1
                else:
                    answered.append(s)
threads = [threading.Thread(target=worker, args=(k,)) for k in range(connections)]
for t in threads: t.start()
for t in threads: t.join()
open(path, 'w').write('\n'.join(answered) + '\n')
print('answered %d; errors %s; hung %d; slowest pipeline of 10 answered in %.2f s'
      % (len(answered), dict(errors), hung[0], slowest[0]))
PY
load=$!
sleep "$(python3 -c "print($seconds * 0.2)")"
echo "fault 1 at $(date +%T): kill -9 otpd, restart"
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
restart_otpd 2
sleep "$(python3 -c "print($seconds * 0.25)")"
echo "fault 2 at $(date +%T): PostgreSQL restart"
pg_stop
pg_start
sleep "$(python3 -c "print($seconds * 0.2)")"
echo "fault 3 at $(date +%T): PostgreSQL stopped for 5 s"
pg_stop
sleep 5
pg_start
wait "$load"
cat "$work/load.txt"

python3 - "$port" "$work/answered" <<'PY'
import sys, time, collections, redis
port, path = int(sys.argv[1]), sys.argv[2]
answered = [s for s in open(path).read().split('\n') if s]
r = redis.Redis(port=port, protocol=2, decode_responses=True)
def types(s):
    try:
        return [dict(zip(e[::2], e[1::2]))['type'] for e in r.execute_command('HISTORY', s)]
    except redis.ResponseError:
        return []
deadline = time.monotonic() + 120
pending = set(answered)
while pending and time.monotonic() < deadline:
    pending = {s for s in pending if 'escalated' not in types(s)}
    if pending: time.sleep(1)
lost = doubled = failed_over = 0
for s in answered:
    t = types(s)
    if t.count('issued') != 1: lost += 1
    if t.count('escalated') > 1 or t.count('timed_out') > 1: doubled += 1
    if 'timed_out' not in t and 'escalated' in t: failed_over += 1
print('read back %d answered sessions: lost %d, doubled %d, not escalated after 120 s %d, failed over %d'
      % (len(answered), lost, doubled, len(pending), failed_over))
sys.exit(1 if lost or doubled or pending else 0)
PY
