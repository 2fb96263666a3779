//! `/v1/zones`: forward, stub and local zones set through the API, kept in the state
//! directory; those of the configuration are shown beside them, read-only.

use adox_api::rest::{ZoneSpec, Zones, ZonesUpdate};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::body::{object, read_json, typed};
use super::problem::ApiError;
use super::{Shared, blocking, json};

fn view(st: &Shared) -> Zones {
    let (config, api) = st.plane.zones();
    Zones { config, api }
}

/// How a change went.
enum Outcome {
    Refused(adox_dataplane::resolver::zones::ZoneError),
    NotSaved(std::io::Error),
    /// In force; false when some worker did not confirm its cache flush in time.
    Done(bool),
}

pub(super) async fn get_zones(State(st): State<Shared>) -> Response {
    json(StatusCode::OK, &view(&st))
}

/// Replaces the API's zones: checked with the configuration's (a bad list changes
/// nothing), saved to the state directory (atomically), then in force, with the caches
/// at and below every changed zone flushed.
pub(super) async fn put_zones(State(st): State<Shared>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let v = read_json(&headers, body, st.settings.max_body_bytes).await?;
    // Zone by zone, so that an error names the zone it is in.
    let obj = object(&v, "")?;
    if let Some(k) = obj.keys().find(|k| *k != "zones") {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unknown-field", format!("unknown field `{k}`"))
            .field(k.clone()));
    }
    let Some(list) = obj.get("zones").and_then(serde_json::Value::as_array) else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-field",
            "`zones` must be a list of zones",
        )
        .field("zones"));
    };
    let zones = list
        .iter()
        .enumerate()
        .map(|(i, z)| typed::<ZoneSpec>(z, format!("zones[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let update = ZonesUpdate { zones };
    let Some(path) = st.settings.zones_file.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "persistence",
            "no writable state directory: zones cannot be kept, so changes are refused",
        ));
    };
    let body = serde_json::to_vec_pretty(&update)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let plane = st.plane.clone();
    let names: Vec<String> = update.zones.iter().map(|z| z.name.clone()).collect();
    let outcome = blocking(move || {
        // One change at a time, checked, saved and put in force under one lock: the file
        // never holds a list that cannot apply, and it is what runs.
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let table = match plane.check_zones(&plane.zones().0, &update.zones) {
            Ok(t) => t,
            Err(e) => return Outcome::Refused(e),
        };
        if let Err(e) = crate::store::write_atomic(&path, &body) {
            return Outcome::NotSaved(e);
        }
        Outcome::Done(plane.install_zones(table))
    })
    .await?;
    match outcome {
        Outcome::Refused(e) => {
            return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-field", e.to_string())
                .field(format!("zones{}", e.field)));
        }
        Outcome::NotSaved(e) => {
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "persistence", e.to_string()));
        }
        Outcome::Done(true) => {}
        Outcome::Done(false) => tracing::warn!("zones set, but some worker did not confirm its cache flush in time"),
    }
    tracing::info!(zones = %names.join(","), "zones set through the API");
    Ok(json(StatusCode::OK, &view(&st)))
}
