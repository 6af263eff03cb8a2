#!/usr/bin/env bash
# Makes sure Redis and PostgreSQL answer at the URLs the tests and the demo use.
#
#   GALAXY_REDIS_URL     default redis://127.0.0.1:6379
#   GALAXY_POSTGRES_URL  default postgres://postgres@127.0.0.1:5432/postgres
#
# For each server: if it answers, nothing to do. If it is local and installed but stopped,
# start it. If it is not installed and we are root on Debian, install it from Debian's
# packages and start it. Otherwise say exactly what is missing and how to get it, and exit 1.
set -euo pipefail

REDIS_URL=${GALAXY_REDIS_URL:-redis://127.0.0.1:6379}
POSTGRES_URL=${GALAXY_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}

say() { printf 'services: %s\n' "$*" >&2; }
missing=()

# host and port out of scheme://[user[:pass]@]host[:port][/...]
url_host() { local u=${1#*://}; u=${u##*@}; u=${u%%/*}; u=${u%%\?*}; printf '%s' "${u%%:*}"; }
url_port() {
  local u=${1#*://}; u=${u##*@}; u=${u%%/*}; u=${u%%\?*}
  if [[ $u == *:* ]]; then printf '%s' "${u##*:}"; else printf '%s' "$2"; fi
}
is_local() { [[ $1 == 127.* || $1 == localhost || $1 == ::1 ]]; }
answers() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
wait_for() { # host port what seconds
  local i
  for ((i = 0; i < $4 * 10; i++)); do answers "$1" "$2" && return 0; sleep 0.1; done
  say "$3 did not start answering on $1:$2 within $4 s"
  return 1
}
can_install() { [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; }
apt_updated=
apt_install() {
  if [[ -z $apt_updated ]]; then
    say "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    apt_updated=1
  fi
  say "installing $* from Debian's packages"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

ensure_redis() {
  local host port
  host=$(url_host "$REDIS_URL"); port=$(url_port "$REDIS_URL" 6379)
  answers "$host" "$port" && return 0
  if ! is_local "$host"; then
    missing+=("Redis does not answer at $host:$port (from GALAXY_REDIS_URL); start it there or point GALAXY_REDIS_URL at a running Redis")
    return 0
  fi
  if ! command -v redis-server >/dev/null; then
    if can_install; then apt_install redis-server; else
      missing+=("redis-server is not installed: run 'sudo apt-get install redis-server' (Debian/Ubuntu) or install Redis ≥ 7.0, then re-run")
      return 0
    fi
  fi
  say "starting redis-server on 127.0.0.1:$port"
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  local dir=/var/lib/redis log=/var/log/redis/ci.log
  [[ -w $dir ]] || dir=${TMPDIR:-/tmp}
  [[ -w $(dirname "$log") ]] || log=${TMPDIR:-/tmp}/galaxy-redis.log
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$port" --save "" --appendonly no \
    --dir "$dir" --logfile "$log" >&2
  wait_for "$host" "$port" Redis 15 || missing+=("redis-server was started but does not answer; see $log")
}

ensure_postgres() {
  local host port
  host=$(url_host "$POSTGRES_URL"); port=$(url_port "$POSTGRES_URL" 5432)
  answers "$host" "$port" && return 0
  if ! is_local "$host"; then
    missing+=("PostgreSQL does not answer at $host:$port (from GALAXY_POSTGRES_URL); start it there or point GALAXY_POSTGRES_URL at a running server")
    return 0
  fi
  local fresh=
  if ! command -v pg_ctlcluster >/dev/null || [[ -z $(ls /etc/postgresql 2>/dev/null) ]]; then
    if can_install; then apt_install postgresql; fresh=1; else
      missing+=("PostgreSQL is not installed: run 'sudo apt-get install postgresql' (Debian/Ubuntu) or install PostgreSQL ≥ 13 listening on $host:$port, then re-run")
      return 0
    fi
  fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  if [[ -n $fresh ]]; then
    # A cluster we just installed: let local TCP connections in without a password, as
    # the tests and the demo expect (loopback only).
    local hba=/etc/postgresql/$version/main/pg_hba.conf
    if [[ -f $hba ]] && ! grep -q 'galaxy: trust loopback' "$hba"; then
      say "allowing passwordless connections from 127.0.0.1 and ::1 in $hba"
      sed -i '1i # galaxy: trust loopback\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    fi
  fi
  say "starting PostgreSQL $version (cluster main)"
  if [[ $(id -u) == 0 ]]; then
    pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 || true
  else
    pg_ctlcluster "$version" main start >&2 || true
  fi
  wait_for "$host" "$port" PostgreSQL 30 ||
    missing+=("PostgreSQL $version was started but does not answer on $host:$port; see /var/log/postgresql/")
}

ensure_redis
ensure_postgres

if ((${#missing[@]})); then
  say "cannot run without these:"
  for m in "${missing[@]}"; do printf '  - %s\n' "$m" >&2; done
  exit 1
fi
say "Redis at $(url_host "$REDIS_URL"):$(url_port "$REDIS_URL" 6379) and PostgreSQL at $(url_host "$POSTGRES_URL"):$(url_port "$POSTGRES_URL" 5432) answer"
