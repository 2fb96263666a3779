//! DNS over HTTPS to authoritative servers (RFC 8484 over HTTP/2, R7) against the lab's
//! BIND DoH servers (port 443, `/dns-query`, TLS 1.3, HTTP/2 only: BIND's DoH listener
//! speaks no HTTP/1.1): a secure signal with a TLSA record (strict DANE), an insecure one
//! (opportunistic), and one naming a path the server does not serve (404). "No cleartext"
//! is shown by a packet capture on the loopback interface, outside adox.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::encrypted::{Capture, config};
use crate::support::{Adoxd, temp_config};

/// The exchange step of `zone` in an explain answer for `name`.
fn exchange_step(d: &Adoxd, name: &str, zone: &str) -> serde_json::Value {
    let e = d.admin().get(&format!("/v1/explain?name={name}&type=A")).unwrap().json().unwrap();
    let step = e["steps"].as_array().unwrap().iter().find(|s| s["step"] == "exchange" && s["zone"] == zone).cloned();
    step.unwrap_or_else(|| panic!("no exchange with {zone} in {e}"))
}

/// A zone whose secure `_dns` SVCB offers `alpn=h2` with a `dohpath`, and whose secure
/// TLSA sits at `_443._tcp` of the target: after the signal is learned, every query goes
/// over DoH only, strictly, authenticated by DANE alone (no CA file: the lab CA is unknown
/// to adoxd), multiplexed on one connection, and nothing reaches the server's port 53.
#[test]
fn r7_a_secure_doh_signal_is_strict_dane_over_http2_and_never_cleartext() {
    let (_d, cfg) = temp_config("[transport]\nprobing = false\n");
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap(), "--workers", "1"]);
    // Port 443 from the first query on: the handshake is on the wire.
    let doh = Capture::start("r7-doh-443", "host 127.53.24.1 and tcp port 443");
    assert_eq!(d.query("www.doh.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.240"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let cap = Capture::start("r7-doh-dane", "host 127.53.24.1 and port 53");
    for i in 0..5 {
        assert_eq!(d.query(&format!("n{i}.doh.lab."), RecordType::A).rcode(), ResponseCode::NXDomain);
    }
    // An answer over 300 octets (more than one small DATA frame at the server's choice).
    let big = d.query("big.doh.lab.", RecordType::TXT);
    assert_eq!(big.rcode(), ResponseCode::NoError);
    assert!(big.answer_set().iter().any(|r| r.contains("0123456789abcdef")), "{:?}", big.answer_set());
    assert!(cap.stop().is_empty(), "cleartext to the strict DoH server");
    let payloads = doh.stop_tcp_payloads();
    assert!(!payloads.is_empty(), "the queries went to port 443");
    let (offers, versions) = crate::encrypted::tls_hellos(&payloads);
    assert!(!offers.is_empty() && offers.iter().all(|o| o == &["h2"]), "HTTP/2 only is offered: {offers:?}");
    assert!(!versions.is_empty() && versions.iter().all(|v| *v == 0x0304), "TLS 1.3 chosen: {versions:x?}");
    let x = exchange_step(&d, "n9.doh.lab", "doh.lab.");
    assert_eq!(x["plan"]["source"], "signal:secure", "{x}");
    assert_eq!((x["plan"]["mode"].as_str(), x["plan"]["auth"].as_str()), (Some("strict"), Some("dane")), "{x}");
    assert_eq!(x["plan"]["transports"], serde_json::json!(["doh"]), "never do53: {x}");
    assert_eq!(x["attempts"], serde_json::json!([{"transport": "doh", "outcome": "ok"}]));
    let servers = d.admin().get("/v1/servers").unwrap().json().unwrap();
    let signal = servers["signals"].as_array().unwrap().iter().find(|s| s["nameserver"] == "ns1.doh.lab.").cloned();
    let signal = signal.unwrap_or_else(|| panic!("no signal for ns1.doh.lab. in {servers}"));
    assert_eq!((signal["dnssec"].as_str(), &signal["dane"]), (Some("secure"), &serde_json::json!(["doh"])));
    let metrics = d.admin().get("/metrics").unwrap().text();
    assert!(metrics.contains("adox_upstream_queries_total{transport=\"doh\"}"), "DoH in /metrics");
    let log = d.terminate();
    assert!(Adoxd::stat(&log, "upstream_doh") >= 7, "{log}");
    assert_eq!(Adoxd::stat(&log, "tls_full"), 1, "one pooled HTTP/2 connection for every query");
    assert_eq!(Adoxd::stat(&log, "strict_failures"), 0);
    assert_eq!(Adoxd::stat(&log, "downgrades"), 0);
}

/// An unsigned zone signalling DoH is an opportunistic hint: DoH first (here with GET, the
/// message in the template's `dns` variable), Do53 kept as the fallback, never strict.
#[test]
fn r7_an_insecure_doh_signal_is_opportunistic_doh_with_get() {
    let (_d, cfg) = temp_config("[transport]\nprobing = false\ndoh_method = \"get\"\n");
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap(), "--workers", "1"]);
    assert_eq!(d.query("www.bdoh.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.241"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let cap = Capture::start("r7-bdoh", "host 127.53.25.1 and port 53");
    assert_eq!(d.query("n1.bdoh.lab.", RecordType::A).rcode(), ResponseCode::NXDomain);
    assert!(cap.stop().is_empty(), "Do53 to a server that answers over DoH");
    let x = exchange_step(&d, "n2.bdoh.lab", "bdoh.lab.");
    assert_eq!(x["plan"]["source"], "signal:insecure", "{x}");
    assert_eq!((x["plan"]["mode"].as_str(), x["plan"]["auth"].as_str()), (Some("opportunistic"), Some("none")));
    assert_eq!(x["plan"]["transports"], serde_json::json!(["doh", "do53"]), "{x}");
    assert_eq!(x["attempts"], serde_json::json!([{"transport": "doh", "outcome": "ok"}]));
    // BIND logs the query as received over TCP (`T`): with nothing on port 53, that is 443.
    let queries = std::fs::read_to_string(crate::support::lab_dir().join("logs/bdoh.queries.log")).unwrap();
    assert!(queries.lines().any(|l| l.contains("n1.bdoh.lab IN A -E(0)T")), "{queries}");
    let log = d.terminate();
    assert!(Adoxd::stat(&log, "upstream_doh") >= 2);
    assert_eq!(Adoxd::stat(&log, "downgrades"), 0);
}

/// A signal naming a path the server does not serve: the server answers 404. Under the
/// signal (opportunistic) that is a counted failure and the query falls back to Do53;
/// under a strict operator policy with the same path it is SERVFAIL with EDE 22 in the
/// fixed grammar and nothing in cleartext; with the right path in the policy, the same
/// server resolves strictly over DoH, authenticated by PKIX.
#[test]
fn r7_a_wrong_doh_path_is_a_counted_failure_then_fallback_or_strict_servfail() {
    let (_d, cfg) = config("", "probing = false");
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap(), "--workers", "1"]);
    assert_eq!(d.query("www.wdoh.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.242"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(d.query("n1.wdoh.lab.", RecordType::A).rcode(), ResponseCode::NXDomain, "fallback to Do53");
    let x = exchange_step(&d, "n2.wdoh.lab", "wdoh.lab.");
    assert_eq!(
        x["attempts"],
        serde_json::json!([{"transport": "doh", "outcome": "http-404"}, {"transport": "do53", "outcome": "ok"}]),
        "{x}"
    );
    let c = d.admin();
    let policy = |path: &str| {
        format!(
            r#"{{"zone":"wdoh.lab","nameserver":"ns1.wdoh.lab","mode":"strict","transports":["doh"],"auth":"pkix","doh_path":"{path}"}}"#
        )
    };
    let r = c.request("POST", "/v1/policies", &[], Some(policy("/wrong-path{?dns}").as_bytes())).unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let etag = r.header("etag").unwrap().to_string();
    let created = r.json().unwrap();
    let cap = Capture::start("r7-wdoh", "host 127.53.26.1 and port 53");
    let r = d.query("n3.wdoh.lab.", RecordType::A);
    assert_eq!(r.rcode(), ResponseCode::ServFail);
    assert_eq!(r.ede(), Some((22, "strict ns1.wdoh.lab.@127.53.26.1 doh: http-404".to_string())));
    // The right path, in place of the wrong one.
    let id = created["id"].as_str().unwrap();
    let r = c
        .request(
            "PUT",
            &format!("/v1/policies/{id}"),
            &[("If-Match", &etag)],
            Some(policy("/dns-query{?dns}").as_bytes()),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(d.query("n4.wdoh.lab.", RecordType::A).rcode(), ResponseCode::NXDomain, "strict DoH with PKIX");
    assert!(cap.stop().is_empty(), "cleartext to the strict server");
    let x = exchange_step(&d, "n5.wdoh.lab", "wdoh.lab.");
    assert_eq!((x["plan"]["mode"].as_str(), x["plan"]["auth"].as_str()), (Some("strict"), Some("pkix")), "{x}");
    assert_eq!(x["attempts"], serde_json::json!([{"transport": "doh", "outcome": "ok"}]), "{x}");
    let log = d.terminate();
    assert!(Adoxd::stat(&log, "downgrades") >= 1, "the opportunistic fallback is counted");
    assert!(Adoxd::stat(&log, "strict_failures") >= 1, "the strict failure is counted");
}

/// A TLS failure keeps its type through HTTP/2: under a strict PKIX policy without the lab
/// CA, the server's certificate is untrusted, and the EDE says so (not an I/O error).
#[test]
fn a_doh_certificate_failure_is_reported_as_such() {
    let (_d, cfg) = temp_config(
        "[transport]\nprobing = false\nsignals = false\n[[policy]]\nzone = \"bdoh.lab\"\nnameserver = \"ns1.bdoh.lab\"\nmode = \"strict\"\ntransports = [\"doh\"]\nauth = \"pkix\"\n",
    );
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap(), "--workers", "1"]);
    let cap = Capture::start("doh-untrusted", "host 127.53.25.1 and port 53");
    let r = d.query("www.bdoh.lab.", RecordType::A);
    assert_eq!(r.rcode(), ResponseCode::ServFail);
    assert_eq!(r.ede(), Some((22, "strict ns1.bdoh.lab.@127.53.25.1 doh: cert-untrusted".to_string())));
    assert!(cap.stop().is_empty(), "cleartext to the strict server");
}

/// DoH sessions are resumed (RFC 8446 tickets, kept per transport as RFC 9539 asks): with
/// connections closed after 200 ms idle, each later query opens a new connection to the
/// BIND DoH server, and those handshakes resume the session instead of a full handshake.
#[test]
fn doh_connections_after_an_idle_close_resume_the_session() {
    let (_d, cfg) = temp_config("[transport]\nprobing = false\ndot_idle_timeout_ms = 200\n");
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap(), "--workers", "1"]);
    assert_eq!(d.query("www.doh.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.240"]);
    for i in 0..3 {
        std::thread::sleep(std::time::Duration::from_millis(600));
        assert_eq!(d.query(&format!("r{i}.doh.lab."), RecordType::A).rcode(), ResponseCode::NXDomain);
    }
    let log = d.terminate();
    assert!(Adoxd::stat(&log, "upstream_doh") >= 3, "{log}");
    assert!(Adoxd::stat(&log, "tls_resumed") >= 3, "every reconnect resumed: {log}");
    assert_eq!(Adoxd::stat(&log, "strict_failures"), 0);
}
