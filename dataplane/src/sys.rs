//! Thin calls into libc that std does not offer: with `xdp/` (its own FFI), the data
//! plane's only `unsafe`.
#![allow(
    unsafe_code,
    reason = "FFI to sched_setaffinity, sigaction, recvmmsg, sendmmsg, sendmsg/recvmsg with SCM_RIGHTS, setsockopt and the set*id calls: the one fenced place for unsafe"
)]

use std::mem::MaybeUninit;

/// Pins the calling thread to one CPU. Failure (for example a CPU outside the process's
/// allowed set in a container) is reported, not fatal.
pub(crate) fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "cpu index out of range"));
    }
    // SAFETY: cpu_set_t is plain data, zero-initialised is an empty set; CPU_SET writes a bit
    // inside it (index checked above); sched_setaffinity(0, ..) reads the set for this thread.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_stop_signal(_sig: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Sets SIGINT and SIGTERM to raise the returned flag.
pub(crate) fn install_stop_signals() -> std::io::Result<&'static std::sync::atomic::AtomicBool> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only performs an atomic store, which is async-signal-safe;
        // sigaction is given a zeroed struct with the handler and an empty mask.
        let rc = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_stop_signal as extern "C" fn(libc::c_int) as usize;
            // Restart interrupted system calls (sendmmsg, accept) instead of failing them.
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(&STOP)
}

static RELOAD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_reload_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    RELOAD.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Sets SIGHUP to raise the returned flag (the daemon reloads what it can: API tokens).
pub(crate) fn install_reload_signal() -> std::io::Result<&'static std::sync::atomic::AtomicBool> {
    // SAFETY: as in `install_stop_signals`: the handler only performs an atomic store.
    let rc = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_reload_signal as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGHUP, &sa, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(&RELOAD)
}

/// Datagrams moved per recvmmsg/sendmmsg call.
pub(crate) const MMSG_BATCH: usize = 32;
/// Largest client datagram read whole; longer ones are flagged truncated and dropped.
pub(crate) const MMSG_MSG_MAX: usize = 4096;

