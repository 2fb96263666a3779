//! DNSSEC validation against the lab's signed zones (RFC 4033-4035, 5155, 6840, 8914,
//! 9276), each test named after the rule it checks. `oracle.rs` compares every verdict
//! (RCODE, AD) with Unbound's; these check what a verdict does not show: the Extended DNS
//! Errors, CD, the switches, the limits and the start-up errors.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::support::{Adoxd, Ask, Response, lab_dir, temp_config};

const A: RecordType = RecordType::A;

fn with_do(d: &Adoxd, name: &str, rtype: RecordType) -> Response {
    d.ask(&Ask::new(name, rtype).dnssec())
}

fn with_cd(d: &Adoxd, name: &str, rtype: RecordType) -> Response {
    let mut a = Ask::new(name, rtype).dnssec();
    a.cd = true;
    d.ask(&a)
}

fn assert_secure(r: &Response, rcode: ResponseCode, what: &str) {
    assert_eq!(r.rcode(), rcode, "{what}");
    assert!(r.ad(), "{what}: no AD ({:?})", r.ede());
}

#[test]
fn rfc4035_3_2_3_and_rfc6840_5_7_ad_only_for_secure_data_and_clients_that_ask() {
    let d = Adoxd::lab(&["--workers", "1"]);
    assert_secure(&with_do(&d, "www.alpha.lab.", A), ResponseCode::NoError, "DO client");
    let mut ad_client = Ask::new("www.alpha.lab.", A);
    ad_client.ad = true;
    assert!(d.ask(&ad_client).ad(), "a client that set AD (no DO) gets AD");
    assert!(!d.query("www.alpha.lab.", A).ad(), "a client with neither gets no AD");
    // deep.lab. is delegated without DS (NSEC proves it): data, never AD.
    let r = with_do(&d, "www.c.b.a.deep.lab.", A);
    assert_eq!((r.rcode(), r.ad()), (ResponseCode::NoError, false));
    assert_eq!(r.rdata(A), ["192.0.2.31"]);
    // A chain from secure zones into the insecure one is not secure as a whole.
    assert!(!with_do(&d, "start.alpha.lab.", A).ad());
    assert!(with_do(&d, "start.alpha.lab.", RecordType::CNAME).ad());
}

#[test]
fn rfc8624_3_1_algorithms_8_13_and_15_validate() {
    let d = Adoxd::lab(&["--workers", "1"]);
    for (name, alg) in [("www.rsa.lab.", 8), ("www.alpha.lab.", 13), ("www.ed.lab.", 15)] {
        assert_secure(&with_do(&d, name, A), ResponseCode::NoError, &format!("algorithm {alg}"));
    }
}

#[test]
fn rfc4035_5_4_and_rfc5155_8_denials_of_existence_are_secure() {
    let d = Adoxd::lab(&["--workers", "1"]);
    // NSEC (alpha.lab.): NXDOMAIN and NODATA.
    assert_secure(&with_do(&d, "nonexistent.alpha.lab.", A), ResponseCode::NXDomain, "NSEC NXDOMAIN");
    assert_secure(&with_do(&d, "nodata.alpha.lab.", RecordType::AAAA), ResponseCode::NoError, "NSEC NODATA");
    // NSEC3 (rsa.lab.): NXDOMAIN (closest encloser proof) and NODATA.
    assert_secure(&with_do(&d, "nonexistent.rsa.lab.", A), ResponseCode::NXDomain, "NSEC3 NXDOMAIN");
    assert_secure(&with_do(&d, "www.rsa.lab.", RecordType::AAAA), ResponseCode::NoError, "NSEC3 NODATA");
    // The proof that a delegation has no DS is secure too.
    assert_secure(&with_do(&d, "deep.lab.", RecordType::DS), ResponseCode::NoError, "no DS");
}

#[test]
fn rfc4035_5_3_4_wildcard_expansions_are_secure_with_their_proof() {
    let d = Adoxd::lab(&["--workers", "1"]);
    for name in ["x.wild.alpha.lab.", "x.wild.rsa.lab.", "x.wild.ed.lab."] {
        let r = with_do(&d, name, A);
        assert_secure(&r, ResponseCode::NoError, name);
        assert_eq!(r.msg.answers.iter().filter(|r| r.record_type() == A).count(), 1, "{name}");
    }
}

