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

/// Gives the files root owns in the state directory `dir` to `uid`:`gid`, when `dir` is
/// theirs (run as root, before a switch to that user): the policy store opened before the
/// switch, or files of an earlier run as root, would otherwise stay root's, and a later
/// start as that user alone could not write them. Only regular files with one link: a
/// symlink or a hard link placed in the directory (which the user can write) never hands
/// the user a file elsewhere. Nothing is done in a directory that is not the user's.
pub(crate) fn hand_over(dir: &Path, uid: u32, gid: u32) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let fail = |what: &Path, e: std::io::Error| format!("state directory {}: {e}", what.display());
    match std::fs::metadata(dir) {
        Ok(m) if m.uid() == uid => {}
        // Not theirs (the write check after the switch says so), or not there yet.
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(fail(dir, e)),
    }
    for entry in std::fs::read_dir(dir).map_err(|e| fail(dir, e))? {
        let path = entry.map_err(|e| fail(dir, e))?.path();
        let m = std::fs::symlink_metadata(&path).map_err(|e| fail(&path, e))?;
        if m.file_type().is_file() && m.uid() == 0 && m.nlink() == 1 {
            // lchown: should the entry have become a link since, the link changes hands,
            // not what it points to.
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).map_err(|e| fail(&path, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
