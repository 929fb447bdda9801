//! The one client for the inventory service, and every defence around its calls: a deadline
//! from what the incoming request has left, a bulkhead, a circuit breaker, and retries within
//! a budget.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::Deserialize;
use step_04::Vars;
use step_04::store::ItemId;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::{Instrument, Span};

use crate::breaker::{Breaker, BreakerSettings, State};
use crate::retry::{Jitter, RetryBudget, RetryPolicy, is_idempotent, is_retryable_status};

// ANCHOR: settings
/// `UPSTREAM_TIMEOUT` default: the most one call (its retries included) may take.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(1);
/// `UPSTREAM_MAX_CONCURRENCY` default: calls in flight at once; one more degrades at once.
pub const DEFAULT_MAX_CONCURRENCY: usize = 20;
/// `BREAKER_FAILURES` default.
pub const DEFAULT_BREAKER_FAILURES: u32 = 5;
/// `BREAKER_COOLDOWN` default: long enough to let a restarting instance come up, short
/// enough to watch in a terminal (gobreaker's default is 60 s, the Go article's 30 s).
pub const DEFAULT_BREAKER_COOLDOWN: Duration = Duration::from_secs(5);
/// Time kept back from the incoming request's deadline for what the handler does after the
/// call (write the answer; call something else), so the degraded answer still leaves before
/// that deadline turns it into a 503.
pub const ANSWER_RESERVE: Duration = Duration::from_millis(50);
/// The header that tells the upstream how many milliseconds the caller will wait. HTTP has no
/// standard one (gRPC has `grpc-timeout`; Envoy sends `x-envoy-expected-rq-timeout-ms`).
pub const BUDGET_HEADER: &str = "x-request-timeout-ms";
/// The largest answer read from the upstream: `{"stock": N}` is a few bytes.
pub const MAX_ANSWER_BYTES: usize = 4 * 1024;

/// How calls to the upstream behave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// `UPSTREAM_TIMEOUT`.
    pub timeout: Duration,
    /// `UPSTREAM_MAX_CONCURRENCY` (1 to 10 000): the bulkhead's size.
    pub max_concurrency: usize,
    /// `BREAKER_FAILURES` (1 to 1 000) and `BREAKER_COOLDOWN`.
    pub breaker: BreakerSettings,
    /// `BREAKER_ENABLED` (default 1): 0 never opens the breaker, every attempt goes out.
    /// For measuring what it saves (`.ci/bench`), not for production.
    pub breaker_enabled: bool,
    /// `RETRY_BUDGET_ENABLED` (default 1): 0 retries every retryable failure, still within
    /// `max_attempts` and the deadline. For measuring, like `BREAKER_ENABLED`.
    pub retry_budget_enabled: bool,
    /// Not read from the environment: the Go article's policy.
    pub retry: RetryPolicy,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            timeout: DEFAULT_UPSTREAM_TIMEOUT,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            breaker: BreakerSettings {
                failures: DEFAULT_BREAKER_FAILURES,
                cooldown: DEFAULT_BREAKER_COOLDOWN,
            },
            breaker_enabled: true,
            retry_budget_enabled: true,
            retry: RetryPolicy::default(),
        }
    }
}

/// `UPSTREAM_URL` (optional) and the settings of the calls to it.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// `UPSTREAM_URL`, e.g. `http://inventory:8080` (a Kubernetes Service name, or what the
    /// platform gives you): without it, items carry no stock and no `X-Degraded` header.
    pub url: Option<String>,
    pub settings: Settings,
}