#[test]
fn rfc4035_5_5_bogus_is_servfail_with_an_ede_naming_the_zone_and_cd_gets_the_data() {
    let d = Adoxd::lab(&["--workers", "1"]);
    // (name, EDE INFO-CODE of RFC 8914, zone in EXTRA-TEXT)
    let cases = [
        ("www.expired.lab.", 7, "expired.lab."), // Signature Expired (2 days: beyond the skew)
        ("www.wrongds.lab.", 9, "wrongds.lab."), // DNSKEY Missing: no key matches the DS
        ("www.nokey.lab.", 9, "nokey.lab."),     // DNSKEY Missing: the DS's key is not published
        ("www.nosig.lab.", 10, "nosig.lab."),    // RRSIGs Missing
        ("www.notyet.lab.", 8, "notyet.lab."),   // Signature Not Yet Valid (3 days ahead)
    ];
    for (name, ede, zone) in cases {
        let r = with_do(&d, name, A);
        assert_eq!(r.rcode(), ResponseCode::ServFail, "{name}");
        let (code, text) = r.ede().unwrap_or_else(|| panic!("{name}: no EDE"));
        assert_eq!(code, ede, "{name}: {text}");
        assert!(text.contains(zone), "{name}: EXTRA-TEXT {text:?} does not name {zone}");
        // CD: the client validates itself and gets the data, without AD.
        let r = with_cd(&d, name, A);
        assert_eq!((r.rcode(), r.ad()), (ResponseCode::NoError, false), "{name} with CD");
        assert_eq!(r.rdata(A).len(), 1, "{name} with CD");
    }
    // The rest of the zone with a stripped RRSIG still validates.
    assert_secure(&with_do(&d, "ok.nosig.lab.", A), ResponseCode::NoError, "ok.nosig.lab.");
    // Denials without any NSEC record: NSEC Missing, while the zone's data validates.
    assert_secure(&with_do(&d, "www.nonsec.lab.", A), ResponseCode::NoError, "www.nonsec.lab.");
    for (name, rtype) in [("nonexistent.nonsec.lab.", A), ("www.nonsec.lab.", RecordType::AAAA)] {
        let r = with_do(&d, name, rtype);
        assert_eq!(r.rcode(), ResponseCode::ServFail, "{name} {rtype}");
        assert!(matches!(r.ede(), Some((12, ref t)) if t.contains("nonsec.lab.")), "{name}: {:?}", r.ede());
    }
    // A broken NSEC3 chain: the NXDOMAIN cannot be proven (DNSSEC Bogus or NSEC Missing).
    let r = with_do(&d, "missing.badnsec3.lab.", A);
    assert_eq!(r.rcode(), ResponseCode::ServFail);
    assert!(matches!(r.ede(), Some((6 | 12, _))), "{:?}", r.ede());
    // Explain says so too: the status, and the EDE.
    let e = d.admin().get("/v1/explain?name=www.expired.lab&type=A").unwrap().json().unwrap();
    assert_eq!((e["rcode"].as_str(), e["dnssec"].as_str()), (Some("SERVFAIL"), Some("bogus")), "{e}");
    assert!(e["error"].as_str().unwrap().starts_with("EDE 7: expired.lab."), "{e}");
    let e = d.admin().get("/v1/explain?name=www.alpha.lab&type=A").unwrap().json().unwrap();
    assert_eq!(e["dnssec"], "secure", "{e}");
    let log = d.terminate();
    assert!(Adoxd::stat(&log, "dnssec_bogus") >= 5);
    assert!(Adoxd::stat(&log, "dnssec_secure") >= 1);
}

