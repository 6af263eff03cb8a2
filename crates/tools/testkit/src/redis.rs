//! Redis fixtures: the shared test server's URL, unique key names that are deleted after
//! the test, and throwaway `redis-server` processes for fault tests.
//!
//! Tests share one Redis (`GALAXY_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`), so
//! every stream and key a test touches gets a unique name from [`TestRedis::key`] and is
//! deleted by [`TestRedis::cleanup`] (or, best effort, when the guard is dropped). Tests that
//! need the server to go away start their own with [`ThrowawayRedis::start`].

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use fred::bytes::Bytes;
use fred::clients::Client;
use fred::interfaces::{ClientLike, KeysInterface, StreamsInterface};
use fred::prelude::{Builder, Config, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Environment variable naming the shared test server.
pub const REDIS_URL_ENV: &str = "GALAXY_TEST_REDIS_URL";

/// The shared test server when [`REDIS_URL_ENV`] is unset.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// How long fixture clients wait for a connection or a reply.
const FIXTURE_TIMEOUT: Duration = Duration::from_secs(5);

/// The shared test server's URL.
#[must_use]
pub fn redis_url() -> String {
    std::env::var(REDIS_URL_ENV).unwrap_or_else(|_| DEFAULT_REDIS_URL.to_owned())
}

/// A plain fred client for setting up and inspecting test data (`XADD`, `XRANGE`, `XTRIM`,
/// `SET`…), independent of the code under test. It has no reconnect policy.
///
/// # Errors
/// The URL does not parse or the server cannot be reached.
pub async fn fixture_client(url: &str) -> anyhow::Result<Client> {
    let config =
        Config::from_url(&redis_streams::fred_url(url)).context("parse the test Redis URL")?;
    let client = Builder::from_config(config)
        .with_connection_config(|c| c.connection_timeout = FIXTURE_TIMEOUT)
        .with_performance_config(|p| p.default_command_timeout = FIXTURE_TIMEOUT)
        .build()
        .context("build a fixture Redis client")?;
    tokio::time::timeout(FIXTURE_TIMEOUT, client.init())
        .await
        .map_err(|_| anyhow!("no connection to the test Redis within {FIXTURE_TIMEOUT:?}"))?
        .context("connect to the test Redis (is it running? see GALAXY_TEST_REDIS_URL)")?;
    Ok(client)
}

/// Entries [`TestRedis::xrange`] asks for at a time.
const XRANGE_PAGE: u64 = 5_000;

/// A test's view of the shared Redis: a fixture client and the keys the test created, which
/// are deleted on [`TestRedis::cleanup`].
///
/// Dropping the guard without `cleanup` (a failed assertion, a panic) still deletes the
/// keys, best effort: on a separate thread with its own runtime and connection, so it
/// neither panics inside the test's runtime nor waits for it.
pub struct TestRedis {
    url: String,
    client: Client,
    keys: Mutex<Vec<String>>,
}

impl std::fmt::Debug for TestRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRedis")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl TestRedis {
    /// Connects to the shared test server ([`redis_url`]).
    ///
    /// # Errors
    /// The server cannot be reached.
    pub async fn connect() -> anyhow::Result<Self> {
        Self::connect_to(&redis_url()).await
    }

    /// Connects to the server at `url` (e.g. a [`ThrowawayRedis`]).
    ///
    /// # Errors
    /// The URL does not parse or the server cannot be reached.
    pub async fn connect_to(url: &str) -> anyhow::Result<Self> {
        Ok(Self {
            url: url.to_owned(),
            client: fixture_client(url).await?,
            keys: Mutex::new(Vec::new()),
        })
    }

    /// The server's URL, for the code under test.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The fixture client.
    #[must_use]
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A unique key or stream name starting with `prefix`, deleted on cleanup.
    #[must_use]
    pub fn key(&self, prefix: &str) -> String {
        let name = crate::unique_name(prefix);
        self.track(name.clone());
        name
    }

    /// Registers a key the test derived itself (e.g. an offset key built from a unique
    /// service name) for deletion on cleanup.
    pub fn track(&self, key: impl Into<String>) {
        let key = key.into();
        let mut keys = self
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }

    /// `XADD stream * field value …` with raw bytes; returns the new id.
    ///
    /// # Errors
    /// The server refuses (e.g. no fields) or cannot be reached.
    pub async fn xadd<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        stream: &str,
        fields: &[(K, V)],
    ) -> anyhow::Result<String> {
        self.xadd_with_id(stream, "*", fields).await
    }

    /// `XADD stream <id> field value …` with raw bytes; returns the id.
    ///
    /// # Errors
    /// The server refuses (an id not above the top, no fields) or cannot be reached.
    pub async fn xadd_with_id<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        stream: &str,
        id: &str,
        fields: &[(K, V)],
    ) -> anyhow::Result<String> {
        let pairs: Vec<(Bytes, Value)> = fields
            .iter()
            .map(|(k, v)| {
                (
                    Bytes::copy_from_slice(k.as_ref()),
                    Value::Bytes(Bytes::copy_from_slice(v.as_ref())),
                )
            })
            .collect();
        let id: String = self
            .client
            .xadd(stream, false, None::<()>, id, pairs)
            .await
            .with_context(|| format!("XADD {stream}"))?;
        Ok(id)
    }

    /// Every entry of `stream` (`XRANGE - +`) as `(id, [(field, value)])` with raw bytes,
    /// in stream order; empty when the stream does not exist.
    ///
    /// # Errors
    /// The server cannot be reached or the reply has an unexpected shape.
    pub async fn xrange(&self, stream: &str) -> anyhow::Result<Vec<RawEntry>> {
        // In pages, so a long stream does not make one reply that outlasts the timeout.
        let mut all = Vec::new();
        let mut from = "-".to_owned();
        loop {
            let reply: Value = self
                .client
                .xrange(stream, from.as_str(), "+", Some(XRANGE_PAGE))
                .await
                .with_context(|| format!("XRANGE {stream}"))?;
            let Value::Array(entries) = reply else {
                bail!("XRANGE {stream}: unexpected reply {reply:?}");
            };
            let full = entries.len() == XRANGE_PAGE as usize;
            for entry in entries {
                all.push(raw_entry(entry)?);
            }
            match all.last() {
                Some((id, _)) if full => from = format!("({id}"),
                _ => return Ok(all),
            }
        }
    }

    fn take_keys(&self) -> Vec<String> {
        std::mem::take(
            &mut *self
                .keys
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Deletes every key the test created and closes the fixture client.
    ///
    /// # Errors
    /// The server cannot be reached (the keys stay; their names are unique anyway).
    pub async fn cleanup(self) -> anyhow::Result<()> {
        let keys = self.take_keys();
        if !keys.is_empty() {
            let _: i64 = self
                .client
                .del(keys)
                .await
                .context("delete the test's Redis keys")?;
        }
        let _ = tokio::time::timeout(FIXTURE_TIMEOUT, self.client.quit()).await;
        Ok(())
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let keys = self.take_keys();
        if keys.is_empty() {
            return;
        }
        let url = self.url.clone();
        // A fresh thread and runtime: blocking on the test's own runtime from here would
        // panic, and a task spawned on it may never run once the test returns.
        let cleaner = std::thread::Builder::new()
            .name("testkit-redis-cleanup".to_owned())
            .spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                runtime.block_on(async move {
                    let attempt = async {
                        let client = fixture_client(&url).await?;
                        let _: i64 = client.del(keys).await?;
                        let _ = client.quit().await;
                        anyhow::Ok(())
                    };
                    let _ = tokio::time::timeout(FIXTURE_TIMEOUT, attempt).await;
                });
            });
        if let Ok(handle) = cleaner {
            let _ = handle.join();
        }
    }
}

