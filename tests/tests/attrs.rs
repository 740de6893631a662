//! getattr/setattr: stat fields, chmod, chown, truncate, utimensat, ctime.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use truckeefs_tests::*;

fn lstat(p: &Path) -> fs::Metadata {
    fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
}

fn ts_ge(a: (i64, i64), b: (i64, i64)) -> bool {
    a >= b
}

/// Allow 2 s of slack between the test's clock reading and the
/// filesystem's timestamps (same host clock; this only guards against
/// coarse clocks and rounding, it is not a timing assertion).
fn within_window(t: (i64, i64), before: (i64, i64), after: (i64, i64)) -> bool {
    t.0 >= before.0 - 2 && t.0 <= after.0 + 2
}

#[test]
fn stat_of_new_file_reports_type_mode_nlink_owner_size_and_times() {
    let m = Mount::new();
    let p = m.path("f");
    let before = now_ts();
    let mut f = File::create(&p).unwrap();
    f.write_all(&[7u8; 12345]).unwrap();
    drop(f);
    chmod(&p, 0o640).unwrap();
    let after = now_ts();
    let md = lstat(&p);
    assert_eq!(md.mode() & libc::S_IFMT, libc::S_IFREG, "file type");
    assert_eq!(md.mode() & 0o7777, 0o640, "permission bits");
    assert_eq!(md.nlink(), 1, "nlink");
    assert_eq!(md.uid(), unsafe { libc::geteuid() }, "uid");
    assert_eq!(md.gid(), unsafe { libc::getegid() }, "gid");
    assert_eq!(md.size(), 12345, "size");
    for (name, t) in [
        ("atime", atime_of(&md)),
        ("mtime", mtime_of(&md)),
        ("ctime", ctime_of(&md)),
    ] {
        assert!(
            within_window(t, before, after),
            "{name} {t:?} not within [{before:?}, {after:?}] (±2 s)"
        );
    }
    assert!(md.blksize() > 0, "st_blksize must be nonzero");
    // Stat through an open fd agrees.
    let f = File::open(&p).unwrap();
    let st = fstat(&f).unwrap();
    assert_eq!(st.st_ino, md.ino());
    assert_eq!(st.st_size, 12345);
    assert_eq!(st.st_mode, md.mode());
}

#[test]
fn stat_of_new_directory_reports_dir_type_and_nlink_2() {
    let m = Mount::new();
    let d = m.path("d");
    mkdir(&d, 0o755).unwrap();
    chmod(&d, 0o751).unwrap();
    let md = lstat(&d);
    assert_eq!(md.mode() & libc::S_IFMT, libc::S_IFDIR);
    assert_eq!(md.mode() & 0o7777, 0o751);
    assert_eq!(
        md.nlink(),
        2,
        "a new directory has nlink 2 ('.' and its name)"
    );
    assert_eq!(md.uid(), unsafe { libc::geteuid() });
    assert_eq!(md.gid(), unsafe { libc::getegid() });
}

#[test]
fn root_directory_is_a_directory_with_nlink_at_least_2() {
    let m = Mount::new();
    let md = lstat(&m.dir);
    assert_eq!(md.mode() & libc::S_IFMT, libc::S_IFDIR);
    assert!(md.nlink() >= 2, "root nlink {}", md.nlink());
    // The mount point is a different filesystem from its parent.
    let parent = lstat(m.dir.parent().unwrap());
    assert_ne!(
        md.dev(),
        parent.dev(),
        "mount point must be on its own device"
    );
}

#[test]
fn chmod_sets_all_permission_bits_including_suid_sgid_sticky() {
    let m = Mount::new();
    let p = m.path("f");
    File::create(&p).unwrap();
    for mode in [0o755, 0o4755, 0o2755, 0o1777, 0o6711, 0o000, 0o644] {
        chmod(&p, mode).unwrap();
        let md = lstat(&p);
        assert_eq!(md.mode() & 0o7777, mode, "after chmod {mode:o}");
        assert_eq!(md.mode() & libc::S_IFMT, libc::S_IFREG, "type unchanged");
    }
    let d = m.path("d");
    mkdir(&d, 0o755).unwrap();
    chmod(&d, 0o1777).unwrap();
    assert_eq!(lstat(&d).mode() & 0o7777, 0o1777);
}