impl UpstreamConfig {
    /// Reads the variables with step 04's [`Vars`]: each error is one line.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<UpstreamConfig, String> {
        let vars = Vars(lookup);
        let url = match vars.get("UPSTREAM_URL").filter(|u| !u.trim().is_empty()) {
            None => None,
            Some(text) => Some(parse_url(&text).ok_or_else(|| {
                format!(
                    "UPSTREAM_URL must be an http:// URL with a host and nothing after the \
                     port, such as http://inventory:8080 (https needs a TLS connector, see the \
                     book), got {text:?}"
                )
            })?),
        };
        let defaults = Settings::default();
        let failures = vars.number("BREAKER_FAILURES", 1000)?;
        Ok(UpstreamConfig {
            url,
            settings: Settings {
                timeout: vars.duration_up_to(
                    "UPSTREAM_TIMEOUT",
                    DEFAULT_UPSTREAM_TIMEOUT,
                    false,
                    Duration::from_secs(60),
                )?,
                max_concurrency: vars
                    .number("UPSTREAM_MAX_CONCURRENCY", 10_000)?
                    .unwrap_or(DEFAULT_MAX_CONCURRENCY),
                breaker: BreakerSettings {
                    failures: failures.map_or(DEFAULT_BREAKER_FAILURES, |n| n as u32),
                    cooldown: vars.duration("BREAKER_COOLDOWN", DEFAULT_BREAKER_COOLDOWN, false)?,
                },
                breaker_enabled: vars.flag("BREAKER_ENABLED", true)?,
                retry_budget_enabled: vars.flag("RETRY_BUDGET_ENABLED", true)?,
                retry: defaults.retry,
            },
        })
    }
}

/// `http://host[:port]`, with an optional trailing `/`, as `http://host[:port]`.
fn parse_url(text: &str) -> Option<String> {
    let uri: Uri = text.trim().parse().ok()?;
    let bare = uri.path() == "/" || uri.path().is_empty();
    let ok =
        uri.scheme_str() == Some("http") && uri.host().is_some() && bare && uri.query().is_none();
    let authority = uri.authority()?;
    ok.then(|| format!("http://{authority}"))
}
// ANCHOR_END: settings

// ANCHOR: error
/// Why a call brought no answer. Each one means "degrade"; the names are for the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The incoming request had less than [`ANSWER_RESERVE`] left: not worth starting.
    NoTime,
    /// The bulkhead is full: `UPSTREAM_MAX_CONCURRENCY` calls are in flight.
    Busy,
    /// The breaker is open (or its one probe is out).
    BreakerOpen,
    /// No connection (refused, unreachable, DNS).
    Connect,
    /// The deadline passed first.
    TimedOut,
    /// The upstream answered, but not 200.
    Status(StatusCode),
    /// The connection broke, or the answer was unreadable or too long.
    Broken,
}

impl CallError {
    fn retryable(&self) -> bool {
        match self {
            CallError::Connect => true,
            CallError::Status(status) => is_retryable_status(*status),
            _ => false,
        }
    }

    /// Whether the upstream showed it is unwell (the breaker counts these): not a 4xx, which
    /// is an answer.
    fn is_failure(&self) -> bool {
        !matches!(self, CallError::Status(status) if status.is_client_error())
    }
}
// ANCHOR_END: error

// ANCHOR: observer
/// What a later step may add around each attempt without touching the defences (step 10: a
/// client span, and the trace sent along). The default adds nothing.
pub trait Observer: Send + Sync {
    /// The span attempt `attempt` (1 for the first) of `method url` runs in, the breaker being
    /// in `breaker`.
    fn attempt_span(&self, method: &Method, url: &str, attempt: u32, breaker: State) -> Span {
        let _ = (method, url, attempt, breaker);
        Span::none()
    }
    /// Adds headers to the attempt's request; runs inside the attempt's span.
    fn headers(&self, headers: &mut HeaderMap) {
        let _ = headers;
    }
    /// How the attempt ended.
    fn outcome(&self, span: &Span, outcome: &Result<Bytes, CallError>) {
        let _ = (span, outcome);
    }
}

/// The default [`Observer`].
struct Unobserved;

impl Observer for Unobserved {}
// ANCHOR_END: observer

// ANCHOR: client
/// The upstream: one pooled client and the state of its defences, built once at start-up and
/// shared by every request.
pub struct Upstream {
    base: String,
    client: Client<Counted, Empty<Bytes>>,
    settings: Settings,
    bulkhead: Arc<Semaphore>,
    breaker: Breaker,
    budget: RetryBudget,
    jitter: Jitter,
    opened: Arc<AtomicU64>,
    observer: Arc<dyn Observer>,
}

