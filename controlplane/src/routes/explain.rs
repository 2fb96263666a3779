//! `GET /v1/explain`: resolves a name on a worker with a trace of how.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::problem::{ApiError, query_error};
use super::{Shared, blocking, json};

pub(super) async fn explain(
    State(st): State<Shared>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = q.map_err(query_error)?;
    let bad = |field: &str, detail: String| {
        ApiError::new(StatusCode::BAD_REQUEST, "bad-query", detail).field(field.to_string())
    };
    let name_text = q.get("name").ok_or_else(|| bad("name", "`name` is required".into()))?;
    let name = adox_api::policy::normalize_name("name", name_text)
        .ok()
        .and_then(|n| hickory_proto::rr::Name::from_ascii(&n).ok())
        .ok_or_else(|| bad("name", format!("`{name_text}` is not a domain name")))?;
    let qtype = match q.get("type") {
        None => hickory_proto::rr::RecordType::A,
        Some(t) => {
            parse_qtype(t).ok_or_else(|| bad("type", format!("`{t}` is not a record type (a mnemonic or a number)")))?
        }
    };
    if matches!(u16::from(qtype), 0 | 251..=255) {
        return Err(bad("type", format!("{qtype} is not a type a resolver answers")));
    }
    let wait = st.plane.request_timeout() + std::time::Duration::from_secs(2);
    let plane = st.plane.clone();
    let result = blocking(move || plane.explain(name, qtype, wait)).await?;
    let explain = result.ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "worker-busy",
            "the worker did not finish the resolution in time",
        )
    })?;
    Ok(json(StatusCode::OK, &crate::views::explain_body(explain)))
}

/// Parses a type as a mnemonic (`AAAA`, `svcb`) or a number (`28`, `TYPE28`).
pub(super) fn parse_qtype(s: &str) -> Option<hickory_proto::rr::RecordType> {
    use std::str::FromStr;
    let upper = s.trim().to_ascii_uppercase();
    let number = upper.strip_prefix("TYPE").unwrap_or(&upper);
    if let Ok(n) = number.parse::<u16>() {
        return Some(hickory_proto::rr::RecordType::from(n));
    }
    hickory_proto::rr::RecordType::from_str(&upper).ok()
}
