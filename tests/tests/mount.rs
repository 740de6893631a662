//! The mount itself: mount table entry, statfs, read-only mounts, signals
//! and bad command line input.

use std::fs::{self, File, OpenOptions};
use std::time::Duration;
use truckeefs_tests::*;

#[test]
fn mount_shows_up_in_mountinfo_as_a_fuse_filesystem() {
    let m = Mount::new();
    let t = m.fstype().expect("mounted");
    assert!(t == "fuse" || t.starts_with("fuse."), "fstype {t:?}");
    m.unmount_ok();
}

#[test]
fn statfs_reports_nonzero_blocks_and_files_and_namelen_255() {
    let m = Mount::new();
    let s = statvfs(&m.dir).unwrap();
    assert!(s.f_blocks > 0, "f_blocks = 0");
    assert!(s.f_files > 0, "f_files = 0");
    assert!(s.f_bsize > 0, "f_bsize = 0");
    assert!(
        s.f_bfree <= s.f_blocks && s.f_bavail <= s.f_blocks,
        "free <= total"
    );
    assert!(s.f_ffree <= s.f_files, "free inodes <= total");
    assert_eq!(s.f_namemax, 255, "f_namemax");
    let f = statfs(&m.dir).unwrap();
    assert_eq!(f.f_namelen, 255, "statfs f_namelen");
    assert!(f.f_blocks > 0 && f.f_files > 0);
}

#[test]
fn unmount_exits_zero_and_removes_the_mount() {
    let m = Mount::new();
    fs::write(m.path("f"), b"x").unwrap();
    let dir = m.dir.clone();
    let status = m.unmount();
    assert!(status.success(), "exit status {status}");
    assert!(!is_mounted(&dir), "still mounted after unmount");
}

#[test]
fn sigterm_finishes_writes_unmounts_and_exits_zero() {
    let m = Mount::new();
    let store = m.storage();
    let data = pseudo_random_bytes(21, 3 << 20);
    fs::write(m.path("f"), &data).unwrap();
    let (status, still_mounted) = m.signal_and_wait(libc::SIGTERM);
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(
        !still_mounted,
        "mount point still mounted after the daemon exited on SIGTERM"
    );
    let m = Mount::on(&store);
    assert_bytes_eq(
        &fs::read(m.path("f")).unwrap(),
        &data,
        "after SIGTERM and remount",
    );
    m.unmount_ok();
}

