//! The workspace binaries, for end-to-end tests: where they are, and a running process
//! that can be signalled and waited for.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// Path of the workspace binary `name` (built by `cargo build --bins`, which `make test`
/// runs first). Test executables live in `target/<profile>/deps/`; binaries one level up.
///
/// # Errors
/// When the binary has not been built.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locate the test executable")?;
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("the test executable has no target directory")?;
    let path = profile_dir.join(name);
    if !path.is_file() {
        bail!(
            "{} is not built: run `cargo build --bins` first (`make test` does)",
            path.display()
        );
    }
    Ok(path)
}

/// A running binary whose stdout and stderr go to files in a temp dir (read them with
/// [`Process::stderr`]). Killed on drop if still running.
#[derive(Debug)]
pub struct Process {
    child: Child,
    logs: tempfile::TempDir,
    name: String,
}

impl Process {
    /// Starts `name` with `args` and extra environment variables.
    ///
    /// # Errors
    /// The binary is missing or cannot be started.
    pub fn spawn(name: &str, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let logs = tempfile::tempdir().context("temp dir for process logs")?;
        let stdout = std::fs::File::create(logs.path().join("stdout"))?;
        let stderr = std::fs::File::create(logs.path().join("stderr"))?;
        let mut command = Command::new(binary(name)?);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true);
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().with_context(|| format!("start {name}"))?;
        Ok(Self {
            child,
            logs,
            name: name.to_owned(),
        })
    }

    /// The process id.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Everything written to stdout so far.
    #[must_use]
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("stdout")).unwrap_or_default()
    }

    /// Everything written to stderr so far.
    #[must_use]
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("stderr")).unwrap_or_default()
    }

    /// Sends SIGTERM.
    ///
    /// # Errors
    /// The process is gone or `kill` failed.
    pub fn terminate(&self) -> anyhow::Result<()> {
        self.signal("TERM")
    }

    /// Sends the signal `name` (`TERM`, `KILL`, `STOP`, `CONT`, …) through `kill`, since
    /// the workspace forbids `unsafe`.
    ///
    /// # Errors
    /// The process is gone or `kill` failed.
    pub fn signal(&self, name: &str) -> anyhow::Result<()> {
        let pid = self.pid().context("process already exited")?;
        let status = std::process::Command::new("kill")
            .args([format!("-{name}"), pid.to_string()])
            .status()
            .context("run kill")?;
        if !status.success() {
            bail!("kill -{name} {pid} failed");
        }
        Ok(())
    }

    /// Waits for the exit code, at most `timeout`.
    ///
    /// # Errors
    /// Still running after `timeout` (its stderr is in the message), or killed by a signal.
    pub async fn wait(&mut self, timeout: Duration) -> anyhow::Result<i32> {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status?
                .code()
                .with_context(|| format!("{} was killed by a signal", self.name)),
            Err(_) => bail!(
                "{} still running after {timeout:?}; stderr:\n{}",
                self.name,
                self.stderr()
            ),
        }
    }
}

/// Runs `name` to completion and returns its exit code and stderr.
///
/// # Errors
/// The binary is missing, or it ran longer than `timeout`.
pub async fn run(
    name: &str,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> anyhow::Result<(i32, String)> {
    let mut p = Process::spawn(name, args, env)?;
    let code = p.wait(timeout).await?;
    Ok((code, p.stderr()))
}
