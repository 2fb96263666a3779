//! The REST control plane, at the HTTP level, against a running adoxd on the lab: tokens
//! and roles, problem details naming the field, size limits, ETags, live policy pushes
//! (proven by a capture), exact metrics, flushes, server state, and durability under
//! `kill -9`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

use crate::encrypted::{Capture, config};
use crate::support::{Adoxd, Ask, READ_TOKEN, sample};

/// Sends a JSON body and returns (status, parsed body or Null).
fn send(c: &adoxctl::Client, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let bytes = body.map(Value::to_string);
    let r = c.request(method, path, &[], bytes.as_deref().map(str::as_bytes)).unwrap();
    (r.status, r.json().unwrap_or(Value::Null))
}

/// Asserts a problem+json reply with this status and field.
fn problem(c: &adoxctl::Client, method: &str, path: &str, body: &[u8], status: u16, field: Option<&str>) {
    let r = c.request(method, path, &[], Some(body)).unwrap();
    assert_eq!(r.status, status, "{method} {path} {}: {}", String::from_utf8_lossy(body), r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let v = r.json().unwrap();
    assert_eq!(v["status"], json!(status));
    assert_eq!(v["field"].as_str(), field, "{v}");
}

#[test]
fn tokens_roles_and_open_health_endpoints() {
    let d = Adoxd::lab(&[]);
    let anon = d.api_client(None);
    for path in ["/livez", "/readyz", "/metrics"] {
        assert_eq!(anon.get(path).unwrap().status, 200, "{path} needs no token");
    }
    let r = anon.get("/v1/policies").unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"adox\""));
    assert_eq!(d.api_client(Some("not-a-token-we-know-of")).get("/v1/stats").unwrap().status, 401);
    let reader = d.api_client(Some(READ_TOKEN));
    assert_eq!(reader.get("/v1/policies").unwrap().status, 200);
    assert_eq!(reader.get("/v1/servers").unwrap().status, 200);
    problem(&reader, "POST", "/v1/policies", br#"{"zone":"x.lab","mode":"cleartext"}"#, 403, None);
    problem(&reader, "POST", "/v1/cache/flush", b"{}", 403, None);
    assert_eq!(d.admin().get("/v1/openapi.json").unwrap().json().unwrap()["openapi"], json!("3.0.3"));
    problem(&d.admin(), "GET", "/v1/no-such-thing", b"", 404, None);
    d.terminate();
}