fn to_storage(addr: &std::net::SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        std::net::SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage, which is suitably aligned.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        std::net::SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage, which is suitably aligned.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

fn from_storage(ss: &libc::sockaddr_storage) -> Option<std::net::SocketAddr> {
    match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in when the family is AF_INET.
            let sin: libc::sockaddr_in = unsafe { std::ptr::read((ss as *const libc::sockaddr_storage).cast()) };
            let ip = std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(std::net::SocketAddr::from((ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 when the family is AF_INET6.
            let sin6: libc::sockaddr_in6 = unsafe { std::ptr::read((ss as *const libc::sockaddr_storage).cast()) };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(std::net::SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Sets `IP_BIND_ADDRESS_NO_PORT` (Linux; IPv6 sockets honour it too): a socket bound to
/// an address before `connect` gets its port at connect time, for the whole 4-tuple.
pub(crate) fn bind_address_no_port(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads size_of::<c_int>() bytes from a live local.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            std::ptr::from_ref(&one).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// One recvmmsg/sendmmsg header for a single buffer, starting from all-zero fields, no
/// control data.
fn mmsghdr(name: *mut libc::c_void, namelen: libc::socklen_t, iov: &mut libc::iovec) -> libc::mmsghdr {
    // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths); the fields that
    // matter are set next. One header, not a whole batch of them.
    let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
    h.msg_hdr.msg_name = name;
    h.msg_hdr.msg_namelen = namelen;
    h.msg_hdr.msg_iov = iov;
    h.msg_hdr.msg_iovlen = 1;
    h
}

/// Buffers for one recvmmsg call: up to [`MMSG_BATCH`] datagrams with their senders.
pub(crate) struct RecvBatch {
    data: Box<[u8]>,
    /// The senders' addresses as the kernel writes them; kept across calls, so that no
    /// call zeroes 4 KiB of them again (it showed as the top cost of a cache hit under
    /// callgrind at low rates, when each wake-up reads one datagram).
    names: Box<[libc::sockaddr_storage; MMSG_BATCH]>,
    lens: [usize; MMSG_BATCH],
    truncated: [bool; MMSG_BATCH],
    addrs: [Option<std::net::SocketAddr>; MMSG_BATCH],
    n: usize,
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch").field("n", &self.n).finish()
    }
}

impl RecvBatch {
    pub(crate) fn new() -> Self {
        Self {
            data: vec![0u8; MMSG_BATCH * MMSG_MSG_MAX].into_boxed_slice(),
            // SAFETY: all-zero is a valid sockaddr_storage.
            names: Box::new(unsafe { std::mem::zeroed() }),
            lens: [0; MMSG_BATCH],
            truncated: [false; MMSG_BATCH],
            addrs: [None; MMSG_BATCH],
            n: 0,
        }
    }

    /// Datagram `i`: its bytes (None when it was longer than the buffer) and sender.
    pub(crate) fn get(&self, i: usize) -> (Option<&[u8]>, Option<std::net::SocketAddr>) {
        let msg = (!self.truncated[i]).then(|| &self.data[i * MMSG_MSG_MAX..i * MMSG_MSG_MAX + self.lens[i]]);
        (msg, self.addrs[i])
    }

    /// Reads as many datagrams as are queued, up to the batch size, without blocking.
    /// Returns how many; `WouldBlock` when none was queued.
    pub(crate) fn recv(&mut self, fd: std::os::fd::RawFd) -> std::io::Result<usize> {
        // Every header and iovec is written whole below (no zeroing of the arrays first);
        // the pointers refer to storage owned by `self` or to these locals, all alive
        // until after the recvmmsg call.
        let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; MMSG_BATCH];
        let mut hdrs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; MMSG_BATCH];
        let base = self.data.as_mut_ptr();
        for i in 0..MMSG_BATCH {
            // SAFETY: i * MMSG_MSG_MAX + MMSG_MSG_MAX <= data.len().
            let iov = iovs[i]
                .write(libc::iovec { iov_base: unsafe { base.add(i * MMSG_MSG_MAX) }.cast(), iov_len: MMSG_MSG_MAX });
            hdrs[i].write(mmsghdr(
                (&raw mut self.names[i]).cast(),
                size_of::<libc::sockaddr_storage>() as libc::socklen_t,
                iov,
            ));
        }
        // SAFETY: hdrs holds MMSG_BATCH initialised headers pointing at live buffers.
        let rc = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr().cast(),
                MMSG_BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            self.n = 0;
            return Err(std::io::Error::last_os_error());
        }
        let n = (rc as usize).min(MMSG_BATCH);
        for (i, h) in hdrs.iter().take(n).enumerate() {
            // SAFETY: every header was written above (and the kernel only fills them in).
            let h = unsafe { h.assume_init_ref() };
            self.lens[i] = (h.msg_len as usize).min(MMSG_MSG_MAX);
            self.truncated[i] = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            // A datagram the kernel gave no address for is `None`, never the address the
            // slot held for an earlier call (the slots are no longer zeroed per call).
            self.addrs[i] = (h.msg_hdr.msg_namelen > 0).then(|| from_storage(&self.names[i])).flatten();
        }
        self.n = n;
        Ok(n)
    }
}

/// Responses collected for one sendmmsg call.
pub(crate) struct SendBatch {
    data: Vec<u8>,
    spans: Vec<(usize, usize, std::net::SocketAddr)>,
}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch").field("n", &self.spans.len()).finish()
    }
}

impl SendBatch {
    pub(crate) fn new() -> Self {
        Self { data: Vec::with_capacity(MMSG_BATCH * 1500), spans: Vec::with_capacity(MMSG_BATCH) }
    }

    /// Queues a datagram; the caller flushes when [`Self::is_full`].
    pub(crate) fn push(&mut self, msg: &[u8], to: std::net::SocketAddr) {
        let start = self.data.len();
        self.data.extend_from_slice(msg);
        self.spans.push((start, msg.len(), to));
    }

    pub(crate) fn is_full(&self) -> bool {
        self.spans.len() >= MMSG_BATCH
    }

    /// Sends everything queued (best effort, as UDP is) and empties the batch.
    pub(crate) fn flush(&mut self, fd: std::os::fd::RawFd) {
        let mut sent = 0;
        while sent < self.spans.len() {
            let chunk = &self.spans[sent..(sent + MMSG_BATCH).min(self.spans.len())];
            // Only the entries this call sends are written (no zeroing of whole arrays);
            // the pointers refer to these stack arrays and to `data`, all alive until
            // after the call.
            let mut names = [const { MaybeUninit::<libc::sockaddr_storage>::uninit() }; MMSG_BATCH];
            let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; MMSG_BATCH];
            let mut hdrs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; MMSG_BATCH];
            let base = self.data.as_mut_ptr();
            for (i, &(start, len, to)) in chunk.iter().enumerate() {
                let (ss, slen) = to_storage(&to);
                let name = names[i].write(ss);
                // SAFETY: every span lies inside `data` (pushed by `push`).
                let iov = iovs[i].write(libc::iovec { iov_base: unsafe { base.add(start) }.cast(), iov_len: len });
                hdrs[i].write(mmsghdr(std::ptr::from_mut(name).cast(), slen, iov));
            }
            // SAFETY: the first chunk.len() headers are initialised and point at live data.
            let rc = unsafe {
                libc::sendmmsg(fd, hdrs.as_mut_ptr().cast(), chunk.len() as libc::c_uint, libc::MSG_DONTWAIT)
            };
            if rc <= 0 {
                // A full socket buffer or an error for the first datagram: skip it and go on,
                // as a lost UDP answer would be.
                sent += 1;
            } else {
                sent += rc as usize;
            }
        }
        self.data.clear();
        self.spans.clear();
    }
}

