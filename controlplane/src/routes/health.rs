//! `/livez` and `/readyz`: the probes of an orchestrator or a load balancer.

use adox_api::rest::Health;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::{Shared, json};

pub(super) async fn livez() -> Response {
    json(StatusCode::OK, &Health { status: "ok".into(), detail: vec![] })
}

pub(super) async fn readyz(State(st): State<Shared>) -> Response {
    // The control plane starts once every worker runs, so it is ready when it answers;
    // the notes say what an operator should know (they do not make it unready).
    let mut notes = st.notes().read().unwrap_or_else(|p| p.into_inner()).clone();
    // etcd's state is reported, never made a reason to be unready: a readiness probe must
    // not pull every node out of service when etcd loses its quorum.
    notes.extend(st.settings.fleet.as_ref().and_then(|f| f.readiness_note()));
    json(StatusCode::OK, &Health { status: "ready".into(), detail: notes })
}
