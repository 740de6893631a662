//! Compatibility: can this system mount a FUSE filesystem at all?

use super::{Report, Suite};
use std::ffi::CStr;
use std::path::{Path, PathBuf};

/// The oldest kernel truckeefs supports.
const KERNEL_MIN: (u32, u32) = (4, 0);

pub fn run(r: &mut Report) {
    let s = Suite::Compatibility;
    r.check(s, Ok(format!("truckeefs {}", env!("CARGO_PKG_VERSION"))));
    let uname = uname();
    r.check(s, os(uname.as_ref().map(|u| u.0.as_str())));
    r.check(s, kernel(uname.as_ref().map(|u| u.1.as_str())));
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    r.check(s, dev_fuse(root));
    r.check(s, fuse_filesystem(&std::fs::read_to_string("/proc/filesystems").unwrap_or_default()));
    r.check(s, fusermount(root));
}

/// `(sysname, release)` of uname(2).
fn uname() -> Option<(String, String)> {
    // SAFETY: utsname is plain data; uname fills it with NUL-terminated strings.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return None;
    }
    let field = |f: &[libc::c_char]| {
        // SAFETY: uname NUL-terminates every field within its array.
        unsafe { CStr::from_ptr(f.as_ptr()) }.to_string_lossy().into_owned()
    };
    Some((field(&u.sysname), field(&u.release)))
}

fn os(sysname: Option<&str>) -> Result<String, String> {
    match sysname {
        Some("Linux") if cfg!(target_os = "linux") => Ok("operating system: Linux".into()),
        Some(other) => Err(format!("operating system: {other}; truckeefs runs on Linux only")),
        None => Err("operating system: uname failed; truckeefs runs on Linux only".into()),
    }
}

fn kernel(release: Option<&str>) -> Result<String, String> {
    let Some(release) = release else { return Err("kernel version: uname failed".into()) };
    let mut parts = release.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty()).map(|p| p.parse::<u32>());
    let version = match (parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => (major, minor),
        _ => return Err(format!("kernel version: cannot read {release:?}")),
    };
    if version < KERNEL_MIN {
        return Err(format!(
            "kernel {release} is older than {}.{}, the oldest truckeefs supports; upgrade the kernel",
            KERNEL_MIN.0, KERNEL_MIN.1
        ));
    }
    Ok(format!("kernel {release} (at least {}.{})", KERNEL_MIN.0, KERNEL_MIN.1))
}

/// `/dev/fuse` is there, and root (who mounts without `fusermount3`, which opens it for other
/// users) can open it. (An open without a mount only allocates a connection, dropped on close.)
fn dev_fuse(root: bool) -> Result<String, String> {
    use std::os::unix::fs::FileTypeExt;
    let path = Path::new("/dev/fuse");
    let meta = std::fs::metadata(path).map_err(|e| {
        format!("/dev/fuse: {e}; load the fuse kernel module (modprobe fuse), or pass the device into the container")
    })?;
    if !meta.file_type().is_char_device() {
        return Err("/dev/fuse is not a character device; recreate it (mknod /dev/fuse c 10 229)".into());
    }
    if !root {
        return Ok("/dev/fuse is there (fusermount3 opens it)".into());
    }
    std::fs::OpenOptions::new().read(true).write(true).open(path).map_err(|e| {
        format!("/dev/fuse cannot be opened for reading and writing: {e}; is the device passed into the container?")
    })?;
    Ok("/dev/fuse opens for reading and writing".into())
}

/// The kernel lists `fuse` among its filesystems (the module is loaded, or built in).
fn fuse_filesystem(proc_filesystems: &str) -> Result<String, String> {
    if proc_filesystems.lines().any(|l| l.split_whitespace().last() == Some("fuse")) {
        Ok("the kernel has FUSE (/proc/filesystems lists fuse)".into())
    } else {
        Err("the kernel has no FUSE (/proc/filesystems does not list fuse); load the module: modprobe fuse".into())
    }
}

/// `fusermount3` mounts for a user who is not root: it must exist and be setuid root.
fn fusermount(root: bool) -> Result<String, String> {
    let found = which("fusermount3");
    match found {
        Some(path) => {
            use std::os::unix::fs::MetadataExt;
            let setuid_root = std::fs::metadata(&path).map(|m| m.uid() == 0 && m.mode() & 0o4000 != 0).unwrap_or(false);
            if setuid_root || root {
                Ok(format!("fusermount3: {}", path.display()))
            } else {
                Err(format!("fusermount3 ({}) is not setuid root, so it cannot mount for this user; reinstall the fuse3 package", path.display()))
            }
        }
        None if root => Ok("fusermount3 not found; not needed by root, who mounts directly".into()),
        None => Err("fusermount3 was not found in PATH: install the fuse3 package".into()),
    }
}

fn which(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(bin)).find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions() {
        assert!(kernel(Some("6.18.44-fc-v669")).unwrap().starts_with("kernel 6.18.44"));
        assert!(kernel(Some("4.0.0")).is_ok());
        let e = kernel(Some("3.10.0-1160.el7.x86_64")).unwrap_err();
        assert!(e.contains("older than 4.0"), "{e}");
        assert!(kernel(Some("weird")).unwrap_err().contains("cannot read"));
        assert!(kernel(None).is_err());
    }

    #[test]
    fn operating_systems() {
        assert!(os(Some("Linux")).is_ok());
        assert!(os(Some("FreeBSD")).unwrap_err().contains("Linux only"));
    }

    #[test]
    fn fuse_in_proc_filesystems() {
        assert!(fuse_filesystem("nodev\tsysfs\nnodev\tfuse\n\text4\n").is_ok());
        assert!(fuse_filesystem("nodev\tfusectl\n\text4\n").is_err(), "fusectl is not fuse");
    }
}