/// One stream entry as the server stores it: its id and its field/value pairs, raw.
pub type RawEntry = (String, Vec<(Vec<u8>, Vec<u8>)>);

fn raw_bytes(value: Value) -> anyhow::Result<Vec<u8>> {
    match value {
        Value::Bytes(b) => Ok(b.to_vec()),
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        other => bail!("expected a string in an entry, got {other:?}"),
    }
}

fn raw_entry(value: Value) -> anyhow::Result<RawEntry> {
    let Value::Array(parts) = value else {
        bail!("expected [id, fields], got {value:?}");
    };
    let [id, fields]: [Value; 2] = parts
        .try_into()
        .map_err(|p: Vec<Value>| anyhow!("expected [id, fields], got {} parts", p.len()))?;
    let id = String::from_utf8(raw_bytes(id)?).context("entry id is not UTF-8")?;
    let Value::Array(items) = fields else {
        bail!("expected a field array, got {fields:?}");
    };
    let mut pairs = Vec::with_capacity(items.len() / 2);
    let mut items = items.into_iter();
    while let Some(name) = items.next() {
        let value = items
            .next()
            .ok_or_else(|| anyhow!("field without a value"))?;
        pairs.push((raw_bytes(name)?, raw_bytes(value)?));
    }
    Ok((id, pairs))
}