#[test]
fn chmod_bumps_ctime_but_not_mtime() {
    let m = Mount::new();
    let p = m.path("f");
    fs::write(&p, b"x").unwrap();
    let before = lstat(&p);
    wait_clock_past(ctime_of(&before));
    chmod(&p, 0o600).unwrap();
    let after = lstat(&p);
    assert!(
        ctime_of(&after) > ctime_of(&before),
        "ctime {:?} -> {:?}",
        ctime_of(&before),
        ctime_of(&after)
    );
    assert_eq!(
        mtime_of(&after),
        mtime_of(&before),
        "chmod must not change mtime"
    );
}

#[test]
fn chown_by_root_sets_uid_and_gid_and_minus_one_keeps_them() {
    let m = Mount::new();
    let p = m.path("f");
    File::create(&p).unwrap();
    chown(&p, 65534, 65534).unwrap();
    let md = lstat(&p);
    assert_eq!((md.uid(), md.gid()), (65534, 65534));
    chown(&p, 1234, u32::MAX).unwrap();
    let md = lstat(&p);
    assert_eq!((md.uid(), md.gid()), (1234, 65534), "gid -1 keeps gid");
    chown(&p, u32::MAX, 4321).unwrap();
    let md = lstat(&p);
    assert_eq!((md.uid(), md.gid()), (1234, 4321), "uid -1 keeps uid");
    // Directories and symlinks (lchown) too.
    let d = m.path("d");
    mkdir(&d, 0o755).unwrap();
    chown(&d, 7, 8).unwrap();
    let md = lstat(&d);
    assert_eq!((md.uid(), md.gid()), (7, 8));
    let l = m.path("l");
    symlink_bytes(b"f", &l).unwrap();
    lchown(&l, 9, 10).unwrap();
    let md = lstat(&l);
    assert_eq!(
        (md.uid(), md.gid()),
        (9, 10),
        "lchown changes the link itself"
    );
    assert_eq!(lstat(&p).uid(), 1234, "lchown must not touch the target");
}

#[test]
fn chown_bumps_ctime() {
    let m = Mount::new();
    let p = m.path("f");
    File::create(&p).unwrap();
    let before = lstat(&p);
    wait_clock_past(ctime_of(&before));
    chown(&p, 65534, 65534).unwrap();
    let after = lstat(&p);
    assert!(
        ctime_of(&after) > ctime_of(&before),
        "ctime {:?} -> {:?}",
        ctime_of(&before),
        ctime_of(&after)
    );
}

#[test]
fn link_bumps_ctime_of_the_inode() {
    let m = Mount::new();
    let p = m.path("f");
    File::create(&p).unwrap();
    let before = lstat(&p);
    wait_clock_past(ctime_of(&before));
    link(&p, &m.path("g")).unwrap();
    let after = lstat(&p);
    assert!(
        ctime_of(&after) > ctime_of(&before),
        "ctime {:?} -> {:?}",
        ctime_of(&before),
        ctime_of(&after)
    );
}

#[test]
fn rename_bumps_ctime_of_the_renamed_inode() {
    let m = Mount::new();
    let p = m.path("f");
    File::create(&p).unwrap();
    let before = lstat(&p);
    wait_clock_past(ctime_of(&before));
    rename(&p, &m.path("g")).unwrap();
    let after = lstat(&m.path("g"));
    assert!(
        ctime_of(&after) > ctime_of(&before),
        "ctime {:?} -> {:?}",
        ctime_of(&before),
        ctime_of(&after)
    );
}

