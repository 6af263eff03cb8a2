#!/usr/bin/env bash
# The whole path on local servers (run by `make demo`, after scripts/services.sh):
#
#   galaxy-sim (Runtime Manager publisher, simulated fleet)
#     --XADD--> runtime:health_events --> gamemaster run --> gm:lobby_events
#
#  1. build the release binaries (gamemaster, galaxy-sim);
#  2. recreate the demo database (galaxy_demo) and the demo's Redis keys;
#  3. gamemaster migrate, then gamemaster run in the background (logs in .demo/);
#  4. wait for /readyz, run galaxy-sim (about 200 games for about 20 s): it waits for the
#     Game Master to drain, prints the summary and the convergence verdict;
#  5. stop the Game Master with SIGTERM and check that it exits 0.
#
# Exits 0 only when every game converged and the Game Master stopped cleanly.
#
#   GALAXY_POSTGRES_URL   admin URL of the local server (default postgres://postgres@127.0.0.1:5432/postgres)
#   GALAXY_REDIS_URL      the local Redis (default redis://127.0.0.1:6379)
#   GALAXY_DEMO_DATABASE  demo database, dropped and recreated each run (default galaxy_demo)
#   GALAXY_DEMO_REDIS_DB  Redis database number the demo uses (default 9, off the default db 0)
#   GALAXY_DEMO_HTTP_PORT the Game Master's ops port (default: the first free one from 18080)
#   GALAXY_DEMO_GAMES / GALAXY_DEMO_DURATION / GALAXY_DEMO_RATE   fleet size, run time, events/s
#   any GALAXY_SIM_* variable is passed on to galaxy-sim (e.g. GALAXY_SIM_SEED=42 to replay)
set -euo pipefail

