//! Durability: what survives `kill -9` of the daemon, clean unmount and
//! remount of the same data and cache directories.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;
use truckeefs_tests::*;

const MIB: usize = 1 << 20;

fn check_usable(m: &Mount) {
    let d = m.path("usable-check");
    mkdir(&d, 0o755).unwrap();
    let data = pseudo_random_bytes(77, 300_000);
    fs::write(d.join("f"), &data).unwrap();
    assert_bytes_eq(
        &fs::read(d.join("f")).unwrap(),
        &data,
        "new file after remount",
    );
    rename(&d.join("f"), &d.join("g")).unwrap();
    unlink(&d.join("g")).unwrap();
    rmdir(&d).unwrap();
}

#[test]
fn fsynced_file_survives_kill9() {
    let m = Mount::new();
    let store = m.storage();
    let data = pseudo_random_bytes(1, 4 * MIB + 777);
    let mut f = File::create(m.path("synced")).unwrap();
    f.write_all(&data).unwrap();
    fsync(&f).unwrap();
    // The fd is still open when the daemon dies.
    m.kill9();
    drop(f);

    let m = Mount::with_dirs(&store.data_dir, &store.cache_dir);
    assert_eq!(
        fs::metadata(m.path("synced")).unwrap().size(),
        data.len() as u64,
        "size after crash"
    );
    assert_bytes_eq(
        &fs::read(m.path("synced")).unwrap(),
        &data,
        "fsynced file after kill -9",
    );
    check_usable(&m);
    m.unmount_ok();
}

#[test]
fn closed_file_survives_kill9() {
    let m = Mount::new();
    let store = m.storage();
    let data = pseudo_random_bytes(2, 3 * MIB + 5);
    {
        let mut f = File::create(m.path("closed")).unwrap();
        for c in data.chunks(256 * 1024) {
            f.write_all(c).unwrap();
        }
    }
    m.kill9();

    let m = Mount::on(&store);
    assert_bytes_eq(
        &fs::read(m.path("closed")).unwrap(),
        &data,
        "closed file after kill -9",
    );
    check_usable(&m);
    m.unmount_ok();
}

#[test]
fn many_closed_files_survive_kill9() {
    let m = Mount::new();
    let store = m.storage();
    let mut want = Vec::new();
    for d in 0..5 {
        mkdir(&m.path(format!("dir{d}")), 0o755).unwrap();
        for i in 0..30u64 {
            let rel = format!("dir{d}/file{i}");
            let data =
                pseudo_random_bytes(1000 * d + i, ((i as usize * 7919) % 100_000) + (d as usize));
            fs::write(m.path(&rel), &data).unwrap();
            want.push((rel, data));
        }
    }
    m.kill9();

    let m = Mount::on(&store);
    for (rel, data) in &want {
        let got = fs::read(m.path(rel)).unwrap_or_else(|e| panic!("{rel} after kill -9: {e}"));
        assert_bytes_eq(&got, data, rel);
    }
    for d in 0..5 {
        assert_eq!(
            names(&m.path(format!("dir{d}"))).len(),
            30,
            "dir{d} entry count"
        );
    }
    check_usable(&m);
    m.unmount_ok();
}

