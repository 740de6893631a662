//! `truckeefs status MOUNTPOINT`: what a mount is doing, read through the root directory's
//! `user.truckeefs.status` attribute (so it works for whoever may read the mount).

use std::fs;
use std::io::Write;
use truckeefs_tests::*;

fn status_of(m: &Mount) -> String {
    String::from_utf8(getxattr_buf(&m.dir, "user.truckeefs.status", 65536).expect("status attribute")).unwrap()
}

fn field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no {key:?} in status:\n{status}"))
        .to_string()
}

#[test]
fn status_counts_files_waiting_to_upload() {
    // A long upload delay keeps a file that is open and written waiting.
    let m = Mount::new_with_args(&["-o", "upload_delay=3600"]);
    let s = status_of(&m);
    assert_eq!(field(&s, "files waiting to upload"), "0", "{s}");
    let store = if production_backends() { "MySQL" } else { "SQLite" };
    assert!(field(&s, "metadata store").contains(store), "{s}");

    let mut f = fs::File::create(m.path("pending")).unwrap();
    f.write_all(&[7u8; 5000]).unwrap();
    let s = status_of(&m);
    assert_eq!(field(&s, "files waiting to upload"), "1", "{s}");
    assert_eq!(field(&s, "bytes waiting to upload"), "5000", "{s}");
    drop(f);
    m.unmount_ok();
}

#[test]
fn status_attribute_is_read_only_and_unlisted() {
    let m = Mount::new();
    assert_errno(setxattr(&m.dir, "user.truckeefs.status", b"x", 0), libc::EPERM, "setxattr status");
    let names = listxattr(&m.dir).unwrap();
    assert!(!names.iter().any(|n| n.contains("truckeefs.status")), "{names:?}");
    // A file's attribute of that name is an ordinary one.
    fs::write(m.path("f"), b"").unwrap();
    assert_errno(getxattr(&m.path("f"), "user.truckeefs.status"), libc::ENODATA, "getxattr on a file");
    m.unmount_ok();
}

#[test]
fn status_command_prints_it() {
    let m = Mount::new();
    let out = std::process::Command::new(truckeefs_bin()).arg("status").arg(&m.dir).output().unwrap();
    assert!(out.status.success(), "status failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(field(&text, "files waiting to upload"), "0", "{text}");
    // Not a truckeefs mount: one clear line.
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(truckeefs_bin()).arg("status").arg(tmp.path()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("not a truckeefs mount"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    m.unmount_ok();
}
