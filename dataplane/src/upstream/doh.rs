//! DNS over HTTPS (RFC 8484) to authoritative servers, the protocol parts that need no
//! socket: the request for one query (the URI template of RFC 9461's `dohpath` expanded
//! for GET, or the message as a POST body), the checks on the answer's head, and the bound
//! on its body. HTTP/2 itself is the `h2` crate's, driven by `worker/doh.rs`.

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, header};

use super::UpstreamError;
use super::error::TransportFailure;

/// The media type of DNS messages over HTTPS (RFC 8484 section 6).
pub(crate) const DNS_MESSAGE: &str = "application/dns-message";

/// The largest answer body: one DNS message (RFC 8484 section 4.2.1 bounds nothing else;
/// a server sending more is hostile or broken).
pub(crate) const MAX_BODY: usize = 65_535;

/// How queries are sent (`transport.doh_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DohMethod {
    /// The message as the body of a POST to the template's path (no `dns` variable).
    #[default]
    Post,
    /// The message, base64url-encoded, as the template's `dns` variable of a GET.
    Get,
}

/// The request for one DNS message `msg` (its ID already 0, RFC 8484 section 4.1) to
/// `authority` (`host` or `host:port`) with the URI template `template` (checked by
/// `adox_api::policy::check_doh_path`), and its body.
pub(crate) fn request(
    authority: &str,
    template: &str,
    method: DohMethod,
    msg: &[u8],
) -> Result<(Request<()>, Option<Bytes>), UpstreamError> {
    let (path, body) = match method {
        DohMethod::Get => {
            let dns = data_encoding::BASE64URL_NOPAD.encode(msg);
            (template.replacen("{?dns}", &format!("?dns={dns}"), 1), None)
        }
        DohMethod::Post => (template.replacen("{?dns}", "", 1), Some(Bytes::copy_from_slice(msg))),
    };
    let uri = format!("https://{authority}{path}");
    let mut builder = Request::builder()
        .method(if body.is_some() { Method::POST } else { Method::GET })
        .uri(uri)
        .header(header::ACCEPT, HeaderValue::from_static(DNS_MESSAGE));
    if let Some(b) = &body {
        builder = builder.header(header::CONTENT_TYPE, HeaderValue::from_static(DNS_MESSAGE));
        builder = builder.header(header::CONTENT_LENGTH, b.len());
    }
    let req = builder.body(()).map_err(|_| UpstreamError::BadResponse("DoH request URI does not parse"))?;
    Ok((req, body))
}

/// The authority of a DoH server: the authenticated name, else the address (a literal
/// IPv6 address in brackets); the port only when not 443.
pub(crate) fn authority(name: Option<&str>, server: std::net::SocketAddr) -> String {
    let host = match (name, server.ip()) {
        (Some(n), _) => n.trim_end_matches('.').to_string(),
        (None, std::net::IpAddr::V6(a)) => format!("[{a}]"),
        (None, a) => a.to_string(),
    };
    if server.port() == 443 { host } else { format!("{host}:{}", server.port()) }
}

/// Checks an answer's head: status 200 and a DNS message (a `Content-Length` over one DNS
/// message is refused before its body is read).
pub(crate) fn check_head<B>(response: &http::Response<B>) -> Result<(), UpstreamError> {
    match response.status() {
        StatusCode::OK => {}
        StatusCode::NOT_FOUND => return Err(TransportFailure::HttpNotFound.into()),
        _ => return Err(TransportFailure::HttpStatus.into()),
    }
    let headers = response.headers();
    let media = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = media.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case(DNS_MESSAGE) {
        return Err(TransportFailure::HttpContentType.into());
    }
    let length = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if length.is_some_and(|l| l > MAX_BODY as u64) {
        return Err(UpstreamError::BadResponse("DoH answer larger than a DNS message"));
    }
    Ok(())
}

/// Appends one DATA chunk of an answer to `body`, refusing a body larger than one DNS
/// message.
pub(crate) fn take_chunk(body: &mut Vec<u8>, chunk: &[u8]) -> Result<(), UpstreamError> {
    if body.len() + chunk.len() > MAX_BODY {
        return Err(UpstreamError::BadResponse("DoH answer larger than a DNS message"));
    }
    body.extend_from_slice(chunk);
    Ok(())
}

