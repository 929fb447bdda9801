//! A step's real executable: start it, learn its address, signal it, read what it printed, and
//! the checks every step makes of it (it honours `PORT`; bad configuration is one line, exit 2).

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::{PATIENCE, free_port, get};

/// A step's real executable, started with `PORT=0` so the OS picks a free port.
///
/// Everything it prints (stdout and stderr, in arrival order) is collected and can be searched.
/// The process is killed if the test ends without waiting for it.
pub struct Binary {
    child: Child,
    pub addr: SocketAddr,
    output: Output,
}

impl Binary {
    /// Starts `path` with `env` added to the environment and waits for its `listening on` line.
    pub async fn start(path: &str, env: &[(&str, &str)]) -> Binary {
        let mut command = Command::new(path);
        command
            .env("PORT", "0")
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG");
        command.envs(env.iter().copied());
        let (child, output) = spawn_collecting(command);
        let mut binary = Binary {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            output,
        };
        let line = binary
            .wait_for_line("listening on")
            .await
            .unwrap_or_else(|| panic!("{path} never said `listening on`: {:?}", binary.output()));
        binary.addr = parse_listening(&line).unwrap_or_else(|| panic!("no address in {line:?}"));
        binary
    }

    /// Everything printed so far, one entry per line.
    pub fn output(&self) -> Vec<String> {
        self.output.lines()
    }

    /// Waits (up to [`PATIENCE`]) for a line containing `needle`; returns it.
    pub async fn wait_for_line(&mut self, needle: &str) -> Option<String> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while tokio::time::Instant::now() < deadline {
            if let Some(line) = self.output().into_iter().find(|l| l.contains(needle)) {
                return Some(line);
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                // It exited: read what is left in the pipes, then look once more.
                self.output.drain().await;
                return self.output().into_iter().find(|l| l.contains(needle));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`) with the system's `kill` command,
    /// which keeps `unsafe` out of the tests.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("process still running");
        let status = std::process::Command::new("kill")
            .args(["-s", name, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {name} {pid} failed");
    }

    /// Waits for the process to exit, at most `limit`; `None` if it is still running.
    /// After an exit, [`Binary::output`] holds everything the process printed.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .ok()?
            .expect("wait");
        self.output.drain().await;
        Some(status)
    }
}

/// Runs `path` with `env` until it exits (at most [`PATIENCE`]) and returns its status and
/// output, for start-up failures such as bad configuration.
pub async fn run_to_exit(path: &str, env: &[(&str, &str)]) -> (ExitStatus, Vec<String>) {
    let mut command = Command::new(path);
    command
        .env("PORT", "0")
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG");
    command.envs(env.iter().copied());
    let (mut child, mut output) = spawn_collecting(command);
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .unwrap_or_else(|_| panic!("{path} did not exit within {PATIENCE:?}"))
        .expect("wait");
    output.drain().await;
    (status, output.lines())
}

/// Checks that the binary at `path` listens on the port `PORT` names (as Cloud Run sets it)
/// and answers `GET path_and_query` there with 200.
///
/// ```ignore
/// testkit::assert_honours_port(env!("CARGO_BIN_EXE_step-02"), "/?work_ms=0").await;
/// ```
pub async fn assert_honours_port(path: &str, path_and_query: &str) {
    let port = free_port();

    let server = Binary::start(path, &[("PORT", &port.to_string())]).await;

    assert_eq!(server.addr.port(), port, "{path} ignored PORT={port}");
    let reply = get(server.addr, path_and_query).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "GET {path_and_query} on PORT={port}: {}",
        reply.body
    );
}

/// Runs the binary at `path` with `env` and checks that it refuses the configuration the way
/// every step does: exit code 2, and exactly one line of output, `<binary name>: <what is
/// wrong>`. Returns that line, for an exact comparison or a snapshot.
///
/// ```ignore
/// let line = testkit::assert_config_refused(BIN, &[("PORT", "abc")]).await;
/// assert_eq!(line, r#"step-01: PORT must be a number from 0 to 65535, got "abc""#);
/// ```
pub async fn assert_config_refused(path: &str, env: &[(&str, &str)]) -> String {
    let (status, mut output) = run_to_exit(path, env).await;

    assert_eq!(
        status.code(),
        Some(2),
        "{path} with {env:?} should exit with code 2; it printed {output:?}"
    );
    assert_eq!(
        output.len(),
        1,
        "{path} with {env:?} should print one line: {output:?}"
    );
    let line = output.remove(0);
    let name = std::path::Path::new(path)
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    assert!(
        line.starts_with(&format!("{name}: ")),
        "the line should start with `{name}: `: {line:?}"
    );
    line
}

fn spawn_collecting(mut command: Command) -> (Child, Output) {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("start the step's binary");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let readers = vec![
        collect(stdout, lines.clone()),
        collect(stderr, lines.clone()),
    ];
    (child, Output { lines, readers })
}

/// What a child process printed, collected by one reader task per pipe.
struct Output {
    lines: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Output {
    fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("output lock").clone()
    }

    /// Waits until both pipes are read to the end (they close when the process exits).
    async fn drain(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(PATIENCE, reader).await;
        }
    }
}

fn collect(
    pipe: impl AsyncRead + Unpin + Send + 'static,
    lines: Arc<Mutex<Vec<String>>>,
) -> JoinHandle<()> {
    // One reader task per pipe, so a chatty stderr can never block the process on a full stdout.
    tokio::spawn(async move {
        let mut reader = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            lines.lock().expect("output lock").push(line);
        }
    })
}

/// `... listening on 0.0.0.0:43123 ...` → `127.0.0.1:43123`.
fn parse_listening(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let token: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"')
        .collect();
    let addr: SocketAddr = token.parse().ok()?;
    Some(SocketAddr::from(([127, 0, 0, 1], addr.port())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listening_lines() {
        let addr = parse_listening("2026-01-01T00:00:00Z  INFO step_02: listening on 0.0.0.0:4321");
        assert_eq!(addr, Some(SocketAddr::from(([127, 0, 0, 1], 4321))));
        assert_eq!(parse_listening("listening on nowhere"), None);
    }
}
