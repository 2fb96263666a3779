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

/// One query from `source` (a loopback address), its answer if one came within 2 s.
fn ask_from(source: &str, d: &Adoxd, name: &str) -> Option<Response> {
    let s = std::net::UdpSocket::bind((source, 0)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
    s.send_to(&Ask::new(name, RecordType::A).wire(), d.addr).unwrap();
    let mut buf = [0u8; 4096];
    s.recv_from(&mut buf).ok().map(|(n, _)| Response::parse(buf[..n].to_vec()))
}

/// Reload on SIGHUP (issue 13): under a steady load of hits and misses from an allowed
/// client, a reload that narrows the client ACL loses none of its queries, and the new
/// ACL applies at once to the client it no longer allows. A file that does not validate
/// is refused and the running ACL stays.
#[test]
fn a_sighup_reload_changes_the_client_acl_and_loses_no_query() {
    let dir = crate::support::tempdir::Dir::new();
    let cfg = dir.path().join("adox.toml");
    std::fs::write(&cfg, "[access]\nallow_clients = [\"127.0.0.0/8\"]\n").unwrap();
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(ask_from("127.0.0.2", &d, "www.alpha.lab.").unwrap().rcode(), ResponseCode::NoError);
    let hup = |d: &Adoxd, marker: &str| {
        let seen = d.log().matches(marker).count();
        assert!(std::process::Command::new("kill").args(["-HUP", &d.pid().to_string()]).status().unwrap().success());
        let start = std::time::Instant::now();
        while d.log().matches(marker).count() == seen && start.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(d.log().matches(marker).count() > seen, "no `{marker}` after SIGHUP:\n{}", d.log());
    };
    std::thread::scope(|scope| {
        let load = scope.spawn(|| {
            let (mut answered, mut lost, mut refused) = (0, 0, 0);
            for i in 0..600u32 {
                // Half cache hits, half misses (fresh names: NXDOMAIN from alpha.lab.).
                let name = if i % 2 == 0 { "www.alpha.lab.".to_string() } else { format!("reload{i}.alpha.lab.") };
                match ask_from("127.0.0.1", &d, &name) {
                    Some(r) if r.rcode() == ResponseCode::Refused => refused += 1,
                    Some(_) => answered += 1,
                    None => lost += 1,
                }
                std::thread::sleep(std::time::Duration::from_millis(3));
            }
            (answered, lost, refused)
        });
        std::thread::sleep(std::time::Duration::from_millis(800));
        std::fs::write(&cfg, "[access]\nallow_clients = [\"127.0.0.1/32\", \"192.0.2.0/24\"]\n").unwrap();
        hup(&d, "configuration reloaded");
        let (answered, lost, refused) = load.join().unwrap();
        assert_eq!((answered, lost, refused), (600, 0, 0), "queries lost or refused across the reload");
    });
    let r = ask_from("127.0.0.2", &d, "www.alpha.lab.").unwrap();
    assert_eq!((r.rcode(), r.ede().map(|e| e.0)), (ResponseCode::Refused, Some(18)), "the new ACL applies");
    // A file that does not validate: refused with the reason, the running ACL stays.
    std::fs::write(&cfg, "[access]\nallow_clients = [\"not-a-prefix\"]\n").unwrap();
    hup(&d, "configuration not reloaded");
    assert!(d.log().contains("access.allow_clients"), "the reason names the field:\n{}", d.log());
    assert_eq!(ask_from("127.0.0.1", &d, "www.alpha.lab.").unwrap().rcode(), ResponseCode::NoError);
    assert_eq!(ask_from("127.0.0.2", &d, "www.alpha.lab.").unwrap().rcode(), ResponseCode::Refused);
}
