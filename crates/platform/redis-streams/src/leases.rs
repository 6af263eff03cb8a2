//! Shard leases and membership in Redis (decision 0024): who is alive, and which instance
//! holds which shard for now. Every key shares the hash tag `{shards}` so each script stays
//! in one slot on a cluster. A lease only says who should be working on a shard: the
//! fencing epoch in PostgreSQL (decision 0023) decides whose writes commit, so a lease
//! lost in a Redis failover costs a takeover, never a double apply.
//!
//! Every change another member should act on at once (a member joins or leaves, leases are
//! given up) is also published on `<service>:{shards}:changes`, from the same script, so
//! the members listening ([`crate::ChangeNotices`]) tick at once instead of at their next
//! period. A notice lost (a subscriber reconnecting) costs only that wait.

use std::time::Duration;

use bytes::Bytes;
use fred::types::Value;
use stream_consumer::StreamError;

use crate::client::RedisClient;
use crate::script::Script;

/// Heartbeat: `KEYS[1]` the members (a sorted set scored by expiry, server time in ms);
/// `ARGV` member, time to live in ms and the changes channel. Renews the member (a new
/// one is announced), drops the expired ones and returns those alive, and the ms until
/// the first of the others lapses unrenewed (-1 when there is no other).
static HEARTBEAT: Script = Script::new(
    r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1]) == 1 then
  redis.call('PUBLISH', ARGV[3], 'joined')
end
local names, soonest = {}, -1
local scored = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #scored, 2 do
  names[#names + 1] = scored[i]
  if soonest < 0 and scored[i] ~= ARGV[1] then
    soonest = tonumber(scored[i + 1]) - now
  end
end
return {names, soonest}
",
);

/// Hold: `KEYS` lease keys; `ARGV` member and time to live in ms. Each lease that is free
/// is taken and each the member holds is renewed; per key, 1 when the member holds it now.
static HOLD: Script = Script::new(
    r"
local held = {}
for i, key in ipairs(KEYS) do
  local owner = redis.call('GET', key)
  if owner == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    held[i] = 1
  elseif not owner then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    held[i] = 1
  else
    held[i] = 0
  end
end
return held
",
);

/// Release: `KEYS` lease keys; `ARGV` the member and the changes channel. Deletes the
/// leases it holds (announced when there were any); returns how many.
static RELEASE: Script = Script::new(
    r"
local n = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('DEL', key)
    n = n + 1
  end
end
if n > 0 then
  redis.call('PUBLISH', ARGV[2], 'released')
end
return n
",
);

/// Leave: `KEYS[1]` the members; `ARGV` the member and the changes channel. Announced
/// when the member was there.
static LEAVE: Script = Script::new(
    r"
local n = redis.call('ZREM', KEYS[1], ARGV[1])
if n > 0 then
  redis.call('PUBLISH', ARGV[2], 'left')
end
return n
",
);

/// Membership and shard leases of one service, under `<service>:{shards}:…`.
#[derive(Debug, Clone)]
pub struct RedisShardLeases {
    client: RedisClient,
    service: String,
}

impl RedisShardLeases {
    /// The leases of `service` on `client`.
    #[must_use]
    pub fn new(client: RedisClient, service: impl Into<String>) -> Self {
        Self {
            client,
            service: service.into(),
        }
    }

    /// The members key, `<service>:{shards}:members`.
    #[must_use]
    pub fn members_key(&self) -> String {
        format!("{}:{{shards}}:members", self.service)
    }

    /// The channel changes are announced on, `<service>:{shards}:changes`.
    #[must_use]
    pub fn changes_channel(&self) -> String {
        format!("{}:{{shards}}:changes", self.service)
    }

    /// The lease key of `shard`, `<service>:{shards}:lease:<shard>`.
    #[must_use]
    pub fn lease_key(&self, shard: u32) -> String {
        format!("{}:{{shards}}:lease:{shard}", self.service)
    }

