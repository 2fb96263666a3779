//! `/v1/log-level`: reads or changes the daemon's log filter at run time; `/v1/reload`:
//! reads the whole configuration file again, as SIGHUP does.

use adox_api::rest::LogLevel;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::Value;

use super::body::{object, read_json, typed};
use super::problem::ApiError;
use super::{Shared, json};

pub(super) async fn get_log_level(State(st): State<Shared>) -> Response {
    let level = st.log_level.lock().unwrap_or_else(|p| p.into_inner()).clone();
    json(StatusCode::OK, &LogLevel { level })
}

pub(super) async fn put_log_level(
    State(st): State<Shared>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let v = read_json(&headers, body, st.settings.max_body_bytes).await?;
    let obj = object(&v, "")?;
    if let Some(k) = obj.keys().find(|k| *k != "level") {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unknown-field", format!("unknown field `{k}`"))
            .field(k.clone()));
    }
    let level: String = typed(obj.get("level").unwrap_or(&Value::Null), "level".into())?;
    adox_dataplane::log_filter_is_valid(&level)
        .and_then(|()| (st.settings.set_log_level)(&level))
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-field", e).field("level"))?;
    *st.log_level.lock().unwrap_or_else(|p| p.into_inner()) = level.clone();
    tracing::info!(%level, "log level changed through the API");
    Ok(json(StatusCode::OK, &LogLevel { level }))
}

/// Reads the configuration file again and puts what changed in force (the daemon's own
/// SIGHUP path): 200 with what was applied, refused and left for a restart; 422 when the
/// file is unreadable or invalid (nothing changed).
pub(super) async fn reload(State(st): State<Shared>) -> Result<Response, ApiError> {
    let Some(reload) = st.settings.reload.clone() else {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "this daemon cannot reload"));
    };
    let report = super::blocking(move || reload()).await?;
    if let Some(e) = &report.error {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-config", e.clone()));
    }
    Ok(json(StatusCode::OK, &report))
}
