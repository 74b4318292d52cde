//! `POST /v1/support-bundle` (the archive, made by this agent as
//! coordinator; body: [`crate::bundle::Request`] as JSON, or empty) and
//! `GET /v1/support-bundle/node` (this node's part, asked by the
//! coordinator; `?since=SECS&volume=V...`).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};

use super::error::ApiError;
use super::{error_response, to_json};
use crate::bundle::{self, Request};
use crate::daemon::Agent;

/// The archive's media type.
pub const CONTENT_TYPE: &str = "application/gzip";

/// `POST /v1/support-bundle`: the archive, or a JSON error.
pub async fn make(agent: &Arc<Agent>, body: &[u8]) -> Response<Full<Bytes>> {
    let req: Request = if body.iter().all(u8::is_ascii_whitespace) {
        Request::default()
    } else {
        match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => {
                return error_response(&ApiError::bad_request(
                    "bad_body",
                    format!("invalid support-bundle request: {e}"),
                ));
            }
        }
    };
    match bundle::collect::make(agent, req).await {
        Ok((bytes, _)) => {
            let mut r = Response::new(Full::new(Bytes::from(bytes)));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(CONTENT_TYPE),
            );
            r
        }
        Err(e) => error_response(&ApiError::internal(format!("make the support bundle: {e}"))),
    }
}

/// `GET /v1/support-bundle/node?since=SECS&volume=V...`.
pub async fn node(agent: &Arc<Agent>, query: &str) -> Result<(StatusCode, Vec<u8>), ApiError> {
    let req = parse_query(query)?;
    Ok((
        StatusCode::OK,
        to_json(&bundle::node::collect(agent, &req).await),
    ))
}

fn parse_query(query: &str) -> Result<Request, ApiError> {
    let mut req = Request::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "since" => {
                req.since_secs = Some(v.parse().map_err(|_| {
                    ApiError::bad_request(
                        "invalid_query",
                        format!("since {v:?} is not a number of seconds"),
                    )
                })?)
            }
            "volume" => req.volumes.push(v.to_string()),
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!("unknown query parameter {k:?}; known: since, volume"),
                ));
            }
        }
    }
    Ok(req)
}
