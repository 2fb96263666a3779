//! Forward, stub and local zones (`[[zones]]`, `PUT /v1/zones`) against servers no
//! delegation reaches (`hostile.py`: `recursor` answers only with RD set, `good` is a plain
//! authoritative), so an answer can only come from the configured path.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::json;

use crate::faults::Hostile;
use crate::support::{Adoxd, Ask, temp_config};

const A: RecordType = RecordType::A;

const ZONES: &str = r#"
[[zones]]
name = "corp.internal."
kind = "forward"
servers = ["127.53.40.19"]
insecure = true

[[zones]]
name = "stub.internal."
kind = "stub"
servers = ["127.53.40.20#ns1.stub.internal."]
insecure = true

[[zones]]
name = "walled.internal."
kind = "local"
local = "redirect"
records = ["@ 60 A 192.0.2.80"]

[[zones]]
name = "intra.internal."
kind = "local"
records = ["www 300 IN A 192.0.2.7", "alias CNAME www.alpha.lab."]

[[zones]]
name = "10.in-addr.arpa."
kind = "forward"
servers = ["127.53.40.23"]
insecure = true

[[zones]]
name = "alpha.lab."
kind = "forward"
servers = ["127.53.1.2"]

[[zones]]
name = "expired.lab."
kind = "forward"
servers = ["127.53.19.1"]
"#;

/// Each kind answers as configured: the forward zone's recursor (which refuses queries
/// without RD) answers, so the query carried RD; the stub zone is iterated from its
/// server; local zones answer from their records (redirect: every name gets the apex's),
/// NXDOMAIN for a name without any, and a local CNAME leads on into the public tree.
/// None of it is AD: the zones are insecure, and local data is never signed.
#[test]
fn forward_stub_and_local_zones_answer_as_configured() {
    let _fwd = Hostile::start("recursor", "corp.internal.", "127.53.40.19");
    let _stub = Hostile::start("good", "stub.internal.", "127.53.40.20");
    let _reverse = Hostile::start("recursor", "10.in-addr.arpa.", "127.53.40.23");
    let (_dir, cfg) = temp_config(ZONES);
    let d = Adoxd::lab(&["--workers", "1", "--config", cfg.to_str().unwrap(), "--aggressive-nsec", "on"]);
    let dnssec = |name: &str| d.ask(&Ask::new(name, A).dnssec());
    // What the public tree says first must not deny the internal zones: the root's secure
    // NXDOMAIN for `internal.` (and its NSEC spans, with aggressive use on), and the
    // parent side's NXDOMAIN for a forward zone's DS.
    assert_eq!(dnssec("internal.").rcode(), ResponseCode::NXDomain);
    assert_eq!(dnssec("nothing.internal.").rcode(), ResponseCode::NXDomain);
    assert_eq!(d.ask(&Ask::new("corp.internal.", RecordType::DS).dnssec()).rcode(), ResponseCode::NXDomain);
    for (name, want) in [
        ("www.corp.internal.", "192.0.2.99"),
        ("deep.er.corp.internal.", "192.0.2.99"),
        ("www.stub.internal.", "192.0.2.99"),
        ("anything.walled.internal.", "192.0.2.80"),
        ("walled.internal.", "192.0.2.80"),
        ("www.intra.internal.", "192.0.2.7"),
        // A forward zone wins over the built-in RFC 6303 zone it lies in.
        ("1.0.0.10.in-addr.arpa.", "192.0.2.99"),
    ] {
        let r = dnssec(name);
        assert_eq!((r.rcode(), r.rdata(A), r.ad()), (ResponseCode::NoError, vec![want.to_string()], false), "{name}");
    }
    let r = dnssec("nope.intra.internal.");
    assert_eq!((r.rcode(), r.ad()), (ResponseCode::NXDomain, false));
    let r = d.query("alias.intra.internal.", A);
    assert_eq!(r.rdata(RecordType::CNAME), ["www.alpha.lab."]);
    assert_eq!(r.rdata(A), ["192.0.2.10"], "the chain goes on into the public tree");
    // A forwarded signed zone is validated through the public chain of trust: secure
    // data is AD, and data whose signatures expired is SERVFAIL with EDE 7.
    let r = dnssec("www.alpha.lab.");
    assert_eq!((r.rdata(A), r.ad()), (vec!["192.0.2.10".to_string()], true));
    let r = dnssec("www.expired.lab.");
    assert_eq!((r.rcode(), r.ede().map(|e| e.0)), (ResponseCode::ServFail, Some(7)));
    // Outside the zones, resolution is as before.
    assert_eq!(d.query("www.beta.lab.", A).rcode(), ResponseCode::NoError);
}