/// Objects no file refers to (an upload a crash cut off between its put and its commit, a
/// deletion a crash interrupted) go at the next mount with the embedded stores: a crash costs no
/// space for good. (With the production backends the objects are in the Tahoe grid, and the test
/// checks the files only.)
#[test]
fn objects_left_by_a_crash_are_removed_at_the_next_mount() {
    let embedded = !production_backends();
    let m = Mount::new();
    let store = m.storage();
    let mut want = Vec::new();
    for i in 0..40u64 {
        let rel = format!("f{i}");
        let data = pseudo_random_bytes(500 + i, 1 + (i as usize * 7919) % 300_000);
        fs::write(m.path(&rel), &data).unwrap();
        want.push((rel, data));
    }
    // Some go while their uploads may still run.
    for (rel, _) in want.drain(30..) {
        fs::remove_file(m.path(rel)).unwrap();
    }
    m.kill9();
    let objects = store.data_dir.join("objects");
    // What a crash between an upload's put and its commit leaves: an object no row names; and
    // a file that is no object, to be left alone.
    let stray = objects.join("ab").join("ab0000000000000000000000000000ff");
    let notes = objects.join("ab").join("notes.txt");
    if embedded {
        fs::create_dir_all(stray.parent().unwrap()).unwrap();
        fs::write(&stray, b"cut off").unwrap();
        fs::write(&notes, b"mine").unwrap();
    }

    let m = Mount::on(&store);
    if embedded {
        assert!(!stray.exists(), "an object no file refers to is left");
        assert!(notes.exists(), "a file that is no object was removed");
        fs::remove_file(&notes).unwrap();
    }
    for (rel, data) in &want {
        assert_bytes_eq(&fs::read(m.path(rel)).unwrap(), data, rel);
    }
    m.unmount_ok();
    // Once more: what the last mount left is gone too, and each file has one object.
    let m = Mount::on(&store);
    for (rel, data) in &want {
        assert_bytes_eq(&fs::read(m.path(rel)).unwrap(), data, rel);
    }
    m.unmount_ok();
    if embedded {
        assert_eq!(files_under(&objects).len(), want.len(), "objects for {} files", want.len());
    }
}

#[test]
fn file_being_written_at_kill9_never_contains_unwritten_bytes() {
    let m = Mount::new();
    let store = m.storage();
    // Some finished files first.
    let done_a = pseudo_random_bytes(3, MIB);
    let done_b = pseudo_random_bytes(4, 123_457);
    fs::write(m.path("done-a"), &done_a).unwrap();
    {
        let mut f = File::create(m.path("done-b")).unwrap();
        f.write_all(&done_b).unwrap();
        fsync(&f).unwrap();
    }

    // Writer thread: appends a pattern without zero bytes, never fsyncs,
    // keeps the fd open until the daemon is dead.
    let total = 16 * MIB;
    let pattern = Arc::new(nonzero_random_bytes(5, total));
    let written = Arc::new(AtomicUsize::new(0));
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let (killed_tx, killed_rx) = mpsc::channel::<()>();
    let path = m.path("in-progress");
    let writer = {
        let pattern = pattern.clone();
        let written = written.clone();
        std::thread::spawn(move || {
            let mut f = File::create(&path).unwrap();
            let mut off = 0;
            let mut signalled = false;
            while off < total {
                let end = (off + 64 * 1024).min(total);
                if f.write_all(&pattern[off..end]).is_err() {
                    break;
                }
                off = end;
                written.store(off, Ordering::SeqCst);
                if !signalled && off >= 2 * MIB {
                    signalled = true;
                    let _ = started_tx.send(());
                }
            }
            if !signalled {
                let _ = started_tx.send(());
            }
            let _ = killed_rx.recv_timeout(Duration::from_secs(60));
            drop(f);
        })
    };
    started_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("writer did not get going");
    m.kill9();
    killed_tx.send(()).unwrap();
    writer.join().unwrap();
    let attempted = written.load(Ordering::SeqCst) + 64 * 1024;

    let m = Mount::on(&store);
    assert_bytes_eq(
        &fs::read(m.path("done-a")).unwrap(),
        &done_a,
        "closed file next to the crash",
    );
    assert_bytes_eq(
        &fs::read(m.path("done-b")).unwrap(),
        &done_b,
        "fsynced file next to the crash",
    );
    match fs::read(m.path("in-progress")) {
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "unsynced file: {e}"),
        Ok(got) => {
            assert!(
                got.len() <= attempted.min(total),
                "unsynced file is {} bytes but at most {} were written",
                got.len(),
                attempted
            );
            if let Some(i) = first_difference(&got, &pattern[..got.len()]) {
                panic!(
                    "unsynced file ({} bytes) contains bytes that were never written at offset {i}: got {:?}, written {:?}",
                    got.len(),
                    &got[i..(i + 16).min(got.len())],
                    &pattern[i..(i + 16).min(got.len())]
                );
            }
        }
    }
    check_usable(&m);
    // The half-written file can be overwritten and removed.
    fs::write(m.path("in-progress"), b"replaced").unwrap();
    assert_eq!(fs::read(m.path("in-progress")).unwrap(), b"replaced");
    unlink(&m.path("in-progress")).unwrap();
    m.unmount_ok();
}

