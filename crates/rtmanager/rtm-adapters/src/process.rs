//! The process engine driver: each game's engine is a local OS process, known by a
//! container id of its pid and its start time (`<pid>.<start ticks>`, from
//! `/proc/<pid>/stat`), so a pid the kernel hands to another process later is never
//! mistaken for the engine.

use std::time::Duration;

use async_trait::async_trait;
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rtm_ports::{EngineDriver, EngineError};

/// How often a stop looks whether the engine is gone.
const POLL: Duration = Duration::from_millis(20);

/// How long a killed engine may take to go before the stop is a failure.
const AFTER_KILL: Duration = Duration::from_secs(5);

/// The error code of an engine that outlived SIGKILL.
pub const ERROR_CODE_STOP_TIMED_OUT: &str = "stop_timed_out";
/// The error code of an engine this process may not signal.
pub const ERROR_CODE_STOP_DENIED: &str = "stop_denied";
/// The error code of a container id the driver did not make.
pub const ERROR_CODE_BAD_CONTAINER_ID: &str = "bad_container_id";

/// One process as `/proc/<pid>/stat` shows it: its start time and whether it has exited
/// (a zombie waits only for its parent to read its status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcessState {
    start: u64,
    exited: bool,
}

/// Reads `/proc/<pid>/stat`: the state is the first field after the command name (which
/// is in parentheses and may hold anything), the start time the 20th.
fn process_state(pid: u32) -> Option<ProcessState> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_name) = stat.rsplit_once(')')?;
    let mut fields = after_name.split_whitespace();
    let state = fields.next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some(ProcessState {
        start,
        exited: state == "Z" || state == "X",
    })
}

/// The container id of the running process `pid`, `None` when there is none.
#[must_use]
pub fn container_id(pid: u32) -> Option<String> {
    process_state(pid).map(|s| format!("{pid}.{}", s.start))
}

fn parse(container_id: &str) -> Result<(u32, u64), EngineError> {
    container_id
        .split_once('.')
        .and_then(|(pid, start)| Some((pid.parse().ok()?, start.parse().ok()?)))
        .filter(|(pid, _)| *pid > 1)
        .ok_or_else(|| EngineError::Failed {
            code: ERROR_CODE_BAD_CONTAINER_ID,
            message: format!("{container_id:?} is not a process engine's id (<pid>.<start>)"),
        })
}

/// Whether the engine `(pid, start)` still runs.
fn alive(pid: u32, start: u64) -> bool {
    process_state(pid).is_some_and(|s| s.start == start && !s.exited)
}

/// Waits up to `limit` for the engine to go; whether it went.
async fn gone_within(pid: u32, start: u64, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while alive(pid, start) {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
    true
}

/// Drives engines that are local processes (`galaxy-engine`): stop is SIGTERM, then
/// SIGKILL after the grace period.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEngineDriver;

impl ProcessEngineDriver {
    fn signal(pid: u32, signal: Signal, container_id: &str) -> Result<(), EngineError> {
        let target = Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
        match kill(target, signal) {
            Ok(()) => Ok(()),
            Err(Errno::ESRCH) => Err(EngineError::Gone(container_id.to_owned())),
            Err(e) => Err(EngineError::Failed {
                code: ERROR_CODE_STOP_DENIED,
                message: format!("{signal} to engine {container_id}: {e}"),
            }),
        }
    }
}

#[async_trait]
impl EngineDriver for ProcessEngineDriver {
    async fn stop(&self, container_id: &str, grace: Duration) -> Result<(), EngineError> {
        let (pid, start) = parse(container_id)?;
        if !alive(pid, start) {
            return Err(EngineError::Gone(container_id.to_owned()));
        }
        Self::signal(pid, Signal::SIGTERM, container_id)?;
        if gone_within(pid, start, grace).await {
            return Ok(());
        }
        tracing::warn!(
            container_id,
            ?grace,
            "engine outlived its grace period: killing it"
        );
        Self::signal(pid, Signal::SIGKILL, container_id)?;
        if gone_within(pid, start, AFTER_KILL).await {
            return Ok(());
        }
        Err(EngineError::Failed {
            code: ERROR_CODE_STOP_TIMED_OUT,
            message: format!("engine {container_id} still runs {AFTER_KILL:?} after SIGKILL"),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::process::{Child, Command, Stdio};

    /// Runs `script` and returns once it printed its first line (its traps are set).
    fn spawn(script: &str) -> (Child, String) {
        let mut child = Command::new("sh")
            .args(["-c", script])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let id = container_id(child.id()).unwrap();
        (child, id)
    }

    #[tokio::test]
    async fn an_engine_that_exits_on_sigterm_is_stopped_within_its_grace() {
        let (mut child, id) = spawn("echo ready; exec sleep 30");
        let driver = ProcessEngineDriver;
        driver.stop(&id, Duration::from_secs(5)).await.unwrap();
        assert!(child.wait().unwrap().code().is_none(), "ended by a signal");
        assert!(matches!(
            driver.stop(&id, Duration::from_secs(1)).await,
            Err(EngineError::Gone(_))
        ));
    }

    #[tokio::test]
    async fn an_engine_that_ignores_sigterm_is_killed_after_the_grace() {
        let (mut child, id) = spawn("trap '' TERM; echo ready; while :; do sleep 0.05; done");
        let started = std::time::Instant::now();
        ProcessEngineDriver
            .stop(&id, Duration::from_millis(300))
            .await
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(300));
        child.wait().unwrap();
    }

    #[tokio::test]
    async fn ids_the_driver_did_not_make_or_whose_process_is_another_are_told_apart() {
        for bad in ["", "abc", "12", "1.5", "x.1"] {
            assert!(
                matches!(
                    ProcessEngineDriver.stop(bad, Duration::ZERO).await,
                    Err(EngineError::Failed {
                        code: ERROR_CODE_BAD_CONTAINER_ID,
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
        // The pid of a live process, with another start time: not our engine.
        let (mut child, id) = spawn("echo ready; exec sleep 30");
        let (pid, start) = parse(&id).unwrap();
        let other = format!("{pid}.{}", start + 1);
        assert!(matches!(
            ProcessEngineDriver.stop(&other, Duration::ZERO).await,
            Err(EngineError::Gone(_))
        ));
        assert!(alive(pid, start));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
