//! Test helpers shared by every step.
//!
//! Each step keeps its own tests next to its code (`steps/step-NN-*/tests/`), so a learner who
//! opens one folder sees the program *and* the proof that it works, and so each test can run the
//! step's real binary through Cargo's `CARGO_BIN_EXE_<name>`. What those tests have in common
//! lives here, once:
//!
//! - [`spawn_in_process`]: serve a step on `127.0.0.1:0` inside the test's runtime;
//! - [`Binary`]: run the step's real executable with `PORT=0`, learn its address from its
//!   `listening on ...` line, send it signals, collect its output, wait for it to exit;
//! - [`request`] / [`get`]: a tiny HTTP/1.1 client (hyper's own client connection, no extra crate);
//! - [`Reply::transcript`]: a response written the way `curl -i` shows it, for insta snapshots
//!   that the book includes as "what you will see".
#![forbid(unsafe_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request};
pub use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// Generous upper bound for anything that should take milliseconds: start-up, a reply, an exit.
/// Tests fail if it is exceeded, but it is never what a test waits for on the happy path.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Binds `127.0.0.1:0`, hands the listener to `serve` on a new task and returns the address.
///
/// The server lives as long as the test's runtime: each `#[tokio::test]` gets its own.
pub async fn spawn_in_process<F, Fut>(serve: F) -> SocketAddr
where
    F: FnOnce(TcpListener) -> Fut,
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(serve(listener));
    addr
}

/// A finished HTTP exchange.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    /// The value of a header, if present and printable.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body parsed as JSON; panics (failing the test) if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// The exchange as `curl -i` prints it, preceded by the command that produced it.
    ///
    /// Headers come in alphabetical order; `date` is left out because it changes every second.
    pub fn transcript(&self, command: &str) -> String {
        let mut out = format!("$ {command}\n");
        let reason = self.status.canonical_reason().unwrap_or("");
        out.push_str(&format!("HTTP/1.1 {} {reason}\n", self.status.as_u16()));
        let mut names: Vec<&str> = self.headers.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        for name in names.into_iter().filter(|n| *n != "date") {
            for value in self.headers.get_all(name) {
                out.push_str(&format!(
                    "{name}: {}\n",
                    value.to_str().unwrap_or("<binary>")
                ));
            }
        }
        out.push('\n');
        out.push_str(&self.body);
        if !self.body.ends_with('\n') {
            out.push('\n');
        }
        out
    }
}

/// Sends one request on a fresh connection and reads the whole reply.
///
/// `headers` are added as given; `Host` is always set. Errors (refused connection, reset,
/// closed before a reply) are returned, not panicked on, because several tests expect them.
pub async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<Reply, Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // The connection future does the actual I/O; it ends when the exchange is over.
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let res = sender
        .send_request(req.body(Full::new(body.into()))?)
        .await?;
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await?.to_bytes();
    Ok(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

/// `GET path`, panicking (failing the test) on a transport error.
pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, Method::GET, path, &[], Bytes::new())
        .await
        .unwrap_or_else(|e| panic!("GET {path} on {addr}: {e}"))
}

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

/// Snapshots a [`Reply`] as a `curl -i` transcript in `tests/snapshots/<name>.snap`.
///
/// The snapshot file has a fixed three-line header (`---`, `source: …`, `---`), so the book
/// includes what a reader would see with `{{#include …/<name>.snap:4:}}`; `cargo xtask book`
/// checks that every such include starts right after the header.
///
/// ```ignore
/// // An HTTP exchange, as `curl -i` shows it:
/// testkit::assert_transcript!("curl_root", reply, "curl -i localhost:8080/");
/// // Any other text a reader will see (a terminal session, a log line):
/// testkit::assert_transcript!("bad_port", format!("$ PORT=abc cargo run -p step-01\n{line}"));
/// ```
#[macro_export]
macro_rules! assert_transcript {
    ($name:expr, $reply:expr, $command:expr) => {
        $crate::assert_transcript!($name, $reply.transcript($command))
    };
    ($name:expr, $text:expr) => {
        ::insta::with_settings!({ omit_expression => true, prepend_module_to_snapshot => false }, {
            ::insta::assert_snapshot!($name, $text);
        })
    };
}

/// Finds an unused port by binding port 0 and letting it go again (for tests of `PORT` itself).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local address").port()
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
