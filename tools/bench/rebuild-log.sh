#!/usr/bin/env bash
# rebuild-log.sh [SESSIONS] [COPIES]: P4's rebuild on a large log without hours of load. otpd (debug build unless
# OTPD_BIN is set) issues SESSIONS sessions (default 20,000) over 16 pipelined connections; their events are then
# copied COPIES times (default 35) under new stream ids by SQL, so the log holds (COPIES + 1) times as many
# sessions (hash chains aside: a rebuild does not check them); then `otpctl rebuild` (OTPCTL_BIN) runs once with
# its wall time, CPU and peak memory, and PostgreSQL's log names every statement that took over 300 ms.
set -euo pipefail
cd "$(dirname "$0")/../.."
. tools/bench/lib.sh
sessions=${1:-20000}
copies=${2:-35}
otpctl_bin=${OTPCTL_BIN:-.build/debug/otpctl}
bench_bin=${OTPBENCH_BIN:-.build/debug/otpbench}
[ -x "$otpctl_bin" ] || swift build --product otpctl
[ -x "$bench_bin" ] || swift build --product otpbench
start_otpd 3600
echo "== issuing $sessions sessions"
"$bench_bin" --port "$port" --mode issue --connections 16 --sessions "$sessions" --depth 32 --prefix r > /dev/null
sleep 3
psql "$db" -q -c "ALTER SYSTEM SET log_min_duration_statement = 300" -c "SELECT pg_reload_conf()" > /dev/null
for c in $(seq 1 "$copies"); do
  printf '\r== copying the log: %d of %d' "$c" "$copies"
  psql "$db" -q -c "INSERT INTO events (stream_id, version, type, data, at_ms, prev_hash, hash)
    SELECT stream_id || '~$c', version, type, data, at_ms, prev_hash, hash FROM events
    WHERE stream_id NOT LIKE '%~%' ORDER BY position"
done
echo
echo "== the log holds $(psql "$db" -Atc 'SELECT count(*) FROM events') events; otpctl rebuild"
log_lines=$(wc -l < "$work/data/postgres.log")
/usr/bin/time -f "rebuild: wall %e s, otpctl user %U s, system %S s, max RSS %M KB" \
  "$otpctl_bin" rebuild --database-url "$db"
echo "== statements over 300 ms"
tail -n +"$log_lines" "$work/data/postgres.log" | grep -o 'duration: [0-9.]* ms  statement: .\{0,70\}' || true
