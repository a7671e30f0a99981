//! `ApiError`, the one error type of every API handler, and its mapping to
//! HTTP status codes and Defender's `{"error":{"code","message","target"}}`
//! envelope. This is the only place that decides error codes and statuses.
//!
//! It never puts secrets or internal error chains into a response: internal
//! errors are logged once here with their correlation id and answered with a
//! generic message.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use reach_proto::api::{ErrorBody, ErrorEnvelope};

use crate::store::StoreError;

/// Every refusal and failure a handler answers, each with its code and status (`code_and_status`); the message is for the caller and never holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `BadRequest`.
    #[error("{0}")]
    BadRequest(String),
    /// 400 `ODataError`: a query option is malformed or names an unknown property.
    #[error("{0}")]
    OData(String),
    /// 400 `InvalidRequestBody`: the JSON body does not parse.
    #[error("{0}")]
    InvalidRequestBody(String),
    /// 400 `InvalidInput`: a value is not acceptable.
    #[error("{0}")]
    InvalidInput(String),
    /// 400 `MissingRequiredParameter`, naming it.
    #[error("Parameter {0} is missing")]
    MissingParameter(String),
    /// 400 `MaximumBatchSizeExceeded`.
    #[error("{0}")]
    MaximumBatchSizeExceeded(String),
    /// 400 `ActiveRequestAlreadyExists`: the machine already has an active live response action.
    #[error("Action is already in progress")]
    ActiveRequestAlreadyExists,
    /// 401 `Unauthorized`.
    #[error("{0}")]
    Unauthorized(String),
    /// 403 `Forbidden`.
    #[error("{0}")]
    Forbidden(String),
    /// 404 `NotFound`: no such route.
    #[error("{0}")]
    NotFound(String),
    /// 404 `ResourceNotFound`: no such entity (or not visible to the caller).
    #[error("{0}")]
    ResourceNotFound(String),
    /// 410 `MachineOffboarded`: an agent whose machine was offboarded.
    #[error("{0}")]
    Offboarded(String),
    /// 405 `MethodNotAllowed`.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 409 `Conflict`.
    #[error("{0}")]
    Conflict(String),
    /// 413 `RequestEntityTooLarge`.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415 `UnsupportedMediaType`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 416 `RangeNotSatisfiable`.
    #[error("{0}")]
    RangeNotSatisfiable(String),
    /// 408 `RequestTimeout`: the body arrived too slowly.
    #[error("{0}")]
    RequestTimeout(String),
    /// 503 `ServiceUnavailable`.
    #[error("{0}")]
    Unavailable(String),
    /// 429 `TooManyRequests`, with `Retry-After`.
    #[error("{message}")]
    TooManyRequests {
        /// What the caller is told.
        message: String,
        /// Seconds until a call would be allowed.
        retry_after_secs: u64,
    },
    /// 500 `InternalServerError`: logged with its cause; the caller sees only the request id.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// Defender's error code and the HTTP status for this error.
    pub fn code_and_status(&self) -> (&'static str, StatusCode) {
        match self {
            Self::BadRequest(_) => ("BadRequest", StatusCode::BAD_REQUEST),
            Self::OData(_) => ("ODataError", StatusCode::BAD_REQUEST),
            Self::InvalidRequestBody(_) => ("InvalidRequestBody", StatusCode::BAD_REQUEST),
            Self::InvalidInput(_) => ("InvalidInput", StatusCode::BAD_REQUEST),
            Self::MissingParameter(_) => ("MissingRequiredParameter", StatusCode::BAD_REQUEST),
            Self::MaximumBatchSizeExceeded(_) => {
                ("MaximumBatchSizeExceeded", StatusCode::BAD_REQUEST)
            }
            Self::ActiveRequestAlreadyExists => {
                ("ActiveRequestAlreadyExists", StatusCode::BAD_REQUEST)
            }
            Self::Unauthorized(_) => ("Unauthorized", StatusCode::UNAUTHORIZED),
            Self::Offboarded(_) => ("MachineOffboarded", StatusCode::GONE),
            Self::Forbidden(_) => ("Forbidden", StatusCode::FORBIDDEN),
            Self::NotFound(_) => ("NotFound", StatusCode::NOT_FOUND),
            Self::ResourceNotFound(_) => ("ResourceNotFound", StatusCode::NOT_FOUND),
            Self::MethodNotAllowed(_) => ("MethodNotAllowed", StatusCode::METHOD_NOT_ALLOWED),
            Self::Conflict(_) => ("Conflict", StatusCode::CONFLICT),
            Self::PayloadTooLarge(_) => ("RequestEntityTooLarge", StatusCode::PAYLOAD_TOO_LARGE),
            Self::UnsupportedMediaType(_) => {
                ("UnsupportedMediaType", StatusCode::UNSUPPORTED_MEDIA_TYPE)
            }
            Self::Unavailable(_) => ("ServiceUnavailable", StatusCode::SERVICE_UNAVAILABLE),
            Self::RequestTimeout(_) => ("RequestTimeout", StatusCode::REQUEST_TIMEOUT),
            Self::RangeNotSatisfiable(_) => {
                ("RangeNotSatisfiable", StatusCode::RANGE_NOT_SATISFIABLE)
            }
            Self::TooManyRequests { .. } => ("TooManyRequests", StatusCode::TOO_MANY_REQUESTS),
            Self::Internal(_) => ("InternalServerError", StatusCode::INTERNAL_SERVER_ERROR),
        }
    }

    /// A 500 whose cause is logged, never shown.
    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        Self::Internal(err.into())
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(what) => Self::ResourceNotFound(format!("{what} was not found")),
            StoreError::Conflict(message) => Self::Conflict(message),
            StoreError::ActiveActionExists => Self::ActiveRequestAlreadyExists,
            StoreError::TenantActionLimit(limit) => Self::TooManyRequests {
                message: format!(
                    "The tenant already has {limit} live response actions running on devices"
                ),
                retry_after_secs: 30,
            },
            StoreError::RequestorQueueLimit(limit) => Self::TooManyRequests {
                message: format!(
                    "This caller already has {limit} live response actions waiting for their devices; cancel some or wait until they start"
                ),
                retry_after_secs: 60,
            },
            StoreError::InvalidQuery(message) => Self::OData(message),
            StoreError::Refused(message) => Self::Unauthorized(message),
            StoreError::Other(err) => Self::Internal(err),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, status) = self.code_and_status();
        let target = uuid::Uuid::new_v4().to_string();
        let message = match &self {
            Self::Internal(err) => {
                tracing::error!(error = format!("{err:#}"), correlation.id = %target, "internal error");
                "An internal error occurred; retry the request".to_string()
            }
            other => other.to_string(),
        };
        let body = ErrorEnvelope {
            error: ErrorBody {
                code: code.to_string(),
                message,
                target,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let Self::TooManyRequests {
            retry_after_secs, ..
        } = self
        {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs.max(1)),
            );
        }
        response
    }
}

/// Handlers return this.
pub type ApiResult<T> = Result<T, ApiError>;
