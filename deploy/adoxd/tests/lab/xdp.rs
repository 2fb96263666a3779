//! The AF_XDP path for cache hits (issue 16; built with `--features xdp`, which
//! `deploy/test` runs as a second pass). Each test makes its own network namespace with a
//! veth pair: the client's end in the namespace, adoxd's end in this one with the XDP
//! program on it, so that a query crosses a real (virtual) Ethernet link and the answer
//! comes back through the client's kernel, which checks its checksums.

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::support::{Adoxd, Ask, Response, temp_config};

/// A namespace holding the client's end of a veth pair whose other end (`host`) is here,
/// with IPv4 10.99.N.0/24 and IPv6 fd99:0:0:N::/64 (.1 and ::1 the client, .2 and ::2 us).
/// Dropping it deletes the namespace, and the pair with it.
struct Link {
    ns: String,
    host: String,
    n: u32,
}

fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

impl Link {
    fn new() -> Self {
        // Distinct for every link of every test process (the `cargo test` runner runs the
        // tests as threads of one process).
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let n = (std::process::id() * 3 + k) % 200 + 20;
        let (ns, host, peer) = (format!("adox-xdp-{n}"), format!("axh{n}"), format!("axc{n}"));
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        run(&["ip", "netns", "add", &ns]);
        let link = Self { ns: ns.clone(), host: host.clone(), n };
        run(&["ip", "link", "add", &host, "type", "veth", "peer", "name", &peer]);
        run(&["ip", "link", "set", &peer, "netns", &ns]);
        run(&["ip", "addr", "add", &format!("10.99.{n}.2/24"), "dev", &host]);
        run(&["ip", "addr", "add", &format!("fd99:0:0:{n}::2/64"), "dev", &host, "nodad"]);
        run(&["ip", "link", "set", &host, "up"]);
        for a in [format!("10.99.{n}.1/24"), format!("fd99:0:0:{n}::1/64")] {
            run(&["ip", "-n", &ns, "addr", "add", &a, "dev", &peer, "nodad"]);
        }
        run(&["ip", "-n", &ns, "link", "set", &peer, "up"]);
        run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        link
    }

    fn v4(&self, port: u16) -> SocketAddr {
        format!("10.99.{}.2:{port}", self.n).parse().unwrap()
    }

    fn v6(&self, port: u16) -> SocketAddr {
        format!("[fd99:0:0:{}::2]:{port}", self.n).parse().unwrap()
    }

    /// Runs a Python script in the client's namespace; its standard output.
    fn python(&self, script: &str, args: &[&str]) -> String {
        let out =
            Command::new("ip").args(["netns", "exec", &self.ns, "python3", "-c", script]).args(args).output().unwrap();
        assert!(out.status.success(), "python in {}: {}", self.ns, String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Asks `to` from the client's side, over UDP (or TCP): the answer.
    fn ask(&self, to: SocketAddr, ask: &Ask, tcp: bool) -> Response {
        let hex: String = ask.wire().iter().map(|b| format!("{b:02x}")).collect();
        let text =
            self.python(ASK, &[&to.ip().to_string(), &to.port().to_string(), &hex, if tcp { "tcp" } else { "udp" }]);
        let raw: Vec<u8> = (0..text.trim().len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text.trim()[i..i + 2], 16).unwrap())
            .collect();
        Response::parse(raw)
    }

    /// Whether the XDP program is attached to our end.
    fn attached(&self) -> bool {
        String::from_utf8_lossy(&run(&["ip", "link", "show", &self.host]).stdout).contains("prog/xdp")
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = Command::new("ip").args(["link", "del", &self.host]).output();
    }
}

/// One DNS exchange: address, port, query in hex, udp or tcp; prints the answer in hex.
const ASK: &str = r"
import socket, sys
addr, port, q, proto = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3]), sys.argv[4]
fam = socket.AF_INET6 if ':' in addr else socket.AF_INET
if proto == 'udp':
    s = socket.socket(fam, socket.SOCK_DGRAM); s.settimeout(5); s.sendto(q, (addr, port)); print(s.recv(65535).hex())
else:
    s = socket.create_connection((addr, port), 5); s.sendall(len(q).to_bytes(2, 'big') + q)
    n = int.from_bytes(s.recv(2), 'big'); b = b''
    while len(b) < n: b += s.recv(n - len(b))
    print(b.hex())
";

/// Sends Ethernet frames from the client's end with a packet socket: argv: interface,
/// destination MAC, then frames in hex.
const SEND_FRAMES: &str = r"
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
for f in sys.argv[2:]:
    s.send(bytes.fromhex(f))
";

fn totals(d: &Adoxd) -> serde_json::Value {
    let r = d.admin().get("/v1/stats").unwrap();
    assert_eq!(r.status, 200);
    serde_json::from_str::<serde_json::Value>(&r.text()).unwrap()["totals"].clone()
}