#[test]
fn rfc9276_3_2_nsec3_iterations_above_the_limit_are_insecure_with_ede_27() {
    let d = Adoxd::lab(&["--workers", "1"]);
    let r = with_do(&d, "nonexistent.iter.lab.", A);
    assert_eq!((r.rcode(), r.ad()), (ResponseCode::NXDomain, false));
    assert!(matches!(r.ede(), Some((27, ref t)) if t.contains("iter.lab.")), "{:?}", r.ede());
    // A positive answer needs no NSEC3: secure.
    assert_secure(&with_do(&d, "www.iter.lab.", A), ResponseCode::NoError, "www.iter.lab.");
    // With the limit raised, the same denial is secure.
    let (_dir, cfg) = temp_config("[dnssec]\nnsec3_max_iterations = 500\n");
    let d = Adoxd::lab(&["--workers", "1", "--config", cfg.to_str().unwrap()]);
    assert_secure(&with_do(&d, "nonexistent.iter.lab.", A), ResponseCode::NXDomain, "limit 500");
}

#[test]
fn rfc5155_6_opt_out_delegation_to_an_unsigned_child_is_insecure() {
    let d = Adoxd::lab(&["--workers", "1"]);
    let r = with_do(&d, "www.unsigned.optout.lab.", A);
    assert_eq!((r.rcode(), r.ad()), (ResponseCode::NoError, false), "{:?}", r.ede());
    assert_eq!(r.rdata(A), ["192.0.2.83"]);
    // The signed parent itself validates.
    assert!(with_do(&d, "optout.lab.", RecordType::SOA).ad());
}

/// RFC 5155 section 8.9 without opt-out: rsa.lab. (ldns-signzone, NSEC3) gives its unsigned
/// child's cut an NSEC3 of its own (NS, no DS). Both the referral's proof and the DS query's
/// NODATA are secure; the child's data is insecure, never bogus.
#[test]
fn rfc5155_8_9_nsec3_delegation_without_opt_out_to_an_unsigned_child_is_insecure() {
    let d = Adoxd::lab(&["--workers", "1"]);
    let r = with_do(&d, "www.child.rsa.lab.", A);
    assert_eq!((r.rcode(), r.ad()), (ResponseCode::NoError, false), "{:?}", r.ede());
    assert_eq!(r.rdata(A), ["192.0.2.89"]);
    let ds = with_do(&d, "child.rsa.lab.", RecordType::DS);
    assert_eq!((ds.rcode(), ds.ad(), ds.rdata(RecordType::DS).len()), (ResponseCode::NoError, true, 0));
    // Asked in the other order by a fresh resolver: the DS query first, then the data.
    let d = Adoxd::lab(&["--workers", "1"]);
    assert!(with_do(&d, "child.rsa.lab.", RecordType::DS).ad());
    assert_eq!(with_do(&d, "www.child.rsa.lab.", A).rdata(A), ["192.0.2.89"]);
}

#[test]
fn a_dnskey_trust_anchor_works_like_the_ds() {
    let key = lab_dir().join("trust-anchor.dnskey");
    let d = Adoxd::lab(&["--workers", "1", "--trust-anchor", key.to_str().unwrap()]);
    assert_secure(&with_do(&d, "www.beta.lab.", A), ResponseCode::NoError, "DNSKEY anchor");
}

#[test]
fn a_custom_root_without_trust_anchor_validates_nothing_and_says_so() {
    let hints = lab_dir().join("root.hints");
    let d =
        Adoxd::start(&["--root-hints", hints.to_str().unwrap(), "--allow-upstream", "127.0.0.0/8", "--workers", "1"]);
    let r = with_do(&d, "www.alpha.lab.", A);
    assert_eq!((r.rcode(), r.ad()), (ResponseCode::NoError, false));
    // Not validated, so not bogus either.
    assert_eq!(with_do(&d, "www.expired.lab.", A).rcode(), ResponseCode::NoError);
    assert!(d.log().contains("no trust anchor"), "start-up says so:\n{}", d.log());
    let ready = d.api_client(None).get("/readyz").unwrap().json().unwrap();
    assert!(ready["detail"].to_string().contains("trust anchor"), "{ready}");
}

