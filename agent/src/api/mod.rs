//! The HTTP API: JSON under `/v1/`, plus `/healthz` and `/readyz`, on the
//! agent's `--listen` address. Errors are JSON `{code, message}`.

pub mod error;
mod routes;
pub mod types;

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

use crate::daemon::Agent;
use error::ApiError;
use types::ErrorBody;

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
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(error_response(&ApiError::bad_request(
                "bad_body",
                format!("cannot read request body: {e}"),
            )));
        }
    };
    let result = routes::route(&agent, &method, &path, &body).await;
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
        }),
    )
}

/// Serialises a response body.
pub fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec_pretty(v).unwrap_or_else(|e| {
        format!("{{\"code\":\"internal\",\"message\":\"serialise response: {e}\"}}").into_bytes()
    })
}
