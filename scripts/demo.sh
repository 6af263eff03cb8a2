#!/usr/bin/env bash
# The whole path on local servers (run by `make demo`, after scripts/services.sh):
#
#   galaxy-sim (Runtime Manager publisher, simulated fleet, the Game Master's other flows)
#     --XADD--> runtime:health_events --> gamemaster run --> gm:lobby_events --> lobby run
#   rtmanager run (real galaxy-engine processes) --> runtime:health_events --> ...
#   lobby run --> runtime:stop_jobs --> rtmanager run --> runtime:job_results --> lobby run
#
#  1. build the release binaries (gamemaster, lobby, rtmanager, galaxy-engine, galaxy-sim,
#     galaxy-live);
#  2. recreate the demo databases (galaxy_demo for the Game Master and the simulator's
#     health publisher, galaxy_demo_lobby for the Lobby, galaxy_demo_rtm for the Runtime
#     Manager) and the demo's Redis keys;
#  3. migrate, then run the Game Master, the Lobby and the Runtime Manager in the
#     background (logs in .demo/, engine logs in .demo/engines/);
#  4. run galaxy-sim (about 200 games for about 20 s): it creates the games in the Lobby as
#     it registers them, waits for the Game Master and then the Lobby to drain, prints the
#     summary and the convergence verdict for both;
#  5. run galaxy-live (24 games with real engines): it starts their engines through the
#     Runtime Manager, kills one with -9, blows one past its memory limit, SIGSTOPs and
#     SIGCONTs one, finishes them all and checks every effect round the loop (health
#     events, the Game Master's and the Lobby's view, the engines gone, one job result
#     per stop job, a replayed job answered replay_no_op);
#  6. stop the Lobby, the Runtime Manager and the Game Master with SIGTERM and check that
#     each exits 0.
#
# Exits 0 only when every game converged in both services, every career is as predicted,
# every real engine's checks passed, and the three services stopped cleanly.
#
#   GALAXY_POSTGRES_URL   admin URL of the local server (default postgres://postgres@127.0.0.1:5432/postgres)
#   GALAXY_REDIS_URL      the local Redis (default redis://127.0.0.1:6379)
#   GALAXY_DEMO_DATABASE  demo database, dropped and recreated each run (default galaxy_demo)
#   GALAXY_DEMO_LOBBY_DATABASE  the Lobby's demo database, likewise (default galaxy_demo_lobby)
#   GALAXY_DEMO_REDIS_DB  Redis database number the demo uses (default 9, off the default db 0)
#   GALAXY_DEMO_HTTP_PORT the Game Master's ops port (default: the first free one from 18080)
#   GALAXY_DEMO_LOBBY_HTTP_PORT the Lobby's ops port (default: the next free one after it)
#   GALAXY_DEMO_RTM_DATABASE  the Runtime Manager's demo database, likewise (default galaxy_demo_rtm)
#   GALAXY_DEMO_GAMES / GALAXY_DEMO_DURATION / GALAXY_DEMO_RATE   fleet size, run time, events/s
#   GALAXY_DEMO_LIVE_GAMES  games with a real engine (default 24)
#   any GALAXY_SIM_* variable is passed on to galaxy-sim (e.g. GALAXY_SIM_SEED=42 to replay)
set -euo pipefail