/// What a failed h2 call means for the exchange. A stream the server refused unprocessed
/// (REFUSED_STREAM), or cut by a graceful GOAWAY before it was read, may be sent again
/// (RFC 9113 sections 6.8 and 8.7).
pub(crate) fn h2_failure(e: &h2::Error) -> TransportFailure {
    let retry =
        e.reason() == Some(h2::Reason::REFUSED_STREAM) || (e.is_go_away() && e.reason() == Some(h2::Reason::NO_ERROR));
    if retry {
        TransportFailure::Http2Retry
    } else if e.is_reset() && !e.is_go_away() {
        TransportFailure::Http2StreamReset
    } else if e.is_io() {
        TransportFailure::Closed
    } else {
        TransportFailure::Http2Error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUERY: &[u8] = &[0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'w', b'w', b'w', 0, 0, 1, 0, 1];

    #[test]
    fn get_puts_the_message_in_the_dns_variable_and_post_in_the_body() {
        let (get, body) = request("ns1.doh.lab", "/dns-query{?dns}", DohMethod::Get, QUERY).unwrap();
        assert_eq!(get.method(), Method::GET);
        assert!(body.is_none());
        let q = get.uri().query().unwrap();
        let dns = q.strip_prefix("dns=").unwrap();
        assert_eq!(data_encoding::BASE64URL_NOPAD.decode(dns.as_bytes()).unwrap(), QUERY);
        assert!(!dns.contains('=') && !dns.contains('+') && !dns.contains('/'), "base64url, unpadded");
        assert_eq!(get.uri().path(), "/dns-query");
        assert_eq!(get.uri().authority().unwrap().as_str(), "ns1.doh.lab");
        assert_eq!(get.headers()[header::ACCEPT], DNS_MESSAGE);
        let (post, body) = request("192.0.2.1:8443", "/q/x{?dns}", DohMethod::Post, QUERY).unwrap();
        assert_eq!((post.method(), post.uri().path(), post.uri().query()), (&Method::POST, "/q/x", None));
        assert_eq!(body.as_deref(), Some(QUERY));
        assert_eq!(post.headers()[header::CONTENT_TYPE], DNS_MESSAGE);
        assert_eq!(post.headers()[header::CONTENT_LENGTH], QUERY.len().to_string().as_str());
    }

    #[test]
    fn the_authority_is_the_name_or_the_address_and_a_port_other_than_443() {
        let v4: std::net::SocketAddr = "192.0.2.1:443".parse().unwrap();
        let v6: std::net::SocketAddr = "[2001:db8::1]:8443".parse().unwrap();
        assert_eq!(authority(Some("ns1.doh.lab."), v4), "ns1.doh.lab");
        assert_eq!(authority(None, v4), "192.0.2.1");
        assert_eq!(authority(None, v6), "[2001:db8::1]:8443");
        assert_eq!(authority(Some("ns.example."), v6), "ns.example:8443");
    }

    #[test]
    fn answer_heads_other_than_a_dns_message_with_200_are_refused() {
        let head = |status: u16, ctype: Option<&str>, len: Option<&str>| {
            let mut b = http::Response::builder().status(status);
            if let Some(c) = ctype {
                b = b.header(header::CONTENT_TYPE, c);
            }
            if let Some(l) = len {
                b = b.header(header::CONTENT_LENGTH, l);
            }
            check_head(&b.body(()).unwrap())
        };
        assert_eq!(head(200, Some("application/dns-message"), Some("100")), Ok(()));
        assert_eq!(head(200, Some("Application/DNS-Message; charset=x"), None), Ok(()));
        assert_eq!(head(404, Some(DNS_MESSAGE), None), Err(TransportFailure::HttpNotFound.into()));
        assert_eq!(head(500, Some(DNS_MESSAGE), None), Err(TransportFailure::HttpStatus.into()));
        assert_eq!(head(200, Some("text/html"), None), Err(TransportFailure::HttpContentType.into()));
        assert_eq!(head(200, None, None), Err(TransportFailure::HttpContentType.into()));
        assert!(matches!(head(200, Some(DNS_MESSAGE), Some("70000")), Err(UpstreamError::BadResponse(_))));
    }

    #[test]
    fn a_body_larger_than_a_dns_message_is_refused() {
        let mut body = Vec::new();
        take_chunk(&mut body, &[0; 60_000]).unwrap();
        take_chunk(&mut body, &[0; 5_535]).unwrap();
        assert!(take_chunk(&mut body, &[0]).is_err());
        assert_eq!(body.len(), MAX_BODY);
    }
}
