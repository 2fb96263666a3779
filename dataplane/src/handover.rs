//! Zero-downtime restart: a running adoxd hands its listening sockets (the very socket
//! objects, with the datagrams and connections queued on them) to a new one over a unix
//! socket (`SCM_RIGHTS`), then stops reading them, answers every client still waiting on
//! it and exits. Nothing is closed while queries sit in a queue, and no SO_REUSEPORT group
//! changes (which would rehash flows or drop a closed member's queue): both processes
//! read the same sockets for a moment, then only the new one does.
//!
//! The exchange, one line of text each way around the descriptors:
//!
//! 1. new → old: `adox-takeover 1 ["ADDR:PORT",...]` (the listen addresses it wants)
//! 2. old → new: `refused: REASON` (other listen addresses, another user: the old
//!    process carries on as it was), or a JSON header
//!    (`{"version":1,"workers":G,"listen":[...]}`) and the descriptors group by group
//!    (one group per worker it started with), address by address, UDP then TCP, at most
//!    [`FDS_PER_MESSAGE`] per message. Before it sends them, the old process stops its
//!    API and saves its learned state (`quiet`), so that the new one reads everything.
//! 3. new → old, once its workers and API run: `ready`; the old process then drains and
//!    exits. If anything fails after `quiet`, the old process starts its API again.
//!
//! The socket lives in the state directory, mode 0600, and both ends check that the
//! other runs as the same user (`SO_PEERCRED`): a takeover by root of a daemon running as
//! `adox` would leave a resolver running as root and files `adox` cannot read.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The file name of the hand-over socket in the state directory.
pub const HANDOVER_SOCKET: &str = "handover.sock";

/// Descriptors sent in one message (the kernel takes up to 253).
const FDS_PER_MESSAGE: usize = 64;

/// Socket groups (the old process's workers) taken at most.
const MAX_GROUPS: usize = 1024;

/// Descriptors taken at most (a header cannot make the new process wait for more).
const MAX_FDS: usize = 4096;

/// How long each side waits for the other's next step.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

const REQUEST: &str = "adox-takeover 1";
const READY: &str = "ready";

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    version: u32,
    workers: usize,
    listen: Vec<SocketAddr>,
}

/// One worker's listening sockets: per listen address, its UDP socket and TCP listener.
pub type WorkerSockets = (Vec<UdpSocket>, Vec<TcpListener>);

/// The listen addresses (as bound) and the socket groups a hand-over passes on, one
/// socket pair per address in each group; a reload that changes the listen addresses
/// updates it.
pub type ListenSet = Arc<std::sync::Mutex<(Vec<SocketAddr>, Vec<WorkerSockets>)>>;

/// Copies of one group's sockets (the same socket objects).
pub fn dup((udp, tcp): &WorkerSockets) -> std::io::Result<WorkerSockets> {
    Ok((
        udp.iter().map(UdpSocket::try_clone).collect::<Result<_, _>>()?,
        tcp.iter().map(TcpListener::try_clone).collect::<Result<_, _>>()?,
    ))
}

/// The sockets a new process took over.
#[derive(Debug)]
pub struct Inherited {
    /// The listen addresses, in order.
    pub listen: Vec<SocketAddr>,
    /// Per old worker, its sockets.
    pub workers: Vec<WorkerSockets>,
}

/// The connection to the old process, to say when this one is ready.
#[derive(Debug)]
pub struct Link(UnixStream);

impl Link {
    /// Tells the old process that this one serves now: it stops reading, answers whom it
    /// still owes and exits.
    pub fn confirm(mut self) -> std::io::Result<()> {
        writeln!(self.0, "{READY}")?;
        self.0.flush()
    }
}

/// The same user at both ends, or why not.
fn same_user(conn: &UnixStream) -> std::io::Result<()> {
    let (peer, own) = crate::sys::peer_and_own_uid(conn)?;
    if peer == own {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("the other adoxd runs as uid {peer}, this one as uid {own}: take over as the same user"),
        ))
    }
}

/// Reads one line of at most `limit` octets, one octet at a time (a buffered reader could
/// swallow the octet that carries descriptors).
fn read_line(conn: &UnixStream, limit: usize) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match (&*conn).read(&mut byte) {
            Ok(0) => return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the other side hung up")),
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) if line.len() >= limit => return Err(std::io::Error::other("line too long")),
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time"));
            }
            Err(e) => return Err(e),
        }
    }
    String::from_utf8(line).map_err(|_| std::io::Error::other("not text"))
}

/// Whether the sockets at `have` serve the addresses `want` (a wanted port 0: any).
pub(crate) fn same_listen(want: &[SocketAddr], have: &[SocketAddr]) -> bool {
    want.len() == have.len() && want.iter().zip(have).all(|(w, h)| w == h || (w.port() == 0 && w.ip() == h.ip()))
}

