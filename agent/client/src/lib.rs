//! The client of the agent's HTTP API: JSON in and out, the API's errors
//! decoded into [`CallError`], a bearer token and a W3C `traceparent` when
//! given. Used by the CLI, the support-bundle collector and agent-to-agent
//! forwarding. [`routes`] has one typed call per route; `call` and
//! `call_bytes` stay for forwarding, which passes a request through as it
//! came.

pub mod routes;

pub use routes::SnapshotOwner;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

use vigil_model::wire::ErrorBody;

/// Why a call failed.
#[derive(Debug, Error)]
pub enum CallError {
    #[error("invalid endpoint {0:?}")]
    Endpoint(String),
    #[error(
        "cannot reach the agent at {endpoint}: {message} (is `vigil agent` running? set --endpoint or VIGIL_ENDPOINT)"
    )]
    Unreachable { endpoint: String, message: String },
    #[error("{message} [{code}]{}", details.iter().map(|d| format!("\n  - {d}")).collect::<String>())]
    Api {
        code: String,
        message: String,
        details: Vec<String>,
    },
    #[error("unexpected answer from the agent ({status}): {body}")]
    Unexpected { status: StatusCode, body: String },
}

/// The agent at `endpoint`.
pub struct ApiClient {
    endpoint: String,
    token: Option<String>,
    traceparent: Option<String>,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl ApiClient {
    pub fn new(endpoint: &str) -> ApiClient {
        ApiClient {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token: None,
            traceparent: None,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Sends `token` as a bearer token (needed for mutating calls to an
    /// agent that listens beyond loopback).
    pub fn with_token(mut self, token: Option<String>) -> ApiClient {
        self.token = token;
        self
    }

    /// Sends a W3C `traceparent` (the caller's span continues in the callee).
    pub fn with_traceparent(mut self, traceparent: Option<String>) -> ApiClient {
        self.traceparent = traceparent;
        self
    }

    /// Calls `method path` with an optional JSON body; decodes the answer.
    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, CallError> {
        let (status, body) = self.exchange(method, path, body).await?;
        serde_json::from_slice(&body).map_err(|_| CallError::Unexpected {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// Calls `method path` with an optional JSON body and returns the
    /// answer's bytes as they are (for answers that are not JSON, such as
    /// the support bundle's archive); an error answer is decoded as usual.
    pub async fn call_bytes<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Bytes, CallError> {
        Ok(self.exchange(method, path, body).await?.1)
    }

    /// Sends the request and reads the whole answer: the status and body of
    /// a success, or the API's error (or the unexpected answer) as an error.
    async fn exchange<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(hyper::StatusCode, Bytes), CallError> {
        let uri: hyper::Uri = format!("{}{path}", self.endpoint)
            .parse()
            .map_err(|_| CallError::Endpoint(self.endpoint.clone()))?;
        let bytes = match body {
            Some(b) => Bytes::from(serde_json::to_vec(b).unwrap_or_default()),
            None => Bytes::new(),
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(t) = &self.token {
            builder = builder.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(tp) = &self.traceparent {
            builder = builder.header("traceparent", tp.as_str());
        }
        let req = builder
            .body(Full::new(bytes))
            .map_err(|_| CallError::Endpoint(self.endpoint.clone()))?;
        let unreachable = |message: String| CallError::Unreachable {
            endpoint: self.endpoint.clone(),
            message,
        };
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| unreachable(error_chain(&e)))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        if status.is_success() {
            return Ok((status, body));
        }
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(e) => Err(CallError::Api {
                code: e.code,
                message: e.message,
                details: e.details,
            }),
            Err(_) => Err(CallError::Unexpected {
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            }),
        }
    }
}

/// `outer: inner: innermost`, for errors whose Display hides the cause.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(inner) = cur {
        parts.push(inner.to_string());
        cur = inner.source();
    }
    parts.dedup();
    parts.join(": ")
}
