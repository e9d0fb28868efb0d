#!/usr/bin/env bash
# P8 at the issue's scale: CPU per ISSUE (otpd plus its PostgreSQL) with 0, 1 million and 10 million events stored.
#
#   tools/bench/history.sh [EVENTS ...]        (default: 1000000 10000000)
#
# Issuing ten million events through otpd would take hours here, so the history is grown by copying: a seed
# of real sessions (ISSUE, RECEIPT, wrong VERIFY) is written through otpd, then its rows are copied under new
# stream ids into every table a session leaves rows in (events, stream_heads, session_keys,
# destination_sessions, messages, and the projections' session_view and message_view), until the log holds
# each EVENTS figure. The copies carry transaction id 1, below the projector's checkpoint, so the projector
# treats them as history it has already folded instead of folding them during the measurement. Their hash
# chains name the seed's streams, so `otpctl verify` would report them: this is a benchmark database.
#
# At each size it runs VACUUM ANALYZE and a CHECKPOINT, then ISSUEs `P8_SESSIONS` (3,000) new sessions over 8
# pipelined connections three times, and prints CPU milliseconds per ISSUE for each run and their median.
# Uses release binaries when built (`swift build -c release --product otpd --product otpbench`), else debug.
set -euo pipefail
cd "$(dirname "$0")/../.."
. tools/bench/lib.sh

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(1000000 10000000)
for t in "${targets[@]}"; do
  [[ $t =~ ^[0-9]+$ ]] || { echo "history.sh: EVENTS must be a whole number of events, not '$t'" >&2; exit 2; }
done
sessions=${P8_SESSIONS:-3000}

for config in release debug; do
  if [ -x ".build/$config/otpd" ] && [ -x ".build/$config/otpbench" ]; then
    export OTPD_BIN=${OTPD_BIN:-.build/$config/otpd}
    otpbench_bin=.build/$config/otpbench
    break
  fi
done
[ -n "${otpbench_bin:-}" ] || { swift build --product otpd --product otpbench >&2; otpbench_bin=.build/debug/otpbench; }

start_otpd 600
say() { echo "== $*" >&2; }
sql() { psql "$db" -XAtqc "$1"; }
say "otpd $OTPD_BIN on port $port, PostgreSQL on $pgport"

postmaster=$(head -1 "$work/data/pg/data/postmaster.pid" 2>/dev/null || true)
[ -n "$postmaster" ] || postmaster=$(pgrep -f "postgres -D $work" | head -1)
hz=$(getconf CLK_TCK)
cpu_ticks() {  # user + system clock ticks of otpd, its postmaster and the postmaster's children
  local total=0 p
  for p in $pid $postmaster $(pgrep -P "$postmaster"); do
    [ -r "/proc/$p/stat" ] && total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo $total
}

run=0
measure() {  # three runs of $sessions ISSUEs; prints the events stored, each run's CPU ms per ISSUE and the median
  local stored figures=() before after i
  stored=$(sql "SELECT count(*) FROM events")
  sql "VACUUM ANALYZE" >/dev/null
  sql "CHECKPOINT" >/dev/null
  for i in 1 2 3; do
    run=$((run + 1))
    before=$(cpu_ticks)
    "$otpbench_bin" --port "$port" --mode issue --connections 8 --depth 16 --sessions "$sessions" --prefix "p8r$run" >/dev/null
    sleep 1  # the dispatcher hands over those sessions' first messages
    after=$(cpu_ticks)
    figures+=("$(python3 -c "print('%.2f' % (($after - $before) * 1000 / $hz / $sessions))")")
  done
  median=$(printf '%s\n' "${figures[@]}" | sort -n | sed -n 2p)
  printf '%-12s %-22s %s\n' "$stored" "${figures[*]}" "$median"
}

say "seed: 2,000 sessions through otpd (ISSUE, RECEIPT, a wrong VERIFY)"
"$otpbench_bin" --port "$port" --mode lifecycle --connections 8 --depth 16 --sessions 2000 --prefix seed >/dev/null
sleep 2
sql "CREATE TABLE bench_seed AS SELECT DISTINCT stream_id FROM events"
seed_events=$(sql "SELECT count(*) FROM events")

echo "events       CPU ms per ISSUE (runs)  median"
measure

copies=0
for target in "${targets[@]}"; do
  while [ "$(sql "SELECT count(*) FROM events")" -lt "$target" ]; do
    have=$(sql "SELECT count(*) FROM events")
    n=$(( (target - have + seed_events - 1) / seed_events ))
    [ $n -le 100 ] || n=100
    from=$((copies + 1)); to=$((copies + n)); copies=$to
    say "copying the seed $n times (copies $from..$to): $have of $target events"
    psql "$db" -XAtq -v ON_ERROR_STOP=1 <<SQL
BEGIN;
CREATE TEMP TABLE copy_ids ON COMMIT DROP AS
  SELECT s.stream_id AS seed, s.stream_id || '~h' || g AS stream_id, '~h' || g AS suffix
  FROM bench_seed s, generate_series($from, $to) g;
INSERT INTO events (stream_id, version, type, data, at_ms, prev_hash, hash, tx_id)
  SELECT c.stream_id, e.version, e.type, e.data, e.at_ms, e.prev_hash, e.hash, '1'::xid8
  FROM copy_ids c JOIN events e ON e.stream_id = c.seed;
INSERT INTO stream_heads SELECT c.stream_id, h.version, h.mac FROM copy_ids c JOIN stream_heads h ON h.stream_id = c.seed;
INSERT INTO session_keys SELECT c.stream_id, k.sealed_key, k.created_at FROM copy_ids c JOIN session_keys k ON k.stream_id = c.seed;
INSERT INTO destination_sessions
  SELECT d.destination_key || c.suffix, c.stream_id FROM copy_ids c JOIN destination_sessions d ON d.stream_id = c.seed;
INSERT INTO messages (message_id, stream_id, token, channel, tracking, provider_ref, created_at)
  SELECT m.message_id || c.suffix, c.stream_id, m.token, m.channel, m.tracking || c.suffix,
         m.provider_ref || c.suffix, m.created_at
  FROM copy_ids c JOIN messages m ON m.stream_id = c.seed;
INSERT INTO projections.session_view
  SELECT (jsonb_populate_record(v, jsonb_build_object('stream_id', c.stream_id, 'session', v.session || c.suffix))).*
  FROM copy_ids c JOIN projections.session_view v ON v.stream_id = c.seed;
INSERT INTO projections.message_view
  SELECT (jsonb_populate_record(m, jsonb_build_object('stream_id', c.stream_id))).*
  FROM copy_ids c JOIN projections.message_view m ON m.stream_id = c.seed;
COMMIT;
SQL
  done
  measure
done