fn counter(d: &Adoxd, key: &str) -> u64 {
    totals(d)[key].as_u64().unwrap_or_else(|| panic!("no {key} in /v1/stats"))
}

fn start(link: &Link, port: u16, extra: &[&str]) -> (Adoxd, crate::support::tempdir::Dir) {
    let (dir, cfg) = temp_config(&format!("[xdp]\nenabled = true\ninterface = \"{}\"\n", link.host));
    let (v4, v6) = (link.v4(port).to_string(), link.v6(port).to_string());
    let mut args = vec!["--config", cfg.to_str().unwrap(), "--listen", &v4, "--listen", &v6];
    args.extend_from_slice(extra);
    let d = Adoxd::lab(&args);
    (d, dir)
}

/// A query frame from the client's end to `to` (IPv4), with `dns` as payload: for the
/// packet socket. `mangle` edits it after it is built.
fn frame(link: &Link, to: SocketAddr, dns: &[u8], mangle: impl Fn(&mut Vec<u8>)) -> String {
    let mac = |ifname: &str, ns: Option<&str>| -> Vec<u8> {
        let path = format!("/sys/class/net/{ifname}/address");
        let text = match ns {
            None => std::fs::read_to_string(path).unwrap(),
            Some(ns) => String::from_utf8(run(&["ip", "netns", "exec", ns, "cat", &path]).stdout).unwrap(),
        };
        text.trim().split(':').map(|h| u8::from_str_radix(h, 16).unwrap()).collect()
    };
    let mut f = mac(&link.host, None);
    f.extend(mac(&format!("axc{}", link.n), Some(&link.ns)));
    f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
    let udp_len = u16::try_from(8 + dns.len()).unwrap();
    f.extend_from_slice(&(20 + udp_len).to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x40, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&[10, 99, u8::try_from(link.n).unwrap(), 1]);
    let SocketAddr::V4(to) = to else { unreachable!() };
    f.extend_from_slice(&to.ip().octets());
    let mut sum: u32 = f[14..34].chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    #[allow(clippy::cast_possible_truncation, reason = "folded to 16 bits")]
    f[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&to.port().to_be_bytes());
    f.extend_from_slice(&udp_len.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(dns);
    mangle(&mut f);
    f.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
#[allow(clippy::too_many_lines, reason = "one path, checked step by step")]
fn cache_hits_are_answered_in_their_frame_and_everything_else_takes_the_kernel_path() {
    let link = Link::new();
    let port = crate::support::free_port();
    let (d, _cfg) = start(&link, port, &["--workers", "1"]);
    assert!(link.attached(), "the program is on {}", link.host);
    assert!(d.log().contains("AF_XDP socket bound"), "{}", d.log());

    // A miss is resolved and answered through the socket; the same question again is a
    // hit, answered in its frame: the same answer, and the client's kernel took it (a bad
    // checksum would have been dropped there, and the client would time out).
    for (to, name) in [(link.v4(port), "www.alpha.lab."), (link.v6(port), "ns1.alpha.lab.")] {
        let before = counter(&d, "xdp_answered");
        let ask = Ask::new(name, RecordType::A);
        let miss = link.ask(to, &ask, false);
        assert_eq!(miss.rcode(), ResponseCode::NoError);
        assert!(!miss.answer_set().is_empty(), "{name}: {:?}", miss.answer_set());
        assert_eq!(counter(&d, "xdp_answered"), before, "{to}: the miss left through the socket");
        let hit = link.ask(to, &ask, false);
        assert_eq!(hit.answer_set(), miss.answer_set(), "{to}");
        assert_eq!(counter(&d, "xdp_answered"), before + 1, "{to}: the hit was answered in its frame");
        // TCP is never redirected.
        let tcp = link.ask(to, &ask, true);
        assert_eq!(tcp.answer_set(), miss.answer_set());
        assert_eq!(counter(&d, "xdp_answered"), before + 1, "{to}: TCP takes the kernel path");
    }

    // UDP to another port of the same address is not ours: it reaches a plain socket.
    let other = std::net::UdpSocket::bind(link.v4(0)).unwrap();
    other.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let echo = r"
import socket, sys
s = socket.socket(); s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b'not for adox', (sys.argv[1], int(sys.argv[2])))
";
    let to = other.local_addr().unwrap();
    link.python(echo, &[&to.ip().to_string(), &to.port().to_string()]);
    let mut buf = [0; 64];
    let (n, _) = other.recv_from(&mut buf).expect("the datagram for another port reached its socket");
    assert_eq!(&buf[..n], b"not for adox");

    // Frames the XDP program lets through but that are not sound datagrams are dropped
    // by the worker, counted, never answered; the worker goes on answering.
    let query = Ask::new("www.alpha.lab.", RecordType::A).wire();
    let to = link.v4(port);
    let dropped = counter(&d, "dropped");
    let queries = counter(&d, "queries_udp");
    let bad = [
        // The UDP length under its header, past the IP packet; the IP length past the frame.
        frame(&link, to, &query, |f| f[38..40].copy_from_slice(&7u16.to_be_bytes())),
        frame(&link, to, &query, |f| f[38..40].copy_from_slice(&2000u16.to_be_bytes())),
        frame(&link, to, &query, |f| f[16..18].copy_from_slice(&1400u16.to_be_bytes())),
        // Source port 0.
        frame(&link, to, &query, |f| f[34..36].fill(0)),
        // A neighbour claiming a loopback source (the default ACL allows loopback): the
        // kernel drops such martians, and so does this path.
        frame(&link, to, &query, |f| f[26..30].copy_from_slice(&[127, 0, 0, 1])),
        // From a broadcast MAC address (its answer would go to every host).
        frame(&link, to, &query, |f| f[6..12].fill(0xff)),
        // A runt DNS message.
        frame(&link, to, &query[..5], |_| {}),
    ];
    let peer = format!("axc{}", link.n);
    let mut args = vec![peer.as_str()];
    args.extend(bad.iter().map(String::as_str));
    link.python(SEND_FRAMES, &args);
    let hit = link.ask(to, &Ask::new("www.alpha.lab.", RecordType::A), false);
    assert_eq!(hit.rdata(RecordType::A), vec!["192.0.2.10"], "still answering");
    assert_eq!(counter(&d, "dropped") - dropped, 7, "each bad frame dropped once");
    assert_eq!(counter(&d, "queries_udp") - queries, 2, "the runt and the good query were DNS traffic");
    // A frame for another MAC address (a VRRP virtual MAC, say) is the kernel's to judge:
    // the program passes it, adoxd never sees it.
    let (dropped, queries) = (counter(&d, "dropped"), counter(&d, "queries_udp"));
    let other = frame(&link, to, &query, |f| f[0] ^= 0x02);
    link.python(SEND_FRAMES, &[&peer, &other]);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!((counter(&d, "dropped"), counter(&d, "queries_udp")), (dropped, queries), "not redirected");

    // A sound frame sent by hand, with no UDP checksum (allowed over IPv4): answered.
    let answered = counter(&d, "xdp_answered");
    let good = frame(&link, to, &query, |_| {});
    link.python(SEND_FRAMES, &[&peer, &good]);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(counter(&d, "xdp_answered"), answered + 1);

    // A burst: 600 queries sent at once, then silence. Every answer arrives (in copy mode
    // the kernel sends at most 32 frames per wake-up; none may wait for a next query).
    let burst = r"
import socket, sys
addr, port, q = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 33, 1 << 23)  # SO_RCVBUFFORCE: past net.core.rmem_max
for i in range(600):
    s.sendto(i.to_bytes(2, 'big') + q[2:], (addr, port))
s.settimeout(3); got = set()
try:
    while len(got) < 600:
        got.add(int.from_bytes(s.recv(4096)[:2], 'big'))
except socket.timeout:
    pass
print(len(got))
";
    let hex: String = query.iter().map(|b| format!("{b:02x}")).collect();
    let (before, asked) = (counter(&d, "xdp_answered"), counter(&d, "queries_udp"));
    let got = link.python(burst, &[&to.ip().to_string(), &port.to_string(), &hex]);
    let (fast, read) = (counter(&d, "xdp_answered") - before, counter(&d, "queries_udp") - asked);
    let stats = |args: &[&str]| String::from_utf8_lossy(&run(args).stdout).to_string();
    assert_eq!(
        got.trim(),
        "600",
        "answers to a burst of 600 ({read} read, {fast} answered in their frames; kernel drops at the socket: {})\n{}\n{}",
        {
            std::thread::sleep(Duration::from_millis(600));
            counter(&d, "xdp_dropped")
        },
        stats(&["ip", "-s", "link", "show", &link.host]),
        stats(&["ip", "-n", &link.ns, "-s", "link", "show", &peer]),
    );
    assert!(fast >= 500, "mostly in their frames: {fast}");

    // Load through the path: every query answered, nearly all in their frames.
    let names = tempfile_with("www.alpha.lab A\nwww.alpha.lab AAAA\nalpha.lab SOA\n");
    for (name, t) in [("www.alpha.lab.", RecordType::AAAA), ("alpha.lab.", RecordType::SOA)] {
        link.ask(to, &Ask::new(name, t), false);
    }
    let before = counter(&d, "xdp_answered");
    let out = Command::new("ip")
        .args(["netns", "exec", &link.ns, "dnsperf", "-s", &to.ip().to_string(), "-p", &port.to_string()])
        .args(["-d", names.1.to_str().unwrap(), "-l", "3", "-Q", "3000", "-t", "2"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let stat = |key: &str| -> u64 {
        let line = text.lines().find(|l| l.contains(key)).unwrap_or_else(|| panic!("{key} in {text}"));
        line.split_whitespace().find_map(|t| t.parse().ok()).unwrap()
    };
    let (sent, lost) = (stat("Queries sent:"), stat("Queries lost:"));
    assert!(sent > 5000 && lost == 0, "{text}");
    let fast = counter(&d, "xdp_answered") - before;
    assert!(fast >= sent * 99 / 100, "{fast} of {sent} answered in their frames");
    eprintln!("xdp: {sent} queries from dnsperf, {fast} answered in their frames, 0 lost");

    // SIGTERM: the program leaves the interface with the process.
    d.terminate();
    assert!(!link.attached(), "detached at exit");
}

/// A file in a fresh temporary directory.
fn tempfile_with(text: &str) -> (crate::support::tempdir::Dir, std::path::PathBuf) {
    let dir = crate::support::tempdir::Dir::new();
    let path = dir.path().join("names");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// Started as root with `--user nobody`: the program and the socket are made before the
/// switch, and the hit path works without any capability left; killed with SIGKILL, the
/// program still leaves the interface (it hangs on a BPF link the process held).
#[test]
fn the_path_runs_without_capabilities_after_the_switch_and_leaves_with_a_killed_process() {
    let link = Link::new();
    let port = crate::support::free_port();
    // The state directory is written as that user after the switch.
    let state = crate::support::tempdir::Dir::new();
    let state_path = state.path().to_str().unwrap();
    // So are the API token files, read again on SIGHUP.
    let (admin, read) = (state.path().join("admin.tokens"), state.path().join("read.tokens"));
    crate::support::write_secret(&admin, &format!("{}\n", crate::support::ADMIN_TOKEN));
    crate::support::write_secret(&read, &format!("{}\n", crate::support::READ_TOKEN));
    for p in [state_path, admin.to_str().unwrap(), read.to_str().unwrap()] {
        run(&["chown", "nobody:nogroup", p]);
    }
    let (d, _cfg) = start(
        &link,
        port,
        &[
            "--workers",
            "2",
            "--user",
            "nobody",
            "--state-dir",
            state_path,
            "--api-token-file",
            admin.to_str().unwrap(),
            "--api-read-token-file",
            read.to_str().unwrap(),
        ],
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    let field =
        |k: &str| status.lines().find(|l| l.starts_with(k)).unwrap().split_whitespace().nth(1).unwrap().to_string();
    assert_ne!(field("Uid:"), "0", "switched user");
    assert_eq!(field("CapEff:"), "0000000000000000", "no capability kept");
    // Sealed: no descriptor of a BPF map is left (the program's maps are frozen and the
    // object closed; the link and the AF_XDP sockets remain).
    let mut kinds = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{}/fdinfo", d.pid())).unwrap().flatten() {
        let info = std::fs::read_to_string(fd.path()).unwrap_or_default();
        for key in ["map_type:", "link_type:", "prog_type:"] {
            if info.contains(key) {
                kinds.push(key);
            }
        }
    }
    assert!(!kinds.contains(&"map_type:") && !kinds.contains(&"prog_type:"), "{kinds:?}");
    assert!(kinds.contains(&"link_type:"), "the link stays: {kinds:?}");
    let to = link.v6(port);
    let ask = Ask::new("www.alpha.lab.", RecordType::AAAA);
    link.ask(to, &ask, false);
    let hit = link.ask(to, &ask, false);
    assert_eq!(hit.rcode(), ResponseCode::NoError);
    assert_eq!(counter(&d, "xdp_answered"), 1);
    assert!(link.attached());
    d.kill9();
    assert!(!link.attached(), "the BPF link went with the killed process");
}

/// An interface that does not exist is a start error naming it (the switch without the
/// feature is refused by the configuration check: `config::xdp`'s unit test).
#[test]
fn a_missing_interface_is_a_clear_start_error() {
    let (dir, cfg) = temp_config("[xdp]\nenabled = true\ninterface = \"adox-none0\"\n");
    let lab = crate::support::lab_dir();
    let out = Command::new(env!("CARGO_BIN_EXE_adoxd"))
        .args(["--config", cfg.to_str().unwrap(), "--listen", "127.0.0.1:0", "--api", "off", "--workers", "1"])
        .arg("--state-dir")
        .arg(dir.path())
        .arg("--root-hints")
        .arg(lab.join("root.hints"))
        .arg("--trust-anchor")
        .arg(lab.join("trust-anchor.ds"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("xdp:") && text.contains("adox-none0"), "{text}");
}