/// The largest buffer the password and group lookups grow to (on ERANGE).
const MAX_DB_BUFFER: usize = 4 << 20;

/// Looks a name up in the password database: (uid, primary gid).
fn user_ids(name: &str) -> Result<(libc::uid_t, libc::gid_t), String> {
    let cname = std::ffi::CString::new(name).map_err(|_| format!("user {name:?}: not a name"))?;
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    let mut buf = vec![0u8; 16 * 1024];
    let mut rc;
    loop {
        // SAFETY: every pointer refers to live memory of the size given; the result is
        // read only when `out` says an entry was found.
        rc = unsafe { libc::getpwnam_r(cname.as_ptr(), &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut out) };
        if rc != libc::ERANGE || buf.len() >= MAX_DB_BUFFER {
            break;
        }
        buf.resize(buf.len() * 4, 0);
    }
    if rc != 0 {
        return Err(format!("user {name:?}: {}", std::io::Error::from_raw_os_error(rc)));
    }
    if out.is_null() {
        return Err(format!("user {name:?} does not exist"));
    }
    Ok((pw.pw_uid, pw.pw_gid))
}

/// Looks a name up in the group database.
fn group_id(name: &str) -> Result<libc::gid_t, String> {
    let cname = std::ffi::CString::new(name).map_err(|_| format!("group {name:?}: not a name"))?;
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::group = std::ptr::null_mut();
    let mut buf = vec![0u8; 16 * 1024];
    let mut rc;
    loop {
        // SAFETY: as in `user_ids`. (A group with many members needs a larger buffer.)
        rc = unsafe { libc::getgrnam_r(cname.as_ptr(), &mut gr, buf.as_mut_ptr().cast(), buf.len(), &mut out) };
        if rc != libc::ERANGE || buf.len() >= MAX_DB_BUFFER {
            break;
        }
        buf.resize(buf.len() * 4, 0);
    }
    if rc != 0 {
        return Err(format!("group {name:?}: {}", std::io::Error::from_raw_os_error(rc)));
    }
    if out.is_null() {
        return Err(format!("group {name:?} does not exist"));
    }
    Ok(gr.gr_gid)
}

