//! `/v1/dnssec/negative-anchors`: the negative trust anchors set through the API
//! (RFC 7646), kept in the state directory.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::Value;

use super::body::{object, read_json, typed};
use super::problem::ApiError;
use super::{Shared, blocking, json};
use crate::fleet::MAX_NEGATIVE_ANCHORS;
use crate::views::negative_anchors_view;

pub(super) async fn get_negative_anchors(State(st): State<Shared>) -> Response {
    json(StatusCode::OK, &negative_anchors_view(&st.plane))
}

/// Replaces the API's negative trust anchors (RFC 7646): saved to the state directory
/// first (atomically), then in force, with the caches below each changed name flushed.
pub(super) async fn put_negative_anchors(
    State(st): State<Shared>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let v = read_json(&headers, body, st.settings.max_body_bytes).await?;
    let obj = object(&v, "")?;
    if let Some(k) = obj.keys().find(|k| *k != "anchors") {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unknown-field", format!("unknown field `{k}`"))
            .field(k.clone()));
    }
    let list: Vec<String> = typed(obj.get("anchors").unwrap_or(&Value::Null), "anchors".into())?;
    if list.len() > MAX_NEGATIVE_ANCHORS {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-field",
            format!("at most {MAX_NEGATIVE_ANCHORS} negative trust anchors"),
        )
        .field("anchors"));
    }
    let mut names: Vec<hickory_proto::rr::Name> = Vec::with_capacity(list.len());
    let mut texts: Vec<String> = Vec::with_capacity(list.len());
    for (i, s) in list.iter().enumerate() {
        let field = format!("anchors[{i}]");
        let text = adox_api::policy::normalize_name("anchors", s).map_err(|_| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-field", format!("`{s}` is not a domain name"))
                .field(field.clone())
        })?;
        let name = hickory_proto::rr::Name::from_ascii(&text).map_err(|_| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-field", format!("`{s}` is not a domain name"))
                .field(field)
        })?;
        if !texts.contains(&text) {
            texts.push(text);
            names.push(name);
        }
    }
    if let Some(f) = &st.settings.fleet {
        // Fleet mode: etcd holds the list; this node applies it from its watch.
        f.set_negative_anchors(texts.clone()).await.map_err(super::problem::store_error)?;
        tracing::info!(anchors = %texts.join(","), "negative trust anchors set through the API (fleet)");
        return Ok(json(StatusCode::OK, &negative_anchors_view(&st.plane)));
    }
    let Some(path) = st.settings.negative_anchors_file.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "persistence",
            "no writable state directory: negative trust anchors cannot be kept, so changes are refused",
        ));
    };
    let body = serde_json::to_vec_pretty(&adox_api::rest::NegativeAnchorsUpdate { anchors: texts.clone() })
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let plane = st.plane.clone();
    let saved = blocking(move || {
        // One change at a time: the file and the anchors in force end up the same.
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        crate::store::write_atomic(&path, &body)?;
        plane.set_negative_anchors(names);
        Ok::<(), std::io::Error>(())
    })
    .await?;
    saved.map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "persistence", e.to_string()))?;
    tracing::info!(anchors = %texts.join(","), "negative trust anchors set through the API");
    Ok(json(StatusCode::OK, &negative_anchors_view(&st.plane)))
}