/// Takes the listening sockets of the adoxd running with the hand-over socket at `path`,
/// for these listen addresses.
pub fn take_over(path: &Path, listen: &[SocketAddr]) -> std::io::Result<(Inherited, Link)> {
    let link = UnixStream::connect(path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("{}: {e} (is an adoxd with this state directory running?)", path.display()),
        )
    })?;
    same_user(&link)?;
    link.set_read_timeout(Some(STEP_TIMEOUT))?;
    link.set_write_timeout(Some(STEP_TIMEOUT))?;
    let wanted = serde_json::to_string(listen).map_err(std::io::Error::other)?;
    (&link).write_all(format!("{REQUEST} {wanted}\n").as_bytes())?;
    let line = read_line(&link, 64 * 1024)?;
    if let Some(reason) = line.strip_prefix("refused: ") {
        return Err(std::io::Error::other(format!("the running adoxd refused: {reason}")));
    }
    let header: Header = serde_json::from_str(&line).map_err(|e| std::io::Error::other(format!("bad header: {e}")))?;
    let count = header
        .workers
        .checked_mul(header.listen.len())
        .and_then(|n| n.checked_mul(2))
        .filter(|&n| header.version == 1 && header.workers <= MAX_GROUPS && n > 0 && n <= MAX_FDS)
        .ok_or_else(|| {
            std::io::Error::other(format!(
                "unexpected hand-over: version {}, {} groups, {} addresses",
                header.version,
                header.workers,
                header.listen.len()
            ))
        })?;
    if !same_listen(listen, &header.listen) {
        return Err(std::io::Error::other(format!("the running adoxd listens on {:?}", header.listen)));
    }
    let mut fds = Vec::with_capacity(count);
    while fds.len() < count {
        let got = crate::sys::recv_fds(&link, FDS_PER_MESSAGE)?;
        if got.is_empty() {
            return Err(std::io::Error::other("a message without descriptors"));
        }
        fds.extend(got);
    }
    if fds.len() != count {
        return Err(std::io::Error::other(format!("expected {count} descriptors, got {}", fds.len())));
    }
    let mut fds = fds.into_iter();
    let mut workers = Vec::with_capacity(header.workers);
    for _ in 0..header.workers {
        let (mut udp, mut tcp) = (Vec::new(), Vec::new());
        for addr in &header.listen {
            let (Some(u), Some(t)) = (fds.next(), fds.next()) else {
                return Err(std::io::Error::other("descriptors cut short"));
            };
            // Each must be the socket the header says: the right kind, bound there.
            let kind = |fd: &std::os::fd::OwnedFd| socket2::SockRef::from(fd).r#type();
            if kind(&u)? != socket2::Type::DGRAM || kind(&t)? != socket2::Type::STREAM {
                return Err(std::io::Error::other("a descriptor is not the socket the header says"));
            }
            let (u, t) = (UdpSocket::from(u), TcpListener::from(t));
            if u.local_addr()? != *addr || t.local_addr()? != *addr {
                return Err(std::io::Error::other(format!("a socket is not bound to {addr}")));
            }
            u.set_nonblocking(true)?;
            t.set_nonblocking(true)?;
            udp.push(u);
            tcp.push(t);
        }
        workers.push((udp, tcp));
    }
    Ok((Inherited { listen: header.listen, workers }, Link(link)))
}

/// Where a hand-over stands, between the thread that serves it and the daemon's loop.
#[derive(Debug, Default)]
pub struct Handover {
    /// A new process asked: the daemon stops its API (and saves its learned state) so
    /// that no change is accepted here that the new one would not read, then sets
    /// `quiet`.
    pub requested: AtomicBool,
    /// The daemon's API is stopped and its state saved.
    pub quiet: AtomicBool,
    /// The new process has the sockets and serves: drain and exit.
    pub done: AtomicBool,
    /// A hand-over failed after `quiet`: the daemon starts its API again (and clears
    /// `requested`, `quiet` and this).
    pub failed: AtomicBool,
}

/// How long the serving thread waits for the daemon to go quiet.
const QUIET_WAIT: Duration = Duration::from_secs(5);

/// Serves hand-over requests at `path` (in its own thread) with these sockets (copies of
/// the workers' own). The daemon watches the returned state: it goes quiet when asked,
/// and drains and exits once `done`.
pub fn serve(path: &Path, set: ListenSet) -> std::io::Result<Arc<Handover>> {
    // A file left by a process that is gone is removed; a live one is not taken over.
    if UnixStream::connect(path).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("{}: another adoxd serves hand-overs here", path.display()),
        ));
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let state = Arc::new(Handover::default());
    let shared = state.clone();
    let path = path.to_path_buf();
    std::thread::Builder::new().name("adox-handover".into()).spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            // What is listened on at this moment (a reload may have changed it).
            let now = {
                let set = set.lock().unwrap_or_else(|p| p.into_inner());
                set.1.iter().map(dup).collect::<std::io::Result<Vec<_>>>().map(|groups| (set.0.clone(), groups))
            };
            let (listen, sockets) = match now {
                Ok(now) => now,
                Err(e) => {
                    tracing::warn!(error = %e, "hand-over refused: cannot copy the listening sockets");
                    continue;
                }
            };
            match hand_over(&conn, &listen, &sockets, &shared) {
                Ok(()) => {
                    tracing::info!("a new adoxd took over the sockets: draining");
                    shared.done.store(true, Ordering::SeqCst);
                    let _ = std::fs::remove_file(&path);
                    return;
                }
                Err(e) if shared.quiet.load(Ordering::SeqCst) => {
                    tracing::warn!(error = %e, "hand-over failed after the API stopped: still serving, the API starts again");
                    shared.failed.store(true, Ordering::SeqCst);
                }
                Err(e) => {
                    shared.requested.store(false, Ordering::SeqCst);
                    tracing::warn!(error = %e, "hand-over refused: still serving");
                }
            }
        }
    })?;
    Ok(state)
}