impl Upstream {
    /// A client for `base` (`http://host:port`). No connection is opened here: the pool opens
    /// them on demand and keeps up to `max_concurrency` idle ones for reuse.
    pub fn new(base: &str, settings: Settings) -> Upstream {
        let mut http = HttpConnector::new();
        // Small requests should leave at once, not wait for Nagle's algorithm.
        http.set_nodelay(true);
        let opened = Arc::new(AtomicU64::new(0));
        let connector = Counted {
            http,
            opened: opened.clone(),
        };
        let client = Client::builder(TokioExecutor::new())
            // The timer closes connections idle for 90 s (the default), before the platform's
            // load balancer or NAT forgets them silently.
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(settings.max_concurrency)
            .build(connector);
        Upstream {
            base: base.trim_end_matches('/').to_owned(),
            client,
            settings,
            bulkhead: Arc::new(Semaphore::new(settings.max_concurrency)),
            breaker: Breaker::new(settings.breaker),
            budget: RetryBudget::default(),
            jitter: Jitter::default(),
            opened,
            observer: Arc::new(Unobserved),
        }
    }

    /// The same upstream, with `observer` told about every attempt.
    pub fn observed_by(mut self, observer: Arc<dyn Observer>) -> Upstream {
        self.observer = observer;
        self
    }

    /// Connections opened since start: with reuse, no more than calls ever in flight at once
    /// (plus those cut off by a deadline, which cannot be reused).
    pub fn connections_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// `GET /stock/{id}` → `{"stock": N}`, by `deadline` (the incoming request's) at the latest.
    pub async fn stock(&self, id: ItemId, deadline: Option<Instant>) -> Result<u64, CallError> {
        #[derive(Deserialize)]
        struct Stock {
            stock: u64,
        }
        let path = format!("/stock/{id}");
        let body = self.call(Method::GET, &path, deadline).await?;
        let answer: Stock = serde_json::from_slice(&body).map_err(|_| CallError::Broken)?;
        Ok(answer.stock)
    }
    // ANCHOR_END: client

