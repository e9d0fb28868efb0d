#!/usr/bin/env bash
# Throughput with several otpd processes on one database (docs/SCALING.md).
#
#   tools/bench/instances.sh [INSTANCES] [SECONDS] [CONNECTIONS]   (defaults: 3 instances, 20 s, 64 connections)
#
# Starts otpd (OTPD_BIN, default .build/release/otpd, else the debug build) on an embedded PostgreSQL (durable:
# fsync and synchronous_commit on), then INSTANCES-1 more otpd processes on the same database. For each count
# from 1 to INSTANCES it drives the lifecycle load of tools/bench/run's P1 (ISSUE, RECEIPT delivered, VERIFY,
# over CONNECTIONS connections split evenly across the instances running) for SECONDS and prints the events
# appended per second, the commands per second and the CPU time per command of every otpd and the cluster.
# otpbench is OTPBENCH_BIN (default beside otpd).
set -euo pipefail
cd "$(dirname "$0")/../.."
instances=${1:-3}
seconds=${2:-20}
connections=${3:-64}
for v in "$instances" "$seconds" "$connections"; do
  [[ $v =~ ^[1-9][0-9]*$ ]] || { echo "instances.sh: '$v' is not a positive whole number" >&2; exit 2; }
done
if [ -z "${OTPD_BIN:-}" ] && [ -x .build/release/otpd ]; then OTPD_BIN=.build/release/otpd; fi
. tools/bench/lib.sh
start_otpd 3600
otpbench=${OTPBENCH_BIN:-$(dirname "$bin")/otpbench}
[ -x "$otpbench" ] || { echo "instances.sh: no otpbench at $otpbench (swift build -c release --product otpbench)" >&2; exit 2; }
ports=("$port")
extra=()
trap 'kill "${extra[@]}" $pid 2>/dev/null; wait 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
for k in $(seq 2 "$instances"); do
  start_another_otpd "$k"
  extra+=("$another_pid")
  ports+=("$another_port")
done
events() { psql "$db" -XAtc "SELECT count(*) FROM events"; }
echo "otpd ($bin) x $instances on one embedded PostgreSQL; $connections connections, $seconds s per count"
echo "| otpd processes | events/s | commands/s | CPU ms per command (otpd + PostgreSQL) | errors |"
echo "| --- | --- | --- | --- | --- |"
for n in $(seq 1 "$instances"); do
  before=$(events)
  ticks=$(cpu_ticks $pid "${extra[@]}")
  start=$(date +%s.%N)
  outs=()
  for k in $(seq 0 $((n - 1))); do
    "$otpbench" --port "${ports[$k]}" --mode lifecycle --connections $((connections / n)) --sessions 100000000 \
      --seconds "$seconds" --depth 24 --prefix "i${n}k${k}x" > "$work/load$n-$k.json" 2>/dev/null &
    outs+=($!)
  done
  wait "${outs[@]}"
  elapsed=$(python3 -c "import time; print(time.time() - $start)")
  sleep 1  # the dispatcher's last hand-offs
  after=$(events)
  ticks=$(($(cpu_ticks $pid "${extra[@]}") - ticks))
  python3 - "$n" "$before" "$after" "$elapsed" "$work" "$ticks" "$(getconf CLK_TCK)" <<'PY'
import glob, json, sys
n, before, after, elapsed, work = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
cpu_s = int(sys.argv[6]) / int(sys.argv[7])
runs = [json.loads(open(f).read().strip().splitlines()[-1]) for f in glob.glob('%s/load%d-*.json' % (work, n))]
sent = sum(r.get('replies', 0) for r in runs)
errors = sum(r.get('errors', 0) for r in runs)
kinds = {}
for r in runs:
    for k, v in r.get('errors_by_kind', {}).items(): kinds[k] = kinds.get(k, 0) + v
shown = ' (%s)' % ', '.join('%s %d' % kv for kv in sorted(kinds.items())) if kinds else ''
print('| %d | %.0f | %.0f | %.2f | %d%s |' % (n, (after - before) / elapsed, sent / elapsed, cpu_s * 1000 / max(sent, 1), errors, shown))
PY
done
