//! Zero-downtime restart: a running adoxd hands its listening sockets (the very socket
//! objects, with the datagrams and connections queued on them) to a new one over a unix
//! socket (`SCM_RIGHTS`), then stops reading them, answers every client still waiting on
//! it and exits. Nothing is closed while queries sit in a queue, and no SO_REUSEPORT group
//! changes (which would rehash flows or drop a closed member's queue): both processes
//! read the same sockets for a moment, then only the new one does.
//!
//! The exchange, one line of text each way around the descriptors:
//!
//! 1. new → old: `adox-takeover 1`
//! 2. old → new: a JSON header (`{"version":1,"workers":W,"listen":[...]}`), then the
//!    descriptors worker by worker, address by address, UDP then TCP, at most
//!    [`FDS_PER_MESSAGE`] per message
//! 3. new → old, once its workers run: `ready`; the old process then drains and exits.
//!
//! The socket lives in the state directory, mode 0600: only the user adoxd runs as (or
//! root) can take its sockets, and that user could take them anyway.

use std::io::{BufRead, BufReader, Read, Write};
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

/// Takes the listening sockets of the adoxd running with the hand-over socket at `path`.
pub fn take_over(path: &Path) -> std::io::Result<(Inherited, Link)> {
    let link = UnixStream::connect(path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("{}: {e} (is an adoxd with this state directory running?)", path.display()),
        )
    })?;
    link.set_read_timeout(Some(STEP_TIMEOUT))?;
    link.set_write_timeout(Some(STEP_TIMEOUT))?;
    (&link).write_all(format!("{REQUEST}\n").as_bytes())?;
    // The header is read one byte at a time: a buffered reader could swallow the byte
    // that carries the first descriptors.
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while byte[0] != b'\n' {
        if (&link).read(&mut byte)? == 0 || line.len() > 64 * 1024 {
            return Err(std::io::Error::other("the old process sent no header"));
        }
        line.push(byte[0]);
    }
    let header: Header =
        serde_json::from_slice(&line).map_err(|e| std::io::Error::other(format!("bad header: {e}")))?;
    let count = header.workers * header.listen.len() * 2;
    if header.version != 1 || count == 0 || count > MAX_FDS {
        return Err(std::io::Error::other(format!(
            "unexpected hand-over: version {}, {} workers, {} addresses",
            header.version,
            header.workers,
            header.listen.len()
        )));
    }
    let mut fds = Vec::with_capacity(count);
    while fds.len() < count {
        fds.extend(crate::sys::recv_fds(&link, FDS_PER_MESSAGE)?);
    }
    if fds.len() != count {
        return Err(std::io::Error::other(format!("expected {count} descriptors, got {}", fds.len())));
    }
    let mut fds = fds.into_iter();
    let mut workers = Vec::with_capacity(header.workers);
    for _ in 0..header.workers {
        let (mut udp, mut tcp) = (Vec::new(), Vec::new());
        for _ in &header.listen {
            let (u, t) = (fds.next(), fds.next());
            let (Some(u), Some(t)) = (u, t) else { unreachable!("count checked above") };
            let (u, t) = (UdpSocket::from(u), TcpListener::from(t));
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
}

/// How long the serving thread waits for the daemon to go quiet.
const QUIET_WAIT: Duration = Duration::from_secs(5);

/// Serves hand-over requests at `path` (in its own thread) with these sockets (copies of
/// the workers' own). The daemon watches the returned state: it goes quiet when asked,
/// and drains and exits once `done`.
pub fn serve(path: &Path, listen: Vec<SocketAddr>, sockets: Vec<WorkerSockets>) -> std::io::Result<Arc<Handover>> {
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
            match hand_over(&conn, &listen, &sockets, &shared) {
                Ok(()) => {
                    tracing::info!("a new adoxd took over the sockets: draining");
                    shared.done.store(true, Ordering::SeqCst);
                    let _ = std::fs::remove_file(&path);
                    return;
                }
                Err(e) if shared.quiet.load(Ordering::SeqCst) => {
                    tracing::error!(error = %e, "hand-over failed after the API stopped: DNS is still served; restart adoxd to get the API back");
                }
                Err(e) => tracing::warn!(error = %e, "hand-over failed: still serving"),
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
    let mut reader = BufReader::new(conn.try_clone()?).take(256);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if line.trim_end() != REQUEST {
        return Err(std::io::Error::other(format!("unexpected request {:?}", line.trim_end())));
    }
    state.requested.store(true, Ordering::SeqCst);
    let asked = std::time::Instant::now();
    while !state.quiet.load(Ordering::SeqCst) && asked.elapsed() < QUIET_WAIT {
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
    let mut line = String::new();
    reader.set_limit(256);
    reader.read_line(&mut line)?;
    if line.trim_end() != READY {
        return Err(std::io::Error::other("the new process did not get ready"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sockets arrive whole: what one side sends on its copy, the other receives on
    /// the descriptor it took over.
    #[test]
    fn sockets_handed_over_are_the_same_sockets() {
        let dir = std::env::temp_dir().join(format!("adox-handover-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(HANDOVER_SOCKET);
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = udp.local_addr().unwrap();
        let state =
            serve(&path, vec![addr], vec![(vec![udp.try_clone().unwrap()], vec![tcp.try_clone().unwrap()])]).unwrap();
        // The daemon's side: quiet as soon as asked.
        let daemon = state.clone();
        std::thread::spawn(move || {
            while !daemon.requested.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
            daemon.quiet.store(true, Ordering::SeqCst);
        });
        assert!(serve(&path, vec![], vec![]).is_err(), "a live hand-over socket is not taken");
        let (inherited, link) = take_over(&path).unwrap();
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