#[test]
fn dnssec_off_and_negative_trust_anchors_skip_validation() {
    let d = Adoxd::lab(&["--workers", "1", "--dnssec", "off"]);
    assert_eq!(with_do(&d, "www.expired.lab.", A).rcode(), ResponseCode::NoError);
    assert!(!with_do(&d, "www.alpha.lab.", A).ad());
    // RFC 7646: a negative trust anchor turns one broken zone insecure, and only it.
    let (_dir, cfg) = temp_config("[dnssec]\nnegative_trust_anchors = [\"expired.lab\"]\n");
    let d = Adoxd::lab(&["--workers", "1", "--config", cfg.to_str().unwrap()]);
    let r = with_do(&d, "www.expired.lab.", A);
    assert_eq!((r.rcode(), r.ad()), (ResponseCode::NoError, false));
    assert_eq!(with_do(&d, "www.wrongds.lab.", A).rcode(), ResponseCode::ServFail);
    assert!(with_do(&d, "www.alpha.lab.", A).ad());
}

#[test]
fn a_bad_trust_anchor_file_stops_the_start_naming_its_line() {
    let (_dir, bad) = temp_config("; an anchor file\nlab. 3600 IN A 192.0.2.1\n");
    for (file, needle) in [
        (bad.to_str().unwrap(), "line 2: record type A: only DS and DNSKEY are trust anchors"),
        ("/nonexistent/anchor.ds", "trust anchor file /nonexistent/anchor.ds"),
    ] {
        let state = crate::support::tempdir::Dir::new();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_adoxd"))
            .args(["--trust-anchor", file, "--listen", "127.0.0.1:0", "--api", "off", "--workers", "1"])
            .arg("--state-dir")
            .arg(state.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{file} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{file}: {err}");
    }
}

/// RFC 4035 section 5.2: a DS RRset that lists only algorithms (or digest types) the
/// validator does not support leaves no authentication path: the zone is insecure, and
/// the answer says why (EDE 1 Unsupported DNSKEY Algorithm, EDE 2 Unsupported DS Digest
/// Type).
#[test]
fn rfc4035_5_2_unsupported_ds_algorithm_or_digest_makes_the_zone_insecure() {
    let d = Adoxd::lab(&["--workers", "1"]);
    for (name, ede) in [("www.unsupalg.lab.", 1), ("www.unsupdigest.lab.", 2)] {
        let r = with_do(&d, name, A);
        assert_eq!((r.rcode(), r.ad()), (ResponseCode::NoError, false), "{name}");
        assert_eq!(r.rdata(A).len(), 1, "{name}");
        assert!(matches!(r.ede(), Some((code, _)) if code == ede), "{name}: {:?}", r.ede());
    }
}

/// A signal that fails validation is ignored and reported, never followed: bogussig.lab.
/// serves DoT with a correct, signed TLSA record, but its `_dns` SVCB RRset is bogus.
#[test]
fn a_bogus_signal_is_ignored_reported_and_never_makes_a_server_strict() {
    let (_d, cfg) = temp_config("[transport]\nprobing = false\n");
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap(), "--workers", "1"]);
    assert_secure(&with_do(&d, "www.bogussig.lab.", A), ResponseCode::NoError, "the zone itself is fine");
    assert_eq!(with_do(&d, "_dns.ns1.bogussig.lab.", RecordType::SVCB).rcode(), ResponseCode::ServFail);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let c = d.admin();
    let e = c.get("/v1/explain?name=n1.bogussig.lab&type=A").unwrap().json().unwrap();
    let x = e["steps"].as_array().unwrap().iter().find(|s| s["step"] == "exchange" && s["zone"] == "bogussig.lab.");
    let x = x.unwrap_or_else(|| panic!("{e}"));
    assert_ne!(x["plan"]["mode"], "strict", "{x}");
    assert_eq!(x["plan"]["source"], "default", "the bogus signal is not used: {x}");
    let servers = c.get("/v1/servers").unwrap().json().unwrap();
    let signal = servers["signals"].as_array().unwrap().iter().find(|s| s["nameserver"] == "ns1.bogussig.lab.");
    let signal = signal.unwrap_or_else(|| panic!("{servers}"));
    assert_eq!(signal["dnssec"], "bogus", "{signal}");
    assert!(signal["refused"][0].as_str().unwrap().starts_with("DNSSEC bogus"), "{signal}");
    let log = d.terminate();
    assert!(Adoxd::stat(&log, "signals_refused") >= 1);
}