/// A `redis-server` of the test's own on a free port, with no persistence, in a temporary
/// directory: for tests where the server goes away ([`ThrowawayRedis::stop`]) and comes
/// back on the same port ([`ThrowawayRedis::start_again`]). Killed and its directory
/// removed on drop.
#[derive(Debug)]
pub struct ThrowawayRedis {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// Arguments after the defaults (a cluster node's).
    extra: Vec<String>,
}

impl ThrowawayRedis {
    /// Starts a server and waits until it answers `PING`.
    ///
    /// # Errors
    /// `redis-server` is not on `PATH`, or does not come up within a few seconds.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(&[]).await
    }

    /// [`Self::start`], with `extra` arguments for `redis-server` after the defaults.
    ///
    /// # Errors
    /// As [`Self::start`].
    pub async fn start_with(extra: &[&str]) -> anyhow::Result<Self> {
        let mut last_error = None;
        // The free port may be taken again before the server binds it: try a few, each
        // in a directory of its own (a failed attempt removes its own when dropped).
        for _ in 0..3 {
            let dir = std::env::temp_dir().join(crate::unique_name("galaxy_redis"));
            std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
            let mut server = Self {
                port: crate::free_port(),
                dir,
                child: None,
                extra: extra.iter().map(|a| (*a).to_owned()).collect(),
            };
            match server.start_again().await {
                Ok(()) => return Ok(server),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("redis-server did not start")))
    }

    /// `redis://127.0.0.1:<port>`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port the server listens on (the same across restarts).
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (`SIGKILL`, as a crash would) and waits for it to exit. Clients see
    /// their connections reset and new connections refused. No-op when already stopped.
    ///
    /// # Errors
    /// The process could not be killed.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().context("kill redis-server")?;
            child.wait().context("wait for redis-server to exit")?;
        }
        Ok(())
    }

    /// Starts the server again on the same port (empty: nothing is persisted) and waits
    /// until it answers `PING`. No-op when running.
    ///
    /// # Errors
    /// The server does not come up (e.g. the port was taken meanwhile).
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let log_path = self.dir.join(format!("redis-{}.log", self.port));
        let log = std::fs::File::create(&log_path).context("create the redis-server log")?;
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().context("share the log file")?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("spawn redis-server (is it on PATH?)")?;
        self.child = Some(child);

        let deadline = tokio::time::Instant::now() + FIXTURE_TIMEOUT;
        loop {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                bail!(
                    "redis-server on port {} exited with {status}: {}",
                    self.port,
                    tail(&log)
                );
            }
            if ping(self.port).await {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                self.stop().await?;
                bail!(
                    "redis-server on port {} did not answer PING within {FIXTURE_TIMEOUT:?}",
                    self.port
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ThrowawayRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of the test's own: three masters and three replicas, each a
/// [`ThrowawayRedis`] with `--cluster-enabled yes`, joined by `redis-cli --cluster create`.
/// Killed, every node, on drop.
#[derive(Debug)]
pub struct ThrowawayCluster {
    nodes: Vec<ThrowawayRedis>,
}

impl ThrowawayCluster {
    /// Starts six nodes, creates the cluster, and waits until every node says it is `ok`.
    ///
    /// # Errors
    /// `redis-server` or `redis-cli` is missing (install Debian's `redis-server` package),
    /// or the cluster does not form within a few seconds.
    pub async fn start() -> anyhow::Result<Self> {
        let args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
            // A replica syncs at once (the default waits 5 s for more replicas), so one
            // is ready to take over as soon as the cluster is.
            "--repl-diskless-sync-delay",
            "0",
        ];
        let mut nodes = Vec::with_capacity(6);
        for _ in 0..6 {
            nodes.push(ThrowawayRedis::start_with(&args).await?);
        }
        let cluster = Self { nodes };
        let addrs: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .context("run redis-cli --cluster create (is redis-cli on PATH? it comes with Debian's redis-server package)")?;
        if !created.status.success() {
            bail!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&created.stdout)
            );
        }
        cluster.wait_until_ok().await?;
        Ok(cluster)
    }

    /// `redis-cluster://127.0.0.1:<port>,…`, every running node, as the services take it
    /// (a node killed by [`Self::kill_master_of`] is left out, so a new client connects).
    #[must_use]
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis-cluster://{}", nodes.join(","))
    }

    /// Kills (`SIGKILL`) the master that serves `key`'s slot, as a crash would, and returns
    /// its port once its replica serves the slot and the cluster is `ok` again (the others
    /// see the master fail after the nodes' timeout, 2 s, then elect the replica).
    ///
    /// # Errors
    /// `redis-cli` fails, no live master serves the slot, or no replica takes it over
    /// within 20 s.
    pub async fn kill_master_of(&mut self, key: &str) -> anyhow::Result<u16> {
        let asked = self.live_port()?;
        let slot: u16 = redis_cli(asked, &["cluster", "keyslot", key])?
            .trim()
            .parse()
            .context("CLUSTER KEYSLOT answered no number")?;
        let nodes = redis_cli(asked, &["cluster", "nodes"])?;
        let port = master_of(&nodes, slot)
            .ok_or_else(|| anyhow!("no live master serves slot {slot}:\n{nodes}"))?;
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port() == port)
            .ok_or_else(|| anyhow!("the master of slot {slot} (port {port}) is not ours"))?;
        node.stop().await?;
        self.wait_for_master_of(slot, port).await?;
        self.wait_until_ok().await?;
        Ok(port)
    }

    /// Waits until a node other than `killed` serves `slot` as master.
    async fn wait_for_master_of(&self, slot: u16, killed: u16) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let nodes = redis_cli(self.live_port()?, &["cluster", "nodes"])?;
            if master_of(&nodes, slot).is_some_and(|p| p != killed) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("no replica took slot {slot} over within 20 s:\n{nodes}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn live_port(&self) -> anyhow::Result<u16> {
        self.nodes
            .iter()
            .find(|n| n.child.is_some())
            .map(ThrowawayRedis::port)
            .ok_or_else(|| anyhow!("every node of the cluster is stopped"))
    }

    /// Waits until every running node says `cluster_state:ok` (after a master was killed:
    /// once its replica has taken its slots over) and every replica is in sync with its
    /// master.
    ///
    /// # Errors
    /// The cluster is not `ok` within 20 s.
    pub async fn wait_until_ok(&self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut all_ok = true;
            for node in self.nodes.iter().filter(|n| n.child.is_some()) {
                all_ok &=
                    redis_cli(node.port(), &["cluster", "info"])?.contains("cluster_state:ok");
                let replication = redis_cli(node.port(), &["info", "replication"])?;
                all_ok &= !replication.contains("role:slave")
                    || replication.contains("master_link_status:up");
            }
            if all_ok {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("the local Redis Cluster did not reach cluster_state:ok within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `redis-cli -p <port> <args…>`: its standard output.
fn redis_cli(port: u16, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .context("run redis-cli (it comes with Debian's redis-server package)")?;
    if !out.status.success() {
        bail!(
            "redis-cli {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The port of the live master that `CLUSTER NODES` (`nodes`) says serves `slot`.
fn master_of(nodes: &str, slot: u16) -> Option<u16> {
    nodes.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let flags = fields.get(2)?;
        if !flags.contains("master") || flags.contains("fail") {
            return None;
        }
        let serves = fields.iter().skip(8).any(|range| {
            let mut ends = range.splitn(2, '-').map(str::parse::<u16>);
            match (ends.next(), ends.next()) {
                (Some(Ok(lo)), Some(Ok(hi))) => (lo..=hi).contains(&slot),
                (Some(Ok(one)), None) => one == slot,
                _ => false,
            }
        });
        let port = fields
            .get(1)?
            .split(['@', ','])
            .next()?
            .rsplit(':')
            .next()?;
        serves.then(|| port.parse().ok()).flatten()
    })
}

/// Whether a server on `port` answers an inline `PING`.
async fn ping(port: u16) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(b"PING\r\n").await?;
        let mut reply = [0_u8; 7];
        stream.read_exact(&mut reply).await?;
        std::io::Result::Ok(&reply == b"+PONG\r\n")
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), attempt).await,
        Ok(Ok(true))
    )
}

