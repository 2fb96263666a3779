//! Client access control: clients outside the allowed prefixes get REFUSED with EDE 18
//! (Prohibited) over UDP, their TCP connections are closed at accept, and a flood of them
//! changes nothing.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::support::{Adoxd, Ask, Response, temp_config, udp_exchange};

fn refusing_daemon() -> (crate::support::tempdir::Dir, Adoxd) {
    // Only a documentation prefix is allowed: the loopback test client is refused.
    let (dir, cfg) = temp_config("[access]\nallow_clients = [\"192.0.2.0/24\"]\n");
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap()]);
    (dir, d)
}

#[test]
fn refused_client_gets_refused_with_ede_prohibited() {
    let (_dir, d) = refusing_daemon();
    let r = d.query("www.alpha.lab.", RecordType::A);
    assert_eq!(r.rcode(), ResponseCode::Refused);
    assert!(r.msg.answers.is_empty());
    assert_eq!(r.ede().map(|e| e.0), Some(18));
}

#[test]
fn allow_client_flag_adds_a_prefix() {
    let (_dir, cfg) = temp_config("[access]\nallow_clients = [\"192.0.2.0/24\"]\n");
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap(), "--allow-client", "127.0.0.0/8"]);
    assert_eq!(d.query("www.alpha.lab.", RecordType::A).rcode(), ResponseCode::NoError);
}

#[test]
fn flood_from_refused_prefix_gets_nothing_but_refused() {
    let (_dir, mut d) = refusing_daemon();
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_millis(200))).unwrap();
    let mut answers = 0;
    let mut buf = [0u8; 4096];
    for i in 0..3000u32 {
        // Valid queries and malformed ones alike.
        let bytes = if i % 3 == 0 {
            vec![(i >> 8) as u8, i as u8, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xff, 0xff]
        } else {
            Ask::new(&format!("q{i}.alpha.lab."), RecordType::A).wire()
        };
        sock.send_to(&bytes, d.addr).unwrap();
        if i % 50 == 49 {
            // Drain what came back so far; every answer must be REFUSED.
            while let Ok((n, _)) = sock.recv_from(&mut buf) {
                answers += 1;
                assert_eq!(buf[3] & 0x0F, 5, "answer {answers} is not REFUSED");
                let _ = n;
            }
        }
    }
    while let Ok((_, _)) = sock.recv_from(&mut buf) {
        answers += 1;
        assert_eq!(buf[3] & 0x0F, 5);
    }
    assert!(answers > 1000, "only {answers} answers");
    assert!(d.alive());
    // Still serving: a well-formed query still gets REFUSED promptly.
    let r = udp_exchange(d.addr, &Ask::new("www.alpha.lab.", RecordType::A).wire(), std::time::Duration::from_secs(2));
    assert_eq!(Response::parse(r.expect("answer after the flood")).rcode(), ResponseCode::Refused);
}