/// RFC 7646 through the API: an operator exempts a zone whose signing is broken, at once
/// (the bogus answers already cached are flushed) and across restarts (the list is kept in
/// the state directory); emptying the list restores validation.
#[test]
fn rfc7646_negative_trust_anchors_set_through_the_api_apply_at_once_and_survive_a_restart() {
    use serde_json::json;
    let state = crate::support::tempdir::Dir::new();
    let dir = state.path().to_str().unwrap().to_string();
    let d = Adoxd::lab(&["--workers", "1", "--state-dir", &dir]);
    assert_eq!(with_do(&d, "www.expired.lab.", A).rcode(), ResponseCode::ServFail);
    let c = d.admin();
    let r = c.send_json("PUT", "/v1/dnssec/negative-anchors", &json!({"anchors": ["Expired.LAB"]})).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json().unwrap()["api"], json!(["expired.lab."]));
    let r = with_do(&d, "www.expired.lab.", A);
    assert_eq!((r.rcode(), r.ad()), (ResponseCode::NoError, false), "in force at once");
    assert_eq!(with_do(&d, "www.wrongds.lab.", A).rcode(), ResponseCode::ServFail, "only that zone");
    // Read tokens read; bad names are refused with the field named, and change nothing.
    let reader = d.api_client(Some(crate::support::READ_TOKEN));
    assert_eq!(reader.get("/v1/dnssec/negative-anchors").unwrap().status, 200);
    assert_eq!(reader.send_json("PUT", "/v1/dnssec/negative-anchors", &json!({"anchors": []})).unwrap().status, 403);
    let bad = c.send_json("PUT", "/v1/dnssec/negative-anchors", &json!({"anchors": ["ok.lab", "bad..name"]})).unwrap();
    assert_eq!(bad.status, 422);
    assert_eq!(bad.json().unwrap()["field"], "anchors[1]");
    d.terminate();
    let d = Adoxd::lab(&["--workers", "1", "--state-dir", &dir]);
    assert_eq!(with_do(&d, "www.expired.lab.", A).rcode(), ResponseCode::NoError, "kept across the restart");
    let c = d.admin();
    assert_eq!(c.get("/v1/dnssec/negative-anchors").unwrap().json().unwrap()["api"], json!(["expired.lab."]));
    let r = c.send_json("PUT", "/v1/dnssec/negative-anchors", &json!({"anchors": []})).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(with_do(&d, "www.expired.lab.", A).rcode(), ResponseCode::ServFail, "validated again");
}

#[test]
fn a_damaged_negative_anchor_file_stops_the_start() {
    let state = crate::support::tempdir::Dir::new();
    std::fs::write(state.path().join("negative-anchors.json"), "{\"anchors\": [\"ok.lab\", 7]").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_adoxd"))
        .args(["--listen", "127.0.0.1:0", "--api", "off", "--workers", "1"])
        .arg("--state-dir")
        .arg(state.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("negative trust anchors") && err.contains("negative-anchors.json"), "{err}");
}

