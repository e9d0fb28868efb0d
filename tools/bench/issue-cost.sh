#!/usr/bin/env bash
# ISSUE cost: sessions per second and CPU per ISSUE (otpd plus its PostgreSQL, user + system time).
#
#   tools/bench/issue-cost.sh [SESSIONS] [ROUNDS]      (defaults: 3000 sessions, 2 rounds)
#
# Starts otpd (debug build unless OTPD_BIN is set) on an embedded PostgreSQL in a temporary data directory,
# with the null driver, then per round ISSUEs SESSIONS sessions (an SMS and an e-mail destination each) over
# 8 pipelined redis-py connections. For each round it prints the rate and the CPU time that otpd and every
# PostgreSQL process of its cluster used, divided by the sessions. The CPU figure includes the dispatcher's
# hand-off of each first message (`sent`), which runs alongside. It is steadier than the rate on a shared
# machine, because another process's load slows the rate but does not add to this process's CPU time.
# Needs redis-py (pip install redis).
set -euo pipefail
cd "$(dirname "$0")/../.."
sessions=${1:-3000}
rounds=${2:-2}
[ "$rounds" -le 9 ] || { echo "at most 9 rounds" >&2; exit 2; }
. tools/bench/lib.sh
start_otpd 3600
hz=$(getconf CLK_TCK)
echo "otpd ($bin) on :$port; $rounds rounds of $sessions ISSUEs over 8 connections"
for round in $(seq 1 "$rounds"); do
  before=$(cpu_ticks $pid)
  python3 - "$port" "$sessions" "$round" <<'PY'
import sys, threading, time, redis
port, n, round_ = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
clients = 8
def issue(k):
    r = redis.Redis(port=port, protocol=2)
    p = r.pipeline(transaction=False)
    for i in range(k, n, clients):
        s = round_ * 10_000_000 + i  # a new session and new addresses in every round (up to 9 rounds)
        p.execute_command('ISSUE', 'c%d' % s, 'sms:+15%d%07d' % (round_, i), 'email:c%d@example.com' % s)
        if len(p) == 200:
            p.execute()
    p.execute()
start = time.time()
threads = [threading.Thread(target=issue, args=(k,)) for k in range(clients)]
for t in threads: t.start()
for t in threads: t.join()
elapsed = time.time() - start
print("  round %d: %d ISSUEs in %.1f s, %.0f/s" % (round_, n, elapsed, n / elapsed), end="")
PY
  sleep 1  # let the dispatcher finish the round's hand-offs
  after=$(cpu_ticks $pid)
  python3 -c "print(', %.2f ms CPU per ISSUE' % (($after - $before) * 1000 / $hz / $sessions))"
done
