//! Experimental DELEG (issue 12; draft-ietf-deleg) against the lab's DELEG-aware parent
//! (`deploy/lab/deleg-parent.py`, dnspython, signed): R9 by the owner. One nameserver,
//! ns.shared.lab. (NSD, Do53 and DoT), serves two zones whose parent's signed DELEG
//! records differ: enc.dlg.lab. asks for DoT (`alpn=dot`), clear.dlg.lab. names no
//! transport. Signals and probing are off, so nothing but the DELEG records decides.

use hickory_proto::rr::RecordType;
use serde_json::Value;

use crate::encrypted::{Capture, config};
use crate::support::Adoxd;

const SWITCHES_OFF: &str = "signals = false\nprobing = false\n";

/// The plan sources of explain's exchanges with `zone`.
fn plan_sources(d: &Adoxd, name: &str, zone: &str) -> Vec<String> {
    let r = d.admin().request("GET", &format!("/v1/explain?name={name}&type=A"), &[], None).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let e: Value = r.json().unwrap();
    let steps = e["steps"].as_array().unwrap();
    steps
        .iter()
        .filter(|s| s["step"] == "exchange" && s["zone"] == zone)
        .map(|s| format!("{} {}", s["plan"]["source"].as_str().unwrap(), s["plan"]["mode"].as_str().unwrap()))
        .collect()
}

#[test]
fn deleg_one_server_two_zones_two_owner_chosen_transports() {
    let (_d, cfg) = config("", &format!("deleg = true\n{SWITCHES_OFF}"));
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap()]);
    let cap = Capture::start("deleg-shared", "host 127.53.9.1 and port 53");
    assert_eq!(d.query("www.enc.dlg.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.151"]);
    assert_eq!(d.query("www.clear.dlg.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.152"]);
    let packets = cap.stop();
    assert!(!packets.iter().any(|p| p.contains("enc.dlg")), "cleartext query for the DoT zone: {packets:?}");
    assert!(packets.iter().any(|p| p.contains("clear.dlg")), "the other zone went over Do53: {packets:?}");
    // Explain names the DELEG record as the reason (asked for new names: the cached
    // answers above would show no exchange).
    assert_eq!(plan_sources(&d, "new.enc.dlg.lab", "enc.dlg.lab."), ["deleg:secure strict"]);
    assert_eq!(plan_sources(&d, "new.clear.dlg.lab", "clear.dlg.lab."), ["default cleartext"]);
    let log = d.terminate();
    assert!(Adoxd::stat(&log, "deleg_secure") >= 2, "both DELEG RRsets validated to the lab's root");
    assert_eq!(Adoxd::stat(&log, "deleg_bogus"), 0);
    assert!(Adoxd::stat(&log, "upstream_dot") >= 2);
    assert_eq!(Adoxd::stat(&log, "strict_failures"), 0);
}

/// The same lab with `transport.deleg` off (the default): no DE bit, so the parent sends
/// no DELEG, and both zones go over Do53. It shows that the DELEG path is what encrypted
/// enc.dlg.lab. above.
#[test]
fn without_the_switch_deleg_is_neither_asked_for_nor_used() {
    let (_d, cfg) = config("", SWITCHES_OFF);
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap()]);
    let cap = Capture::start("deleg-off", "host 127.53.9.1 and port 53");
    assert_eq!(d.query("www.enc.dlg.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.151"]);
    let packets = cap.stop();
    assert!(packets.iter().any(|p| p.contains("enc.dlg")), "without DELEG the zone is Do53: {packets:?}");
    let log = d.terminate();
    assert_eq!(Adoxd::stat(&log, "deleg_secure") + Adoxd::stat(&log, "deleg_insecure"), 0);
    assert_eq!(Adoxd::stat(&log, "upstream_dot"), 0);
}