cd "$(dirname "$0")/.."
POSTGRES_URL=${GALAXY_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
REDIS_URL=${GALAXY_REDIS_URL:-redis://127.0.0.1:6379}
DATABASE=${GALAXY_DEMO_DATABASE:-galaxy_demo}
LOBBY_DATABASE=${GALAXY_DEMO_LOBBY_DATABASE:-galaxy_demo_lobby}
RTM_DATABASE=${GALAXY_DEMO_RTM_DATABASE:-galaxy_demo_rtm}
LIVE_GAMES=${GALAXY_DEMO_LIVE_GAMES:-24}
ENGINE_MEMORY_LIMIT_MIB=64
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
STOP_KEYS=(runtime:stop_jobs runtime:job_results rtmanager:stream_offsets:stopjobs lobby:stream_offsets:job_results)

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
RTM_PID=
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
  stop_leftover "the Runtime Manager" "$RTM_PID"
  stop_leftover "the Game Master" "$GM_PID"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port_from() { # first -> the first free port in [first, first + 100]
  local candidate
  for candidate in $(seq "$1" $(($1 + 100))); do
    if port_free "$candidate"; then printf '%s' "$candidate"; return; fi
  done
  fail "no free port between $1 and $(($1 + 100))"
}
LAUNCHED_PID=
launch() { # name addr log command...: starts it in the background, waits for /readyz
  local name=$1 addr=$2 log=$3
  shift 3
  say "starting $name on $addr (logs in $log)"
  RUST_LOG=${RUST_LOG:-info} "$@" >"$log" 2>&1 &
  LAUNCHED_PID=$!
  for _ in $(seq 1 100); do
    [[ $(http_status "$addr" /readyz) == 200 ]] && return
    kill -0 "$LAUNCHED_PID" 2>/dev/null || fail "$name exited at start: $(tail -n 1 "$log")"
    sleep 0.1
  done
  fail "$name is not ready after 10 s; see $log"
}
migrate() { # name log command...
  local name=$1 log=$2
  shift 2
  "$@" migrate >"$log" 2>&1 || fail "$name migrate failed: $(tail -n 1 "$log")"
}
shutdown() { # name pid log: SIGTERM, and it must exit 0
  local status=0
  kill -TERM "$2"
  wait "$2" || status=$?
  ((status == 0)) || fail "$1 exited with $status after SIGTERM; see $3"
  say "$1 drained and exited 0 on SIGTERM"
}

# 1. Binaries.
say "building the release binaries (gamemaster, lobby, rtmanager, galaxy-engine, galaxy-sim, galaxy-live)"
cargo build --release --bins -p app -p lobby-app -p rtm-app -p galaxy-engine -p galaxy-sim

# 2. Fresh databases and fresh Redis keys: the demo's own state, nothing else is touched.
DEMO_PG_URL=$(with_database "$POSTGRES_URL" "$DATABASE")
DEMO_LOBBY_PG_URL=$(with_database "$POSTGRES_URL" "$LOBBY_DATABASE")
DEMO_RTM_PG_URL=$(with_database "$POSTGRES_URL" "$RTM_DATABASE")
DEMO_REDIS_URL=$(with_redis_db "$REDIS_URL" "$REDIS_DB")
say "recreating databases $DATABASE, $LOBBY_DATABASE and $RTM_DATABASE and the demo's keys in Redis database ${DEMO_REDIS_URL##*/}"
recreate=()
for db in "$DATABASE" "$LOBBY_DATABASE" "$RTM_DATABASE"; do
  recreate+=(-c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" -c "CREATE DATABASE \"$db\"")
done
PGOPTIONS="-c client_min_messages=warning" psql "$POSTGRES_URL" -qX -v ON_ERROR_STOP=1 "${recreate[@]}" >/dev/null
redis-cli -u "$DEMO_REDIS_URL" DEL "$HEALTH_STREAM" "$LOBBY_STREAM" "$OFFSET_KEY" "$LOBBY_OFFSET_KEY" "${STOP_KEYS[@]}" >/dev/null

# 3. The Game Master, the Lobby and the Runtime Manager, each on its own database and port.
PORT=${GALAXY_DEMO_HTTP_PORT:-$(free_port_from 18080)}
HTTP_ADDR=127.0.0.1:$PORT
export GAMEMASTER_POSTGRES_URL=$DEMO_PG_URL
export GAMEMASTER_REDIS_URL=$DEMO_REDIS_URL
export GAMEMASTER_HTTP_ADDR=$HTTP_ADDR
export GAMEMASTER_HEALTH_EVENTS_STREAM=$HEALTH_STREAM
export GAMEMASTER_LOBBY_EVENTS_STREAM=$LOBBY_STREAM
migrate "gamemaster" "$DEMO_DIR/migrate.log" "$BIN/gamemaster"
launch "the Game Master" "$HTTP_ADDR" "$DEMO_DIR/gamemaster.log" "$BIN/gamemaster" run
GM_PID=$LAUNCHED_PID

LOBBY_PORT=${GALAXY_DEMO_LOBBY_HTTP_PORT:-$(free_port_from $((PORT + 1)))}
LOBBY_HTTP_ADDR=127.0.0.1:$LOBBY_PORT
export LOBBY_POSTGRES_URL=$DEMO_LOBBY_PG_URL
export LOBBY_REDIS_URL=$DEMO_REDIS_URL
export LOBBY_HTTP_ADDR
export LOBBY_GM_EVENTS_STREAM=$LOBBY_STREAM
migrate "lobby" "$DEMO_DIR/lobby-migrate.log" "$BIN/lobby"
launch "the Lobby" "$LOBBY_HTTP_ADDR" "$DEMO_DIR/lobby.log" "$BIN/lobby" run
LOBBY_PID=$LAUNCHED_PID

RTM_HTTP_ADDR=127.0.0.1:$(free_port_from $((LOBBY_PORT + 1)))
export RTMANAGER_POSTGRES_URL=$DEMO_RTM_PG_URL
export RTMANAGER_REDIS_URL=$DEMO_REDIS_URL
export RTMANAGER_HTTP_ADDR=$RTM_HTTP_ADDR
export RTMANAGER_HEALTH_EVENTS_STREAM=$HEALTH_STREAM
export RTMANAGER_ENGINE_BINARY=$BIN/galaxy-engine
export RTMANAGER_ENGINE_LOG_DIR=$DEMO_DIR/engines
export RTMANAGER_ENGINE_MEMORY_LIMIT_MIB=$ENGINE_MEMORY_LIMIT_MIB
export RTMANAGER_STOP_GRACE=2s
mkdir -p "$RTMANAGER_ENGINE_LOG_DIR"
migrate "rtmanager" "$DEMO_DIR/rtmanager-migrate.log" "$BIN/rtmanager"
launch "the Runtime Manager" "$RTM_HTTP_ADDR" "$DEMO_DIR/rtmanager.log" "$BIN/rtmanager" run
RTM_PID=$LAUNCHED_PID

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

# 5. Real engines, round the whole loop.
say "running galaxy-live: $LIVE_GAMES games with real engines"
live_status=0
GALAXY_LIVE_POSTGRES_URL=$DEMO_PG_URL \
  GALAXY_LIVE_LOBBY_POSTGRES_URL=$DEMO_LOBBY_PG_URL \
  GALAXY_LIVE_RTMANAGER_POSTGRES_URL=$DEMO_RTM_PG_URL \
  GALAXY_LIVE_REDIS_URL=$DEMO_REDIS_URL \
  GALAXY_LIVE_RTMANAGER_HTTP_ADDR=$RTM_HTTP_ADDR \
  GALAXY_LIVE_GAMES=$LIVE_GAMES \
  GALAXY_LIVE_ENGINE_MEMORY_LIMIT_MIB=$ENGINE_MEMORY_LIMIT_MIB \
  "$BIN/galaxy-live" || live_status=$?

# 6. A clean stop: the Lobby first (it reads what the others wrote), then the Runtime
#    Manager, then the Game Master.
shutdown "the Lobby" "$LOBBY_PID" "$DEMO_DIR/lobby.log"
LOBBY_PID=
shutdown "the Runtime Manager" "$RTM_PID" "$DEMO_DIR/rtmanager.log"
RTM_PID=
shutdown "the Game Master" "$GM_PID" "$DEMO_DIR/gamemaster.log"
GM_PID=
((sim_status == 0)) || fail "galaxy-sim exited with $sim_status: the run did not converge"
((live_status == 0)) || fail "galaxy-live exited with $live_status: a real engine's check failed"
say "converged ✔  (databases $DATABASE, $LOBBY_DATABASE and $RTM_DATABASE and Redis database ${DEMO_REDIS_URL##*/} keep the run's state for a look)"
