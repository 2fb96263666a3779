//! Many clients at once, over UDP and TCP, all answered right; TCP pipelining with
//! out-of-order completion (RFC 7766 section 6.2.1.1).

use std::collections::HashMap;
use std::sync::Arc;

use hickory_proto::rr::RecordType;

use crate::support::{Adoxd, Ask, Response, read_frame, write_frame};

const NAMES: [(&str, &str); 6] = [
    ("www.alpha.lab.", "192.0.2.10"),
    ("mail.alpha.lab.", "192.0.2.25"),
    ("www.beta.lab.", "192.0.2.20"),
    ("www.c.b.a.deep.lab.", "192.0.2.31"),
    ("www.noglue.lab.", "192.0.2.40"),
    ("foo.wild.alpha.lab.", "192.0.2.99"),
];

#[test]
fn many_clients_at_once_all_answers_right() {
    let d = Arc::new(Adoxd::lab(&[]));
    let threads: Vec<_> = (0..48)
        .map(|t| {
            let d = d.clone();
            std::thread::spawn(move || {
                for i in 0..40 {
                    let (name, want) = NAMES[(t + i) % NAMES.len()];
                    let ask = Ask::new(name, RecordType::A);
                    let r = if (t + i) % 5 == 0 { d.ask_tcp(&ask) } else { d.ask(&ask) };
                    assert_eq!(r.msg.metadata.id, ask.id);
                    assert_eq!(r.rdata(RecordType::A), [want], "thread {t} query {i} {name}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn rfc7766_pipelined_queries_on_one_connection() {
    let d = Adoxd::lab(&[]);
    // Warm one name so that its answer is ready before the others (out of order).
    d.query("www.alpha.lab.", RecordType::A);
    let mut s = std::net::TcpStream::connect(d.addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(15))).unwrap();
    let mut sent = HashMap::new();
    for (i, (name, want)) in NAMES.iter().enumerate().rev() {
        let mut ask = Ask::new(name, RecordType::A);
        ask.id = 1000 + i as u16;
        write_frame(&mut s, &ask.wire());
        sent.insert(ask.id, *want);
    }
    for _ in 0..NAMES.len() {
        let r = Response::parse(read_frame(&mut s).expect("pipelined answer"));
        let want = sent.remove(&r.msg.metadata.id).expect("an ID we sent, once");
        assert_eq!(r.rdata(RecordType::A), [want]);
    }
    assert!(sent.is_empty());
}

#[test]
fn identical_questions_in_flight_share_one_resolution() {
    // Signal lookups and probes would add queries of their own: off, to count the walk.
    let (_dir, cfg) = crate::support::temp_config("[transport]\nsignals = false\nprobing = false\n");
    let d = Adoxd::lab(&["--workers", "1", "--config", cfg.to_str().unwrap()]);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    // A burst of the same uncached question: read in one batch, resolved once.
    for i in 0..50u16 {
        let mut ask = Ask::new("www.c.b.a.deep.lab.", RecordType::A);
        ask.id = i;
        sock.send_to(&ask.wire(), d.addr).unwrap();
    }
    let mut buf = [0u8; 2048];
    let mut ids = Vec::new();
    for _ in 0..50 {
        let (n, _) = sock.recv_from(&mut buf).expect("every client answered");
        let r = Response::parse(buf[..n].to_vec());
        assert_eq!(r.rdata(RecordType::A), ["192.0.2.31"]);
        ids.push(r.msg.metadata.id);
    }
    ids.sort();
    assert_eq!(ids, (0..50).collect::<Vec<_>>());
    let log = d.terminate();
    let coalesced = Adoxd::stat(&log, "coalesced");
    let upstream = Adoxd::stat(&log, "upstream_udp");
    // How much of the burst lands while the walk is under way depends on scheduling (the
    // tests run in parallel on two cores): some of it must, and the rest are cache hits.
    // Either way one walk serves all fifty.
    assert!(coalesced >= 5, "coalesced={coalesced}");
    assert!(coalesced + Adoxd::stat(&log, "cache_hits") >= 49, "every other query answered from the one walk");
    // Priming plus one walk down five zones, plus the chain of trust down to the insecure
    // delegation (DNSKEY of . and lab., DS of lab. and deep.lab.): a handful of queries,
    // not fifty walks.
    assert!(upstream <= 16, "upstream_udp={upstream}");
}
