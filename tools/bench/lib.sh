# Shared by the benchmarks (source it from the repository root).

# A free TCP port on loopback.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_otpd STEP_TIMEOUT_SECONDS
# Starts otpd (debug build unless OTPD_BIN is set) on an embedded PostgreSQL in a new temporary directory,
# with the null driver, a policy whose SMS step times out after STEP_TIMEOUT_SECONDS before e-mail, and
# pacing limits out of the way. Sets bin, work, port, pid, pgport, db (the database URL) and PGPASSFILE. Stops otpd and
# removes the directory on exit.
start_otpd() {
  bin=${OTPD_BIN:-.build/debug/otpd}
  [ -x "$bin" ] || swift build --product otpd
  work=$(mktemp -d /var/tmp/otpd-bench-XXXXXX)
  chmod 755 "$work"  # the postgres user must reach the embedded cluster inside it
  port=$(free_port)
  cat > "$work/otpd.toml" <<TOML
listen = "127.0.0.1:$port"
data_dir = "$work/data"
${OTPD_GROUP_COMMIT:+group_commit = $OTPD_GROUP_COMMIT}
[channel.sms]
driver = "null"
[channel.email]
driver = "null"
[[policy]]
name = "default"
steps = [ { channel = "sms", timeout = "${1}s", until = "delivered" }, { channel = "email" } ]
[limits]
prefix_sends_per_minute = 100000000
sessions_per_destination_day = 100000000
sends_per_destination_10m = 100000000
min_gap_per_channel = "0s"
TOML
  "$bin" --config "$work/otpd.toml" > "$work/out.log" 2> "$work/err.log" &
  pid=$!
  trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
  for _ in $(seq 1 120); do grep -q "listening" "$work/out.log" && break; sleep 0.5; done
  pgport=$(grep -o 'PostgreSQL on 127.0.0.1:[0-9]*' "$work/err.log" | head -1 | cut -d: -f2)
  # The embedded cluster admits its role only with the generated password, kept in .pgpass form in its data
  # directory: psql reads it from there, so the password never appears on a command line.
  export PGPASSFILE="$work/data/pg/otpd.pgpass"
  db="postgresql://otpd@127.0.0.1:$pgport/otpd"
}

# start_another_otpd K: one more otpd on start_otpd's database, with its configuration but its own port; sets
# another_port and another_pid (the caller stops it), its output in $work/outK.log and $work/errK.log.
start_another_otpd() {
  another_port=$(free_port)
  sed -e "s|^listen = .*|listen = \"127.0.0.1:$another_port\"|" -e "s|^data_dir = .*|database_url = \"$db\"|" \
    "$work/otpd.toml" > "$work/otpd$1.toml"
  "$bin" --config "$work/otpd$1.toml" > "$work/out$1.log" 2> "$work/err$1.log" &
  another_pid=$!
  for _ in $(seq 1 120); do grep -q "listening" "$work/out$1.log" && break; sleep 0.5; done
  grep -q "listening" "$work/out$1.log" || { cat "$work/err$1.log" >&2; echo "otpd $1 did not start" >&2; exit 1; }
}

# cpu_ticks PID...: user + system clock ticks (getconf CLK_TCK a second) of the given processes and of the
# embedded cluster's postmaster and its children, so a figure counts otpd and its PostgreSQL together.
cpu_ticks() {
  local total=0 postmaster
  postmaster=$(find "$work/data" -name postmaster.pid -exec head -1 {} \; | head -1)
  for p in "$@" $postmaster $(pgrep -P "$postmaster"); do
    [ -r "/proc/$p/stat" ] && total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo $total
}
