//! One AF_XDP socket with its own UMEM (libxdp creates both and maps the four rings; the
//! ring operations below are `xsk.h`'s inline functions in Rust). A worker owns its port:
//! frames come in on the RX ring, an answer goes out on the TX ring in the frame its query
//! came in, and every frame goes back to the fill ring once the kernel is done with it.
#![allow(unsafe_code, reason = "rings and frames in memory shared with the kernel")]

use std::ffi::{CString, c_void};
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};

use super::ffi::{self, Desc, Ring};

/// Frames in a port's UMEM, all of them on the fill ring at the start: 8 MiB per queue,
/// which the kernel charges to the user's RLIMIT_MEMLOCK unless the process has
/// CAP_IPC_LOCK (the default limit, 8 MiB, holds one queue).
const FRAMES: u32 = 2048;
/// Size of a frame: room for a 1,500-octet MTU frame and for any answer up to the UDP size
/// we advertise (larger ones go out through the socket).
pub(crate) const FRAME_SIZE: u32 = 4096;
/// RX and TX ring sizes.
const RING: u32 = 1024;

/// An AF_XDP socket bound to one queue of an interface.
pub(crate) struct Port {
    area: *mut u8,
    area_len: usize,
    umem: *mut ffi::Opaque,
    xsk: *mut ffi::Opaque,
    // Boxed: libxdp keeps the fill and completion rings' addresses until the socket exists.
    fill: Box<Ring>,
    comp: Box<Ring>,
    rx: Box<Ring>,
    tx: Box<Ring>,
    fd: RawFd,
    /// Bound in zero-copy mode (else copy mode).
    pub zero_copy: bool,
    /// The queue it is bound to.
    pub queue: u32,
    /// Its interface.
    pub link: super::LinkInfo,
    /// Frames on the TX ring the kernel has not completed yet.
    in_flight: u32,
}

// The port is made on the main thread and then used only by the worker that owns it.
// SAFETY: nothing in it is shared with another thread of this process.
unsafe impl Send for Port {}

impl std::fmt::Debug for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Port").field("queue", &self.queue).field("zero_copy", &self.zero_copy).finish()
    }
}

fn atomic(p: *mut u32) -> &'static AtomicU32 {
    // SAFETY: `p` points at a ring's producer or consumer index in the ring's mapping,
    // which lives as long as the socket; the kernel writes it atomically too.
    unsafe { AtomicU32::from_ptr(p) }
}

impl Ring {
    /// Free slots of a producer ring (`xsk_prod_nb_free`).
    fn free(&mut self, want: u32) -> u32 {
        let free = self.cached_cons.wrapping_sub(self.cached_prod);
        if free >= want {
            return free;
        }
        self.cached_cons = atomic(self.consumer).load(Ordering::Acquire).wrapping_add(self.size);
        self.cached_cons.wrapping_sub(self.cached_prod)
    }

    /// Entries ready on a consumer ring, at most `want` (`xsk_cons_nb_avail`).
    fn available(&mut self, want: u32) -> u32 {
        let mut n = self.cached_prod.wrapping_sub(self.cached_cons);
        if n == 0 {
            self.cached_prod = atomic(self.producer).load(Ordering::Acquire);
            n = self.cached_prod.wrapping_sub(self.cached_cons);
        }
        n.min(want)
    }

    fn submit(&self, n: u32) {
        let p = atomic(self.producer);
        p.store(p.load(Ordering::Relaxed).wrapping_add(n), Ordering::Release);
    }

    fn release(&self, n: u32) {
        let c = atomic(self.consumer);
        c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Release);
    }

    fn needs_wakeup(&self) -> bool {
        // The producer index written before must be visible before the flag is read, or a
        // wake-up the kernel asked for just then could be missed.
        std::sync::atomic::fence(Ordering::SeqCst);
        // SAFETY: `flags` points into the ring's mapping (see `atomic`).
        (unsafe { self.flags.read_volatile() } & ffi::XDP_RING_NEED_WAKEUP) != 0
    }

    fn addr_slot(&self, idx: u32) -> *mut u64 {
        // SAFETY: masked into the ring of `size` u64 entries.
        unsafe { self.ring.cast::<u64>().add((idx & self.mask) as usize) }
    }

    fn desc_slot(&self, idx: u32) -> *mut Desc {
        // SAFETY: masked into the ring of `size` descriptors.
        unsafe { self.ring.cast::<Desc>().add((idx & self.mask) as usize) }
    }
}

