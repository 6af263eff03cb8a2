#!/usr/bin/env bash
# The whole path on local servers (run by `make demo`, after scripts/services.sh):
#
#   galaxy-sim (Runtime Manager publisher, simulated fleet, the Game Master's other flows)
#     --XADD--> runtime:health_events --> gamemaster run --> gm:lobby_events --> lobby run
#
#  1. build the release binaries (gamemaster, lobby, galaxy-sim);
#  2. recreate the demo databases (galaxy_demo for the Game Master and the Runtime
#     Manager, galaxy_demo_lobby for the Lobby) and the demo's Redis keys;
#  3. gamemaster migrate and lobby migrate, then gamemaster run and lobby run in the
#     background (logs in .demo/);
#  4. wait for both /readyz, run galaxy-sim (about 200 games for about 20 s): it creates
#     the games in the Lobby as it registers them, waits for the Game Master and then the
#     Lobby to drain, prints the summary and the convergence verdict for both;
#  5. stop the Lobby and the Game Master with SIGTERM and check that both exit 0.
#
# Exits 0 only when every game converged in both services, every career is as predicted,
# and both services stopped cleanly.
#
#   GALAXY_POSTGRES_URL   admin URL of the local server (default postgres://postgres@127.0.0.1:5432/postgres)
#   GALAXY_REDIS_URL      the local Redis (default redis://127.0.0.1:6379)
#   GALAXY_DEMO_DATABASE  demo database, dropped and recreated each run (default galaxy_demo)
#   GALAXY_DEMO_LOBBY_DATABASE  the Lobby's demo database, likewise (default galaxy_demo_lobby)
#   GALAXY_DEMO_REDIS_DB  Redis database number the demo uses (default 9, off the default db 0)
#   GALAXY_DEMO_HTTP_PORT the Game Master's ops port (default: the first free one from 18080)
#   GALAXY_DEMO_LOBBY_HTTP_PORT the Lobby's ops port (default: the next free one after it)
#   GALAXY_DEMO_GAMES / GALAXY_DEMO_DURATION / GALAXY_DEMO_RATE   fleet size, run time, events/s
#   any GALAXY_SIM_* variable is passed on to galaxy-sim (e.g. GALAXY_SIM_SEED=42 to replay)
set -euo pipefail