/// The sum of every series of one metric in the API's metrics.
fn metric_sum(d: &Adoxd, name: &str) -> u64 {
    let text = d.admin().get("/metrics").unwrap().text();
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// RFC 8198 against a random-subdomain flood: 300 random names under alpha.lab. (NSEC,
/// signed by ldns, served by NSD) are each a secure NXDOMAIN, and once a secure denial
/// has left its NSEC spans in the cache, the names inside them are denied from there:
/// the flood costs fewer upstream queries than the zone has spans (about 20). With
/// `--aggressive-nsec off` (`dnssec.aggressive_nsec = false`), every name goes upstream.
#[test]
fn rfc8198_a_random_subdomain_flood_under_a_signed_zone_is_denied_from_validated_nsec() {
    let flood = |switch: &str| -> (u64, u64) {
        let d = Adoxd::lab(&["--workers", "1", "--aggressive-nsec", switch]);
        assert_secure(&with_do(&d, "www.alpha.lab.", A), ResponseCode::NoError, "warm-up");
        let before = metric_sum(&d, "adox_upstream_queries_total");
        // A fixed linear congruential sequence: random-looking, the same every run.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..300 {
            let label: String = (0..10)
                .map(|_| {
                    x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                    char::from(b'a' + ((x >> 33) % 26) as u8)
                })
                .collect();
            let name = format!("{label}.alpha.lab.");
            assert_secure(&with_do(&d, &name, A), ResponseCode::NXDomain, &name);
        }
        (metric_sum(&d, "adox_upstream_queries_total") - before, metric_sum(&d, "adox_aggressive_nsec_total"))
    };
    let (upstream, synthesized) = flood("on");
    eprintln!("aggressive NSEC on: {upstream} upstream queries, {synthesized} synthesized denials for 300 names");
    assert!(upstream < 40, "upstream queries for 300 random names: {upstream}");
    assert!(synthesized >= 260, "synthesized: {synthesized}");
    let (upstream, synthesized) = flood("off");
    eprintln!("aggressive NSEC off: {upstream} upstream queries");
    assert!(upstream >= 300, "off: every name goes upstream ({upstream})");
    assert_eq!(synthesized, 0);
}

/// A private root (`deploy/lab/rollroot`: NSD, keys and signatures by BIND's tools) that
/// rolls and revokes its KSK while adoxd runs with its first KSK as a managed anchor.
pub(crate) struct RollingRoot {
    dir: crate::support::tempdir::Dir,
}

const ROLLROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/lab/rollroot");

impl RollingRoot {
    /// A private root served at `addr` (apart from the shared lab's; one per test, since
    /// tests run at the same time: 127.53.50.0/24).
    pub(crate) fn up(addr: &str) -> Self {
        let dir = crate::support::tempdir::Dir::new();
        let me = Self { dir };
        me.run(&["up", addr]);
        me
    }

    pub(crate) fn root(&self) -> std::path::PathBuf {
        self.dir.path().join("root")
    }

