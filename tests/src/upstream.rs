//! An upstream on a real socket that answers as a test's script says and records what it
//! received: the inventory that steps 09 and 10 call, under the test's control.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::time::Instant;

/// What the scripted upstream answers.
#[derive(Clone)]
pub enum Answer {
    /// 200 `{"stock": N}`.
    Stock(u64),
    /// This status, with a short body.
    Status(u16),
    /// 503 with `Retry-After: seconds`.
    RetryAfter(u64),
    /// Nothing, ever.
    Hang,
    /// 200 `{"stock": N}` once the gate is opened.
    After(Arc<Notify>, u64),
}

/// One request the upstream received.
#[derive(Debug, Clone)]
pub struct Hit {
    pub method: String,
    pub path: String,
    pub at: Instant,
    /// The caller's `x-request-timeout-ms` (step 09's deadline header).
    pub budget_ms: Option<u64>,
    /// Every header, `traceparent` included.
    pub headers: http::HeaderMap,
}

type Script = Arc<dyn Fn(&Hit) -> Answer + Send + Sync>;

/// An upstream on `127.0.0.1:0` that answers as its script says and keeps count.
#[derive(Clone)]
pub struct Scripted {
    pub addr: SocketAddr,
    pub url: String,
    hits: Arc<Mutex<Vec<Hit>>>,
    accepted: Arc<AtomicU64>,
    script: Arc<Mutex<Script>>,
}

impl Scripted {
    pub async fn start(script: impl Fn(&Hit) -> Answer + Send + Sync + 'static) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let upstream = Scripted {
            addr,
            url: format!("http://{addr}"),
            hits: Arc::default(),
            accepted: Arc::default(),
            script: Arc::new(Mutex::new(Arc::new(script))),
        };
        let serving = upstream.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                serving.accepted.fetch_add(1, Ordering::Relaxed);
                let answering = serving.clone();
                let service = service_fn(move |request| {
                    let answering = answering.clone();
                    async move { Ok::<_, Infallible>(answering.answer(request).await) }
                });
                // One task per connection, as any server does.
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        upstream
    }

    /// Answers from now on as `script` says.
    pub fn script(&self, script: impl Fn(&Hit) -> Answer + Send + Sync + 'static) {
        *self.script.lock().unwrap() = Arc::new(script);
    }

    async fn answer(&self, request: http::Request<Incoming>) -> http::Response<Full<Bytes>> {
        let hit = Hit {
            method: request.method().to_string(),
            path: request.uri().path().to_owned(),
            at: Instant::now(),
            budget_ms: request
                .headers()
                .get("x-request-timeout-ms")
                .and_then(|v| v.to_str().ok()?.parse().ok()),
            headers: request.headers().clone(),
        };
        let script = self.script.lock().unwrap().clone();
        let answer = script(&hit);
        self.hits.lock().unwrap().push(hit);
        let stock =
            |n: u64| http::Response::new(Full::new(Bytes::from(format!("{{\"stock\":{n}}}"))));
        match answer {
            Answer::Stock(n) => stock(n),
            Answer::Status(code) => {
                let mut response = http::Response::new(Full::new(Bytes::from("no\n")));
                *response.status_mut() = http::StatusCode::from_u16(code).expect("a status");
                response
            }
            Answer::RetryAfter(seconds) => {
                let mut response = http::Response::new(Full::new(Bytes::from("later\n")));
                *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                let value = http::HeaderValue::from(seconds);
                response
                    .headers_mut()
                    .insert(http::header::RETRY_AFTER, value);
                response
            }
            Answer::Hang => std::future::pending().await,
            Answer::After(gate, n) => {
                gate.notified().await;
                stock(n)
            }
        }
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.hits.lock().unwrap().len()
    }

    /// TCP connections accepted.
    pub fn connections(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Waits (a few seconds at most) until `n` requests have arrived.
    pub async fn wait_for(&self, n: usize) {
        crate::eventually(
            "requests reach the upstream",
            async || self.count(),
            |c| *c >= n,
        )
        .await;
    }
}
