//! The HTTP layer's one error type, written once as an RFC 9457 problem document.

use salvo::http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use salvo::http::{HeaderValue, ParseError};
use salvo::prelude::*;

use super::json::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::csv_import::CsvFileError;
use crate::domain::{DomainError, FieldError};
use crate::service::ServiceError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("the request body is larger than the limit of {0} bytes")]
    TooLarge(u64),
    #[error("the request target is longer than the limit of {0} bytes")]
    UriTooLong(usize),
    #[error("the request headers are larger than the limit of {0} bytes")]
    HeadersTooLarge(usize),
    #[error("the request has invalid fields")]
    Invalid(Vec<FieldError>),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

/// A problem document (RFC 9457).
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    #[schema(example = "https://herald.dev/problems/validation")]
    pub kind: String,
    #[schema(example = "Unprocessable Content")]
    pub title: String,
    #[schema(example = 422)]
    pub status: u16,
    /// What went wrong, for a human.
    pub detail: String,
    /// For validation errors: each invalid field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<ProblemField>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProblemField {
    #[schema(example = "contacts[3].phone_number")]
    pub field: String,
    #[schema(example = "invalid phone number \"12345\"")]
    pub message: String,
}

/// The error answers operations share, each declared once for the OpenAPI
/// document (SPEC §3): an operation's `responses(...)` lists those it can give.
/// Documentation only: handlers answer with [`ApiError`].
pub mod responses {
    #![allow(dead_code)]

    use utoipa::IntoResponses;

    use super::Problem;

    #[derive(IntoResponses)]
    #[response(
        status = 400,
        description = "Malformed JSON or upload, a path id that is not a UUID, or a business rule forbids the request (`detail` says which)",
        content_type = "application/problem+json"
    )]
    pub struct BadRequest(Problem);

    #[derive(IntoResponses)]
    #[response(
        status = 401,
        description = "Missing or invalid credentials",
        content_type = "application/problem+json",
        headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"herald\"`"))
    )]
    pub struct Unauthorized(Problem);

    #[derive(IntoResponses)]
    #[response(
        status = 404,
        description = "No such resource, or it belongs to another user",
        content_type = "application/problem+json"
    )]
    pub struct NotFound(Problem);

    #[derive(IntoResponses)]
    #[response(
        status = 413,
        description = "The request body is over the server's limit",
        content_type = "application/problem+json"
    )]
    pub struct TooLarge(Problem);

    #[derive(IntoResponses)]
    #[response(
        status = 422,
        description = "Invalid fields or query parameters, each named in `errors`",
        content_type = "application/problem+json"
    )]
    pub struct Invalid(Problem);

    #[derive(IntoResponses)]
    #[response(
        status = 503,
        description = "The database, the bus or a plugin is busy or unreachable; retry",
        content_type = "application/problem+json",
        headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))
    )]
    pub struct Unavailable(Problem);
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            Self::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad-request",
            Self::Unauthorized => "unauthorized",
            Self::NotFound(_) => "not-found",
            Self::TooLarge(_) => "too-large",
            Self::UriTooLong(_) => "uri-too-long",
            Self::HeadersTooLarge(_) => "headers-too-large",
            Self::Invalid(_) => "validation",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    pub fn to_problem(&self) -> Problem {
        let status = self.status();
        let errors = match self {
            Self::Invalid(fields) => Some(
                fields
                    .iter()
                    .map(|f| ProblemField {
                        field: f.field.clone(),
                        message: f.message.clone(),
                    })
                    .collect(),
            ),
            _ => None,
        };
        let detail = match self {
            Self::Invalid(fields) => fields
                .iter()
                .map(|f| format!("{}: {}", f.field, f.message))
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        };
        Problem {
            kind: format!("https://herald.dev/problems/{}", self.kind()),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail,
            errors,
        }
    }
}

/// Writes a problem document with the right status and content type.
pub fn write_problem(res: &mut Response, problem: &Problem) {
    res.status_code(StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    match problem.status {
        401 => {
            res.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"herald\""));
        }
        503 => {
            res.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        _ => {}
    }
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    res.render(Json(problem));
}

#[async_trait]
impl Writer for ApiError {
    async fn write(self, _req: &mut Request, _depot: &mut Depot, res: &mut Response) {
        if let Self::Internal(cause) = &self {
            tracing::error!(%cause, "request failed");
        }
        write_problem(res, &self.to_problem());
    }
}

/// Turns salvo's own error responses (no route, wrong method, oversized body
/// caught by the framework) into problem documents too.
#[handler]
pub async fn catcher(res: &mut Response, ctrl: &mut FlowCtrl) {
    let status = res.status_code.unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (kind, detail) = match status {
        StatusCode::NOT_FOUND => ("not-found", "no such resource"),
        StatusCode::METHOD_NOT_ALLOWED => ("method-not-allowed", "this method is not allowed on this resource"),
        StatusCode::PAYLOAD_TOO_LARGE => ("too-large", "the request body is too large"),
        StatusCode::URI_TOO_LONG => ("uri-too-long", "the request target is too long"),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => ("headers-too-large", "the request headers are too large"),
        s if s.is_client_error() => ("bad-request", s.canonical_reason().unwrap_or("bad request")),
        _ => ("internal", "internal error"),
    };
    let problem = Problem {
        kind: format!("https://herald.dev/problems/{kind}"),
        title: status.canonical_reason().unwrap_or("Error").to_string(),
        status: status.as_u16(),
        detail: detail.to_string(),
        errors: None,
    };
    write_problem(res, &problem);
    ctrl.skip_rest();
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Invalid(fields) => Self::Invalid(fields),
            DomainError::Forbidden(reason) => Self::BadRequest(reason),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Busy(_) => Self::Unavailable("the database is busy; retry shortly".into()),
            StoreError::MissingReference(_) => Self::NotFound("campaign"),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Store(e) => e.into(),
            ServiceError::Domain(e) => e.into(),
            ServiceError::Csv(e) => e.into(),
            ServiceError::NotSendable(reason) => Self::BadRequest(reason),
            ServiceError::Internal(reason) => Self::Internal(reason),
        }
    }
}

impl From<CsvFileError> for ApiError {
    fn from(e: CsvFileError) -> Self {
        Self::BadRequest(e.to_string())
    }
}

impl ApiError {
    /// Maps a salvo body error; `limit` is the limit that applied.
    pub fn from_body(e: ParseError, limit: u64) -> Self {
        match e {
            ParseError::PayloadTooLarge => Self::TooLarge(limit),
            other => Self::BadRequest(format!("the request body could not be read: {other}")),
        }
    }
}