/// One hand-over: the request, the header and descriptors, and the new process's `ready`.
fn hand_over(
    conn: &UnixStream,
    listen: &[SocketAddr],
    sockets: &[WorkerSockets],
    state: &Handover,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(STEP_TIMEOUT))?;
    conn.set_write_timeout(Some(STEP_TIMEOUT))?;
    let refuse = |reason: String| -> std::io::Result<()> {
        let _ = (&*conn).write_all(format!("refused: {reason}\n").as_bytes());
        Err(std::io::Error::other(reason))
    };
    if let Err(e) = same_user(conn) {
        return refuse(e.to_string());
    }
    let line = read_line(conn, 64 * 1024)?;
    let Some(wanted) = line.strip_prefix(REQUEST).map(str::trim) else {
        return refuse(format!("unexpected request {:?}", line.chars().take(64).collect::<String>()));
    };
    let wanted: Vec<SocketAddr> = match serde_json::from_str(wanted) {
        Ok(w) => w,
        Err(e) => return refuse(format!("bad listen list: {e}")),
    };
    if !same_listen(&wanted, listen) {
        return refuse(format!("this adoxd listens on {listen:?}, the new one wants {wanted:?}: restart instead"));
    }
    state.requested.store(true, Ordering::SeqCst);
    let asked = std::time::Instant::now();
    while !state.quiet.load(Ordering::SeqCst) {
        if asked.elapsed() > QUIET_WAIT {
            // Its API may still take changes the new process would not read: no takeover.
            return refuse("the running adoxd could not stop its API in time".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let header = Header { version: 1, workers: sockets.len(), listen: listen.to_vec() };
    let mut text = serde_json::to_vec(&header).map_err(std::io::Error::other)?;
    text.push(b'\n');
    (&*conn).write_all(&text)?;
    let fds: Vec<RawFd> =
        sockets.iter().flat_map(|(u, t)| u.iter().zip(t).flat_map(|(u, t)| [u.as_raw_fd(), t.as_raw_fd()])).collect();
    for chunk in fds.chunks(FDS_PER_MESSAGE) {
        crate::sys::send_fds(conn, chunk)?;
    }
    // The new process starts its workers and API, and then says so (the step timeout).
    if read_line(conn, 64)? != READY {
        return Err(std::io::Error::other("the new process did not get ready"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(listen: Vec<SocketAddr>, groups: Vec<WorkerSockets>) -> ListenSet {
        Arc::new(std::sync::Mutex::new((listen, groups)))
    }

    /// The sockets arrive whole: what one side sends on its copy, the other receives on
    /// the descriptor it took over.
    #[test]
    fn sockets_handed_over_are_the_same_sockets() {
        let dir = std::env::temp_dir().join(format!("adox-handover-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(HANDOVER_SOCKET);
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = udp.local_addr().unwrap();
        let tcp = TcpListener::bind(addr).unwrap();
        let state =
            serve(&path, set(vec![addr], vec![(vec![udp.try_clone().unwrap()], vec![tcp.try_clone().unwrap()])]))
                .unwrap();
        // The daemon's side: quiet as soon as asked.
        let daemon = state.clone();
        std::thread::spawn(move || {
            while !daemon.requested.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
            daemon.quiet.store(true, Ordering::SeqCst);
        });
        assert!(serve(&path, set(vec![], vec![])).is_err(), "a live hand-over socket is not taken");
        assert!(take_over(&path, &["127.0.0.1:1".parse().unwrap()]).unwrap_err().to_string().contains("refused"));
        assert!(!state.quiet.load(Ordering::SeqCst), "a refused request changes nothing");
        let (inherited, link) = take_over(&path, &[addr]).unwrap();
        assert_eq!(inherited.listen, [addr]);
        let taken = inherited.workers[0].0[0].try_clone().unwrap();
        taken.set_nonblocking(false).unwrap();
        taken.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.send_to(b"queued", addr).unwrap();
        let mut buf = [0u8; 16];
        let (n, _) = taken.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"queued");
        assert!(!state.done.load(Ordering::SeqCst));
        link.confirm().unwrap();
        for _ in 0..100 {
            if state.done.load(Ordering::SeqCst) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(state.done.load(Ordering::SeqCst), "the old side saw ready");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
