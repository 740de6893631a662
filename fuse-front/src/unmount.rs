//! Unmounting a mount of this process lazily: `umount2(MNT_DETACH)`, or `fusermount3 -u -z`
//! for a user who may not unmount. The mount leaves the directory tree at once, files still
//! open on it keep being served until they are closed, and then the session ends. (fuser's own
//! unmount is a plain `umount`, which fails with EBUSY while anything holds the mount, even for
//! the moment another process's `fork` holds a copy of a descriptor; the failure is only logged,
//! and the mount then stayed for ever: SIGTERM left the daemon running.)

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// Detaches the mount at `path` (see the module documentation).
pub fn lazy(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| format!("{shown}: the path contains a NUL byte"))?;
    // SAFETY: umount2 with a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    let helper = Command::new("fusermount3")
        .args(["-u", "-z", "--"])
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match helper {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("cannot unmount {shown}: {e}; fusermount3 -u -z exited with {s}")),
        Err(h) => Err(format!("cannot unmount {shown}: {e}; fusermount3: {h}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_that_is_no_mount_point_is_an_error_naming_it() {
        let dir = std::env::temp_dir().join(format!("truckeefs-unmount-test-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        let e = lazy(&dir);
        std::fs::remove_dir(&dir).unwrap();
        let e = e.unwrap_err();
        assert!(e.starts_with(&format!("cannot unmount {}: ", dir.display())), "{e}");
    }
}
