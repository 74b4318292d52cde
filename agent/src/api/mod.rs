//! The HTTP API: JSON under `/v1/`, plus `/healthz` and `/readyz`, on the
//! agent's `--listen` address. Errors are JSON `{code, message}`.

pub mod error;
mod health;
mod migration;
mod nodes;
mod routes;
mod salvage;
mod settings;
pub mod support_bundle;
mod uninstall;
mod volumes;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::daemon::Agent;
use error::ApiError;
use vigil_model::wire::ErrorBody;

/// Largest request body accepted (requests are small JSON documents).
const MAX_BODY: usize = 1 << 20;

/// Serves the API until the task is aborted.
pub async fn serve(listener: TcpListener, agent: Arc<Agent>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let agent = Arc::clone(&agent);
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(Arc::clone(&agent), req));
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
}

async fn handle(
    agent: Arc<Agent>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    if method == hyper::Method::GET && path == "/metrics" {
        return Ok(metrics_response(crate::metrics::render(&agent.local).await));
    }
    let query = req.uri().query().unwrap_or("").to_string();
    let span = crate::telemetry::propagation::request_span(&method, &path, req.headers());
    if let Err(e) = authorize(&agent, &method, req.headers()) {
        return Ok(error_response(&e));
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(error_response(&ApiError::bad_request(
                "bad_body",
                format!("cannot read request body: {e}"),
            )));
        }
    };
    // The support bundle answers a binary archive, not JSON.
    if method == hyper::Method::POST && path == "/v1/support-bundle" {
        return Ok(support_bundle::make(&agent, &body).instrument(span).await);
    }
    let result = routes::route(&agent, &method, &path, &query, &body)
        .instrument(span)
        .await;
    let response = match result {
        Ok((status, json)) => json_response(status, json),
        Err(e) => {
            tracing::debug!(%method, %path, code = e.code, error = %e.message, "API error");
            error_response(&e)
        }
    };
    Ok(response)
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error_response(e: &ApiError) -> Response<Full<Bytes>> {
    json_response(
        e.status,
        to_json(&ErrorBody {
            code: e.code.to_string(),
            message: e.message.clone(),
            details: e.details.clone(),
        }),
    )
}

/// Serialises a response body.
pub fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec_pretty(v).unwrap_or_else(|e| {
        format!("{{\"code\":\"internal\",\"message\":\"serialise response: {e}\"}}").into_bytes()
    })
}

/// Mutating calls need the cluster token (`Authorization: Bearer ...`)
/// when the API listens beyond loopback; reads never do.
fn authorize(
    agent: &Agent,
    method: &hyper::Method,
    headers: &hyper::HeaderMap,
) -> Result<(), ApiError> {
    if method == hyper::Method::GET || agent.config.listen.ip().is_loopback() {
        return Ok(());
    }
    let presented = headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "));
    match presented {
        Some(t) if agent.token.matches(t.trim()) => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "bad_token",
            "the cluster token presented is wrong",
        )),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "token_required",
            "this agent listens beyond loopback: mutating calls need the cluster token (set VIGIL_CLUSTER_TOKEN or --token-file)",
        )),
    }
}

/// Runs a request on the agent of `node`: here directly, elsewhere over
/// HTTP with this agent's token.
pub async fn forward(
    agent: &Arc<Agent>,
    node: &str,
    method: &hyper::Method,
    path: &str,
    body: &[u8],
) -> Result<(StatusCode, Vec<u8>), ApiError> {
    if node == agent.config.node_name {
        return Box::pin(routes::route(agent, method, path, "", body)).await;
    }
    let n = agent
        .local
        .cluster
        .must_get::<vigil_model::Node>(node)
        .await?;
    let client = vigil_client::ApiClient::new(&n.object.spec.api_address)
        .with_token(Some(agent.token.expose().to_string()))
        .with_traceparent(crate::telemetry::propagation::outgoing_traceparent());
    let value: Option<serde_json::Value> =
        (!body.is_empty()).then(|| serde_json::from_slice(body).unwrap_or(serde_json::Value::Null));
    match client
        .call::<serde_json::Value, serde_json::Value>(method.clone(), path, value.as_ref())
        .await
    {
        Ok(v) => Ok((StatusCode::OK, to_json(&v))),
        Err(vigil_client::CallError::Api { code, message, .. }) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "remote_error",
            format!("node {node}: {message} [{code}]"),
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "node_unreachable",
            format!("node {node}: {e}"),
        )),
    }
}

/// The Prometheus text exposition (format 0.0.4).
fn metrics_response(body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}
