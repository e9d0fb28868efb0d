#!/usr/bin/env bash
# WAL and commits per ISSUE transaction, from PostgreSQL's own counters: replays tools/scaling/issue.pgbench
# (one ISSUE's statements, without otpd) with pgbench in prepared mode and prints the deltas of pg_stat_wal and of
# pg_stat_database for the run.
#
#   tools/scaling/wal-per-issue.sh [transactions] [clients]      (defaults: 5000 and 8)
#
# Connects with the usual libpq environment (PGHOST, PGPORT, PGUSER, PGDATABASE) to a database with
# schema/*.sql loaded; it writes rows into that database's tables, so point it at a throwaway one.
# Needs pg_stat_wal: PostgreSQL 14 or later. With PG_POSTMASTER_PID set (the server on this machine: the first
# line of its postmaster.pid), it also prints the CPU time the server's processes used per transaction (the
# postmaster's own and reaped children's, plus its live children's, from /proc).
set -euo pipefail
n=${1:-5000}
c=${2:-8}
here=$(cd "$(dirname "$0")" && pwd)
pgbench=${PGBENCH:-$(command -v pgbench || echo /usr/lib/postgresql/15/bin/pgbench)}
q() { psql -X -Atq -v ON_ERROR_STOP=1 -c "$1"; }
cpu() {  # clock ticks used by the server's processes so far
    local t=0 p f
    for p in "$PG_POSTMASTER_PID" $(pgrep -P "$PG_POSTMASTER_PID"); do
        read -r -a f < "/proc/$p/stat" 2>/dev/null || continue
        t=$((t + f[13] + f[14]))
        [ "$p" = "$PG_POSTMASTER_PID" ] && t=$((t + f[15] + f[16]))
    done
    echo "$t"
}

echo "server: $(q 'SHOW server_version'), fsync=$(q 'SHOW fsync'), synchronous_commit=$(q 'SHOW synchronous_commit'), full_page_writes=$(q 'SHOW full_page_writes')"
q "SELECT pg_stat_reset_shared('wal')"
q "CHECKPOINT"
[ -n "${PG_POSTMASTER_PID:-}" ] && cpu0=$(cpu)
before=$(q "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
"$pgbench" -n -M prepared -c "$c" -j "$(( c < 2 ? c : 2 ))" -t $(( n / c )) -f "$here/issue.pgbench" | grep -E '^(number of transactions actually processed|number of failed|latency average|tps)'
[ -n "${PG_POSTMASTER_PID:-}" ] && cpu1=$(cpu)
sleep 1  # the statistics collector's counters trail the last commits by a moment
after=$(q "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
q "SELECT format('WAL per ISSUE transaction: %s bytes, %s records, %s full-page images (after a checkpoint); commits counted: %s',
              round(wal_bytes / $(( (n / c) * c ))), round(wal_records::numeric / $(( (n / c) * c )), 1),
              round(wal_fpi::numeric / $(( (n / c) * c )), 2), $after - $before)
       FROM pg_stat_wal"
if [ -n "${PG_POSTMASTER_PID:-}" ]; then
    awk -v t=$((cpu1 - cpu0)) -v hz="$(getconf CLK_TCK)" -v n=$(( (n / c) * c )) \
        'BEGIN { printf "PostgreSQL CPU per ISSUE transaction: %.2f ms\n", t * 1000 / hz / n }'
fi
