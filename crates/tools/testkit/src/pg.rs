//! PostgreSQL fixtures: a fresh database per test on the shared server ([`TestDb`]), and
//! throwaway servers that a test may stop and start again to simulate an outage
//! ([`ThrowawayPostgres`]).
//!
//! The shared server is named by `GALAXY_TEST_POSTGRES_URL` (an admin URL in URL form,
//! default [`DEFAULT_ADMIN_URL`]). Throwaway servers need the PostgreSQL server binaries
//! (`initdb`, `pg_ctl`, `postgres`): found through `GALAXY_TEST_PG_BINDIR`, then
//! `pg_config --bindir`, then `/usr/lib/postgresql/<newest>/bin`. PostgreSQL refuses to
//! run as root, so when the tests run as root the server runs as the OS user `postgres`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio_postgres::NoTls;

/// Environment variable naming the admin URL of the shared test server.
pub const ADMIN_URL_ENV: &str = "GALAXY_TEST_POSTGRES_URL";

/// Admin URL used when [`ADMIN_URL_ENV`] is unset.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Environment variable naming the directory of the PostgreSQL server binaries.
pub const BINDIR_ENV: &str = "GALAXY_TEST_PG_BINDIR";

/// The OS user that runs throwaway servers when the tests run as root.
const SERVER_OS_USER: &str = "postgres";

/// Bounds every admin connection, so a fixture fails with a message instead of hanging.
const ADMIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The shared server's admin URL: [`ADMIN_URL_ENV`] or [`DEFAULT_ADMIN_URL`].
#[must_use]
pub fn admin_url() -> String {
    std::env::var(ADMIN_URL_ENV)
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_ADMIN_URL.to_owned())
}

/// `url` with its database replaced by `database`. URL form (`postgres://…/db?…`) keeps
/// everything else; key=value form gets a `dbname=` appended (the last one wins).
#[must_use]
pub fn url_with_database(url: &str, database: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return format!("{url} dbname={database}");
    };
    let (head, query) = match url.find('?') {
        Some(q) => url.split_at(q),
        None => (url, ""),
    };
    let authority_start = scheme_end + 3;
    let base = match head[authority_start..].find('/') {
        Some(slash) => &head[..authority_start + slash],
        None => head,
    };
    format!("{base}/{database}{query}")
}

/// `url` with any password replaced by `***`, for messages.
fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &authority[..colon],
            &url[scheme_end + 3 + at..]
        ),
        _ => url.to_owned(),
    }
}

/// Connects to `url` for a fixture's admin statement; the connection task runs until the
/// client is dropped.
async fn admin_client(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .with_context(|| format!("unparsable PostgreSQL admin URL {}", redact(url)))?;
    config.connect_timeout(ADMIN_CONNECT_TIMEOUT);
    let (client, connection) = config.connect(NoTls).await.with_context(|| {
        format!(
            "cannot connect to the test PostgreSQL server at {} (set {ADMIN_URL_ENV})",
            redact(url)
        )
    })?;
    tokio::spawn(async move {
        // The connection ends when the client is dropped; its error, if any, has already
        // surfaced through the client.
        let _ = connection.await;
    });
    Ok(client)
}

/// Drops `database` on the server `admin_url` names, terminating its sessions.
async fn drop_database(admin_url: &str, database: &str) -> anyhow::Result<()> {
    let client = admin_client(admin_url).await?;
    client
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
        ))
        .await
        .with_context(|| format!("cannot drop test database {database}"))?;
    Ok(())
}

/// A fresh, empty database with a unique name, for one test. Dropped by
/// [`TestDb::drop_db`], or best-effort when the value is dropped.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    url: String,
    admin_url: String,
    dropped: bool,
}

impl TestDb {
    /// Creates a database on the shared test server ([`admin_url`]).
    ///
    /// # Errors
    /// When the server cannot be reached or refuses `CREATE DATABASE`.
    pub async fn create() -> anyhow::Result<Self> {
        Self::create_on(&admin_url()).await
    }

    /// Creates a database on the server `admin_url` names (e.g. a
    /// [`ThrowawayPostgres::admin_url`]).
    ///
    /// # Errors
    /// When the server cannot be reached or refuses `CREATE DATABASE`.
    pub async fn create_on(admin_url: &str) -> anyhow::Result<Self> {
        let name = crate::unique_name("gm_test");
        let client = admin_client(admin_url).await?;
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .with_context(|| format!("cannot create test database {name}"))?;
        Ok(Self {
            url: url_with_database(admin_url, &name),
            name,
            admin_url: admin_url.to_owned(),
            dropped: false,
        })
    }