impl Port {
    /// Binds an AF_XDP socket to `queue` of `interface`, with a UMEM of its own whose frames
    /// are all put on the fill ring. Needs CAP_NET_RAW, and CAP_IPC_LOCK or room in
    /// RLIMIT_MEMLOCK for the UMEM (ENOBUFS otherwise).
    pub(crate) fn bind(interface: &str, queue: u32, link: super::LinkInfo) -> io::Result<Self> {
        let area_len = (FRAMES * FRAME_SIZE) as usize;
        // SAFETY: an anonymous private mapping; checked below.
        let area = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                area_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if area == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut port = Self {
            area: area.cast(),
            area_len,
            umem: std::ptr::null_mut(),
            xsk: std::ptr::null_mut(),
            fill: Box::default(),
            comp: Box::default(),
            rx: Box::default(),
            tx: Box::default(),
            fd: -1,
            zero_copy: false,
            queue,
            link,
            in_flight: 0,
        };
        let umem_cfg = ffi::UmemConfig {
            fill_size: FRAMES,
            comp_size: FRAMES,
            frame_size: FRAME_SIZE,
            frame_headroom: 0,
            flags: 0,
        };
        // SAFETY: the area and the ring structures outlive the UMEM (dropped in `Drop`).
        let rc = unsafe {
            ffi::xsk_umem__create(
                &raw mut port.umem,
                area,
                area_len as u64,
                &raw mut *port.fill,
                &raw mut *port.comp,
                &raw const umem_cfg,
            )
        };
        if rc == -libc::ENOBUFS {
            return Err(io::Error::other(format!(
                "the {} MiB UMEM is over RLIMIT_MEMLOCK (give CAP_IPC_LOCK, or LimitMEMLOCK= in the unit)",
                area_len >> 20
            )));
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(-rc));
        }
        let name = CString::new(interface).map_err(|_| io::Error::other("interface name with a NUL"))?;
        let sock_cfg = ffi::SocketConfig {
            rx_size: RING,
            tx_size: RING,
            libxdp_flags: ffi::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD,
            xdp_flags: 0,
            bind_flags: ffi::XDP_USE_NEED_WAKEUP,
        };
        // SAFETY: as above; the name outlives the call.
        let rc = unsafe {
            ffi::xsk_socket__create(
                &raw mut port.xsk,
                name.as_ptr(),
                queue,
                port.umem,
                &raw mut *port.rx,
                &raw mut *port.tx,
                &raw const sock_cfg,
            )
        };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(-rc));
        }
        // SAFETY: a live socket.
        port.fd = unsafe { ffi::xsk_socket__fd(port.xsk) };
        let mut opts: u32 = 0;
        let mut len = size_of::<u32>() as libc::socklen_t;
        // SAFETY: a u32 buffer of the length given.
        let rc = unsafe {
            libc::getsockopt(port.fd, ffi::SOL_XDP, ffi::XDP_OPTIONS, (&raw mut opts).cast::<c_void>(), &raw mut len)
        };
        port.zero_copy = rc == 0 && opts & ffi::XDP_OPTIONS_ZEROCOPY != 0;
        let mut idx = 0;
        if port.fill.free(FRAMES) >= FRAMES {
            idx = port.fill.cached_prod;
            port.fill.cached_prod = port.fill.cached_prod.wrapping_add(FRAMES);
        }
        for i in 0..FRAMES {
            // SAFETY: a slot reserved above.
            unsafe { port.fill.addr_slot(idx.wrapping_add(i)).write(u64::from(i * FRAME_SIZE)) };
        }
        port.fill.submit(FRAMES);
        Ok(port)
    }

    /// The socket's descriptor (for the poll and the XSKMAP).
    pub(crate) fn fd(&self) -> RawFd {
        self.fd
    }

    /// Takes up to `max` received frames: the first index and the count. Each frame is
    /// read with [`Port::received`] and its buffer with [`Port::frame`]; then [`Port::release_rx`].
    pub(crate) fn peek_rx(&mut self, max: u32) -> (u32, u32) {
        let n = self.rx.available(max);
        let idx = self.rx.cached_cons;
        self.rx.cached_cons = self.rx.cached_cons.wrapping_add(n);
        (idx, n)
    }

    /// Where received frame `idx` is in the UMEM, and its length.
    pub(crate) fn received(&self, idx: u32) -> (u64, u32) {
        // SAFETY: a slot `peek_rx` returned and not yet released.
        let d = unsafe { self.rx.desc_slot(idx).read() };
        (d.addr, d.len)
    }

    /// Gives the RX slots of the last `peek_rx` back to the kernel.
    pub(crate) fn release_rx(&self, n: u32) {
        self.rx.release(n);
    }

    /// The buffer of the frame at `addr`, from its start to the end of its chunk.
    pub(crate) fn frame(&mut self, addr: u64) -> Option<&mut [u8]> {
        let start = usize::try_from(addr).ok()?;
        let chunk_end = (start / FRAME_SIZE as usize + 1) * FRAME_SIZE as usize;
        if chunk_end > self.area_len {
            return None;
        }
        // SAFETY: inside the UMEM area; the kernel handed this frame to us (RX) and does not
        // touch it until we put it on the TX or fill ring.
        Some(unsafe { std::slice::from_raw_parts_mut(self.area.add(start), chunk_end - start) })
    }

    /// Puts the frame at `addr` back on the fill ring (its chunk: the kernel ignores the
    /// offset in aligned mode). False if the fill ring has no room (it always has: it holds
    /// every frame).
    pub(crate) fn refill(&mut self, addr: u64) -> bool {
        if self.fill.free(1) < 1 {
            return false;
        }
        let idx = self.fill.cached_prod;
        self.fill.cached_prod = idx.wrapping_add(1);
        // SAFETY: the slot just reserved.
        unsafe { self.fill.addr_slot(idx).write(addr - addr % u64::from(FRAME_SIZE)) };
        self.fill.submit(1);
        true
    }

    /// Queues the frame at `addr`, `len` octets, for sending; false when the TX ring is
    /// full (the caller sends another way and refills the frame).
    pub(crate) fn send(&mut self, addr: u64, len: u32) -> bool {
        if self.tx.free(1) < 1 {
            return false;
        }
        let idx = self.tx.cached_prod;
        self.tx.cached_prod = idx.wrapping_add(1);
        // SAFETY: the slot just reserved.
        unsafe { self.tx.desc_slot(idx).write(Desc { addr, len, options: 0 }) };
        self.tx.submit(1);
        self.in_flight += 1;
        true
    }

    /// Tells the kernel there is something to send (when it asks to be told, which in
    /// copy mode is always) and takes back the frames it finished sending. In copy mode a
    /// wake-up sends at most 32 frames and answers EAGAIN when more are left: it is sent
    /// again (a bounded number of times) until the kernel has taken the whole TX ring.
    /// True when the kernel took frames from the TX ring meanwhile (false also when there
    /// was nothing to send); an error other than "try again" (the link is down, the
    /// device gone) is returned for the caller to report.
    pub(crate) fn flush(&mut self) -> io::Result<bool> {
        let mut result = Ok(false);
        if self.tx_pending() {
            let before = atomic(self.tx.consumer).load(Ordering::Acquire);
            for _ in 0..RING / 16 {
                if !self.tx.needs_wakeup() {
                    break;
                }
                let taken = atomic(self.tx.consumer).load(Ordering::Acquire);
                // SAFETY: a zero-length send on our socket is the kick AF_XDP defines.
                let rc = unsafe { libc::sendto(self.fd, std::ptr::null(), 0, libc::MSG_DONTWAIT, std::ptr::null(), 0) };
                let error = (rc < 0).then(io::Error::last_os_error);
                let again = error
                    .as_ref()
                    .is_some_and(|e| matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EBUSY | libc::EINTR)));
                if let Some(e) = error.filter(|_| !again) {
                    result = Err(e);
                    break;
                }
                // Done, or the kernel took nothing this time (its queue is stopped): the
                // next turn or the sweep tries again.
                if !self.tx_pending() || atomic(self.tx.consumer).load(Ordering::Acquire) == taken {
                    break;
                }
            }
            if result.is_ok() {
                result = Ok(atomic(self.tx.consumer).load(Ordering::Acquire) != before);
            }
        }
        self.complete();
        result
    }

    /// Datagrams the kernel redirected to this socket but dropped: no room on the RX ring,
    /// no frame on the fill ring, or another reason (the kernel's counters, since the
    /// socket was made).
    pub(crate) fn dropped(&self) -> u64 {
        let mut st = ffi::Statistics::default();
        let mut len = size_of::<ffi::Statistics>() as libc::socklen_t;
        // SAFETY: a buffer of the structure's size, its length given.
        let rc = unsafe {
            libc::getsockopt(self.fd, ffi::SOL_XDP, ffi::XDP_STATISTICS, (&raw mut st).cast::<c_void>(), &raw mut len)
        };
        if rc != 0 {
            return 0;
        }
        st.rx_dropped + st.rx_ring_full + st.rx_invalid_descs
    }

    /// Frames on the TX ring the kernel has not taken yet.
    pub(crate) fn tx_pending(&self) -> bool {
        atomic(self.tx.consumer).load(Ordering::Acquire) != self.tx.cached_prod
    }

    /// Moves completed TX frames back to the fill ring.
    pub(crate) fn complete(&mut self) {
        // Until a look finds none: a short count may be only what the last look saw. The
        // ring holds at most FRAMES entries, so this ends.
        loop {
            let n = self.comp.available(FRAMES);
            if n == 0 {
                return;
            }
            let first = self.comp.cached_cons;
            self.comp.cached_cons = first.wrapping_add(n);
            for i in 0..n {
                // SAFETY: a slot `available` reported.
                let addr = unsafe { self.comp.addr_slot(first.wrapping_add(i)).read() };
                self.refill(addr);
            }
            self.comp.release(n);
            self.in_flight -= n.min(self.in_flight);
        }
    }

    /// Wakes the kernel to fill RX again when it asks (drivers in zero-copy mode).
    pub(crate) fn wake_fill(&self) {
        if self.fill.needs_wakeup() {
            // SAFETY: a zero-length receive on our socket is the wake-up AF_XDP defines.
            unsafe {
                libc::recvfrom(
                    self.fd,
                    std::ptr::null_mut(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
            };
        }
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        // SAFETY: each made once in `bind` (null when that failed before), freed once here,
        // socket before UMEM before area.
        unsafe {
            if !self.xsk.is_null() {
                ffi::xsk_socket__delete(self.xsk);
            }
            if !self.umem.is_null() {
                ffi::xsk_umem__delete(self.umem);
            }
            libc::munmap(self.area.cast(), self.area_len);
        }
    }
}