/// SIGTERM while a file is open: the mount leaves the tree at once (a lazy unmount: a plain one
/// fails while the mount is busy, and the daemon then never exited), the open file keeps
/// working, and the daemon exits, its writes stored, once the file is closed.
#[test]
fn sigterm_with_a_file_open_detaches_at_once_and_exits_once_it_is_closed() {
    use std::io::Write;
    let m = Mount::new();
    let store = m.storage();
    let mut f = File::create(m.path("open")).unwrap();
    f.write_all(b"before").unwrap();
    // SAFETY: kill(2) on the daemon, our child.
    unsafe { libc::kill(m.pid() as i32, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while is_mounted(&m.dir) {
        assert!(std::time::Instant::now() < deadline, "still mounted 10 s after SIGTERM with a file open");
        std::thread::sleep(Duration::from_millis(20));
    }
    f.write_all(b" after").unwrap();
    f.sync_all().unwrap();
    drop(f);
    // (A second SIGTERM changes nothing: the daemon is leaving already.)
    let (status, still_mounted) = m.signal_and_wait(libc::SIGTERM);
    assert!(status.success(), "exit status once the open file was closed: {status}");
    assert!(!still_mounted);
    let m = Mount::on(&store);
    assert_eq!(fs::read(m.path("open")).unwrap(), b"before after");
    m.unmount_ok();
}

#[test]
fn sigint_unmounts_and_exits_zero() {
    let m = Mount::new();
    fs::write(m.path("f"), b"x").unwrap();
    let (status, still_mounted) = m.signal_and_wait(libc::SIGINT);
    assert!(status.success(), "exit status after SIGINT: {status}");
    assert!(!still_mounted, "still mounted after SIGINT");
}

#[test]
fn read_only_mount_serves_data_and_rejects_changes_with_erofs() {
    let m = Mount::new();
    let store = m.storage();
    fs::write(m.path("f"), b"read me").unwrap();
    mkdir(&m.path("d"), 0o755).unwrap();
    setxattr(&m.path("f"), "user.k", b"v", 0).unwrap();
    m.unmount_ok();

    let m = Mount::on_with_args(&store, &["-o", "ro"]);
    assert_eq!(fs::read(m.path("f")).unwrap(), b"read me");
    assert_eq!(getxattr(&m.path("f"), "user.k").unwrap(), b"v");
    assert_eq!(names(&m.dir), vec!["d".to_string(), "f".to_string()]);
    assert_errno(File::create(m.path("new")), libc::EROFS, "create");
    assert_errno(
        OpenOptions::new().write(true).open(m.path("f")),
        libc::EROFS,
        "open for write",
    );
    assert_errno(mkdir(&m.path("d2"), 0o755), libc::EROFS, "mkdir");
    assert_errno(unlink(&m.path("f")), libc::EROFS, "unlink");
    assert_errno(rmdir(&m.path("d")), libc::EROFS, "rmdir");
    assert_errno(rename(&m.path("f"), &m.path("g")), libc::EROFS, "rename");
    assert_errno(chmod(&m.path("f"), 0o600), libc::EROFS, "chmod");
    assert_errno(truncate(&m.path("f"), 0), libc::EROFS, "truncate");
    assert_errno(
        setxattr(&m.path("f"), "user.k2", b"v", 0),
        libc::EROFS,
        "setxattr",
    );
    assert_errno(symlink_bytes(b"f", &m.path("l")), libc::EROFS, "symlink");
    let s = statvfs(&m.dir).unwrap();
    assert_ne!(s.f_flag & libc::ST_RDONLY, 0, "statvfs reports ST_RDONLY");
    m.unmount_ok();

    // Nothing changed.
    let m = Mount::on(&store);
    assert_eq!(fs::read(m.path("f")).unwrap(), b"read me");
    m.unmount_ok();
}

#[test]
fn mounting_on_a_missing_directory_fails_naming_the_path() {
    let store = Storage::new();
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("does-not-exist").join("mnt");
    let args = [
        os("mount"),
        os("--data-dir"),
        store.data_dir.as_os_str(),
        os("--cache-dir"),
        store.cache_dir.as_os_str(),
        os("-v"),
        missing.as_os_str(),
    ];
    let out = run_truckeefs(&args, None, Duration::from_secs(20));
    let status = out
        .status
        .expect("truckeefs did not exit within 20 s when the mount point is missing");
    assert!(
        !status.success(),
        "exit status must be nonzero, got {status}; output:\n{}",
        out.output
    );
    assert!(
        out.output.contains(missing.to_str().unwrap()),
        "error output must name the missing path {}; output:\n{}",
        missing.display(),
        out.output
    );
    assert!(
        !out.output.contains("panicked"),
        "no panic expected; output:\n{}",
        out.output
    );
}

#[test]
fn garbage_metadata_database_fails_naming_the_file_without_panicking() {
    let store = Storage::new();
    let db = store.data_dir.join(META_DB);
    fs::write(&db, pseudo_random_bytes(99, 16 * 1024)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let args = [
        os("mount"),
        os("--data-dir"),
        store.data_dir.as_os_str(),
        os("--cache-dir"),
        store.cache_dir.as_os_str(),
        os("-v"),
        mnt.as_os_str(),
    ];
    let out = run_truckeefs(&args, Some(&mnt), Duration::from_secs(20));
    assert!(
        !out.mounted,
        "mounted despite a garbage {META_DB}; output:\n{}",
        out.output
    );
    let status = out
        .status
        .expect("truckeefs did not exit within 20 s on a garbage database");
    assert!(
        !status.success(),
        "exit status must be nonzero, got {status}; output:\n{}",
        out.output
    );
    assert!(
        out.output.contains(META_DB),
        "error output must name {META_DB}; output:\n{}",
        out.output
    );
    assert!(
        !out.output.contains("panicked"),
        "no panic expected; output:\n{}",
        out.output
    );
    assert_eq!(
        fs::read(&db).unwrap(),
        pseudo_random_bytes(99, 16 * 1024),
        "the bad database must be left as it was"
    );
}

#[test]
fn two_mounts_are_independent() {
    let a = Mount::new();
    let b = Mount::new();
    fs::write(a.path("only-in-a"), b"a").unwrap();
    assert!(names(&b.dir).is_empty(), "b sees a's file");
    a.unmount_ok();
    b.unmount_ok();
}

#[test]
fn dropping_a_mount_without_unmounting_leaves_no_mount_behind() {
    let m = Mount::new();
    let dir = m.dir.clone();
    let _f = fs::write(m.path("f"), b"x");
    drop(m);
    assert!(
        !is_mounted(&dir),
        "{} still mounted after drop",
        dir.display()
    );
}
