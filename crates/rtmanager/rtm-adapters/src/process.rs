//! The process engine driver: each game's engine is a local OS process, known by a
//! container id of its pid and its start time (`<pid>.<start ticks>`, from
//! `/proc/<pid>/stat`), so a pid the kernel hands to another process later is never
//! mistaken for the engine.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use contracts::GameId;
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rtm_ports::{EngineDriver, EngineError, EngineState, StartedEngine};
use tokio::io::{AsyncBufReadExt, BufReader};

/// How often a stop looks whether the engine is gone.
const POLL: Duration = Duration::from_millis(20);

/// How long a killed engine may take to go before the stop is a failure.
const AFTER_KILL: Duration = Duration::from_secs(5);

/// The error code of an engine that outlived SIGKILL.
pub const ERROR_CODE_STOP_TIMED_OUT: &str = "stop_timed_out";
/// The error code of an engine this process may not signal.
pub const ERROR_CODE_STOP_DENIED: &str = "stop_denied";
/// The error code of an engine that could not be started.
pub const ERROR_CODE_START_FAILED: &str = "start_failed";
/// How long a starting engine may take to report its endpoint.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// The error code of a container id the driver did not make.
pub const ERROR_CODE_BAD_CONTAINER_ID: &str = "bad_container_id";

/// One process as `/proc/<pid>/stat` shows it: its start time and whether it has exited
/// (a zombie waits only for its parent to read its status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcessState {
    start: u64,
    exited: bool,
    /// Stopped by a signal (SIGSTOP) or traced: it exists but does not run.
    paused: bool,
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
        paused: state == "T" || state == "t",
    })
}

/// The process's resident memory, in bytes (`VmRSS` of `/proc/<pid>/status`).
fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// What the driver knows of how an engine it ran ended (or is ending), beyond `/proc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// This driver started it: whenever it goes, its going is seen (it is a child).
    Started,
    /// A stop was asked for and is under way.
    Stopping,
    /// It was stopped on request.
    Stopped,
    /// It exited on its own (the driver reaped it).
    Exited,
    /// The driver killed it for its memory.
    OutOfMemory,
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

/// Drives engines that are local processes (`galaxy-engine`): start runs the binary in a
/// process group of its own (so it outlives the Runtime Manager and a Ctrl-C to it),
/// with its stderr in `<log dir>/<game>.log`; stop is SIGTERM, then SIGKILL after the
/// grace period.
///
/// Its memory limit is enforced at each inspection: an engine whose resident memory is
/// over it is killed and reported out of memory, as a container runtime's OOM killer
/// would. Clones share what they know of the engines' fates.
#[derive(Debug, Clone)]
pub struct ProcessEngineDriver {
    binary: PathBuf,
    log_dir: PathBuf,
    memory_limit: u64,
    fates: Arc<Mutex<HashMap<String, Fate>>>,
}

/// How many engines' fates the driver keeps before it forgets those that are over.
const FATES_REMEMBERED: usize = 4096;

/// The default memory limit of an engine: 256 MiB.
pub const DEFAULT_MEMORY_LIMIT: u64 = 256 << 20;

/// How long a probe may take before it counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

impl Default for ProcessEngineDriver {
    /// `galaxy-engine` beside the running executable, logs in `<tmp>/galaxy-engines`.
    fn default() -> Self {
        let beside = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join("galaxy-engine")));
        Self::new(
            beside.unwrap_or_else(|| PathBuf::from("galaxy-engine")),
            std::env::temp_dir().join("galaxy-engines"),
        )
    }
}

/// A failed start, as the job result and the operator see it.
fn start_failed(message: String) -> EngineError {
    EngineError::Failed {
        code: ERROR_CODE_START_FAILED,
        message,
    }
}

/// A file name for the game's log: its id with anything but letters, digits, `-`, `_`
/// and `.` replaced.
fn log_name(game_id: &GameId) -> String {
    let safe: String = game_id
        .as_str()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}.log")
}

