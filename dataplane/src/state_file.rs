//! Files in the state directory (`server.state_dir`): written whole or not at all.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically: a temporary file, fsync, rename, directory fsync,
/// so a crash leaves either the old file or the new one, never half of one. Each write has
/// a temporary file of its own (a name nobody else holds, created with `create_new`: never
/// through a symlink or over a file someone placed, readable by the owner only), so
/// concurrent writers never share (and tear) one: the last rename wins whole. The temporary
/// file is removed when anything fails.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".tmp-{}-{n}", std::process::id()));
    let tmp = path.with_file_name(name);
    let written = (|| {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    File::open(dir)?.sync_all()
}

/// Every file adoxd keeps in the state directory (`server.state_dir`). Only these are
/// handed to `server.user` ([`hand_over`]): an operator's own files kept there stay as
/// they are.
pub const FILES: &[&str] = &[
    "policies.json",
    "policies.journal",
    "negative-anchors.json",
    "zones.json",
    "probes.json",
    "strict-signals.json",
    "managed-anchors.json",
    "fleet.json",
];

/// Gives adoxd's own [`FILES`] in the state directory `dir` that root owns to
/// `uid`:`gid`, when `dir` is theirs (run as root, just before the switch to that user):
/// the policy store, opened before the switch, or the files of an earlier run as root,
/// would otherwise stay root's, and a later start as that user alone could not write
/// them. Only regular files with one link, each checked and changed through a descriptor
/// of its own ([`crate::sys::give_roots_lone_file`]): a symlink or a hard link placed in
/// the directory (which the user can write), or a name swapped for one meanwhile, never
/// hands the user a file elsewhere. What cannot be handed over is logged, and the start
/// goes on (this run writes through the descriptors it holds).
pub(crate) fn hand_over(dir: &Path, uid: u32, gid: u32) {
    use std::os::unix::fs::MetadataExt;
    if uid == 0 {
        return;
    }
    let warn = |what: &Path, e: std::io::Error| {
        tracing::warn!(path = %what.display(), error = %e, "state file left root's: a start as the user alone may not write it");
    };
    let d = match File::open(dir) {
        Ok(d) => d,
        // Not there yet: the write check after the switch says so.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => return warn(dir, e),
    };
    // Checked on the descriptor the files are then opened from.
    match d.metadata() {
        Ok(m) if m.is_dir() && m.uid() == uid => {}
        Ok(_) => return,
        Err(e) => return warn(dir, e),
    }
    for name in FILES {
        if let Err(e) = crate::sys::give_roots_lone_file(&d, std::ffi::OsStr::new(name), uid, gid) {
            warn(&dir.join(name), e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The data plane's state files are among those handed to the user (the control
    /// plane's are checked there).
    #[test]
    fn the_data_planes_state_files_are_listed() {
        for f in [
            crate::daemon::PROBE_STATE_FILE,
            crate::upstream::strict_state::STRICT_STATE_FILE,
            crate::dnssec::managed::MANAGED_STATE_FILE,
        ] {
            assert!(FILES.contains(&f), "{f}");
        }
    }

    /// A symlink planted where a temporary file could be leads nowhere: the write goes to
    /// a fresh file, the link's target is untouched, and no temporary file is left.
    #[test]
    fn an_atomic_write_never_follows_a_planted_link() {
        let dir = std::env::temp_dir().join(format!("adox-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let path = dir.join("state.json");
        // The fixed name the probe table's writer once used.
        std::os::unix::fs::symlink(&victim, dir.join("state.json.tmp")).unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        let left = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(left, 3, "state.json, the victim and the planted link: no temporary file left");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