#[test]
fn write_bumps_mtime_and_ctime() {
    let m = Mount::new();
    let p = m.path("f");
    fs::write(&p, b"hello").unwrap();
    let before = lstat(&p);
    wait_clock_past(ctime_of(&before).max(mtime_of(&before)));
    let f = OpenOptions::new().write(true).open(&p).unwrap();
    f.write_all_at(b"J", 0).unwrap();
    drop(f);
    let after = lstat(&p);
    assert!(
        mtime_of(&after) > mtime_of(&before),
        "mtime {:?} -> {:?}",
        mtime_of(&before),
        mtime_of(&after)
    );
    assert!(
        ctime_of(&after) > ctime_of(&before),
        "ctime {:?} -> {:?}",
        ctime_of(&before),
        ctime_of(&after)
    );
    assert_eq!(fs::read(&p).unwrap(), b"Jello");
}

#[test]
fn directory_mtime_and_ctime_bumped_by_create_and_unlink() {
    let m = Mount::new();
    let d = m.path("d");
    mkdir(&d, 0o755).unwrap();
    let before = lstat(&d);
    wait_clock_past(ctime_of(&before).max(mtime_of(&before)));
    File::create(d.join("x")).unwrap();
    let mid = lstat(&d);
    assert!(
        mtime_of(&mid) > mtime_of(&before),
        "dir mtime after create {:?} -> {:?}",
        mtime_of(&before),
        mtime_of(&mid)
    );
    assert!(ctime_of(&mid) > ctime_of(&before), "dir ctime after create");
    wait_clock_past(ctime_of(&mid).max(mtime_of(&mid)));
    unlink(&d.join("x")).unwrap();
    let after = lstat(&d);
    assert!(
        mtime_of(&after) > mtime_of(&mid),
        "dir mtime after unlink {:?} -> {:?}",
        mtime_of(&mid),
        mtime_of(&after)
    );
    assert!(ctime_of(&after) > ctime_of(&mid), "dir ctime after unlink");
}

#[test]
fn truncate_down_then_up_zero_fills_the_extension() {
    let m = Mount::new();
    let p = m.path("f");
    let data = nonzero_random_bytes(1, 10_000);
    fs::write(&p, &data).unwrap();
    truncate(&p, 3000).unwrap();
    assert_eq!(lstat(&p).size(), 3000);
    assert_bytes_eq(&fs::read(&p).unwrap(), &data[..3000], "after truncate down");
    truncate(&p, 20_000).unwrap();
    assert_eq!(lstat(&p).size(), 20_000);
    let got = fs::read(&p).unwrap();
    assert_eq!(got.len(), 20_000);
    assert_bytes_eq(&got[..3000], &data[..3000], "prefix kept");
    assert!(
        got[3000..].iter().all(|&b| b == 0),
        "bytes past the old size must read as zero (old data must not reappear)"
    );
}

#[test]
fn ftruncate_to_zero_and_up_through_open_fd() {
    let m = Mount::new();
    let p = m.path("f");
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    f.write_all(&nonzero_random_bytes(2, 70_000)).unwrap();
    f.set_len(0).unwrap();
    assert_eq!(fstat(&f).unwrap().st_size, 0);
    assert_eq!(lstat(&p).size(), 0);
    f.set_len(1 << 20).unwrap();
    assert_eq!(lstat(&p).size(), 1 << 20);
    let mut got = Vec::new();
    File::open(&p).unwrap().read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), 1 << 20);
    assert!(
        got.iter().all(|&b| b == 0),
        "sparse extension must read as zeros"
    );
}

#[test]
fn truncate_bumps_mtime_and_ctime() {
    let m = Mount::new();
    let p = m.path("f");
    fs::write(&p, b"0123456789").unwrap();
    let before = lstat(&p);
    wait_clock_past(ctime_of(&before).max(mtime_of(&before)));
    truncate(&p, 4).unwrap();
    let after = lstat(&p);
    assert!(mtime_of(&after) > mtime_of(&before), "mtime");
    assert!(ctime_of(&after) > ctime_of(&before), "ctime");
}

