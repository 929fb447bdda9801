//! A tiny HTTP/1.1 client (hyper's own client connection, no extra crate) and the reply it
//! reads, which can also be built from a response that never touched a socket.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A finished HTTP exchange.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    /// Reads a whole response that did not come over a socket, such as one from
    /// `tower::ServiceExt::oneshot` (routing-only tests), into a reply.
    ///
    /// Only what the service set is there: the headers hyper adds on the wire (`content-length`,
    /// `date`) are not, so a transcript for the book should come from a real exchange.
    pub async fn from_response<B>(response: http::Response<B>) -> Reply
    where
        B: hyper::body::Body,
        B::Error: std::fmt::Display,
    {
        let (parts, body) = response.into_parts();
        let bytes = body
            .collect()
            .await
            .unwrap_or_else(|e| panic!("reading the response body: {e}"))
            .to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

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
