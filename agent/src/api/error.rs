//! API errors: every failure becomes a JSON body with a stable code, a
//! message and the matching HTTP status.

use hyper::StatusCode;
use thiserror::Error;
use vigil_engine::engine::EngineError;
use vigil_engine::replica::{ErrorKind, ReplicaError};

/// An error returned by an API handler.
#[derive(Debug, Error)]
#[error("{message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code.
    pub code: &'static str,
    /// Message for humans.
    pub message: String,
    /// One line per item when the error is about several (e.g. why each
    /// node could not take a replica).
    pub details: Vec<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }
    pub fn with_details(mut self, details: Vec<String>) -> ApiError {
        self.details = details;
        self
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn not_found(what: &str, name: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} {name:?} not found"),
        )
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl From<ReplicaError> for ApiError {
    fn from(e: ReplicaError) -> ApiError {
        let (status, code) = match e.kind() {
            ErrorKind::InvalidArgument => (StatusCode::BAD_REQUEST, "invalid_argument"),
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorKind::AlreadyExists => (StatusCode::CONFLICT, "already_exists"),
            ErrorKind::NoSpace => (StatusCode::INSUFFICIENT_STORAGE, "no_space"),
            ErrorKind::Corrupt => (StatusCode::INTERNAL_SERVER_ERROR, "corrupt"),
            ErrorKind::Io => (StatusCode::INTERNAL_SERVER_ERROR, "io_error"),
            ErrorKind::StaleEpoch => (StatusCode::CONFLICT, "stale_epoch"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        let (status, code) = match &e {
            EngineError::Name(_) => (StatusCode::BAD_REQUEST, "invalid_name"),
            EngineError::Size(_) => (StatusCode::BAD_REQUEST, "invalid_size"),
            EngineError::SizeMismatch { .. } => (StatusCode::BAD_REQUEST, "size_mismatch"),
            EngineError::DuplicateReplica(_) => (StatusCode::CONFLICT, "duplicate_replica"),
            EngineError::Busy { .. } => (StatusCode::CONFLICT, "busy"),
            EngineError::StaleEpoch { .. } => (StatusCode::CONFLICT, "stale_epoch"),
            EngineError::NewerGeneration { .. } => (StatusCode::CONFLICT, "newer_generation"),
            EngineError::NoUsableReplica { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "no_usable_replica")
            }
            EngineError::Operation { .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, "operation_failed")
            }
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<vigil_control::local::replicas::CreateError> for ApiError {
    fn from(e: vigil_control::local::replicas::CreateError) -> ApiError {
        use vigil_control::local::replicas::CreateError;
        match e {
            CreateError::Exists(_) => ApiError::conflict("already_exists", e.to_string()),
            CreateError::NoDisk(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_disk", e.to_string())
            }
            CreateError::Replica(r) => ApiError::from(r),
        }
    }
}

impl From<vigil_control::cluster::ClusterError> for ApiError {
    fn from(e: vigil_control::cluster::ClusterError) -> ApiError {
        use vigil_control::cluster::ClusterError;
        use vigil_store::StoreError;
        match &e {
            ClusterError::Store(StoreError::Conflict { .. }) => ApiError::conflict(
                "conflict",
                format!("{e}; the object changed concurrently too many times, retry"),
            ),
            ClusterError::Store(StoreError::Unavailable { .. }) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                e.to_string(),
            ),
            ClusterError::Store(StoreError::Invalid(_)) => {
                ApiError::bad_request("invalid_request", e.to_string())
            }
            ClusterError::Store(_) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "store_error",
                e.to_string(),
            ),
            ClusterError::Decode { .. } => ApiError::internal(e.to_string()),
            ClusterError::Transition(_) | ClusterError::MigrationPhase(_) => {
                ApiError::conflict("invalid_transition", e.to_string())
            }
            ClusterError::NotFound { kind, name } => ApiError::not_found(kind, name),
            ClusterError::Superseded { .. } => ApiError::conflict("superseded", e.to_string()),
        }
    }
}
