//! adox's XDP program (`redirect.bpf.c`, built by clang at build time), loaded and attached
//! by libbpf through a BPF link: the program leaves the interface when the link closes,
//! also when adoxd dies, so a stopped adoxd never leaves traffic redirected to nobody.
//! Once its maps are filled and the sockets are in, [`Program::seal`] freezes the maps it
//! reads and closes every descriptor but the link's: a compromised adoxd cannot point the
//! program at other traffic.
#![allow(unsafe_code, reason = "libbpf calls")]

use std::ffi::{CString, c_int};
use std::io;
use std::net::SocketAddr;

use super::ffi;

/// The object clang built from `redirect.bpf.c`.
static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/redirect.bpf.o"));

/// The key of the program's `services` map (`struct service`).
#[repr(C)]
struct ServiceKey {
    addr: [u8; 16],
    port: u16,
    family: u16,
}

/// The program, loaded and attached to one interface.
pub(crate) struct Program {
    /// The loaded object (its maps' and program's descriptors); null once sealed.
    obj: *mut ffi::Opaque,
    link: *mut ffi::Opaque,
    xsks: c_int,
    /// The maps frozen by `seal`.
    frozen: [c_int; 2],
    /// Where it is attached.
    pub interface: String,
}

// Made and dropped on the main thread; its descriptors are used from the main thread only.
// SAFETY: libbpf's object is not touched by two threads at once.
unsafe impl Send for Program {}
// SAFETY: as above.
unsafe impl Sync for Program {}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program").field("interface", &self.interface).finish()
    }
}

fn last_error(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Sets `key` to `value` in the map `fd`.
///
/// # Safety
/// `K` and `V` are exactly the map's key and value sizes: the kernel reads that many
/// octets behind each pointer.
unsafe fn update<K, V>(fd: c_int, key: &K, value: &V, what: &str) -> io::Result<()> {
    // SAFETY: live values, of the sizes the caller vouches for.
    let rc = unsafe {
        ffi::bpf_map_update_elem(fd, std::ptr::from_ref(key).cast(), std::ptr::from_ref(value).cast(), ffi::BPF_ANY)
    };
    if rc < 0 { Err(last_error(what)) } else { Ok(()) }
}

impl Program {
    /// Loads the program, tells it the service addresses (UDP datagrams to any of them are
    /// redirected; an unspecified address stands for every address of its family) and
    /// attaches it to `interface`. Needs CAP_BPF and CAP_NET_ADMIN (or CAP_SYS_ADMIN).
    pub(crate) fn attach(interface: &str, services: &[SocketAddr], mac: [u8; 6]) -> io::Result<Self> {
        let name = CString::new(interface).map_err(|_| io::Error::other("interface name with a NUL"))?;
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(last_error(&format!("interface {interface:?}")));
        }
        // SAFETY: a static buffer libbpf copies; null options.
        let obj = unsafe { ffi::bpf_object__open_mem(OBJECT.as_ptr().cast(), OBJECT.len(), std::ptr::null()) };
        if obj.is_null() {
            return Err(last_error("opening the XDP program"));
        }
        let mut program =
            Self { obj, link: std::ptr::null_mut(), xsks: -1, frozen: [-1, -1], interface: interface.into() };
        // SAFETY: an object just opened.
        let rc = unsafe { ffi::bpf_object__load(obj) };
        if rc < 0 {
            let e = io::Error::from_raw_os_error(-rc);
            return Err(io::Error::new(e.kind(), format!("loading the XDP program (CAP_BPF?): {e}")));
        }
        let map_fd = |name: &str| -> io::Result<c_int> {
            let c = CString::new(name).map_err(io::Error::other)?;
            // SAFETY: a loaded object and a NUL-terminated name.
            let fd = unsafe { ffi::bpf_object__find_map_fd_by_name(obj, c.as_ptr()) };
            if fd < 0 { Err(io::Error::other(format!("the XDP program has no map {name}"))) } else { Ok(fd) }
        };
        let services_fd = map_fd("services")?;
        let mac_fd = map_fd("own_mac")?;
        program.xsks = map_fd("xsks")?;
        program.frozen = [services_fd, mac_fd];
        let mut value = [0u8; 8];
        value[..6].copy_from_slice(&mac);
        // SAFETY: a u32 key and a u64 value, the map's sizes.
        unsafe { update(mac_fd, &0u32, &value, "the XDP program's MAC map") }?;
        for s in services {
            let mut key = ServiceKey { addr: [0; 16], port: s.port().to_be(), family: 4 };
            match s {
                SocketAddr::V4(a) => key.addr[..4].copy_from_slice(&a.ip().octets()),
                SocketAddr::V6(a) => {
                    key.addr = a.ip().octets();
                    key.family = 6;
                }
            }
            // SAFETY: `struct service` and a u8, the map's sizes.
            unsafe { update(services_fd, &key, &1u8, "the XDP program's service map") }?;
        }
        let prog_name = c"adox_redirect";
        // SAFETY: a loaded object and a NUL-terminated name.
        let prog = unsafe { ffi::bpf_object__find_program_by_name(obj, prog_name.as_ptr()) };
        if prog.is_null() {
            return Err(io::Error::other("the XDP object has no program adox_redirect"));
        }
        #[allow(clippy::cast_possible_wrap, reason = "interface indexes are small")]
        // SAFETY: a loaded program.
        let link = unsafe { ffi::bpf_program__attach_xdp(prog, ifindex as c_int) };
        if link.is_null() {
            return Err(last_error(&format!("attaching the XDP program to {interface} (CAP_NET_ADMIN?)")));
        }
        program.link = link;
        Ok(program)
    }

    /// Sends the datagrams of `queue` to the AF_XDP socket `fd`.
    pub(crate) fn serve_queue(&self, queue: u32, fd: c_int) -> io::Result<()> {
        // SAFETY: a u32 key and a u32 value, as the XSKMAP takes.
        unsafe { update(self.xsks, &queue, &fd, &format!("the XDP socket map, queue {queue}")) }
    }

    /// Freezes the maps the program reads (no process can change them any more) and closes
    /// the object, keeping only the link: the socket map loses its last writer here (a
    /// socket still leaves it when closed).
    pub(crate) fn seal(&mut self) -> io::Result<()> {
        for fd in self.frozen {
            // SAFETY: a map descriptor of the loaded object.
            if unsafe { ffi::bpf_map_freeze(fd) } < 0 {
                return Err(last_error("freezing the XDP program's maps"));
            }
        }
        // SAFETY: the object, closed once (null afterwards); the link holds the program.
        unsafe { ffi::bpf_object__close(self.obj) };
        self.obj = std::ptr::null_mut();
        self.xsks = -1;
        self.frozen = [-1, -1];
        Ok(())
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: made once in `attach`, freed once here, link before object.
        unsafe {
            if !self.link.is_null() {
                ffi::bpf_link__destroy(self.link);
            }
            if !self.obj.is_null() {
                ffi::bpf_object__close(self.obj);
            }
        }
    }
}