#[test]
fn repeated_kill9_and_remount_keeps_synced_data() {
    let m = Mount::new();
    let store = m.storage();
    let a = pseudo_random_bytes(6, 500_000);
    fs::write(m.path("a"), &a).unwrap();
    m.kill9();
    let m = Mount::on(&store);
    let b = pseudo_random_bytes(7, 700_000);
    {
        let mut f = File::create(m.path("b")).unwrap();
        f.write_all(&b).unwrap();
        fsync(&f).unwrap();
    }
    m.kill9();
    let m = Mount::on(&store);
    assert_bytes_eq(&fs::read(m.path("a")).unwrap(), &a, "a after two crashes");
    assert_bytes_eq(&fs::read(m.path("b")).unwrap(), &b, "b after one crash");
    m.unmount_ok();
}

fn build_tree(root: &Path) {
    mkdir(&root.join("docs"), 0o755).unwrap();
    mkdir(&root.join("docs/deep"), 0o700).unwrap();
    mkdir(&root.join("docs/deep/deeper"), 0o755).unwrap();
    mkdir(&root.join("empty-dir"), 0o755).unwrap();
    fs::write(root.join("docs/readme.txt"), b"hello\n").unwrap();
    fs::write(
        root.join("docs/deep/blob"),
        pseudo_random_bytes(8, 2 * MIB + 3),
    )
    .unwrap();
    fs::write(root.join("docs/deep/deeper/small"), b"s").unwrap();
    File::create(root.join("empty-file")).unwrap();
    // Sparse file.
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(root.join("sparse"))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"end", 5 * MIB as u64).unwrap();
    drop(f);
    // Modes, owners, times.
    fs::write(root.join("script.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    chmod(&root.join("script.sh"), 0o4755).unwrap();
    fs::write(root.join("private"), b"p").unwrap();
    chmod(&root.join("private"), 0o600).unwrap();
    chown(&root.join("private"), 1234, 5678).unwrap();
    chmod(&root.join("empty-dir"), 0o1777).unwrap();
    utimensat(
        &root.join("docs/readme.txt"),
        Ts::At(1_234_567_890, 111),
        Ts::At(1_234_567_891, 222),
        0,
    )
    .unwrap();
    // Links.
    symlink_bytes(b"docs/readme.txt", &root.join("link-to-readme")).unwrap();
    symlink_bytes(b"/nonexistent/\xff target", &root.join("dangling")).unwrap();
    link(&root.join("docs/readme.txt"), &root.join("hardlink-1")).unwrap();
    link(
        &root.join("docs/readme.txt"),
        &root.join("docs/deep/hardlink-2"),
    )
    .unwrap();
    // Special files.
    mknod(&root.join("fifo"), libc::S_IFIFO | 0o644, 0).unwrap();
    mknod(
        &root.join("chardev"),
        libc::S_IFCHR | 0o600,
        makedev(10, 200),
    )
    .unwrap();
    // Xattrs.
    setxattr(&root.join("docs/readme.txt"), "user.lang", b"en", 0).unwrap();
    setxattr(
        &root.join("docs/readme.txt"),
        "user.bin",
        &[0, 1, 2, 255],
        0,
    )
    .unwrap();
    setxattr(&root.join("docs"), "user.dir", b"yes", 0).unwrap();
    setxattr(&root.join("empty-file"), "user.empty", b"", 0).unwrap();
    // A renamed file and a deleted one.
    fs::write(root.join("temp"), b"moved").unwrap();
    rename(&root.join("temp"), &root.join("docs/moved")).unwrap();
    fs::write(root.join("deleted"), b"gone").unwrap();
    unlink(&root.join("deleted")).unwrap();
}

fn assert_same_tree(before: &[Snap], after: &[Snap]) {
    let bp: Vec<&str> = before.iter().map(|s| s.path.as_str()).collect();
    let ap: Vec<&str> = after.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(ap, bp, "set of paths differs after remount");
    for (b, a) in before.iter().zip(after) {
        assert_eq!(a, b, "{} differs after remount", b.path);
    }
}

#[test]
fn clean_unmount_and_remount_preserves_everything() {
    let m = Mount::new();
    let store = m.storage();
    build_tree(&m.dir);
    let before = snapshot(&m.dir);
    assert!(before.len() >= 18, "tree has {} entries", before.len());
    m.unmount_ok();

    let m = Mount::on(&store);
    let after = snapshot(&m.dir);
    assert_same_tree(&before, &after);
    check_usable(&m);
    m.unmount_ok();

    // And once more, after a remount that changed nothing.
    let m = Mount::on(&store);
    assert_same_tree(&before, &snapshot(&m.dir));
    m.unmount_ok();
}

#[test]
fn unmount_right_after_closing_a_big_file_exits_zero_and_keeps_it_whole() {
    let m = Mount::new();
    let store = m.storage();
    let data = pseudo_random_bytes(9, 16 * MIB);
    {
        let mut f = File::create(m.path("big")).unwrap();
        for c in data.chunks(MIB) {
            f.write_all(c).unwrap();
        }
    }
    let status = m.unmount();
    assert!(
        status.success(),
        "unmount right after close: exit status {status}"
    );

    let m = Mount::on(&store);
    assert_eq!(
        fs::metadata(m.path("big")).unwrap().size(),
        data.len() as u64
    );
    assert_bytes_eq(
        &fs::read(m.path("big")).unwrap(),
        &data,
        "big file after unmount/remount",
    );
    m.unmount_ok();
}

#[test]
fn metadata_changes_survive_clean_remount() {
    let m = Mount::new();
    let store = m.storage();
    fs::write(m.path("f"), b"x").unwrap();
    chmod(&m.path("f"), 0o640).unwrap();
    chown(&m.path("f"), 42, 43).unwrap();
    utimensat(&m.path("f"), Ts::At(100, 1), Ts::At(200, 2), 0).unwrap();
    mkdir(&m.path("d"), 0o755).unwrap();
    rename(&m.path("f"), &m.path("d/g")).unwrap();
    truncate(&m.path("d/g"), 10).unwrap();
    let before = fs::symlink_metadata(m.path("d/g")).unwrap();
    m.unmount_ok();

    let m = Mount::on(&store);
    let after = fs::symlink_metadata(m.path("d/g")).unwrap();
    assert_eq!(after.mode(), before.mode());
    assert_eq!((after.uid(), after.gid()), (42, 43));
    assert_eq!(after.size(), 10);
    assert_eq!(atime_of(&after), atime_of(&before), "atime");
    assert_eq!(mtime_of(&after), mtime_of(&before), "mtime");
    assert_eq!(ctime_of(&after), ctime_of(&before), "ctime");
    assert_eq!(fs::read(m.path("d/g")).unwrap(), b"x\0\0\0\0\0\0\0\0\0");
    assert_errno(fs::symlink_metadata(m.path("f")), libc::ENOENT, "old name");
    m.unmount_ok();
}

/// `staging_size` bounds the data waiting to upload: a write that would grow it further fails
/// with ENOSPC, what was written before stays, and room comes back once files are uploaded.
#[test]
fn staging_size_bounds_unsaved_data_with_enospc() {
    // Uploads wait an hour: everything written stays staged.
    let m = Mount::new_with_args(&["-o", "upload_delay=3600", "--staging-size", "1m"]);
    let mut f = fs::File::create(m.path("big")).unwrap();
    let chunk = pseudo_random_bytes(5, 64 << 10);
    let mut written = 0usize;
    let err = loop {
        match f.write_all(&chunk) {
            Ok(()) => written += chunk.len(),
            Err(e) => break e,
        }
        assert!(written <= 2 << 20, "2 MiB written past a 1 MiB staging_size");
    };
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    assert!(written >= 512 << 10, "only {written} bytes before ENOSPC");
    drop(f);
    let got = fs::read(m.path("big")).unwrap();
    assert!(got.len() >= written, "{} bytes read back, {written} written", got.len());
    assert_bytes_eq(&got[..chunk.len()], &chunk, "the first chunk");
    m.unmount_ok();
}