    /// URL of the database, with the admin URL's user and password.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops the database now, terminating sessions still connected to it.
    ///
    /// # Errors
    /// When the server cannot be reached or refuses.
    pub async fn drop_db(mut self) -> anyhow::Result<()> {
        self.dropped = true;
        drop_database(&self.admin_url, &self.name).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // Drop cannot await, and blocking on the test's own runtime from inside it would
        // panic; a short-lived thread with its own runtime does the work.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let worker = std::thread::spawn(move || {
            let dropped = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|runtime| runtime.block_on(drop_database(&admin_url, &name)));
            if let Err(e) = dropped {
                eprintln!("testkit: leaving test database {name} behind: {e:#}");
            }
        });
        let _ = worker.join();
    }
}

/// Whether this process runs as root (the owner of `/proc/self` is the effective user).
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`.
fn server_bindir() -> anyhow::Result<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os(BINDIR_ENV).map(PathBuf::from) {
        if has_tools(&dir) {
            return Ok(dir);
        }
        bail!("{BINDIR_ENV}={} has no initdb and pg_ctl", dir.display());
    }
    if let Ok(out) = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_tools(&dir) {
            return Ok(dir);
        }
    }
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_tools(dir))
        .collect();
    candidates.sort();
    candidates.pop().map(|(_, dir)| dir).context(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install the postgresql \
         package, or set GALAXY_TEST_PG_BINDIR",
    )
}

/// The numeric uid and gid of an OS user.
fn os_user_ids(user: &str) -> anyhow::Result<(u32, u32)> {
    let id = |flag: &str| -> anyhow::Result<u32> {
        let out = std::process::Command::new("id")
            .args([flag, user])
            .output()
            .context("cannot run `id`")?;
        if !out.status.success() {
            bail!(
                "no OS user '{user}' to run a throwaway PostgreSQL server as (PostgreSQL \
                 refuses to run as root)"
            );
        }
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .with_context(|| format!("unexpected output of `id {flag} {user}`"))
    };
    Ok((id("-u")?, id("-g")?))
}

/// A PostgreSQL server of its own for one test: a fresh cluster (trust authentication,
/// user `postgres`, fsync off) on a free loopback port, in a temporary directory. Stop
/// and start it to simulate the database going away. Dropping it stops the server and
/// removes the directory.
#[derive(Debug)]
pub struct ThrowawayPostgres {
    port: u16,
    bindir: PathBuf,
    run_as: Option<&'static str>,
    data_dir: PathBuf,
    log_file: PathBuf,
    running: AtomicBool,
    // Last, so the directory goes after the server has been stopped in `drop`.
    dir: tempfile::TempDir,
}

impl ThrowawayPostgres {
    /// Creates the cluster with `initdb` and starts it (about a second or two).
    ///
    /// # Errors
    /// When the binaries are missing, `initdb` fails or the server does not start; the
    /// message includes the tool's output or the end of the server log.
    pub async fn start() -> anyhow::Result<Self> {
        let bindir = server_bindir()?;
        let run_as = running_as_root().then_some(SERVER_OS_USER);
        let dir = tempfile::Builder::new()
            .prefix("galaxy-pg-")
            .tempdir()
            .context("cannot create a temporary directory for a throwaway PostgreSQL")?;
        if let Some(user) = run_as {
            let (uid, gid) = os_user_ids(user)?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .with_context(|| format!("cannot hand {} to user {user}", dir.path().display()))?;
        }
        let server = Self {
            port: crate::free_port(),
            data_dir: dir.path().join("data"),
            log_file: dir.path().join("server.log"),
            bindir,
            run_as,
            running: AtomicBool::new(false),
            dir,
        };
        server.init_cluster().await?;
        server.start_again().await?;
        Ok(server)
    }

    async fn init_cluster(&self) -> anyhow::Result<()> {
        let data_dir = self.data_dir.to_string_lossy().into_owned();
        self.run_tool(
            "initdb",
            &[
                "-D",
                &data_dir,
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )
        .await?;
        let settings = format!(
            "\n# galaxy testkit: a throwaway, fast, loopback-only server\n\
             listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{dir}'\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             max_connections = 50\n\
             shared_buffers = 32MB\n",
            port = self.port,
            dir = self.dir.path().display(),
        );
        let conf = self.data_dir.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)
            .with_context(|| format!("initdb wrote no {}", conf.display()))?;
        text.push_str(&settings);
        // Rewriting in place keeps the file's owner (the server's user).
        std::fs::write(&conf, text).with_context(|| format!("cannot write {}", conf.display()))
    }

    /// Runs one of the server tools (as the server's OS user when we are root).
    async fn run_tool(&self, tool: &str, args: &[&str]) -> anyhow::Result<()> {
        let program = self.bindir.join(tool);
        let mut command = match self.run_as {
            Some(user) => {
                let mut c = tokio::process::Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&program);
                c
            }
            None => tokio::process::Command::new(&program),
        };
        command
            .args(args)
            .current_dir(self.dir.path())
            .kill_on_drop(true);
        let out = command
            .output()
            .await
            .with_context(|| format!("cannot run {}", program.display()))?;
        if out.status.success() {
            return Ok(());
        }
        bail!(
            "{tool} failed ({}):\n{}{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        )
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log_file).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        if tail.is_empty() {
            String::new()
        } else {
            format!("\nserver log (last lines):\n{tail}")
        }
    }

    /// The loopback port the server listens on (the same after a restart).
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL of `database` on this server, as user `postgres` (trust, no password).
    #[must_use]
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// URL of the `postgres` database, for [`TestDb::create_on`].
    #[must_use]
    pub fn admin_url(&self) -> String {
        self.url("postgres")
    }

    /// Whether the server is running (as far as this fixture started and stopped it).
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// Stops the server with a fast shutdown: sessions are terminated (clients see
    /// SQLSTATE 57P01 or a closed connection), new connections are refused.
    ///
    /// # Errors
    /// When `pg_ctl stop` fails.
    pub async fn stop(&self) -> anyhow::Result<()> {
        let data_dir = self.data_dir.to_string_lossy().into_owned();
        self.run_tool(
            "pg_ctl",
            &["stop", "-D", &data_dir, "-m", "fast", "-w", "-t", "30"],
        )
        .await?;
        self.running.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Starts the (stopped) server again on the same port, with the same data.
    ///
    /// # Errors
    /// When `pg_ctl start` fails; the message has the end of the server log.
    pub async fn start_again(&self) -> anyhow::Result<()> {
        let data_dir = self.data_dir.to_string_lossy().into_owned();
        let log_file = self.log_file.to_string_lossy().into_owned();
        self.run_tool(
            "pg_ctl",
            &["start", "-D", &data_dir, "-l", &log_file, "-w", "-t", "30"],
        )
        .await
        .with_context(|| format!("throwaway PostgreSQL did not start on port {}", self.port))?;
        self.running.store(true, Ordering::SeqCst);
        Ok(())
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        if !self.is_running() {
            return;
        }
        // Immediate shutdown: the data is thrown away anyway. Blocking std::process is
        // fine here (no runtime is needed), and failures are only reported.
        let pg_ctl = self.bindir.join("pg_ctl");
        let mut command = match self.run_as {
            Some(user) => {
                let mut c = std::process::Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&pg_ctl);
                c
            }
            None => std::process::Command::new(&pg_ctl),
        };
        command
            .arg("stop")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "immediate", "-w", "-t", "30"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        match command.status() {
            Ok(status) if status.success() => {}
            other => eprintln!(
                "testkit: stopping the throwaway PostgreSQL on port {} failed: {other:?}",
                self.port
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_of_a_url_is_replaced_and_the_rest_kept() {
        assert_eq!(
            url_with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            url_with_database("postgresql://u:p@h/db?sslmode=disable", "t2"),
            "postgresql://u:p@h/t2?sslmode=disable"
        );
        assert_eq!(
            url_with_database("postgres://u@h:1", "t3"),
            "postgres://u@h:1/t3"
        );
        assert_eq!(
            url_with_database("postgres://u@h?x=1", "t4"),
            "postgres://u@h/t4?x=1"
        );
        assert_eq!(
            url_with_database("host=h user=u", "t5"),
            "host=h user=u dbname=t5"
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres://h:5432/db"), "postgres://h:5432/db");
    }
}
