//! `GET /v1/fleet`: where this node's API state lives (its state directory or etcd), and,
//! in fleet mode, the watch's health and the etcd revision applied (nodes showing the same
//! one agree; `adoxctl --fleet` puts them side by side).

use adox_api::rest::FleetStatus;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::{Shared, json};

pub(super) async fn status(State(st): State<Shared>) -> Response {
    let status = match &st.settings.fleet {
        Some(f) => f.status(),
        None => FleetStatus {
            backend: "local".into(),
            connected: true,
            policies: st.registry.api_policy_count(),
            negative_anchors: st.plane.negative_anchors().1.len(),
            ..FleetStatus::default()
        },
    };
    json(StatusCode::OK, &status)
}