#[test]
fn utimensat_explicit_times_are_stored_to_the_nanosecond() {
    let m = Mount::new();
    let p = m.path("f");
    File::create(&p).unwrap();
    utimensat(
        &p,
        Ts::At(1_000_000_000, 123_456_789),
        Ts::At(1_500_000_000, 987_654_321),
        0,
    )
    .unwrap();
    let md = lstat(&p);
    assert_eq!(atime_of(&md), (1_000_000_000, 123_456_789), "atime");
    assert_eq!(mtime_of(&md), (1_500_000_000, 987_654_321), "mtime");
    // Times before the epoch and far in the future.
    utimensat(&p, Ts::At(-1_000, 5), Ts::At(4_000_000_000, 0), 0).unwrap();
    let md = lstat(&p);
    assert_eq!(atime_of(&md), (-1_000, 5), "pre-epoch atime");
    assert_eq!(mtime_of(&md), (4_000_000_000, 0), "post-2038 mtime");
    // A directory too.
    let d = m.path("d");
    mkdir(&d, 0o755).unwrap();
    utimensat(&d, Ts::At(10, 20), Ts::At(30, 40), 0).unwrap();
    let md = lstat(&d);
    assert_eq!((atime_of(&md), mtime_of(&md)), ((10, 20), (30, 40)));
}

#[test]
fn utimensat_utime_now_sets_current_time_and_utime_omit_keeps_old() {
    let m = Mount::new();
    let p = m.path("f");
    File::create(&p).unwrap();
    utimensat(&p, Ts::At(1_000, 1), Ts::At(2_000, 2), 0).unwrap();

    // atime = now, mtime omitted.
    let before = now_ts();
    utimensat(&p, Ts::Now, Ts::Omit, 0).unwrap();
    let after = now_ts();
    let md = lstat(&p);
    assert!(
        within_window(atime_of(&md), before, after),
        "UTIME_NOW atime {:?} not near {before:?}",
        atime_of(&md)
    );
    assert_eq!(mtime_of(&md), (2_000, 2), "UTIME_OMIT must keep mtime");

    // atime omitted, mtime = now.
    utimensat(&p, Ts::At(1_000, 1), Ts::Omit, 0).unwrap();
    let before = now_ts();
    utimensat(&p, Ts::Omit, Ts::Now, 0).unwrap();
    let after = now_ts();
    let md = lstat(&p);
    assert_eq!(atime_of(&md), (1_000, 1), "UTIME_OMIT must keep atime");
    assert!(
        within_window(mtime_of(&md), before, after),
        "UTIME_NOW mtime {:?}",
        mtime_of(&md)
    );

    // Both omitted: nothing changes.
    let md0 = lstat(&p);
    utimensat(&p, Ts::Omit, Ts::Omit, 0).unwrap();
    let md1 = lstat(&p);
    assert_eq!(
        (atime_of(&md1), mtime_of(&md1)),
        (atime_of(&md0), mtime_of(&md0))
    );
}

#[test]
fn utimensat_bumps_ctime() {
    let m = Mount::new();
    let p = m.path("f");
    File::create(&p).unwrap();
    let before = lstat(&p);
    wait_clock_past(ctime_of(&before));
    utimensat(&p, Ts::At(5, 0), Ts::At(6, 0), 0).unwrap();
    let after = lstat(&p);
    assert!(
        ctime_of(&after) > ctime_of(&before),
        "ctime {:?} -> {:?}",
        ctime_of(&before),
        ctime_of(&after)
    );
    assert!(ts_ge(ctime_of(&after), (6, 0)));
}

#[test]
fn stat_missing_is_enoent() {
    let m = Mount::new();
    assert_errno(
        fs::symlink_metadata(m.path("nope")),
        libc::ENOENT,
        "lstat missing",
    );
    assert_errno(chmod(&m.path("nope"), 0o644), libc::ENOENT, "chmod missing");
    assert_errno(
        truncate(&m.path("nope"), 1),
        libc::ENOENT,
        "truncate missing",
    );
}
