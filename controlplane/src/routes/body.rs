//! Request bodies: read with a size cap (413 beyond), parsed as JSON (400 when it is not),
//! then taken apart field by field, so that an error names its field (422 when a value is
//! refused).

use adox_api::policy::{Auth, Mode, PolicySpec, Transport};
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::Value;

use super::problem::ApiError;

/// Reads a body of at most `limit` bytes (413 beyond, whether declared or not).
async fn read_limited(headers: &HeaderMap, body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    let too_big =
        || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", format!("body larger than {limit} bytes"));
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_big());
    }
    axum::body::to_bytes(body, limit).await.map_err(|_| too_big())
}

fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad-json", format!("body is not valid JSON: {e}")))
}

/// A JSON body of at most `limit` bytes (400 when it is not JSON).
pub(super) async fn read_json(headers: &HeaderMap, body: Body, limit: usize) -> Result<Value, ApiError> {
    parse_json(&read_limited(headers, body, limit).await?)
}

/// Like [`read_json`], but an empty body is an empty object.
pub(super) async fn read_json_or_empty(headers: &HeaderMap, body: Body, limit: usize) -> Result<Value, ApiError> {
    let bytes = read_limited(headers, body, limit).await?;
    // JSON's whitespace only (RFC 8259 section 2), not a form feed.
    if bytes.iter().all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
        return Ok(Value::Object(Default::default()));
    }
    parse_json(&bytes)
}

pub(super) fn object<'a>(v: &'a Value, path: &str) -> Result<&'a serde_json::Map<String, Value>, ApiError> {
    v.as_object().ok_or_else(|| {
        let e = ApiError::new(StatusCode::BAD_REQUEST, "bad-shape", "expected a JSON object");
        if path.is_empty() { e } else { e.field(path.to_string()) }
    })
}

pub(super) fn typed<T: serde::de::DeserializeOwned>(v: &Value, field: String) -> Result<T, ApiError> {
    T::deserialize(v)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-field", e.to_string()).field(field))
}

/// A policy from JSON, field by field, so that an error names its field (`prefix` is the
/// path of the object, such as `policies[3].`).
pub(super) fn spec_from(v: &Value, prefix: &str) -> Result<PolicySpec, ApiError> {
    let obj = object(v, prefix.trim_end_matches('.'))?;
    let mut spec = PolicySpec::default();
    for (k, val) in obj {
        let f = format!("{prefix}{k}");
        match k.as_str() {
            "zone" => spec.zone = typed::<Option<String>>(val, f)?,
            "nameserver" => spec.nameserver = typed::<Option<String>>(val, f)?,
            "address" => spec.address = typed::<Option<String>>(val, f)?,
            "mode" => spec.mode = typed::<Option<Mode>>(val, f)?,
            "transports" => spec.transports = typed::<Option<Vec<Transport>>>(val, f)?,
            "auth" => spec.auth = typed::<Option<Auth>>(val, f)?,
            "doh_path" => spec.doh_path = typed::<Option<String>>(val, f)?,
            "comment" => spec.comment = typed::<Option<String>>(val, f)?,
            // What GET returns may be sent back as it is (these are ignored, but must have
            // their types).
            "id" => {
                typed::<String>(val, f)?;
            }
            "read_only" => {
                typed::<bool>(val, f)?;
            }
            "revision" => {
                if val.as_i64().is_none_or(|r| r < 0) {
                    return Err(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid-field",
                        "a revision is a whole number from 0 to 2^63-1",
                    )
                    .field(f));
                }
            }
            _ => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unknown-field",
                    format!("unknown field `{k}`"),
                )
                .field(f));
            }
        }
    }
    Ok(spec)
}