    // ANCHOR: call
    /// One call: every attempt within min(`UPSTREAM_TIMEOUT`, what `deadline` leaves), retried
    /// only when `method` is idempotent, the failure retryable, the wait fits before the
    /// deadline and the budget has a token.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        deadline: Option<Instant>,
    ) -> Result<Bytes, CallError> {
        let now = Instant::now();
        let mut until = now + self.settings.timeout;
        if let Some(deadline) = deadline {
            until = until.min(deadline.checked_sub(ANSWER_RESERVE).unwrap_or(now));
        }
        if until <= now {
            return Err(CallError::NoTime);
        }
        // The bulkhead: a slot for the whole call, or degrade now rather than queue.
        let _slot = self
            .bulkhead
            .clone()
            .try_acquire_owned()
            .map_err(|_| CallError::Busy)?;
        self.budget.deposit();
        let mut attempt = 1;
        loop {
            let permit = if self.settings.breaker_enabled {
                Some(self.breaker.try_acquire().ok_or(CallError::BreakerOpen)?)
            } else {
                None
            };
            let url = format!("{}{path}", self.base);
            let span = self
                .observer
                .attempt_span(&method, &url, attempt, self.breaker.state());
            let sent = self.attempt(&method, &url, until).instrument(span.clone());
            // Waits for the answer, or for `until`: then the attempt is dropped, and with it
            // its connection (half-used, it cannot go back to the pool).
            let outcome = match tokio::time::timeout_at(until, sent).await {
                Ok(outcome) => outcome,
                Err(_elapsed) => Err(CallError::TimedOut),
            };
            self.observer.outcome(&span, &outcome);
            if let Some(permit) = permit {
                permit.record(!outcome.as_ref().is_err_and(CallError::is_failure));
            }
            let error = match outcome {
                Ok(body) => return Ok(body),
                Err(error) => error,
            };
            if !is_idempotent(&method)
                || !error.retryable()
                || attempt >= self.settings.retry.max_attempts
            {
                return Err(error);
            }
            let wait = self.settings.retry.backoff(attempt, self.jitter.next());
            if Instant::now() + wait >= until {
                tracing::info!(
                    attempt,
                    ?error,
                    "not retrying: the wait would pass the deadline"
                );
                return Err(error);
            }
            if self.settings.retry_budget_enabled && !self.budget.withdraw() {
                tracing::warn!(attempt, ?error, "not retrying: the retry budget is spent");
                return Err(error);
            }
            tracing::info!(
                attempt,
                ?error,
                wait_ms = wait.as_millis() as u64,
                path,
                "retrying"
            );
            // Sleeps through the backoff; the caller's deadline still bounds the whole call.
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// One request and its whole answer, telling the upstream how long it has.
    async fn attempt(
        &self,
        method: &Method,
        url: &str,
        until: Instant,
    ) -> Result<Bytes, CallError> {
        let left = until.saturating_duration_since(Instant::now());
        let mut request = Request::builder()
            .method(method.clone())
            .uri(url)
            .header(BUDGET_HEADER, left.as_millis().max(1).to_string())
            .body(Empty::new())
            .map_err(|_| CallError::Broken)?;
        self.observer.headers(request.headers_mut());
        // Waits for a pooled connection (or a new one) and the answer's head.
        let response = self.client.request(request).await.map_err(|error| {
            if error.is_connect() {
                CallError::Connect
            } else {
                CallError::Broken
            }
        })?;
        let status = response.status();
        // Reads the body to its end: only then does the connection go back to the pool.
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|_| CallError::Broken)?
            .to_bytes();
        if status != StatusCode::OK {
            return Err(CallError::Status(status));
        }
        Ok(body)
    }
    // ANCHOR_END: call
}

// ANCHOR: counted
/// hyper-util's connector, counting the connections it opens (the pool has no such count).
#[derive(Clone)]
struct Counted {
    http: HttpConnector,
    opened: Arc<AtomicU64>,
}

type Connecting = Pin<
    Box<
        dyn Future<Output = Result<TokioIo<TcpStream>, Box<dyn std::error::Error + Send + Sync>>>
            + Send,
    >,
>;

impl tower::Service<Uri> for Counted {
    type Response = TokioIo<TcpStream>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Connecting {
        let connecting = self.http.call(uri);
        let opened = self.opened.clone();
        Box::pin(async move {
            // Waits for the TCP handshake.
            let stream = connecting.await?;
            opened.fetch_add(1, Ordering::Relaxed);
            Ok(stream)
        })
    }
}
// ANCHOR_END: counted

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_url_is_an_http_origin() {
        assert_eq!(
            parse_url("http://inventory:8080/"),
            Some("http://inventory:8080".into())
        );
        assert_eq!(parse_url("http://10.0.0.7"), Some("http://10.0.0.7".into()));
        for bad in [
            "https://x.run.app",
            "inventory:8080",
            "http://x/stock",
            "http://x/?a=1",
            "x",
        ] {
            assert_eq!(parse_url(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_breaker_and_the_budget_are_on_unless_set_to_0() {
        let read = |pairs: &[(&str, &str)]| {
            UpstreamConfig::from_lookup(testkit::env_from(pairs))
                .map(|c| (c.settings.breaker_enabled, c.settings.retry_budget_enabled))
        };

        assert_eq!(read(&[]), Ok((true, true)));
        assert_eq!(read(&[("BREAKER_ENABLED", "0")]), Ok((false, true)));
        assert_eq!(
            read(&[("RETRY_BUDGET_ENABLED", "false")]),
            Ok((true, false))
        );
        let refused = read(&[("RETRY_BUDGET_ENABLED", "off")]).unwrap_err();
        assert!(
            refused.starts_with("RETRY_BUDGET_ENABLED must be 1 or 0"),
            "{refused}"
        );
    }
}
