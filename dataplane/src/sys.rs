//! The data plane's only `unsafe`: thin calls into libc that std does not offer.
#![allow(unsafe_code, reason = "FFI to sched_setaffinity; the one fenced place for unsafe")]

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
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
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
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(&STOP)
}
