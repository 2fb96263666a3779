//! Special-use names are answered locally (RFC 6761, 7686, 8375, 6303), and each family can
//! be switched off.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::support::{Adoxd, temp_config};

#[test]
fn rfc6761_names_are_answered_without_any_upstream() {
    // The lab's hints without --allow-upstream: any query that tried to leave would be
    // blocked by the upstream ACL and come back SERVFAIL.
    let hints = crate::support::lab_dir().join("root.hints");
    let d = Adoxd::start(&["--root-hints", hints.to_str().unwrap(), "--workers", "1"]);
    assert_eq!(d.query("localhost.", RecordType::A).rdata(RecordType::A), ["127.0.0.1"]);
    assert_eq!(d.query("www.localhost.", RecordType::AAAA).rdata(RecordType::AAAA), ["::1"]);
    for n in ["x.invalid.", "foo.test.", "abc.onion.", "printer.home.arpa.", "4.3.2.10.in-addr.arpa."] {
        assert_eq!(d.query(n, RecordType::A).rcode(), ResponseCode::NXDomain, "{n}");
    }
    assert_eq!(d.query("1.0.0.127.in-addr.arpa.", RecordType::PTR).rdata(RecordType::PTR), ["localhost."]);
    assert_eq!(d.query("test.", RecordType::SOA).rdata(RecordType::SOA).len(), 1);
}

#[test]
fn a_switched_off_family_is_resolved_normally() {
    let (_dir, cfg) = temp_config("[local_zones]\ntest = false\n");
    let hints = crate::support::lab_dir().join("root.hints");
    let d =
        Adoxd::start(&["--config", cfg.to_str().unwrap(), "--root-hints", hints.to_str().unwrap(), "--workers", "1"]);
    // Now `foo.test.` goes to the lab's root, blocked by the upstream ACL: SERVFAIL, not
    // the local NXDOMAIN.
    let r = d.query("foo.test.", RecordType::A);
    assert_eq!(r.rcode(), ResponseCode::ServFail);
    assert_eq!(d.query("x.invalid.", RecordType::A).rcode(), ResponseCode::NXDomain);
}