    fn run(&self, args: &[&str]) -> String {
        let out = std::process::Command::new(ROLLROOT).args(args).arg(self.root()).output().unwrap();
        assert!(out.status.success(), "rollroot {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// The key tags of KSK-1 and KSK-2.
    fn tags(&self) -> (u16, u16) {
        let out = self.run(&["tags"]);
        let mut t = out.split_whitespace().map(|s| s.parse::<u16>().unwrap());
        (t.next().unwrap(), t.next().unwrap())
    }

    /// adoxd on this root with KSK-1's DS as a managed anchor, second-scale RFC 5011
    /// timers, and its state in `state`.
    fn adoxd(&self, state: &std::path::Path, config: &std::path::Path) -> Adoxd {
        let (hints, anchor) = (self.root().join("root.hints"), self.root().join("anchor.ds"));
        Adoxd::lab(&[
            "--config",
            config.to_str().unwrap(),
            "--root-hints",
            hints.to_str().unwrap(),
            "--trust-anchor",
            anchor.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ])
    }
}

impl Drop for RollingRoot {
    fn drop(&mut self) {
        let _ = std::process::Command::new(ROLLROOT).arg("down").arg(self.root()).output();
    }
}

/// The keys in adoxd's RFC 5011 state file: (tag, state, since, until).
fn managed_keys(state: &std::path::Path) -> Vec<(u16, String, u64, u64)> {
    let Ok(text) = std::fs::read_to_string(state.join("managed-anchors.json")) else { return Vec::new() };
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["zones"][0]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["key_tag"].as_u64().unwrap() as u16,
                k["state"].as_str().unwrap().to_string(),
                k["since"].as_u64().unwrap(),
                k["until"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Waits (at most 30 s) until the state file shows `tag` in `state` (`None`: not there).
fn wait_key(dir: &std::path::Path, tag: u16, state: Option<&str>) -> Vec<(u16, String, u64, u64)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let keys = managed_keys(dir);
        let now = keys.iter().find(|k| k.0 == tag).map(|k| k.1.as_str());
        if now == state {
            return keys;
        }
        assert!(std::time::Instant::now() < deadline, "key {tag} never reached {state:?}: {keys:?}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// RFC 5011 against a real rollover: a private root rolls its KSK (KSK-2 published, KSK-1
/// revoked, then removed) while adoxd runs with KSK-1's DS as a managed anchor (add and
/// remove hold-downs of 4 s, refresh floor 1 s; the 30-day defaults are
/// `resolver::tests::managed`). KSK-2 is trusted only after the add hold-down, KSK-1 is
/// revoked by its own signature and forgotten after the remove hold-down, answers stay
/// secure throughout, and a restart with the same (now obsolete) anchor file validates
/// from the state in `state_dir`; without that state the same anchor makes it bogus.
#[test]
fn rfc5011_a_root_ksk_rollover_is_followed_and_survives_a_restart() {
    let root = RollingRoot::up("127.53.50.1");
    let (ksk1, ksk2) = root.tags();
    let state = crate::support::tempdir::Dir::new();
    let (_cfg_dir, cfg) = temp_config(
        "[dnssec]\ntrust_anchor_managed = true\nrfc5011_add_holddown_s = 4\nrfc5011_remove_holddown_s = 4\n\
         rfc5011_min_refresh_s = 1\n",
    );
    let d = root.adoxd(state.path(), &cfg);
    assert_secure(&with_do(&d, "probe.", RecordType::TXT), ResponseCode::NoError, "before the rollover");
    wait_key(state.path(), ksk1, Some("valid"));

    // KSK-2 published: pending for the add hold-down, then trusted.
    root.run(&["phase", "add"]);
    let keys = wait_key(state.path(), ksk2, Some("addpend"));
    let trusted_from = keys.iter().find(|k| k.0 == ksk2).unwrap().3;
    let keys = wait_key(state.path(), ksk2, Some("valid"));
    let since = keys.iter().find(|k| k.0 == ksk2).unwrap().2;
    assert!(since >= trusted_from, "KSK-2 trusted at {since}, before its hold-down ended at {trusted_from}");
    let stats = d.admin().get("/v1/stats").unwrap().json().unwrap();
    let valid = stats["trust_anchor_keys"].as_array().unwrap().iter().filter(|k| k["state"] == "valid").count();
    assert_eq!(valid, 2, "{stats}");
    let metrics = d.admin().get("/metrics").unwrap().text();
    assert!(metrics.contains("adox_trust_anchor_keys{zone=\".\",state=\"valid\"} 2"), "{metrics}");

    // KSK-1 revoked (it signs the RRset with the REVOKE bit): trusted no more at once,
    // forgotten after the remove hold-down; KSK-2 carries the validation.
    root.run(&["phase", "revoke"]);
    wait_key(state.path(), ksk1, Some("revoked"));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_secure(&with_do(&d, "probe.", RecordType::TXT), ResponseCode::NoError, "KSK-1 revoked");
    wait_key(state.path(), ksk1, None);
    root.run(&["phase", "remove"]);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_secure(&with_do(&d, "probe.", RecordType::TXT), ResponseCode::NoError, "KSK-1 removed");
    let log = d.terminate();
    assert!(log.contains(&format!("trust anchor key (RFC 5011) zone=. key_tag={ksk1} state=\"revoked\"")), "{log}");

    // A restart with the same anchor file (KSK-1's DS, matching nothing now): the state
    // from state_dir anchors the root at KSK-2.
    let again = root.adoxd(state.path(), &cfg);
    assert_secure(&with_do(&again, "probe.", RecordType::TXT), ResponseCode::NoError, "after a restart");
    drop(again);
    // Control: the same anchor without that state is KSK-1 alone, and the root is bogus.
    let fresh = crate::support::tempdir::Dir::new();
    let d = root.adoxd(fresh.path(), &cfg);
    let r = with_do(&d, "probe.", RecordType::TXT);
    assert_eq!(r.rcode(), ResponseCode::ServFail, "KSK-1's DS alone no longer validates the root: {:?}", r.ede());
}
