//! How a system's command (a simulator) calls a weir's HTTP API: a running weir over HTTP (`--target`), or the routes
//! of the weir the command started for itself, called in-process through the router. One minimal HTTP/1.1 exchange
//! per request (a connection each), which is all weir's own JSON API needs, without a client library.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// Where a command's requests go.
#[derive(Clone, Debug)]
pub enum ApiTarget {
    /// A running weir's HTTP address (`host:port`).
    Http(String),
    /// The routes of a weir of the command's own.
    Router(axum::Router),
}

impl ApiTarget {
    /// What to call it in messages.
    pub fn name(&self) -> &str {
        match self {
            ApiTarget::Http(addr) => addr,
            ApiTarget::Router(_) => "the embedded weir",
        }
    }

    /// One request with a JSON body (none when `body` is null): the status and the JSON answer (`null` when there
    /// is none or it is not JSON).
    pub async fn exchange(&self, method: &str, path: &str, body: &Value) -> Result<(u16, Value)> {
        let payload = if body.is_null() { String::new() } else { body.to_string() };
        match self {
            ApiTarget::Http(addr) => http(addr, method, path, payload).await,
            ApiTarget::Router(router) => {
                use tower::ServiceExt;
                let request = axum::http::Request::builder()
                    .method(method)
                    .uri(path)
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(payload))?;
                let response = router.clone().oneshot(request).await?;
                let status = response.status().as_u16();
                let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
                Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
            }
        }
    }

    /// A request that must answer 200; its JSON body.
    pub async fn call(&self, method: &str, path: &str, body: &Value) -> Result<Value> {
        let (status, answer) = self.exchange(method, path, body).await?;
        if status != 200 {
            bail!("{method} {path} on {} answered {status}: {answer}", self.name());
        }
        Ok(answer)
    }
}

async fn http(addr: &str, method: &str, path: &str, payload: String) -> Result<(u16, Value)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("cannot reach {addr}"))?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            payload.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(payload.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(120), exchange)
        .await
        .with_context(|| format!("{method} {path} on {addr}: no answer within 120 s"))??;
    let response = String::from_utf8_lossy(&response);
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}
