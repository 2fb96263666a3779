//! `/v1/policies`: list, read, create, replace and delete policies (with ETags and
//! `If-Match`), and export or import them as a bundle. The rules (ids, selectors,
//! revisions) are the store's ([`crate::store`]); this is their HTTP face.

use std::collections::HashMap;

use adox_api::rest::{ImportMode, PolicyBundle, PolicyList};
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::body::{object, read_json, spec_from};
use super::problem::{ApiError, path_error, query_error, store_error};
use super::{Shared, blocking, json};
use crate::store::{StoreError, etag};

/// Policies in one import (a bundle larger than this is split by the operator's tooling).
const MAX_IMPORT_POLICIES: usize = 1_000_000;

fn with_etag(mut r: Response, p: &adox_api::policy::Policy) -> Response {
    if let Ok(v) = HeaderValue::from_str(&etag(p)) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

fn if_match(h: &HeaderMap) -> Option<String> {
    h.get(header::IF_MATCH).and_then(|v| v.to_str().ok()).map(str::to_string)
}

// Reads take the store's lock, which a compaction can hold for a while: they run on the
// blocking pool, so /livez, /metrics and the rest never wait behind one.
pub(super) async fn list_policies(State(st): State<Shared>) -> Result<Response, ApiError> {
    let reg = st.registry.clone();
    let policies = blocking(move || reg.all()).await?;
    Ok(json(StatusCode::OK, &PolicyList { policies }))
}

pub(super) async fn get_policy(
    State(st): State<Shared>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id.map_err(path_error)?;
    let reg = st.registry.clone();
    let wanted = id.clone();
    let p = blocking(move || reg.get(&wanted)).await?.ok_or_else(|| store_error(StoreError::NotFound(id)))?;
    Ok(with_etag(json(StatusCode::OK, &p), &p))
}

pub(super) async fn create_policy(
    State(st): State<Shared>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let v = read_json(&headers, body, st.settings.max_body_bytes).await?;
    let spec = spec_from(&v, "")?;
    let p = match &st.settings.fleet {
        Some(f) => f.create(&spec).await.map_err(store_error)?,
        None => {
            let reg = st.registry.clone();
            blocking(move || reg.create(&spec)).await?.map_err(store_error)?
        }
    };
    let mut r = with_etag(json(StatusCode::CREATED, &p), &p);
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/policies/{}", p.id)) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

pub(super) async fn put_policy(
    State(st): State<Shared>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Path(id) = id.map_err(path_error)?;
    let v = read_json(&headers, body, st.settings.max_body_bytes).await?;
    let spec = spec_from(&v, "")?;
    if let Some(body_id) = v.get("id").and_then(Value::as_str)
        && body_id != id
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "id-mismatch",
            "the body's id differs from the path's",
        )
        .field("id"));
    }
    let m = if_match(&headers);
    let p = match &st.settings.fleet {
        Some(f) => f.replace(&id, &spec, m.as_deref()).await.map_err(store_error)?,
        None => {
            let reg = st.registry.clone();
            blocking(move || reg.replace(&id, &spec, m.as_deref())).await?.map_err(store_error)?
        }
    };
    Ok(with_etag(json(StatusCode::OK, &p), &p))
}

pub(super) async fn delete_policy(
    State(st): State<Shared>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path(id) = id.map_err(path_error)?;
    let m = if_match(&headers);
    match &st.settings.fleet {
        Some(f) => f.delete(&id, m.as_deref()).await.map_err(store_error)?,
        None => {
            let reg = st.registry.clone();
            blocking(move || reg.delete(&id, m.as_deref())).await?.map_err(store_error)?;
        }
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn export_policies(State(st): State<Shared>) -> Result<Response, ApiError> {
    let reg = st.registry.clone();
    let policies = blocking(move || reg.export()).await?;
    Ok(json(StatusCode::OK, &PolicyBundle { policies }))
}

pub(super) async fn import_policies(
    State(st): State<Shared>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let q = q.map_err(query_error)?;
    let mode = match q.get("mode").map(String::as_str) {
        None | Some("merge") => ImportMode::Merge,
        Some("replace") => ImportMode::Replace,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad-query",
                format!("mode `{other}`: merge or replace"),
            )
            .field("mode"));
        }
    };
    let v = read_json(&headers, body, st.settings.max_import_bytes).await?;
    let obj = object(&v, "")?;
    if let Some(k) = obj.keys().find(|k| *k != "policies") {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unknown-field", format!("unknown field `{k}`"))
            .field(k.clone()));
    }
    let list = obj.get("policies").and_then(Value::as_array).ok_or_else(|| {
        ApiError::new(StatusCode::BAD_REQUEST, "bad-shape", "`policies` must be a list").field("policies")
    })?;
    if list.len() > MAX_IMPORT_POLICIES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-many",
            format!("at most {MAX_IMPORT_POLICIES} policies per import"),
        )
        .field("policies"));
    }
    let specs = list
        .iter()
        .enumerate()
        .map(|(i, p)| spec_from(p, &format!("policies[{i}].")))
        .collect::<Result<Vec<_>, _>>()?;
    let res = match &st.settings.fleet {
        Some(f) => f.import(mode, specs).await.map_err(store_error)?,
        None => {
            let reg = st.registry.clone();
            blocking(move || reg.import(mode, &specs)).await?.map_err(store_error)?
        }
    };
    Ok(json(StatusCode::OK, &res))
}