#[test]
fn policy_crud_with_etags_conflicts_and_field_errors() {
    let (_dir, cfg) = config("[[policy]]\nzone = \"cfg.lab\"\nmode = \"cleartext\"\n", "");
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap()]);
    let c = d.admin();
    let r = c
        .send_json(
            "POST",
            "/v1/policies",
            &json!({"zone": "Alpha.LAB", "address": "127.53.1.0/24", "mode": "opportunistic"}),
        )
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let created = r.json().unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(r.header("location"), Some(format!("/v1/policies/{id}").as_str()));
    let etag = r.header("etag").unwrap().to_string();
    assert_eq!(created["zone"], json!("alpha.lab."), "names come back lowercase with a dot");
    assert_eq!(created["transports"], json!(["doq", "dot", "do53"]), "documented defaults");
    assert_eq!(created["auth"], json!("none"));
    // Reading it gives the same ETag; the list has the config policy, read-only, first.
    let r = c.get(&format!("/v1/policies/{id}")).unwrap();
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    let (_, list) = send(&c, "GET", "/v1/policies", None);
    assert_eq!(list["policies"][0]["id"], json!("cfg-1"));
    assert_eq!(list["policies"][0]["read_only"], json!(true));
    problem(&c, "DELETE", "/v1/policies/cfg-1", b"", 409, None);
    problem(&c, "PUT", "/v1/policies/cfg-1", br#"{"zone":"cfg.lab","mode":"strict"}"#, 409, None);
    // An exact duplicate, and one with the same selector, are conflicts.
    problem(
        &c,
        "POST",
        "/v1/policies",
        br#"{"zone":"alpha.lab.","address":"127.53.1.0/24","mode":"opportunistic"}"#,
        409,
        None,
    );
    problem(&c, "POST", "/v1/policies", br#"{"zone":"cfg.lab","mode":"strict"}"#, 409, None);
    // 400 for syntax, 422 naming the field for meaning.
    problem(&c, "POST", "/v1/policies", b"{not json", 400, None);
    problem(&c, "POST", "/v1/policies", b"[1,2]", 400, None);
    problem(&c, "POST", "/v1/policies", br#"{"zone":"a.lab","mode":"fast"}"#, 422, Some("mode"));
    problem(&c, "POST", "/v1/policies", br#"{"zone":"a.lab"}"#, 422, Some("mode"));
    problem(
        &c,
        "POST",
        "/v1/policies",
        br#"{"zone":"a.lab","mode":"strict","transports":["dot","do53"]}"#,
        422,
        Some("transports"),
    );
    problem(&c, "POST", "/v1/policies", br#"{"zone":"a.lab","mode":"cleartext","auth":"pkix"}"#, 422, Some("auth"));
    problem(
        &c,
        "POST",
        "/v1/policies",
        br#"{"zone":"a.lab","mode":"opportunistic","transports":["dot"],"doh_path":"/q{?dns}"}"#,
        422,
        Some("doh_path"),
    );
    problem(
        &c,
        "POST",
        "/v1/policies",
        br#"{"zone":"a.lab","mode":"opportunistic","transports":["doh"],"doh_path":"/no-variable"}"#,
        422,
        Some("doh_path"),
    );
    problem(&c, "POST", "/v1/policies", br#"{"zone":"a..lab","mode":"strict"}"#, 422, Some("zone"));
    problem(&c, "POST", "/v1/policies", br#"{"address":"10.1.2.3/8","mode":"strict"}"#, 422, Some("address"));
    problem(&c, "POST", "/v1/policies", br#"{"zone":"a.lab","mode":"strict","colour":"red"}"#, 422, Some("colour"));
    problem(&c, "POST", "/v1/policies", br#"{"zone":7,"mode":"strict"}"#, 422, Some("zone"));
    // Oversized bodies: 413, whether the length is declared or not.
    let big = format!(r#"{{"zone":"a.lab","mode":"strict","comment":"{}"}}"#, "x".repeat(100_000));
    problem(&c, "POST", "/v1/policies", big.as_bytes(), 413, None);
    let chunked = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(d.api.unwrap()).unwrap();
        let mut req = format!(
            "POST /v1/policies HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            crate::support::ADMIN_TOKEN
        )
        .into_bytes();
        req.extend_from_slice(format!("{:x}\r\n{big}\r\n0\r\n\r\n", big.len()).as_bytes());
        s.write_all(&req).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    assert!(chunked.starts_with("HTTP/1.1 413"), "a chunked oversized body: {chunked}");
    // Replace with a stale ETag: 412; with the current one: 200 and a new ETag.
    let stale = |m: &str| {
        c.request(
            "PUT",
            &format!("/v1/policies/{id}"),
            &[("If-Match", m)],
            Some(br#"{"zone":"alpha.lab","address":"127.53.1.0/24","mode":"cleartext"}"#),
        )
        .unwrap()
    };
    assert_eq!(stale("\"r999\"").status, 412);
    let r = stale(&etag);
    assert_eq!(r.status, 200, "{}", r.text());
    let etag2 = r.header("etag").unwrap().to_string();
    assert_ne!(etag2, etag);
    assert_eq!(r.json().unwrap()["mode"], json!("cleartext"));
    assert_eq!(c.request("DELETE", &format!("/v1/policies/{id}"), &[("If-Match", &etag)], None).unwrap().status, 412);
    assert_eq!(c.request("DELETE", &format!("/v1/policies/{id}"), &[("If-Match", &etag2)], None).unwrap().status, 204);
    assert_eq!(c.get(&format!("/v1/policies/{id}")).unwrap().status, 404);
    // Import: all or nothing, errors name the element; export gives back what was imported.
    let bundle = json!({"policies": [{"zone": "b.lab", "mode": "cleartext"}, {"zone": "c.lab", "mode": "strict", "transports": ["dot"]}]});
    let (st, res) = send(&c, "POST", "/v1/policies/import?mode=replace", Some(&bundle));
    assert_eq!((st, res["created"].clone(), res["total"].clone()), (200, json!(2), json!(2)), "{res}");
    let bad = json!({"policies": [{"zone": "d.lab", "mode": "cleartext"}, {"zone": "e.lab", "mode": "nope"}]});
    problem(&c, "POST", "/v1/policies/import?mode=merge", bad.to_string().as_bytes(), 422, Some("policies[1].mode"));
    let (_, exported) = send(&c, "GET", "/v1/policies/export", None);
    let zones: Vec<&str> =
        exported["policies"].as_array().unwrap().iter().map(|p| p["zone"].as_str().unwrap()).collect();
    assert_eq!(zones, ["b.lab.", "c.lab."], "the refused import changed nothing");
    d.terminate();
}

#[test]
fn a_policy_pushed_over_the_api_changes_the_transport_of_the_next_query() {
    let (_dir, cfg) = config("", "probing = false\nsignals = false\n");
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap()]);
    let c = d.admin();
    // Without a policy: Do53 to dot.lab's server (the capture sees it).
    let cap = Capture::start("api-push-before", "host 127.53.6.1 and port 53");
    assert_eq!(d.query("www.dot.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.60"]);
    assert!(!cap.stop().is_empty(), "before the push the zone is reached over Do53");
    let (st, p) = send(
        &c,
        "POST",
        "/v1/policies",
        Some(&json!({"zone": "dot.lab", "mode": "strict", "transports": ["dot"], "auth": "pkix"})),
    );
    assert_eq!(st, 201, "{p}");
    // The very next cache-missing query obeys it: DoT, and no cleartext at all.
    let dot_before = send(&c, "GET", "/v1/stats", None).1["totals"]["upstream_dot"].as_u64().unwrap();
    let cap = Capture::start("api-push-after", "host 127.53.6.1 and port 53");
    assert_eq!(d.query("nonexistent.dot.lab.", RecordType::A).rcode(), ResponseCode::NXDomain);
    let packets = cap.stop();
    assert!(packets.is_empty(), "cleartext after the strict push: {packets:?}");
    let dot_after = send(&c, "GET", "/v1/stats", None).1["totals"]["upstream_dot"].as_u64().unwrap();
    assert!(dot_after > dot_before, "the query went over DoT");
    // The server's state shows the connection: one full handshake, open, working.
    let (_, srv) = send(&c, "GET", "/v1/servers/127.53.6.1", None);
    let dot =
        srv["transports"].as_array().unwrap().iter().find(|t| t["transport"] == "dot").expect("dot state").clone();
    assert_eq!((dot["state"].as_str(), dot["capable"].as_bool()), (Some("success"), Some(true)), "{srv}");
    assert_eq!((dot["handshakes_full"].as_u64(), dot["open_connections"].as_u64()), (Some(1), Some(1)), "{srv}");
    // Deleting it restores Do53 for the next miss.
    assert_eq!(send(&c, "DELETE", &format!("/v1/policies/{}", p["id"].as_str().unwrap()), None).0, 204);
    let cap = Capture::start("api-push-deleted", "host 127.53.6.1 and port 53");
    assert_eq!(d.query("nothing-here.dot.lab.", RecordType::A).rcode(), ResponseCode::NXDomain);
    assert!(!cap.stop().is_empty(), "after the delete the zone is reached over Do53 again");
    d.terminate();
}

#[test]
fn metrics_change_by_exactly_what_the_test_sent() {
    let d = Adoxd::lab(&[]);
    let anon = d.api_client(None);
    // Warm the name in both workers' packet caches (each query comes from a new socket,
    // so the kernel spreads them; all 16 on one worker has odds of 1 in 32,768), so that
    // priming and first resolutions are behind us.
    for _ in 0..16 {
        assert_eq!(d.query("www.alpha.lab.", RecordType::A).rcode(), ResponseCode::NoError);
    }
    for _ in 0..16 {
        assert_eq!(d.ask_tcp(&Ask::new("www.alpha.lab.", RecordType::A)).rcode(), ResponseCode::NoError);
    }
    let before = anon.get("/metrics").unwrap().text();
    for _ in 0..25 {
        assert_eq!(d.query("www.alpha.lab.", RecordType::A).rcode(), ResponseCode::NoError);
    }
    for _ in 0..5 {
        assert_eq!(d.ask_tcp(&Ask::new("www.alpha.lab.", RecordType::A)).rcode(), ResponseCode::NoError);
    }
    assert_eq!(d.query("nonexistent.lab.", RecordType::A).rcode(), ResponseCode::NXDomain);
    let after = anon.get("/metrics").unwrap().text();
    let delta = |s: &str| sample(&after, s) - sample(&before, s);
    assert_eq!(delta("adox_client_queries_total{protocol=\"udp\"}"), 26);
    assert_eq!(delta("adox_client_queries_total{protocol=\"tcp\"}"), 5);
    assert_eq!(delta("adox_responses_total{rcode=\"noerror\"}"), 30);
    assert_eq!(delta("adox_responses_total{rcode=\"nxdomain\"}"), 1);
    assert_eq!(delta("adox_cache_hits_total"), 30);
    assert_eq!(delta("adox_cache_misses_total"), 1);
    assert_eq!(delta("adox_resolution_duration_seconds_count"), 1);
    assert_eq!(delta("adox_tcp_connections_total{result=\"accepted\"}"), 5);
    let workers = delta("adox_worker_queries_total{worker=\"0\"}") + delta("adox_worker_queries_total{worker=\"1\"}");
    assert_eq!(workers, 31, "per-worker load sums to the total");
    d.terminate();
}

#[test]
fn flush_a_name_from_every_worker_and_reset_a_server() {
    let d = Adoxd::lab(&[]);
    let c = d.admin();
    let totals = || send(&c, "GET", "/v1/stats", None).1["totals"].clone();
    let misses = || totals()["cache_misses"].as_u64().unwrap();
    // Each query comes from a new socket, so the kernel spreads them over both workers:
    // with 16, each worker holds the answer in its packet cache (all on one worker has
    // odds of 1 in 32,768).
    let ask16 = || {
        for _ in 0..16 {
            assert_eq!(d.query("www.alpha.lab.", RecordType::A).rcode(), ResponseCode::NoError);
        }
    };
    ask16();
    let m0 = misses();
    ask16();
    assert_eq!(misses(), m0, "cached in both workers");
    let upstream0 = totals()["upstream_udp"].as_u64().unwrap();
    let (st, res) = send(&c, "POST", "/v1/cache/flush", Some(&json!({"name": "WWW.alpha.lab"})));
    assert_eq!((st, res["scope"].as_str(), res["name"].as_str()), (200, Some("name"), Some("www.alpha.lab.")));
    ask16();
    assert_eq!(misses(), m0 + 2, "each worker's packet cache lost the name, once");
    assert!(totals()["upstream_udp"].as_u64().unwrap() > upstream0, "the shared record cache lost it too");
    problem(&c, "POST", "/v1/cache/flush", br#"{"name":"a.lab","zone":"lab"}"#, 422, Some("zone"));
    problem(&c, "POST", "/v1/cache/flush", br#"{"name":"bad..name"}"#, 422, Some("name"));
    // Server state: the lab's alpha server was used; a reset forgets it.
    let (st, list) = send(&c, "GET", "/v1/servers", None);
    assert_eq!(st, 200);
    let addrs: BTreeSet<&str> =
        list["servers"].as_array().unwrap().iter().map(|s| s["address"].as_str().unwrap()).collect();
    let alpha = addrs.iter().find(|a| a.starts_with("127.53.1.")).expect("alpha.lab's server is listed").to_string();
    let (st, one) = send(&c, "GET", &format!("/v1/servers/{alpha}"), None);
    assert_eq!(st, 200);
    assert!(one["srtt_us"].as_u64().unwrap() > 0, "{one}");
    assert_eq!(send(&c, "DELETE", &format!("/v1/servers/{alpha}"), None).0, 204);
    assert_eq!(send(&c, "GET", &format!("/v1/servers/{alpha}"), None).0, 404);
    problem(&c, "GET", "/v1/servers/not-an-ip", b"", 400, Some("ip"));
    // Log level at run time.
    assert_eq!(send(&c, "PUT", "/v1/log-level", Some(&json!({"level": "debug"}))).0, 200);
    assert_eq!(send(&c, "GET", "/v1/log-level", None).1["level"], json!("debug"));
    problem(&c, "PUT", "/v1/log-level", br#"{"level":"loud"}"#, 422, Some("level"));
    d.terminate();
}

#[test]
fn kill_9_during_a_burst_of_policy_writes_loses_nothing_acknowledged() {
    let state = crate::support::tempdir::Dir::new();
    let dir = state.path().to_str().unwrap().to_string();
    let d = Adoxd::lab(&["--state-dir", &dir]);
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (c, acked, stop) = (d.admin(), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                for i in 0..100_000 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let zone = format!("w{w}-{i}.burst.lab.");
                    match c.send_json("POST", "/v1/policies", &json!({"zone": zone, "mode": "cleartext"})) {
                        Ok(r) if r.status == 201 => acked.lock().unwrap().push(zone),
                        Ok(r) => panic!("write refused: {} {}", r.status, r.text()),
                        Err(_) => break, // the daemon is gone
                    }
                }
            })
        })
        .collect();
    let start = Instant::now();
    while acked.lock().unwrap().len() < 1000 && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(5));
    }
    d.kill9();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 1000, "the burst was under way when killed");
    // The snapshot is whole JSON (written by rename), whatever the moment of the kill.
    if let Ok(bytes) = std::fs::read(state.path().join("policies.json")) {
        serde_json::from_slice::<Value>(&bytes).expect("policies.json is never half-written");
    }
    let d = Adoxd::lab(&["--state-dir", &dir]);
    let (_, list) = send(&d.admin(), "GET", "/v1/policies", None);
    let held: BTreeSet<String> =
        list["policies"].as_array().unwrap().iter().map(|p| p["zone"].as_str().unwrap().to_string()).collect();
    let lost: Vec<&String> = acked.iter().filter(|z| !held.contains(*z)).collect();
    assert!(lost.is_empty(), "{} acknowledged writes lost, e.g. {:?}", lost.len(), lost.first());
    d.terminate();
}

/// Starts adoxd with `tokens` as its admin token file (written with `mode`) and returns
/// what it wrote to stderr, asserting that the start failed.
fn failed_start_with_token_file(tokens: &str, mode: u32) -> String {
    use std::os::unix::fs::PermissionsExt;
    let dir = crate::support::tempdir::Dir::new();
    let f = dir.path().join("tokens");
    std::fs::write(&f, tokens).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_adoxd"))
        .args(["--listen", "127.0.0.1:0", "--api", "127.0.0.1:0", "--api-token-file", f.to_str().unwrap()])
        .arg("--state-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_bad_token_file_stops_the_start() {
    let err = failed_start_with_token_file("short\n", 0o600);
    assert!(err.contains("line 1: a token is one word of at least 16 characters"), "{err}");
}

#[test]
fn explain_shows_zone_cuts_plans_with_their_source_and_what_was_tried() {
    let policies = "[[policy]]\nzone = \"dot.lab\"\nmode = \"strict\"\ntransports = [\"dot\"]\nauth = \"pkix\"\n\
                    [[policy]]\nzone = \"badcert.lab\"\nmode = \"strict\"\ntransports = [\"dot\"]\nauth = \"pkix\"\n";
    let (_dir, cfg) = config(policies, "probing = false\nsignals = false\n");
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap()]);
    let c = d.admin();
    let (st, e) = send(&c, "GET", "/v1/explain?name=WWW.dot.lab&type=A", None);
    assert_eq!(st, 200, "{e}");
    assert_eq!((e["name"].as_str(), e["rcode"].as_str()), (Some("www.dot.lab."), Some("NOERROR")));
    assert!(e["answers"][0].as_str().unwrap().contains("192.0.2.60"), "{e}");
    let steps = e["steps"].as_array().unwrap();
    let exchange = |zone: &str| {
        steps
            .iter()
            .find(|s| s["step"] == "exchange" && s["zone"] == zone)
            .unwrap_or_else(|| panic!("no exchange with {zone} in {e}"))
    };
    let dot = exchange("dot.lab.");
    assert_eq!(dot["plan"]["source"], json!("override:cfg-1"));
    assert_eq!(dot["plan"]["mode"], json!("strict"));
    // A zone-only strict PKIX policy says what it trusts (an unsigned referral's name).
    assert!(dot["plan"]["warning"].as_str().is_some_and(|w| w.contains("nameserver pin")), "{dot}");
    assert_eq!(dot["attempts"], json!([{"transport": "dot", "outcome": "ok"}]));
    let root = exchange(".");
    assert!(root["plan"].get("warning").is_none(), "{root}");
    assert_eq!(root["plan"]["source"], json!("default"));
    assert_eq!(root["attempts"][0]["transport"], json!("do53"));
    assert!(steps.iter().any(|s| s["step"] == "zone" && s["zone"] == "dot.lab."), "zone cuts are listed");
    // Asked again: from the cache, no exchange.
    let (_, again) = send(&c, "GET", "/v1/explain?name=www.dot.lab&type=1", None);
    assert!(again["steps"].as_array().unwrap().iter().all(|s| s["step"] != "exchange"), "{again}");
    // A strict failure says which server, which transport and why.
    let (st, bad) = send(&c, "GET", "/v1/explain?name=www.badcert.lab&type=AAAA", None);
    assert_eq!((st, bad["rcode"].as_str()), (200, Some("SERVFAIL")));
    assert!(
        bad["error"].as_str().unwrap().contains("strict ns1.badcert.lab.@127.53.10.1 dot: cert-name-mismatch"),
        "{bad}"
    );
    let tried = bad["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "exchange" && s["zone"] == "badcert.lab.")
        .unwrap();
    assert_eq!(tried["attempts"], json!([{"transport": "dot", "outcome": "cert-name-mismatch"}]));
    // Bad parameters name themselves.
    problem(&c, "GET", "/v1/explain?type=A", b"", 400, Some("name"));
    problem(&c, "GET", "/v1/explain?name=x.lab&type=NOPE", b"", 400, Some("type"));
    problem(&c, "GET", "/v1/explain?name=x.lab&type=AXFR", b"", 400, Some("type"));
    d.terminate();
}

#[test]
fn the_api_over_tls_verifies_and_refuses_plain_http() {
    let dir = crate::support::tempdir::Dir::new();
    let (cert, key) = api_certificate(dir.path(), "adox-api");
    let cfg = dir.path().join("adox.toml");
    std::fs::write(
        &cfg,
        format!("[api]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n", cert.display(), key.display()),
    )
    .unwrap();
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap()]);
    let url = format!("https://{}", d.api.unwrap());
    let tls = adoxctl::Client::with_ca(&url, Some(crate::support::ADMIN_TOKEN.into()), Some(&cert)).unwrap();
    let r = tls.get("/v1/stats").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(tls.send_json("POST", "/v1/cache/flush", &json!({})).unwrap().status, 200);
    // The web PKI does not vouch for this certificate, and plain HTTP gets no answer.
    let untrusted = adoxctl::Client::new(&url, Some(crate::support::ADMIN_TOKEN.into())).unwrap();
    assert!(untrusted.get("/v1/stats").is_err(), "an unverified certificate is refused");
    let plain = adoxctl::Client::new(&format!("http://{}", d.api.unwrap()), None).unwrap();
    assert!(plain.get("/livez").is_err(), "no plain HTTP on the TLS port");
    d.terminate();
}

/// A token file other users may read stops the start: its tokens are secrets.
#[test]
fn a_token_file_others_can_read_stops_the_start() {
    let err = failed_start_with_token_file("a-long-enough-admin-token-0123456789\n", 0o644);
    assert!(err.contains("other users may read or write it (mode 644)"), "{err}");
}

#[test]
fn sighup_reloads_the_token_files_and_a_bad_file_keeps_the_old_tokens() {
    let dir = crate::support::tempdir::Dir::new();
    let admin = dir.path().join("admin.tokens");
    crate::support::write_secret(&admin, "first-admin-token-0123456789\n");
    let d = Adoxd::lab(&["--api-token-file", admin.to_str().unwrap()]);
    let with = |t: &str| d.api_client(Some(t)).get("/v1/stats").unwrap().status;
    assert_eq!(with("first-admin-token-0123456789"), 200);
    let hup = || {
        let pid = d.pid().to_string();
        assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
        let start = Instant::now();
        let seen = d.log().matches("API tokens").count();
        while d.log().matches("API tokens").count() == seen && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // Rotation: the new token works at once, the old one no more.
    std::fs::write(&admin, "# rotated\nsecond-admin-token-0123456789\n").unwrap();
    hup();
    assert_eq!(with("second-admin-token-0123456789"), 200);
    assert_eq!(with("first-admin-token-0123456789"), 401);
    // A broken file is refused and the tokens in force stay.
    std::fs::write(&admin, "short\n").unwrap();
    hup();
    assert!(d.log().contains("api tokens not reloaded"), "{}", d.log());
    assert_eq!(with("second-admin-token-0123456789"), 200);
    d.terminate();
}

/// DNS rebinding: a request whose Host names another site is refused (421), whatever its
/// token; IP literals and localhost are the API's names.
#[test]
fn a_request_for_another_host_is_refused() {
    use std::io::{Read, Write};
    let d = Adoxd::lab(&[]);
    let api = d.api.expect("the API is on");
    let ask = |host: &str| {
        let mut s = std::net::TcpStream::connect(api).unwrap();
        let req = format!(
            "GET /v1/stats HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            crate::support::ADMIN_TOKEN
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.lines().next().unwrap_or("").to_string()
    };
    assert!(ask("rebound.evil.example").contains(" 421 "), "another host");
    assert!(ask(&api.to_string()).contains(" 200 "), "the API's own address");
    assert!(ask(&format!("localhost:{}", api.port())).contains(" 200 "), "localhost");
}

/// `GET /v1/cache` (issue 13): what the record cache holds for a name, with TTL left,
/// DNSSEC status, trust rank, staleness and the server it came from; a read token may
/// look; bad parameters name themselves.
#[test]
fn cache_show_lists_what_is_cached_with_its_status_and_source() {
    let d = Adoxd::lab(&[]);
    assert_eq!(d.query("www.alpha.lab.", RecordType::A).rcode(), ResponseCode::NoError);
    assert_eq!(d.query("nx.alpha.lab.", RecordType::A).rcode(), ResponseCode::NXDomain);
    let c = d.api_client(Some(READ_TOKEN));
    let (st, v) = send(&c, "GET", "/v1/cache?name=WWW.alpha.lab&type=a", None);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["name"], json!("www.alpha.lab."));
    let e = &v["entries"][0];
    assert_eq!((e["type"].as_str(), e["kind"].as_str()), (Some("A"), Some("rrset")), "{v}");
    assert_eq!((e["dnssec"].as_str(), e["rank"].as_str()), (Some("secure"), Some("answer-authoritative")), "{v}");
    assert_eq!(e["stale"], json!(false));
    assert!(e["ttl_left"].as_u64().is_some_and(|t| t > 0), "{v}");
    assert!(e["server"].as_str().is_some_and(|s| s.starts_with("127.53.1.")), "the alpha.lab. server: {v}");
    assert!(e["records"].as_array().unwrap().iter().any(|r| r.as_str().unwrap().contains(" A ")), "{v}");
    // Without a type: every type held at the name, the NXDOMAIN included.
    let (_, nx) = send(&c, "GET", "/v1/cache?name=nx.alpha.lab", None);
    let kinds: Vec<&str> = nx["entries"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"nxdomain"), "{nx}");
    let (_, none) = send(&c, "GET", "/v1/cache?name=never.asked.example", None);
    assert_eq!(none["entries"], json!([]));
    problem(&c, "GET", "/v1/cache", b"", 400, Some("name"));
    problem(&c, "GET", "/v1/cache?name=www.alpha.lab&type=NOPE", b"", 400, Some("type"));
}

/// A self-signed certificate for 127.0.0.1, made with openssl, as (cert, key).
fn api_certificate(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    let status = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
        .args(["-subj", &format!("/CN={name}"), "-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE", "-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl made a certificate");
    (cert, key)
}

/// A reload reads the TLS files again: the API serves a renewed certificate from the next
/// handshake (clients that trust only the old one are refused), and upstream PKIX
/// handshakes use the new `transport.ca_file` (a strict PKIX zone that failed under the
/// wrong roots resolves under the lab CA). A file that does not load keeps the running
/// one.
#[test]
fn a_reload_reads_the_api_certificate_and_the_upstream_ca_again() {
    let dir = crate::support::tempdir::Dir::new();
    let (old_cert, old_key) = api_certificate(dir.path(), "old");
    let (new_cert, new_key) = api_certificate(dir.path(), "new");
    let lab_ca = crate::support::lab_dir().join("tls/ca.pem");
    let cfg = dir.path().join("adox.toml");
    let write = |cert: &std::path::Path, key: &std::path::Path, ca: &std::path::Path| {
        std::fs::write(
            &cfg,
            format!(
                "[api]\ntls_cert_file = {cert:?}\ntls_key_file = {key:?}\n\n[transport]\nca_file = {ca:?}\n\n\
                 [[policy]]\nzone = \"dot.lab\"\nmode = \"strict\"\ntransports = [\"dot\"]\nauth = \"pkix\"\n"
            ),
        )
        .unwrap();
    };
    // Upstream roots that do not vouch for the lab's servers: the old API certificate.
    write(&old_cert, &old_key, &old_cert);
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap()]);
    let url = format!("https://{}", d.api.unwrap());
    let client = |ca: &std::path::Path| {
        adoxctl::Client::with_ca(&url, Some(crate::support::ADMIN_TOKEN.into()), Some(ca)).unwrap()
    };
    assert_eq!(client(&old_cert).get("/v1/stats").unwrap().status, 200);
    assert!(client(&new_cert).get("/v1/stats").is_err());
    assert_eq!(d.query("www.dot.lab.", RecordType::A).rcode(), ResponseCode::ServFail, "untrusted roots");

    write(&new_cert, &new_key, &lab_ca);
    let r = client(&old_cert).send_json("POST", "/v1/reload", &json!({})).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let report = r.json().unwrap();
    let applied = report["applied"].to_string();
    assert!(applied.contains("api TLS certificate") && applied.contains("transport.ca_file"), "{report}");
    assert_eq!(report["needs_restart"], json!([]), "{report}");
    assert_eq!(client(&new_cert).get("/v1/stats").unwrap().status, 200, "the renewed certificate");
    assert!(client(&old_cert).get("/v1/stats").is_err(), "the old one is gone");
    client(&new_cert).send_json("POST", "/v1/cache/flush", &json!({})).unwrap();
    let r = d.query("www.dot.lab.", RecordType::A);
    assert_eq!(r.rcode(), ResponseCode::NoError, "{:?}", r.ede());

    // A key that does not match its certificate: refused, the renewed pair stays.
    write(&new_cert, &old_key, &lab_ca);
    let r = client(&new_cert).send_json("POST", "/v1/reload", &json!({})).unwrap();
    let report = r.json().unwrap();
    assert_eq!(report["refused"][0]["section"], "api TLS certificate", "{report}");
    assert_eq!(client(&new_cert).get("/v1/stats").unwrap().status, 200);
}
