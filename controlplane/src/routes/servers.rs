//! `/v1/servers`: what is known of authoritative servers (list, one address, reset).

use std::collections::HashMap;
use std::net::IpAddr;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::problem::{ApiError, path_error};
use super::{Shared, json};
use crate::views::servers_of;

/// Servers listed by default by `GET /v1/servers`.
const DEFAULT_SERVER_LIMIT: usize = 1_000;

pub(super) async fn list_servers(
    State(st): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let limit = match q.get("limit") {
        None => DEFAULT_SERVER_LIMIT,
        Some(l) => l.parse::<usize>().ok().filter(|n| (1..=1_000_000).contains(n)).ok_or_else(|| {
            ApiError::new(StatusCode::BAD_REQUEST, "bad-query", "limit: a number from 1 to 1000000").field("limit")
        })?,
    };
    Ok(json(StatusCode::OK, &servers_of(&st.plane, None, limit)))
}

fn parse_ip(ip: &str) -> Result<IpAddr, ApiError> {
    ip.parse().map_err(|_| {
        ApiError::new(StatusCode::BAD_REQUEST, "bad-address", format!("`{ip}` is not an IP address")).field("ip")
    })
}

pub(super) async fn get_server(
    State(st): State<Shared>,
    ip: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(ip) = ip.map_err(path_error)?;
    let addr = parse_ip(&ip)?;
    let list = servers_of(&st.plane, Some(addr), 1);
    let s = list
        .servers
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not-found", format!("nothing known of {addr}")))?;
    Ok(json(StatusCode::OK, &s))
}

pub(super) async fn reset_server(
    State(st): State<Shared>,
    ip: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(ip) = ip.map_err(path_error)?;
    let addr = parse_ip(&ip)?;
    if !st.plane.forget_server(addr) {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not-found", format!("nothing known of {addr}")));
    }
    tracing::info!(%addr, "server state reset through the API");
    Ok(StatusCode::NO_CONTENT.into_response())
}