/// Gives `name` in the directory `dir` to `uid`:`gid` when it is a regular file with one
/// link that root owns; true when it changed hands, false when it is something else or
/// gone. The name is opened without following a link (`O_PATH | O_NOFOLLOW`), checked on
/// that descriptor, and changed through it (`fchownat` with `AT_EMPTY_PATH`): the file
/// checked is the file changed, whatever is done to the name meanwhile.
pub(crate) fn give_roots_lone_file(
    dir: &std::fs::File,
    name: &std::ffi::OsStr,
    uid: u32,
    gid: u32,
) -> std::io::Result<bool> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    let cname = std::ffi::CString::new(name.as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: a C string that lives across the call and a directory descriptor we hold.
    let fd =
        unsafe { libc::openat(dir.as_raw_fd(), cname.as_ptr(), libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return if e.kind() == std::io::ErrorKind::NotFound { Ok(false) } else { Err(e) };
    }
    // SAFETY: a descriptor openat just returned, owned from here on.
    let file = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat fills the stat it is given, which is read only when it succeeded.
    let st = unsafe {
        if libc::fstat(file.as_raw_fd(), st.as_mut_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        st.assume_init()
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_uid != 0 || st.st_nlink != 1 {
        return Ok(false);
    }
    // SAFETY: an empty C string and the descriptor just checked.
    if unsafe { libc::fchownat(file.as_raw_fd(), c"".as_ptr(), uid, gid, libc::AT_EMPTY_PATH) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(true)
}

/// The effective capability set of the calling thread, from `/proc/thread-self/status`.
pub(crate) fn effective_capabilities() -> std::io::Result<u64> {
    let status = std::fs::read_to_string("/proc/thread-self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .ok_or_else(|| std::io::Error::other("no CapEff line"))
}

/// What [`drop_privileges`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PrivilegeDrop {
    /// The process already ran as that user and group: nothing to do.
    AlreadyThatUser,
    /// Switched from root to the user and group; no capability is left.
    Switched {
        /// The user's uid.
        uid: u32,
        /// The group's gid.
        gid: u32,
    },
}

/// Switches the whole process from root to `user` (and `group`, else the user's primary
/// group; the supplementary groups become that one group). glibc applies set*id calls to
/// every thread, and the kernel clears the permitted and effective capabilities of a thread
/// whose uids all leave 0: nothing is kept, not even `CAP_NET_BIND_SERVICE` (the sockets
/// are bound before this). Checked afterwards: root cannot be regained, and no capability
/// is left. Run as another user than `user`, it is an error (an unprivileged process cannot
/// switch); run as `user` already, there is nothing to do. `before` runs as root just
/// before the switch, given the uid and gid switched to.
pub(crate) fn drop_privileges(
    user: &str,
    group: Option<&str>,
    before: impl FnOnce(u32, u32) -> Result<(), String>,
) -> Result<PrivilegeDrop, String> {
    let (uid, primary) = user_ids(user)?;
    let gid = match group {
        Some(g) => group_id(g)?,
        None => primary,
    };
    // SAFETY: plain system calls without pointers (setgroups reads one gid from a live
    // local).
    unsafe {
        if libc::geteuid() == uid && libc::getegid() == gid {
            return Ok(PrivilegeDrop::AlreadyThatUser);
        }
        if libc::geteuid() != 0 {
            return Err(format!(
                "running as uid {}, not root: cannot switch to user {user:?} (start as root, or as that user)",
                libc::geteuid()
            ));
        }
        before(uid, gid)?;
        let last = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
        if libc::setgroups(1, &gid) != 0 {
            return Err(last("setgroups"));
        }
        if libc::setresgid(gid, gid, gid) != 0 {
            return Err(last("setresgid"));
        }
        if libc::setresuid(uid, uid, uid) != 0 {
            return Err(last("setresuid"));
        }
        if uid != 0 && (libc::setuid(0) == 0 || libc::seteuid(0) == 0) {
            return Err("root could be regained after the switch".into());
        }
    }
    match effective_capabilities() {
        Ok(0) => Ok(PrivilegeDrop::Switched { uid, gid }),
        Ok(_) if uid == 0 => Ok(PrivilegeDrop::Switched { uid, gid }),
        Ok(caps) => Err(format!("capabilities left after the switch: {caps:#x}")),
        Err(e) => Err(format!("cannot read the capabilities left: {e}")),
    }
}

/// Sends `fds` over a unix stream in one message (`SCM_RIGHTS`, one payload octet).
pub(crate) fn send_fds(sock: &std::os::unix::net::UnixStream, fds: &[std::os::fd::RawFd]) -> std::io::Result<()> {
    let payload = [0u8; 1];
    let mut iov = libc::iovec { iov_base: payload.as_ptr() as *mut libc::c_void, iov_len: 1 };
    let bytes = size_of_val(fds);
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(bytes as u32) } as usize;
    // u64 words: aligned for a cmsghdr.
    let mut control = vec![0u64; space.div_ceil(8)];
    // SAFETY: msghdr is plain data; every pointer set below outlives the sendmsg call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: the control buffer has room for one header with `bytes` of data
    // (CMSG_SPACE), so CMSG_FIRSTHDR is non-null and CMSG_DATA points inside it.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(bytes as u32) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(cmsg), bytes);
    }
    loop {
        // SAFETY: msg is fully initialised above.
        let n = unsafe { libc::sendmsg(std::os::fd::AsRawFd::as_raw_fd(sock), &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        // A signal (SIGHUP) interrupts a call with a timeout set even under SA_RESTART.
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Receives one message of up to `max` descriptors, owned from here on.
pub(crate) fn recv_fds(
    sock: &std::os::unix::net::UnixStream,
    max: usize,
) -> std::io::Result<Vec<std::os::fd::OwnedFd>> {
    let mut payload = [0u8; 1];
    let mut iov = libc::iovec { iov_base: payload.as_mut_ptr().cast(), iov_len: 1 };
    let bytes = max * size_of::<std::os::fd::RawFd>();
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(bytes as u32) } as usize;
    // u64 words: aligned for a cmsghdr.
    let mut control = vec![0u64; space.div_ceil(8)];
    // SAFETY: msghdr is plain data; every pointer set below outlives the recvmsg call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg points at live buffers of the sizes given; MSG_CMSG_CLOEXEC marks the
    // descriptors close-on-exec as they arrive.
    let n = loop {
        // SAFETY: as above.
        let n = unsafe { libc::recvmsg(std::os::fd::AsRawFd::as_raw_fd(sock), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    if n == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the old process hung up"));
    }
    let mut out = Vec::new();
    // SAFETY: the kernel filled `control` up to msg_controllen; the CMSG macros walk it
    // within those bounds, and each SCM_RIGHTS descriptor is new in this process (owned
    // exactly once here).
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let len = ((*cmsg).cmsg_len as usize).saturating_sub(data as usize - cmsg as usize);
                for i in 0..len / size_of::<std::os::fd::RawFd>() {
                    let fd = std::ptr::read_unaligned(data.cast::<std::os::fd::RawFd>().add(i));
                    out.push(<std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(std::io::Error::other("descriptors cut short (MSG_CTRUNC)"));
    }
    Ok(out)
}

/// The effective user id of the process at the other end of a unix stream
/// (`SO_PEERCRED`), and this process's own.
pub(crate) fn peer_and_own_uid(sock: &std::os::unix::net::UnixStream) -> std::io::Result<(u32, u32)> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given.
    let r = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(sock),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: geteuid cannot fail.
    Ok((cred.uid, unsafe { libc::geteuid() }))
}