    /// Says `member` is alive for `ttl` more; returns every member alive (in name
    /// order), itself included, and how soon the first of the others lapses if it does
    /// not beat again (`None` when there is no other): a dead member's shards are free
    /// from then on. Expiry runs on the server's clock, so members' clocks need not agree.
    ///
    /// # Errors
    /// [`StreamError`] when Redis cannot be reached or answers nonsense.
    pub async fn heartbeat(
        &self,
        member: &str,
        ttl: Duration,
    ) -> Result<(Vec<String>, Option<Duration>), StreamError> {
        let reply = HEARTBEAT
            .run(&self.client, vec![self.members_key()], "heartbeat", || {
                vec![text(member), millis(ttl), text(&self.changes_channel())]
            })
            .await?;
        let unexpected = || StreamError::Protocol("heartbeat: unexpected reply".into());
        let Value::Array(mut reply) = reply else {
            return Err(unexpected());
        };
        let (Some(Value::Integer(soonest)), Some(Value::Array(members)), None) =
            (reply.pop(), reply.pop(), reply.pop())
        else {
            return Err(unexpected());
        };
        let next_lapse = u64::try_from(soonest).ok().map(Duration::from_millis);
        let mut names = members
            .into_iter()
            .map(|m| match m {
                Value::Bytes(b) => String::from_utf8(b.to_vec()).map_err(|_| {
                    StreamError::Protocol("heartbeat: a member name is not UTF-8".into())
                }),
                Value::String(s) => Ok(s.to_string()),
                other => Err(StreamError::Protocol(format!(
                    "heartbeat: unexpected member {other:?}"
                ))),
            })
            .collect::<Result<Vec<String>, StreamError>>()?;
        names.sort_unstable();
        Ok((names, next_lapse))
    }

    /// Takes each of `shards` that is free and renews each `member` holds, for `ttl`;
    /// returns those it holds now (a shard another member holds is left to it).
    ///
    /// # Errors
    /// [`StreamError`] when Redis cannot be reached or answers nonsense (then the leases
    /// are as they were, or renewed: call again).
    pub async fn hold(
        &self,
        member: &str,
        shards: &[u32],
        ttl: Duration,
    ) -> Result<Vec<u32>, StreamError> {
        if shards.is_empty() {
            return Ok(Vec::new());
        }
        let keys = shards.iter().map(|&s| self.lease_key(s)).collect();
        let reply = HOLD
            .run(&self.client, keys, "hold shard leases", || {
                vec![text(member), millis(ttl)]
            })
            .await?;
        let Value::Array(flags) = reply else {
            return Err(StreamError::Protocol(format!(
                "hold: unexpected reply {reply:?}"
            )));
        };
        if flags.len() != shards.len() {
            return Err(StreamError::Protocol(format!(
                "hold: {} answers for {} shards",
                flags.len(),
                shards.len()
            )));
        }
        Ok(shards
            .iter()
            .zip(flags)
            .filter(|(_, held)| matches!(held, Value::Integer(1)))
            .map(|(&s, _)| s)
            .collect())
    }

    /// Gives up the leases of `shards` that `member` holds (others' are left alone), so
    /// another member can take them at once; returns how many it gave up.
    ///
    /// # Errors
    /// [`StreamError`] when Redis cannot be reached (the leases then lapse on their own).
    pub async fn release(&self, member: &str, shards: &[u32]) -> Result<usize, StreamError> {
        if shards.is_empty() {
            return Ok(0);
        }
        let keys = shards.iter().map(|&s| self.lease_key(s)).collect();
        let reply = RELEASE
            .run(&self.client, keys, "release shard leases", || {
                vec![text(member), text(&self.changes_channel())]
            })
            .await?;
        match reply {
            Value::Integer(n) => Ok(usize::try_from(n).unwrap_or_default()),
            other => Err(StreamError::Protocol(format!(
                "release: unexpected reply {other:?}"
            ))),
        }
    }

    /// Removes `member` from the members at once (a stopping instance), rather than when
    /// its heartbeat lapses.
    ///
    /// # Errors
    /// [`StreamError`] when Redis cannot be reached.
    pub async fn leave(&self, member: &str) -> Result<(), StreamError> {
        LEAVE
            .run(&self.client, vec![self.members_key()], "leave", || {
                vec![text(member), text(&self.changes_channel())]
            })
            .await
            .map(|_| ())
    }
}

fn text(s: &str) -> Value {
    Value::Bytes(Bytes::copy_from_slice(s.as_bytes()))
}

fn millis(d: Duration) -> Value {
    Value::Integer(i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1))
}