/// A stub zone's queries go without RD: a server that answers only recursive queries
/// refuses them, and the answer is SERVFAIL (never the public tree's NXDOMAIN).
#[test]
fn a_stub_zone_asks_without_rd() {
    let _rec = Hostile::start("recursor", "rd.internal.", "127.53.40.22");
    let (_dir, cfg) = temp_config(
        "[[zones]]\nname = \"rd.internal.\"\nkind = \"stub\"\nservers = [\"127.53.40.22\"]\ninsecure = true\n",
    );
    let d = Adoxd::lab(&["--workers", "1", "--config", cfg.to_str().unwrap()]);
    assert_eq!(d.query("www.rd.internal.", A).rcode(), ResponseCode::ServFail);
}

/// Zones change through the API without a restart: a forward zone set by `PUT /v1/zones`
/// answers at once (the cached NXDOMAIN from the public tree is flushed), is kept in the
/// state directory, and goes when the list is emptied. A bad list is refused with the
/// field and changes nothing.
#[test]
fn zones_change_through_the_api_without_a_restart() {
    let _fwd = Hostile::start("recursor", "api.internal.", "127.53.40.21");
    let state = crate::support::tempdir::Dir::new();
    let d = Adoxd::lab(&["--workers", "1", "--state-dir", state.path().to_str().unwrap()]);
    assert_eq!(d.query("www.api.internal.", A).rcode(), ResponseCode::NXDomain, "the public tree has no internal.");
    let c = d.admin();
    let zone = json!({"name": "api.internal", "kind": "forward", "servers": ["127.53.40.21"], "insecure": true});
    let r = c.send_json("PUT", "/v1/zones", &json!({"zones": [zone]})).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json().unwrap()["api"][0]["name"], "api.internal");
    assert_eq!(d.query("www.api.internal.", A).rdata(A), ["192.0.2.99"]);
    let saved = std::fs::read_to_string(state.path().join("zones.json")).unwrap();
    assert!(saved.contains("api.internal"), "{saved}");
    for (bad, field) in [
        (json!({"zones": [{"name": "x.internal", "kind": "forward"}]}), "zones[0].servers"),
        (
            json!({"zones": [{"name": "x.internal", "kind": "forward", "servers": ["not-an-ip"]}]}),
            "zones[0].servers[0]",
        ),
        (
            json!({"zones": [{"name": "x.internal", "kind": "local", "records": ["www A 300.1.1.1"]}]}),
            "zones[0].records[0]",
        ),
        (json!({"zones": [{"name": "x.internal", "kind": "teleport"}]}), ""),
        (json!({"zones": [{"name": "x.internal", "kind": "local", "extra": 1}]}), ""),
    ] {
        let r = c.send_json("PUT", "/v1/zones", &bad).unwrap();
        assert_eq!(r.status, 422, "{bad}: {}", r.text());
        let body = r.json().unwrap();
        if !field.is_empty() {
            assert_eq!(body["field"], field, "{body}");
        }
    }
    assert_eq!(c.get("/v1/zones").unwrap().json().unwrap()["api"].as_array().unwrap().len(), 1, "unchanged");
    assert_eq!(d.query("www.api.internal.", A).rdata(A), ["192.0.2.99"]);
    let r = c.send_json("PUT", "/v1/zones", &json!({"zones": []})).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(d.query("www.api.internal.", A).rcode(), ResponseCode::NXDomain, "gone, and its answers with it");
}