cd "$(dirname "$0")/.."
POSTGRES_URL=${GALAXY_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
REDIS_URL=${GALAXY_REDIS_URL:-redis://127.0.0.1:6379}
DATABASE=${GALAXY_DEMO_DATABASE:-galaxy_demo}
REDIS_DB=${GALAXY_DEMO_REDIS_DB:-9}
GAMES=${GALAXY_DEMO_GAMES:-200}
DURATION=${GALAXY_DEMO_DURATION:-20s}
RATE=${GALAXY_DEMO_RATE:-2000}
DEMO_DIR=.demo
BIN=target/release
HEALTH_STREAM=runtime:health_events
LOBBY_STREAM=gm:lobby_events
OFFSET_KEY=gamemaster:stream_offsets:health_events

say() { printf '\033[1mdemo:\033[0m %s\n' "$*" >&2; }
fail() { say "$*"; exit 1; }

# The same server, another database: keep scheme, credentials, host and query.
with_database() {
  local scheme=${1%%://*} rest=${1#*://} query=
  [[ $rest == *\?* ]] && query="?${rest#*\?}" && rest=${rest%%\?*}
  printf '%s://%s/%s%s' "$scheme" "${rest%%/*}" "$2" "$query"
}
# The same Redis, the demo's database number (unless the URL already names one).
with_redis_db() {
  local rest=${1#*://}
  if [[ $rest == */* && -n ${rest#*/} ]]; then printf '%s' "$1"; else printf '%s/%s' "${1%/}" "$2"; fi
}
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
http_status() { # host:port path -> the HTTP status code, or nothing when nobody answers
  local host=${1%:*} port=${1##*:}
  (
    exec 3<>"/dev/tcp/$host/$port" || exit 0
    printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$2" "$1" >&3
    IFS=' ' read -r _ code _ <&3 && printf '%s' "$code"
  ) 2>/dev/null || true
}

for tool in psql redis-cli cargo; do
  command -v "$tool" >/dev/null || fail "$tool is not installed (scripts/services.sh installs the servers and their clients)"
done
mkdir -p "$DEMO_DIR"

GM_PID=
cleanup() {
  if [[ -n $GM_PID ]] && kill -0 "$GM_PID" 2>/dev/null; then
    say "stopping the Game Master (pid $GM_PID)"
    kill -TERM "$GM_PID" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$GM_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$GM_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1. Binaries.
say "building the release binaries (gamemaster, galaxy-sim)"
cargo build --release --bins -p app -p galaxy-sim

# 2. A fresh database and fresh Redis keys: the demo's own state, nothing else is touched.
DEMO_PG_URL=$(with_database "$POSTGRES_URL" "$DATABASE")
DEMO_REDIS_URL=$(with_redis_db "$REDIS_URL" "$REDIS_DB")
say "recreating database $DATABASE and the demo's keys in Redis database ${DEMO_REDIS_URL##*/}"
PGOPTIONS="-c client_min_messages=warning" psql "$POSTGRES_URL" -qX -v ON_ERROR_STOP=1 \
  -c "DROP DATABASE IF EXISTS \"$DATABASE\" WITH (FORCE)" \
  -c "CREATE DATABASE \"$DATABASE\"" >/dev/null
redis-cli -u "$DEMO_REDIS_URL" DEL "$HEALTH_STREAM" "$LOBBY_STREAM" "$OFFSET_KEY" >/dev/null

# 3. The Game Master.
PORT=${GALAXY_DEMO_HTTP_PORT:-}
if [[ -z $PORT ]]; then
  for candidate in $(seq 18080 18180); do
    if port_free "$candidate"; then PORT=$candidate; break; fi
  done
  [[ -n $PORT ]] || fail "no free port between 18080 and 18180 for the Game Master's ops server"
fi
HTTP_ADDR=127.0.0.1:$PORT
export GAMEMASTER_POSTGRES_URL=$DEMO_PG_URL
export GAMEMASTER_REDIS_URL=$DEMO_REDIS_URL
export GAMEMASTER_HTTP_ADDR=$HTTP_ADDR
export GAMEMASTER_HEALTH_EVENTS_STREAM=$HEALTH_STREAM
export GAMEMASTER_LOBBY_EVENTS_STREAM=$LOBBY_STREAM
"$BIN/gamemaster" migrate >"$DEMO_DIR/migrate.log" 2>&1 ||
  fail "gamemaster migrate failed: $(tail -n 1 "$DEMO_DIR/migrate.log")"
say "starting the Game Master on $HTTP_ADDR (logs in $DEMO_DIR/gamemaster.log)"
RUST_LOG=${RUST_LOG:-info} "$BIN/gamemaster" run >"$DEMO_DIR/gamemaster.log" 2>&1 &
GM_PID=$!
for _ in $(seq 1 100); do
  [[ $(http_status "$HTTP_ADDR" /readyz) == 200 ]] && break
  kill -0 "$GM_PID" 2>/dev/null || fail "the Game Master exited at start: $(tail -n 1 "$DEMO_DIR/gamemaster.log")"
  sleep 0.1
done
[[ $(http_status "$HTTP_ADDR" /readyz) == 200 ]] || fail "the Game Master is not ready after 10 s; see $DEMO_DIR/gamemaster.log"

# 4. The simulated fleet.
say "running galaxy-sim: $GAMES games for $DURATION at up to $RATE events/s"
sim_status=0
GALAXY_SIM_POSTGRES_URL=$DEMO_PG_URL \
  GALAXY_SIM_REDIS_URL=$DEMO_REDIS_URL \
  GALAXY_SIM_HEALTH_EVENTS_STREAM=$HEALTH_STREAM \
  GALAXY_SIM_LOBBY_EVENTS_STREAM=$LOBBY_STREAM \
  GALAXY_SIM_GAMEMASTER_METRICS_URL="http://$HTTP_ADDR/metrics" \
  GALAXY_SIM_GAMES=${GALAXY_SIM_GAMES:-$GAMES} \
  GALAXY_SIM_DURATION=${GALAXY_SIM_DURATION:-$DURATION} \
  GALAXY_SIM_RATE=${GALAXY_SIM_RATE:-$RATE} \
  "$BIN/galaxy-sim" || sim_status=$?

# 5. A clean stop.
kill -TERM "$GM_PID"
gm_status=0
wait "$GM_PID" || gm_status=$?
GM_PID=
if ((gm_status != 0)); then
  fail "the Game Master exited with $gm_status after SIGTERM; see $DEMO_DIR/gamemaster.log"
fi
say "the Game Master drained and exited 0 on SIGTERM"
if ((sim_status != 0)); then
  fail "galaxy-sim exited with $sim_status: the run did not converge"
fi
say "converged ✔  (database $DATABASE and Redis database ${DEMO_REDIS_URL##*/} keep the run's state for a look)"
