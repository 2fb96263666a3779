//! `POST /v1/cache/flush`: flushes a name, a zone or everything, in every worker.
//! `GET /v1/cache`: what the shared record cache holds for a name.

use adox_api::rest::{FlushRequest, FlushResult};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::body::{object, read_json_or_empty, typed};
use super::problem::ApiError;
use super::{Shared, blocking, json};

pub(super) async fn flush(State(st): State<Shared>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let v = read_json_or_empty(&headers, body, st.settings.max_body_bytes).await?;
    let obj = object(&v, "")?;
    let mut req = FlushRequest::default();
    for (k, val) in obj {
        match k.as_str() {
            "name" => req.name = typed(val, k.clone())?,
            "zone" => req.zone = typed(val, k.clone())?,
            _ => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unknown-field",
                    format!("unknown field `{k}`"),
                )
                .field(k.clone()));
            }
        }
    }
    let parse = |field: &'static str, s: &str| {
        adox_api::policy::normalize_name(field, s)
            .ok()
            .and_then(|n| hickory_proto::rr::Name::from_ascii(&n).ok().map(|name| (n, name)))
            .ok_or_else(|| {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-field", format!("`{s}` is not a domain name"))
                    .field(field)
            })
    };
    let (what, result) = match (&req.name, &req.zone) {
        (Some(_), Some(_)) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-field",
                "give `name` or `zone`, not both",
            )
            .field("zone"));
        }
        (Some(n), None) => {
            let (text, name) = parse("name", n)?;
            (adox_dataplane::Flush::Name(name), FlushResult { scope: "name".into(), name: Some(text) })
        }
        (None, Some(z)) => {
            let (text, name) = parse("zone", z)?;
            (adox_dataplane::Flush::Zone(name), FlushResult { scope: "zone".into(), name: Some(text) })
        }
        (None, None) => (adox_dataplane::Flush::All, FlushResult { scope: "all".into(), name: None }),
    };
    let plane = st.plane.clone();
    let done = blocking(move || plane.flush(&what)).await?;
    if !done {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "worker-busy",
            "a worker did not confirm the flush in time; the shared cache was flushed",
        ));
    }
    tracing::info!(scope = %result.scope, name = ?result.name, "cache flushed through the API");
    Ok(json(StatusCode::OK, &result))
}

/// `GET /v1/cache?name=N[&type=T]`.
pub(super) async fn show(
    State(st): State<Shared>,
    q: Result<
        axum::extract::Query<std::collections::HashMap<String, String>>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Result<Response, ApiError> {
    let q = q.map_err(super::problem::query_error)?;
    let bad = |field: &str, detail: String| {
        ApiError::new(StatusCode::BAD_REQUEST, "bad-query", detail).field(field.to_string())
    };
    let name_text = q.get("name").ok_or_else(|| bad("name", "`name` is required".into()))?;
    let (text, name) = adox_api::policy::normalize_name("name", name_text)
        .ok()
        .and_then(|n| hickory_proto::rr::Name::from_ascii(&n).ok().map(|name| (n, name)))
        .ok_or_else(|| bad("name", format!("`{name_text}` is not a domain name")))?;
    let rtype = match q.get("type") {
        None => None,
        Some(t) => Some(u16::from(
            super::explain::parse_qtype(t)
                .ok_or_else(|| bad("type", format!("`{t}` is not a record type (a mnemonic or a number)")))?,
        )),
    };
    let plane = st.plane.clone();
    let entries = blocking(move || plane.cache_entries(&name, rtype)).await?;
    Ok(json(StatusCode::OK, &crate::views::cache_view(text, entries)))
}
