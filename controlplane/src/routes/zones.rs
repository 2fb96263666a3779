//! `/v1/zones`: forward, stub and local zones set through the API, kept in the state
//! directory; those of the configuration are shown beside them, read-only.

use adox_api::rest::{Zones, ZonesUpdate};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::body::read_json;
use super::problem::ApiError;
use super::{Shared, blocking, json};

fn view(st: &Shared) -> Zones {
    let (config, api) = st.plane.zones();
    Zones { config, api }
}

pub(super) async fn get_zones(State(st): State<Shared>) -> Response {
    json(StatusCode::OK, &view(&st))
}

/// Replaces the API's zones: checked with the configuration's (a bad list changes
/// nothing), saved to the state directory (atomically), then in force, with the caches
/// at and below every changed zone flushed.
pub(super) async fn put_zones(State(st): State<Shared>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let v = read_json(&headers, body, st.settings.max_body_bytes).await?;
    let update: ZonesUpdate = serde_json::from_value(v).map_err(|e| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-field", format!("not a zone list: {e}"))
    })?;
    let Some(path) = st.settings.zones_file.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "persistence",
            "no writable state directory: zones cannot be kept, so changes are refused",
        ));
    };
    // Checked before anything is written: the file never holds a list that cannot apply.
    st.plane.check_zones(&update.zones).map_err(|e| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-field", e.to_string())
            .field(format!("zones{}", e.field))
    })?;
    let body = serde_json::to_vec_pretty(&update)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let plane = st.plane.clone();
    let names: Vec<String> = update.zones.iter().map(|z| z.name.clone()).collect();
    let saved = blocking(move || {
        // One change at a time: the file and the zones in force end up the same.
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        crate::store::write_atomic(&path, &body)?;
        // Checked above against the same configuration: it applies.
        plane.set_zones(update.zones).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok::<(), std::io::Error>(())
    })
    .await?;
    saved.map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "persistence", e.to_string()))?;
    tracing::info!(zones = %names.join(","), "zones set through the API");
    Ok(json(StatusCode::OK, &view(&st)))
}
