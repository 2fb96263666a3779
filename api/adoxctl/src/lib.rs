//! adoxctl's library: a small blocking HTTP/1.1 client for the adox REST API, over plain
//! HTTP (the API binds 127.0.0.1 by default) or HTTPS (TLS 1.3, verified against a given CA
//! file or the web PKI roots). The tests and benchmarks use it too.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// A reply.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Headers, names lowercase.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("reply is not JSON ({e}): {}", self.text()))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client for one API base URL (`http://127.0.0.1:5380`, `https://api.example:5380`).
#[derive(Debug, Clone)]
pub struct Client {
    host: String,
    authority: String,
    token: Option<String>,
    timeout: Duration,
    /// For https: the TLS configuration and the name the certificate must carry.
    tls: Option<(std::sync::Arc<rustls::ClientConfig>, rustls::pki_types::ServerName<'static>)>,
}

impl Client {
    /// A client for `url` (`http://HOST:PORT` or `https://HOST:PORT`, no path), sending
    /// `token` as a bearer token.
    pub fn new(url: &str, token: Option<String>) -> Result<Self, String> {
        Self::with_ca(url, token, None)
    }

    /// Like [`Client::new`]; an https URL is verified against the PEM certificates in
    /// `ca_file` (default: the web PKI roots).
    pub fn with_ca(url: &str, token: Option<String>, ca_file: Option<&std::path::Path>) -> Result<Self, String> {
        let (https, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(r), _) => (false, r),
            (_, Some(r)) => (true, r),
            _ => return Err(format!("`{url}`: expected http://HOST:PORT or https://HOST:PORT")),
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(format!("`{url}`: expected http(s)://HOST:PORT"));
        }
        let has_port = authority.rsplit_once(':').is_some_and(|(h, p)| p.parse::<u16>().is_ok() && !h.ends_with(':'));
        let host =
            if has_port { authority.to_string() } else { format!("{authority}:{}", if https { 443 } else { 80 }) };
        let tls = if https {
            let name =
                host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
            let server_name =
                rustls::pki_types::ServerName::try_from(name.to_string()).map_err(|e| format!("`{name}`: {e}"))?;
            Some((tls_config(ca_file)?, server_name))
        } else {
            None
        };
        Ok(Self { host, authority: authority.to_string(), token, timeout: Duration::from_secs(30), tls })
    }

    /// Sends one request (one connection, `Connection: close`).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> std::io::Result<Reply> {
        let addr = self
            .host
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::other(format!("{}: no address", self.host)))?;
        let mut s = TcpStream::connect_timeout(&addr, self.timeout)?;
        s.set_read_timeout(Some(self.timeout))?;
        s.set_write_timeout(Some(self.timeout))?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\n",
            self.authority
        );
        if let Some(t) = &self.token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
                head.push_str("Content-Type: application/json\r\n");
            }
            head.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
        head.push_str("\r\n");
        let mut msg = head.into_bytes();
        if let Some(b) = body {
            msg.extend_from_slice(b);
        }
        match &self.tls {
            None => {
                s.write_all(&msg)?;
                read_reply(BufReader::new(s))
            }
            Some((config, name)) => {
                let conn =
                    rustls::ClientConnection::new(config.clone(), name.clone()).map_err(std::io::Error::other)?;
                let mut tls = rustls::StreamOwned::new(conn, s);
                tls.write_all(&msg)?;
                read_reply(BufReader::new(tls))
            }
        }
    }

    /// GET.
    pub fn get(&self, path: &str) -> std::io::Result<Reply> {
        self.request("GET", path, &[], None)
    }

    /// A request with a JSON body.
    pub fn send_json(&self, method: &str, path: &str, body: &serde_json::Value) -> std::io::Result<Reply> {
        self.request(method, path, &[], Some(body.to_string().as_bytes()))
    }
}

/// TLS 1.3 client configuration (ring, as the rest of adox) trusting `ca_file` or the web
/// PKI roots.
fn tls_config(ca_file: Option<&std::path::Path>) -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", path.display()))? {
                let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
                roots.add(cert).map_err(|e| format!("{}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("{}: no certificate found", path.display()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

/// Largest reply body accepted (a policy export of a million policies fits).
const MAX_BODY: usize = 512 << 20;

fn read_reply(mut r: impl BufRead) -> std::io::Result<Reply> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 =
        line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad("bad status line"))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("headers cut short"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let find = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .ok()
                .filter(|n| body.len().saturating_add(*n) <= MAX_BODY)
                .ok_or_else(|| bad("bad chunk size"))?;
            if size == 0 {
                break;
            }
            let at = body.len();
            body.resize(at + size, 0);
            r.read_exact(&mut body[at..])?;
            line.clear();
            r.read_line(&mut line)?;
        }
    } else if let Some(n) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if n > MAX_BODY {
            return Err(bad("reply larger than adoxctl accepts"));
        }
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else {
        r.take(MAX_BODY as u64 + 1).read_to_end(&mut body)?;
        if body.len() > MAX_BODY {
            return Err(bad("reply larger than adoxctl accepts"));
        }
    }
    Ok(Reply { status, headers, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_with_length_or_chunks() {
        let r = read_reply(&b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nETag: \"r1\"\r\n\r\n{}"[..]).unwrap();
        assert_eq!((r.status, r.header("etag"), r.text().as_str()), (201, Some("\"r1\""), "{}"));
        let r =
            read_reply(&b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"[..])
                .unwrap();
        assert_eq!(r.text(), "abcde");
        assert!(Client::new("ftp://x", None).is_err());
        assert!(Client::new("https://127.0.0.1:5380", None).is_ok());
        assert!(Client::new("http://127.0.0.1:5380/", None).is_ok());
    }
}
