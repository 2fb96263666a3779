//! `GET /v1/stats` (JSON) and `GET /metrics` (Prometheus text): the counters.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{Shared, json};
use crate::metrics;
use crate::views::stats_of;

pub(super) async fn stats(State(st): State<Shared>) -> Response {
    json(StatusCode::OK, &stats_of(&st.plane, st.started))
}

pub(super) async fn prometheus(State(st): State<Shared>) -> Response {
    let mut text = metrics::render(&stats_of(&st.plane, st.started));
    if let Some(f) = &st.settings.fleet {
        metrics::render_fleet(&mut text, &f.status());
    }
    let mut r = (StatusCode::OK, text).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    r
}
