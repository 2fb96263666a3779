//! The parts of Debian's libbpf (loading and attaching the program, its maps) and libxdp
//! (the AF_XDP socket and its UMEM) that adox calls, declared by hand after their headers
//! (`bpf/libbpf.h`, `bpf/bpf.h`, `xdp/xsk.h`: libbpf 1.1, libxdp 1.3). The rings' inline
//! functions of `xsk.h` are not in the libraries: `xsk.rs` has them.
#![allow(unsafe_code, reason = "declarations of C functions")]

use std::ffi::{c_char, c_int, c_void};

/// `struct bpf_object`, `struct bpf_program`, `struct bpf_link`, `struct xsk_umem`,
/// `struct xsk_socket`: opaque.
#[repr(C)]
pub(super) struct Opaque {
    _private: [u8; 0],
}

/// `DEFINE_XSK_RING` of `xsk.h`: one ring as libxdp maps it. Its pointers point into
/// memory the kernel shares; libxdp fills the structure in.
#[repr(C)]
#[derive(Debug)]
pub(super) struct Ring {
    pub cached_prod: u32,
    pub cached_cons: u32,
    pub mask: u32,
    pub size: u32,
    pub producer: *mut u32,
    pub consumer: *mut u32,
    pub ring: *mut c_void,
    pub flags: *mut u32,
}

impl Default for Ring {
    fn default() -> Self {
        Self {
            cached_prod: 0,
            cached_cons: 0,
            mask: 0,
            size: 0,
            producer: std::ptr::null_mut(),
            consumer: std::ptr::null_mut(),
            ring: std::ptr::null_mut(),
            flags: std::ptr::null_mut(),
        }
    }
}

/// `struct xsk_umem_config`
#[repr(C)]
pub(super) struct UmemConfig {
    pub fill_size: u32,
    pub comp_size: u32,
    pub frame_size: u32,
    pub frame_headroom: u32,
    pub flags: u32,
}

/// `struct xsk_socket_config`
#[repr(C)]
pub(super) struct SocketConfig {
    pub rx_size: u32,
    pub tx_size: u32,
    pub libxdp_flags: u32,
    pub xdp_flags: u32,
    pub bind_flags: u16,
}

/// `struct xdp_desc` (`linux/if_xdp.h`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(super) struct Desc {
    pub addr: u64,
    pub len: u32,
    pub options: u32,
}

/// Do not load libxdp's own XDP program: adox attaches its own.
pub(super) const XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD: u32 = 1;
/// `XDP_USE_NEED_WAKEUP`: the kernel says when it must be woken to send or to refill.
pub(super) const XDP_USE_NEED_WAKEUP: u16 = 1 << 3;
/// `XDP_RING_NEED_WAKEUP`
pub(super) const XDP_RING_NEED_WAKEUP: u32 = 1;
/// `SOL_XDP`, `XDP_OPTIONS`, `XDP_OPTIONS_ZEROCOPY`: how the socket was bound.
pub(super) const SOL_XDP: c_int = 283;
pub(super) const XDP_OPTIONS: c_int = 8;
pub(super) const XDP_OPTIONS_ZEROCOPY: u32 = 1;
/// `XDP_STATISTICS`: the socket's drop counters.
pub(super) const XDP_STATISTICS: c_int = 7;

/// `struct xdp_statistics` (`linux/if_xdp.h`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Statistics {
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty_descs: u64,
    pub tx_ring_empty_descs: u64,
}
/// `BPF_ANY`
pub(super) const BPF_ANY: u64 = 0;

#[link(name = "bpf")]
unsafe extern "C" {
    pub(super) fn bpf_object__open_mem(buf: *const c_void, size: usize, opts: *const c_void) -> *mut Opaque;
    pub(super) fn bpf_object__load(obj: *mut Opaque) -> c_int;
    pub(super) fn bpf_object__close(obj: *mut Opaque);
    pub(super) fn bpf_object__find_program_by_name(obj: *const Opaque, name: *const c_char) -> *mut Opaque;
    pub(super) fn bpf_object__find_map_fd_by_name(obj: *const Opaque, name: *const c_char) -> c_int;
    pub(super) fn bpf_program__attach_xdp(prog: *const Opaque, ifindex: c_int) -> *mut Opaque;
    pub(super) fn bpf_link__destroy(link: *mut Opaque) -> c_int;
    pub(super) fn bpf_map_update_elem(fd: c_int, key: *const c_void, value: *const c_void, flags: u64) -> c_int;
    pub(super) fn bpf_map_freeze(fd: c_int) -> c_int;
}

#[link(name = "xdp")]
unsafe extern "C" {
    pub(super) fn xsk_umem__create(
        umem: *mut *mut Opaque,
        area: *mut c_void,
        size: u64,
        fill: *mut Ring,
        comp: *mut Ring,
        config: *const UmemConfig,
    ) -> c_int;
    pub(super) fn xsk_umem__delete(umem: *mut Opaque) -> c_int;
    pub(super) fn xsk_socket__create(
        xsk: *mut *mut Opaque,
        ifname: *const c_char,
        queue_id: u32,
        umem: *mut Opaque,
        rx: *mut Ring,
        tx: *mut Ring,
        config: *const SocketConfig,
    ) -> c_int;
    pub(super) fn xsk_socket__fd(xsk: *const Opaque) -> c_int;
    pub(super) fn xsk_socket__delete(xsk: *mut Opaque);
}
