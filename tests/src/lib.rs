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
//!   [`assert_honours_port`] and [`assert_config_refused`]: the checks every step makes of it;
//! - [`request`] / [`get`]: a tiny HTTP/1.1 client (hyper's own client connection, no extra crate);
//! - [`Reply::transcript`]: a response written the way `curl -i` shows it, for insta snapshots
//!   that the book includes as "what you will see";
//! - [`env_from`]: a configuration lookup from pairs, instead of the process environment;
//! - [`eventually`]: wait for something that happens a moment later, with a generous limit;
//! - [`postgres`]: a real, throwaway PostgreSQL database for a test;
//! - [`upstream`]: a scripted upstream on a real socket that records what it receives;
//! - [`logs::Capture`]: a writer that keeps a log layer's lines for a test to read.
#![forbid(unsafe_code)]

pub mod logs;
pub mod postgres;
pub mod upstream;

mod binary;
mod http;

use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

pub use ::http::{Method, StatusCode};
use tokio::net::TcpListener;

pub use crate::binary::{Binary, assert_config_refused, assert_honours_port, run_to_exit};
pub use crate::http::{Reply, get, request};

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

/// An environment made of `pairs`, for a step's `Config::from_lookup` (which normally reads
/// `std::env::var`): tests configure a step without touching the process environment, which
/// every test in the process shares. A later pair overrides an earlier one with the same name.
///
/// ```ignore
/// let config = Config::from_lookup(testkit::env_from(&[("TARGET", "Gopher")]))?;
/// ```
pub fn env_from(
    pairs: &[(&str, &str)],
) -> impl Fn(&str) -> Option<String> + Clone + Send + Sync + 'static {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    move |name| {
        pairs
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value.clone())
    }
}

/// How often [`eventually`] looks again.
const POLL_EVERY: Duration = Duration::from_millis(10);

/// Waits until something that happens a moment later has happened: calls `probe` every 10 ms
/// until `done` accepts what it returned, and returns that value. Fails the test (panics) after
/// [`PATIENCE`], naming `what` was expected and the last value seen.
///
/// `probe` may be synchronous work in an async closure (read a counter) or real async work
/// (ask the server for its stats):
///
/// ```ignore
/// eventually("the cancellation is counted", async || stats.cancelled.load(Relaxed), |n| *n == 1).await;
/// let stats = eventually("the heartbeats end", async || debug_stats(addr).await, |s| s["running"] == 0).await;
/// ```
///
/// Under `tokio::time::pause`, the 10 ms and the limit are virtual time, like any other sleep.
pub async fn eventually<T: Debug>(
    what: &str,
    mut probe: impl AsyncFnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let seen = probe().await;
        if done(&seen) {
            return seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: still not the case after {PATIENCE:?}; last seen: {seen:?}"
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
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
