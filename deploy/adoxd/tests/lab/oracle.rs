//! The same data and the same DNSSEC verdict as Unbound: for every query of
//! `deploy/lab/names.txt`, asked with DO, adoxd's RCODE, AD bit and answer RRsets (as sets;
//! TTLs, order, RRSIGs, authority and additional aside) equal those of Unbound 1.17
//! iterating over the same lab and validating with the same trust anchor.

use std::process::Command;

use hickory_proto::rr::RecordType;

use crate::support::{Adoxd, Ask, Response, lab_dir, udp_exchange};

/// Unbound run by the lab's peer script on its own port, stopped when dropped.
struct Unbound {
    port: u16,
}

impl Unbound {
    fn start(port: u16) -> Self {
        let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/lab/peer"))
            .args(["unbound", "up", lab_dir().to_str().unwrap(), &port.to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "unbound did not start: {}", String::from_utf8_lossy(&out.stderr));
        Self { port }
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/lab/peer"))
            .args(["unbound", "down", lab_dir().to_str().unwrap(), &self.port.to_string()])
            .output();
    }
}

fn ask(addr: std::net::SocketAddr, name: &str, rtype: RecordType) -> Response {
    let a = Ask::new(name, rtype).dnssec();
    for _ in 0..3 {
        if let Some(r) = udp_exchange(addr, &a.wire(), std::time::Duration::from_secs(8)) {
            let r = Response::parse(r);
            if !r.tc() {
                return r;
            }
            // Same for both: compare the full answer over TCP.
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_secs(8))).unwrap();
            crate::support::write_frame(&mut s, &a.wire());
            return Response::parse(crate::support::read_frame(&mut s).expect("TCP answer"));
        }
    }
    panic!("no answer from {addr} for {name} {rtype:?}");
}

#[test]
fn same_rcode_ad_bit_and_answer_rrsets_as_unbound_for_every_lab_name_and_generated_ones() {
    let names = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/lab/names.txt")).unwrap();
    let unbound = Unbound::start(5391);
    // The comparison is of data and DNSSEC verdicts; transport choices (a strict DANE
    // server whose TLSA cannot authenticate fails by design) are tested elsewhere.
    let (_dir, cfg) = crate::support::temp_config("[transport]\nsignals = false\nprobing = false\n");
    let adox = Adoxd::lab(&["--config", cfg.to_str().unwrap()]);
    let ub: std::net::SocketAddr = format!("127.0.0.1:{}", unbound.port).parse().unwrap();
    let mut compared = 0;
    let mut secure = 0;
    let mut diffs = Vec::new();
    for line in names.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')) {
        let mut parts = line.split_whitespace();
        let (name, rtype) = (parts.next().unwrap(), parts.next().unwrap());
        let rtype: RecordType = rtype.parse().unwrap();
        let a = ask(adox.addr, name, rtype);
        let u = ask(ub, name, rtype);
        if a.rcode() != u.rcode() || a.ad() != u.ad() || a.answer_set() != u.answer_set() {
            diffs.push(format!(
                "{name} {rtype}: adox {:?} ad={} {:?} {:?} / unbound {:?} ad={} {:?} {:?}",
                a.rcode(),
                a.ad(),
                a.ede(),
                a.answer_set(),
                u.rcode(),
                u.ad(),
                u.ede(),
                u.answer_set()
            ));
        }
        if a.ad() {
            secure += 1;
        }
        compared += 1;
    }
    assert!(compared >= 50, "only {compared} names compared");
    assert!(secure >= 30, "only {secure} secure answers: is validation on?");
    assert!(diffs.is_empty(), "{} of {compared} differ:\n{}", diffs.len(), diffs.join("\n"));
    // Then names nobody wrote down (one Unbound for both: the lab runs one peer at a time).
    let generated = generated_names_differ(adox.addr, ub);
    assert!(generated.is_empty(), "{} generated names differ:\n{}", generated.len(), generated.join("\n"));
}

/// Names nobody wrote down, for the oracle: for every zone of the lab
/// (`deploy/lab/servers.txt`), its apex records, common host names, fresh nonexistent
/// names one and three labels deep, wildcard expansions and the wildcard owner itself,
/// asked with DO. The fresh labels change every run (the seed is in each difference).
fn generated_names_differ(adox: std::net::SocketAddr, ub: std::net::SocketAddr) -> Vec<String> {
    let servers =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/lab/servers.txt")).unwrap();
    let mut zones: Vec<&str> = servers
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter(|z| *z != ".")
        .collect();
    zones.sort();
    zones.dedup();
    assert!(zones.len() >= 30, "{zones:?}");
    let seed = crate::support::rand_id();
    let mut diffs = Vec::new();
    let mut compared = 0;
    for z in &zones {
        let questions = [
            (z.to_string(), RecordType::SOA),
            (z.to_string(), RecordType::NS),
            (z.to_string(), RecordType::DNSKEY),
            (z.to_string(), RecordType::DS),
            (z.to_string(), RecordType::MX),
            (format!("www.{z}"), RecordType::A),
            (format!("www.{z}"), RecordType::AAAA),
            (format!("www.{z}"), RecordType::TXT),
            (format!("n{seed}.{z}"), RecordType::A),
            (format!("a.b.n{seed}.{z}"), RecordType::AAAA),
            (format!("w{seed}.wild.{z}"), RecordType::A),
            (format!("*.wild.{z}"), RecordType::A),
            (format!("ns1.{z}"), RecordType::A),
        ];
        for (name, rtype) in questions {
            let a = ask(adox, &name, rtype);
            let u = ask(ub, &name, rtype);
            if a.rcode() != u.rcode() || a.ad() != u.ad() || a.answer_set() != u.answer_set() {
                diffs.push(format!(
                    "{name} {rtype}: adox {:?} ad={} {:?} / unbound {:?} ad={} {:?}",
                    a.rcode(),
                    a.ad(),
                    a.ede(),
                    u.rcode(),
                    u.ad(),
                    u.ede()
                ));
            }
            compared += 1;
        }
    }
    assert!(compared >= 390, "only {compared} generated names");
    diffs.into_iter().map(|d| format!("seed {seed}: {d}")).collect()
}