/// The last lines of a log, for error messages.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[tokio::test]
    async fn keys_are_deleted_on_cleanup_and_on_drop() {
        let checker = fixture_client(&redis_url()).await.unwrap();
        let t = TestRedis::connect().await.unwrap();
        let stream = t.key("kit");
        t.xadd(&stream, &[("a", "1")]).await.unwrap();
        t.cleanup().await.unwrap();
        let left: i64 = checker.exists(stream.as_str()).await.unwrap();
        assert_eq!(left, 0);

        let t = TestRedis::connect().await.unwrap();
        let stream = t.key("kit");
        let derived = format!("{stream}:derived");
        t.track(derived.clone());
        t.xadd(&stream, &[("a", "1")]).await.unwrap();
        let _: () = t
            .client()
            .set(derived.as_str(), "x", None, None, false)
            .await
            .unwrap();
        drop(t);
        let left: i64 = checker.exists(vec![stream, derived]).await.unwrap();
        assert_eq!(left, 0);
    }

    #[tokio::test]
    async fn xrange_returns_raw_bytes_in_order() {
        let t = TestRedis::connect().await.unwrap();
        let stream = t.key("kit");
        let first = t
            .xadd_with_id(&stream, "5-1", &[(&b"k"[..], &b"\xff"[..])])
            .await
            .unwrap();
        let second = t.xadd(&stream, &[("a", "1"), ("a", "2")]).await.unwrap();
        let entries = t.xrange(&stream).await.unwrap();
        assert_eq!(first, "5-1");
        assert_eq!(
            entries,
            vec![
                (first, vec![(b"k".to_vec(), vec![0xff])]),
                (
                    second,
                    vec![
                        (b"a".to_vec(), b"1".to_vec()),
                        (b"a".to_vec(), b"2".to_vec())
                    ]
                ),
            ]
        );
        assert!(t.xrange("testkit_no_such_stream").await.unwrap().is_empty());
        t.cleanup().await.unwrap();
    }

    #[tokio::test]
    async fn a_throwaway_server_stops_and_starts_again_on_its_port() {
        let mut server = ThrowawayRedis::start().await.unwrap();
        let port = server.port();
        assert!(ping(port).await);
        server.stop().await.unwrap();
        assert!(!ping(port).await);
        server.stop().await.unwrap();
        server.start_again().await.unwrap();
        assert_eq!(server.url(), format!("redis://127.0.0.1:{port}"));
        assert!(ping(port).await);
        let dir = server.dir.clone();
        drop(server);
        assert!(!ping(port).await);
        assert!(!dir.exists());
    }

    #[test]
    fn the_master_of_a_slot_is_the_live_master_whose_ranges_hold_it() {
        let nodes = "\
a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7002@17002 master,fail - 0 0 2 connected 5461-10922
c3 127.0.0.1:7003@17003 master - 0 0 3 connected 10923-16383
d4 127.0.0.1:7004@17004 slave a1 0 0 1 connected
e5 127.0.0.1:7005@17005 master - 0 0 4 connected 5461-10921 10922
";
        assert_eq!(master_of(nodes, 0), Some(7001));
        assert_eq!(master_of(nodes, 5460), Some(7001));
        assert_eq!(
            master_of(nodes, 6000),
            Some(7005),
            "the failed master is passed over"
        );
        assert_eq!(master_of(nodes, 10922), Some(7005), "a single-slot range");
        assert_eq!(master_of(nodes, 16383), Some(7003));
        assert_eq!(master_of("", 1), None);
    }
}