impl ProcessEngineDriver {
    /// A driver that runs `binary`, with engines' logs in `log_dir`.
    #[must_use]
    pub fn new(binary: impl Into<PathBuf>, log_dir: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            log_dir: log_dir.into(),
            memory_limit: DEFAULT_MEMORY_LIMIT,
            fates: Arc::default(),
        }
    }

    /// The same driver with engines limited to `bytes` of resident memory.
    #[must_use]
    pub fn with_memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = bytes;
        self
    }

    fn fate(&self, container_id: &str) -> Option<Fate> {
        self.fates.lock().ok()?.get(container_id).copied()
    }

    fn set_fate(&self, container_id: &str, fate: Fate) {
        if let Ok(mut fates) = self.fates.lock() {
            if fates.len() >= FATES_REMEMBERED {
                // Engines long over: their going was reported (or an inspection now says
                // `Gone`, which after it reports nothing new).
                fates.retain(|_, f| matches!(f, Fate::Started | Fate::Stopping));
            }
            fates.insert(container_id.to_owned(), fate);
        }
    }

    /// Records that the engine exited, unless a stop or the memory limit ended it.
    fn exited(&self, container_id: &str) {
        if let Ok(mut fates) = self.fates.lock() {
            let fate = fates.entry(container_id.to_owned()).or_insert(Fate::Exited);
            if *fate == Fate::Started {
                *fate = Fate::Exited;
            }
        }
    }

    /// A living engine's state: paused, over its memory limit (then killed), or running.
    fn living_state(&self, pid: u32, process: ProcessState, container_id: &str) -> EngineState {
        if process.paused {
            return EngineState::Unhealthy;
        }
        let resident = resident_bytes(pid).unwrap_or(0);
        if resident <= self.memory_limit {
            return EngineState::Running;
        }
        tracing::warn!(
            container_id,
            resident,
            limit = self.memory_limit,
            "engine over its memory limit: killing it"
        );
        self.set_fate(container_id, Fate::OutOfMemory);
        let _ = Self::signal(pid, Signal::SIGKILL, container_id);
        EngineState::OutOfMemory
    }

    /// The engine program it runs.
    #[must_use]
    pub fn binary(&self) -> &std::path::Path {
        &self.binary
    }

    /// Where engines' logs go.
    #[must_use]
    pub fn log_dir(&self) -> &std::path::Path {
        &self.log_dir
    }

    /// Runs the engine binary for `game_id`; the child, not yet reporting.
    fn spawn(&self, game_id: &GameId) -> Result<tokio::process::Child, EngineError> {
        std::fs::create_dir_all(&self.log_dir)
            .map_err(|e| start_failed(format!("log dir {}: {e}", self.log_dir.display())))?;
        let log_path = self.log_dir.join(log_name(game_id));
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| start_failed(format!("log {}: {e}", log_path.display())))?;
        tokio::process::Command::new(&self.binary)
            .args(["--game-id", game_id.as_str(), "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| start_failed(format!("cannot run {}: {e}", self.binary.display())))
    }

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

/// Reads the engine's first line, `listening <address>`, within [`START_TIMEOUT`].
async fn reported_address(child: &mut tokio::process::Child) -> Result<String, String> {
    let stdout = child
        .stdout
        .take()
        .ok_or("no stdout to read the address from")?;
    let mut line = String::new();
    let mut reader = BufReader::new(stdout);
    let read = reader.read_line(&mut line);
    match tokio::time::timeout(START_TIMEOUT, read).await {
        Err(_) => Err(format!("no address reported within {START_TIMEOUT:?}")),
        Ok(Err(e)) => Err(format!("reading its address: {e}")),
        Ok(Ok(_)) => line
            .trim()
            .strip_prefix("listening ")
            .map(str::to_owned)
            .ok_or_else(|| format!("exited or said {:?} instead of its address", line.trim())),
    }
}

#[async_trait]
impl EngineDriver for ProcessEngineDriver {
    async fn start(&self, game_id: &GameId) -> Result<StartedEngine, EngineError> {
        let mut child = self.spawn(game_id)?;
        let pid = child
            .id()
            .ok_or_else(|| start_failed("exited at once".to_owned()))?;
        let started = match reported_address(&mut child).await {
            Ok(address) => container_id(pid)
                .map(|id| StartedEngine {
                    container_id: id,
                    engine_endpoint: format!("http://{address}"),
                })
                .ok_or_else(|| "exited after reporting its address".to_owned()),
            Err(reason) => Err(reason),
        };
        if started.is_err() {
            let _ = child.start_kill();
        }
        // Reap the engine whenever it exits, so it does not linger as a zombie, and
        // remember that it went.
        let driver = self.clone();
        let id = started.as_ref().ok().map(|s| s.container_id.clone());
        if let Some(id) = &id {
            self.set_fate(id, Fate::Started);
        }
        tokio::spawn(async move {
            let _ = child.wait().await;
            if let Some(id) = id {
                driver.exited(&id);
            }
        });
        started.map_err(|reason| start_failed(format!("engine for game '{game_id}': {reason}")))
    }

    async fn inspect(&self, container_id: &str) -> Result<EngineState, EngineError> {
        let (pid, start) = parse(container_id)?;
        let fate = self.fate(container_id);
        match fate {
            Some(Fate::Stopping | Fate::Stopped) => return Ok(EngineState::Stopped),
            Some(Fate::OutOfMemory) => return Ok(EngineState::OutOfMemory),
            Some(Fate::Exited) => return Ok(EngineState::Exited),
            Some(Fate::Started) | None => {}
        }
        // Gone, or a zombie: one of ours exited (its reaping may not be recorded yet);
        // anyone else's (an engine adopted after a restart) went, and nothing says how.
        let living = process_state(pid).filter(|p| p.start == start && !p.exited);
        Ok(match living {
            None if fate == Some(Fate::Started) => EngineState::Exited,
            None => EngineState::Gone,
            Some(p) => self.living_state(pid, p, container_id),
        })
    }

    async fn probe(&self, engine_endpoint: &str) -> bool {
        let Some(addr) = engine_endpoint
            .strip_prefix("http://")
            .and_then(|a| a.parse().ok())
        else {
            return false;
        };
        matches!(
            service_kit::http::request(addr, "GET", "/healthz", PROBE_TIMEOUT).await,
            Ok((200, _))
        )
    }

    async fn stop(&self, container_id: &str, grace: Duration) -> Result<(), EngineError> {
        let (pid, start) = parse(container_id)?;
        if !alive(pid, start) {
            return Err(EngineError::Gone(container_id.to_owned()));
        }
        self.set_fate(container_id, Fate::Stopping);
        let result = stop_alive(pid, start, container_id, grace).await;
        if result.is_ok() {
            self.set_fate(container_id, Fate::Stopped);
        }
        result
    }
}

/// SIGTERM (and SIGCONT, so a paused engine can act on it), then SIGKILL after `grace`;
/// returns once the engine is gone.
async fn stop_alive(
    pid: u32,
    start: u64,
    container_id: &str,
    grace: Duration,
) -> Result<(), EngineError> {
    ProcessEngineDriver::signal(pid, Signal::SIGTERM, container_id)?;
    let _ = ProcessEngineDriver::signal(pid, Signal::SIGCONT, container_id);
    if gone_within(pid, start, grace).await {
        return Ok(());
    }
    tracing::warn!(
        container_id,
        ?grace,
        "engine outlived its grace period: killing it"
    );
    ProcessEngineDriver::signal(pid, Signal::SIGKILL, container_id)?;
    if gone_within(pid, start, AFTER_KILL).await {
        return Ok(());
    }
    Err(EngineError::Failed {
        code: ERROR_CODE_STOP_TIMED_OUT,
        message: format!("engine {container_id} still runs {AFTER_KILL:?} after SIGKILL"),
    })
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
        let driver = ProcessEngineDriver::default();
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
        ProcessEngineDriver::default()
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
                    ProcessEngineDriver::default()
                        .stop(bad, Duration::ZERO)
                        .await,
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
            ProcessEngineDriver::default()
                .stop(&other, Duration::ZERO)
                .await,
            Err(EngineError::Gone(_))
        ));
        assert!(alive(pid, start));
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[tokio::test]
    async fn inspection_tells_running_paused_over_its_memory_and_gone_apart() {
        let driver = ProcessEngineDriver::default();
        let (mut child, id) = spawn("echo ready; exec sleep 30");
        assert_eq!(driver.inspect(&id).await.unwrap(), EngineState::Running);
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
        kill(pid, Signal::SIGSTOP).unwrap();
        let paused = async {
            while driver.inspect(&id).await.unwrap() != EngineState::Unhealthy {
                tokio::time::sleep(POLL).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), paused)
            .await
            .unwrap();
        kill(pid, Signal::SIGCONT).unwrap();
        // Over a limit of one byte: killed, and reported out of memory from then on.
        let tight = driver.clone().with_memory_limit(1);
        assert_eq!(tight.inspect(&id).await.unwrap(), EngineState::OutOfMemory);
        child.wait().unwrap();
        assert_eq!(tight.inspect(&id).await.unwrap(), EngineState::OutOfMemory);
        // Another driver (a restarted Runtime Manager) knows nothing of how it went.
        let (pid, start) = parse(&id).unwrap();
        assert!(!alive(pid, start));
        assert_eq!(
            ProcessEngineDriver::default().inspect(&id).await.unwrap(),
            EngineState::Gone
        );
    }
}