cd "$(dirname "$0")/.."
POSTGRES_URL=${GALAXY_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
REDIS_URL=${GALAXY_REDIS_URL:-redis://127.0.0.1:6379}
DATABASE=${GALAXY_DEMO_DATABASE:-galaxy_demo}
LOBBY_DATABASE=${GALAXY_DEMO_LOBBY_DATABASE:-galaxy_demo_lobby}
REDIS_DB=${GALAXY_DEMO_REDIS_DB:-9}
GAMES=${GALAXY_DEMO_GAMES:-200}
DURATION=${GALAXY_DEMO_DURATION:-20s}
RATE=${GALAXY_DEMO_RATE:-2000}
DEMO_DIR=.demo
BIN=${CARGO_TARGET_DIR:-target}/release   # where cargo put the release binaries
HEALTH_STREAM=runtime:health_events
LOBBY_STREAM=gm:lobby_events
OFFSET_KEY=gamemaster:stream_offsets:health_events
LOBBY_OFFSET_KEY=lobby:stream_offsets:gm_lobby_events

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
LOBBY_PID=
stop_leftover() { # name pid: SIGTERM, up to 15 s, then SIGKILL
  if [[ -n $2 ]] && kill -0 "$2" 2>/dev/null; then
    say "stopping $1 (pid $2)"
    kill -TERM "$2" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$2" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$2" 2>/dev/null || true
  fi
}
cleanup() {
  stop_leftover "the Lobby" "$LOBBY_PID"
  stop_leftover "the Game Master" "$GM_PID"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1. Binaries.
say "building the release binaries (gamemaster, lobby, galaxy-sim)"
cargo build --release --bins -p app -p lobby-app -p galaxy-sim

# 2. Fresh databases and fresh Redis keys: the demo's own state, nothing else is touched.
DEMO_PG_URL=$(with_database "$POSTGRES_URL" "$DATABASE")
DEMO_LOBBY_PG_URL=$(with_database "$POSTGRES_URL" "$LOBBY_DATABASE")
DEMO_REDIS_URL=$(with_redis_db "$REDIS_URL" "$REDIS_DB")
say "recreating databases $DATABASE and $LOBBY_DATABASE and the demo's keys in Redis database ${DEMO_REDIS_URL##*/}"
PGOPTIONS="-c client_min_messages=warning" psql "$POSTGRES_URL" -qX -v ON_ERROR_STOP=1 \
  -c "DROP DATABASE IF EXISTS \"$DATABASE\" WITH (FORCE)" \
  -c "CREATE DATABASE \"$DATABASE\"" \
  -c "DROP DATABASE IF EXISTS \"$LOBBY_DATABASE\" WITH (FORCE)" \
  -c "CREATE DATABASE \"$LOBBY_DATABASE\"" >/dev/null
redis-cli -u "$DEMO_REDIS_URL" DEL "$HEALTH_STREAM" "$LOBBY_STREAM" "$OFFSET_KEY" "$LOBBY_OFFSET_KEY" >/dev/null

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

# 3b. The Lobby, on its own database and the next free port.
LOBBY_PORT=${GALAXY_DEMO_LOBBY_HTTP_PORT:-}
if [[ -z $LOBBY_PORT ]]; then
  for candidate in $(seq $((PORT + 1)) $((PORT + 100))); do
    if port_free "$candidate"; then LOBBY_PORT=$candidate; break; fi
  done
  [[ -n $LOBBY_PORT ]] || fail "no free port after $PORT for the Lobby's ops server"
fi
LOBBY_HTTP_ADDR=127.0.0.1:$LOBBY_PORT
export LOBBY_POSTGRES_URL=$DEMO_LOBBY_PG_URL
export LOBBY_REDIS_URL=$DEMO_REDIS_URL
export LOBBY_HTTP_ADDR
export LOBBY_GM_EVENTS_STREAM=$LOBBY_STREAM
"$BIN/lobby" migrate >"$DEMO_DIR/lobby-migrate.log" 2>&1 ||
  fail "lobby migrate failed: $(tail -n 1 "$DEMO_DIR/lobby-migrate.log")"
say "starting the Lobby on $LOBBY_HTTP_ADDR (logs in $DEMO_DIR/lobby.log)"
RUST_LOG=${RUST_LOG:-info} "$BIN/lobby" run >"$DEMO_DIR/lobby.log" 2>&1 &
LOBBY_PID=$!
for _ in $(seq 1 100); do
  [[ $(http_status "$LOBBY_HTTP_ADDR" /readyz) == 200 ]] && break
  kill -0 "$LOBBY_PID" 2>/dev/null || fail "the Lobby exited at start: $(tail -n 1 "$DEMO_DIR/lobby.log")"
  sleep 0.1
done
[[ $(http_status "$LOBBY_HTTP_ADDR" /readyz) == 200 ]] || fail "the Lobby is not ready after 10 s; see $DEMO_DIR/lobby.log"

# 4. The simulated fleet. galaxy-sim creates its games in the Lobby (running) as it
#    registers them with the Game Master, so the Lobby knows every game it hears about.
say "running galaxy-sim: $GAMES games for $DURATION at up to $RATE events/s"
sim_status=0
GALAXY_SIM_POSTGRES_URL=$DEMO_PG_URL \
  GALAXY_SIM_REDIS_URL=$DEMO_REDIS_URL \
  GALAXY_SIM_HEALTH_EVENTS_STREAM=$HEALTH_STREAM \
  GALAXY_SIM_LOBBY_EVENTS_STREAM=$LOBBY_STREAM \
  GALAXY_SIM_GAMEMASTER_METRICS_URL="http://$HTTP_ADDR/metrics" \
  GALAXY_SIM_LOBBY_POSTGRES_URL=$DEMO_LOBBY_PG_URL \
  GALAXY_SIM_LOBBY_METRICS_URL="http://$LOBBY_HTTP_ADDR/metrics" \
  GALAXY_SIM_GAMES=${GALAXY_SIM_GAMES:-$GAMES} \
  GALAXY_SIM_DURATION=${GALAXY_SIM_DURATION:-$DURATION} \
  GALAXY_SIM_RATE=${GALAXY_SIM_RATE:-$RATE} \
  "$BIN/galaxy-sim" || sim_status=$?

# 5. A clean stop: the Lobby first (it reads what the Game Master wrote), then the Game Master.
kill -TERM "$LOBBY_PID"
lobby_status=0
wait "$LOBBY_PID" || lobby_status=$?
LOBBY_PID=
if ((lobby_status != 0)); then
  fail "the Lobby exited with $lobby_status after SIGTERM; see $DEMO_DIR/lobby.log"
fi
say "the Lobby drained and exited 0 on SIGTERM"
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
say "converged ✔  (databases $DATABASE and $LOBBY_DATABASE and Redis database ${DEMO_REDIS_URL##*/} keep the run's state for a look)"
