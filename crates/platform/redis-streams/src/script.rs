//! Server-side scripts: run by digest, with the body sent only when the server does not
//! know it yet (first use, after `SCRIPT FLUSH`, or on a failed-over replica).

use std::sync::OnceLock;

use fred::interfaces::{ClientLike, LuaInterface};
use fred::types::Value;
use stream_consumer::StreamError;

use crate::client::RedisClient;
use crate::error::stream_error;

/// A Lua script and its SHA-1 digest (computed once).
pub(crate) struct Script {
    body: &'static str,
    sha1: OnceLock<String>,
}

impl Script {
    /// The script `body`; its digest is computed on first use.
    pub(crate) const fn new(body: &'static str) -> Self {
        Self {
            body,
            sha1: OnceLock::new(),
        }
    }

    /// Runs the script on `client` with `keys` (all in one slot on a cluster). The
    /// arguments are built again for the second try rather than kept, so the common path
    /// never holds two copies of a large batch. `context` names the call in errors.
    pub(crate) async fn run(
        &self,
        client: &RedisClient,
        keys: Vec<String>,
        context: &str,
        args: impl Fn() -> Vec<Value>,
    ) -> Result<Value, StreamError> {
        let fred = client.fred().with_options(&client.options(None));
        let sha1 = self.sha1.get_or_init(|| fred::util::sha1_hash(self.body));
        let reply: Result<Value, _> = fred.evalsha(sha1, keys.clone(), args()).await;
        match reply {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                fred.eval(self.body, keys, args()).await
            }
            other => other,
        }
        .map_err(|e| stream_error(context, &e))
    }
}
