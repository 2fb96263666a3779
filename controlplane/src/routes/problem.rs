//! Errors as RFC 9457 problem details (`application/problem+json`), naming the offending
//! field, and the mapping of rejected paths and queries and of store errors onto them.

use adox_api::rest::Problem;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::store::StoreError;

/// An error response: problem details.
#[derive(Debug)]
pub(super) struct ApiError(Problem);

impl ApiError {
    pub(super) fn new(status: StatusCode, kind: &str, detail: impl Into<String>) -> Self {
        Self(Problem {
            kind: format!("https://adox.invalid/problems/{kind}"),
            title: status.canonical_reason().unwrap_or("error").to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            field: None,
        })
    }

    pub(super) fn field(mut self, field: impl Into<String>) -> Self {
        self.0.field = Some(field.into());
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.0).unwrap_or_default();
        let mut r = (status, body).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"adox\""));
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

pub(super) fn path_error(e: PathRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad-path", e.body_text())
}

pub(super) fn query_error(e: QueryRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad-query", e.body_text())
}

pub(super) fn store_error(e: StoreError) -> ApiError {
    let prefix = |i: Option<usize>| i.map(|i| format!("policies[{i}].")).unwrap_or_default();
    match e {
        StoreError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "not-found", e.to_string()),
        StoreError::ReadOnly(_) => ApiError::new(StatusCode::CONFLICT, "read-only", e.to_string()),
        StoreError::Conflict { index, .. } => {
            let field = index.map(|i| format!("policies[{i}]"));
            let err = ApiError::new(StatusCode::CONFLICT, "duplicate", e.to_string());
            match field {
                Some(f) => err.field(f),
                None => err,
            }
        }
        StoreError::Stale { .. } => ApiError::new(StatusCode::PRECONDITION_FAILED, "stale-etag", e.to_string()),
        StoreError::Invalid(pe, i) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-policy",
            pe.reason.clone(),
        )
        .field(format!("{}{}", prefix(i), pe.field)),
        StoreError::Unavailable(_) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "fleet-unavailable", e.to_string())
        }
        StoreError::Io(_) => {
            tracing::error!(error = %e, "policy store");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "persistence", e.to_string())
        }
    }
}
