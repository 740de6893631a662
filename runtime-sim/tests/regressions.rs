//! Scripted reproductions of core bugs the simulator found, kept as regression tests: each
//! asserts the correct behaviour on one host driven request by request ([`Script`]), and names
//! in a comment the bug it once reproduced. They do not depend on the random generator, so they
//! stay valid when the campaign's seeds change.

use bytes::Bytes;
use std::time::Duration;
use truckeefs_core::{Config, IoErrorKind, IoRequest, MetaRequest, Op, Reply, SetAttr, SetTime, StagingRequest, StoreRequest, TxnOp};
use truckeefs_runtime_sim::faults::Fault;
use truckeefs_runtime_sim::script::Script;

fn data(n: usize) -> Bytes {
    Bytes::from((0..n).map(|i| (i % 251) as u8 + 1).collect::<Vec<u8>>())
}

fn truncate(size: u64) -> SetAttr {
    SetAttr { size: Some(size), mtime: Some(SetTime::Now), ..SetAttr::default() }
}

/// Create `f` with `n` bytes, close it, and wait until it is uploaded and unstaged.
fn uploaded_file(s: &mut Script, n: usize) -> u64 {
    let (ino, fh) = s.create("f").unwrap();
    assert_eq!(s.call(Op::Write { ino, fh, offset: 0, data: data(n) }).unwrap(), Ok(Reply::Written(n as u32)));
    s.call(Op::Flush { ino, fh, lock_owner: 1 }).unwrap().unwrap();
    s.call(Op::Release { ino, fh, lock_owner: Some(1) }).unwrap().unwrap();
    s.pass(Duration::from_secs(30)).unwrap();
    assert!(s.w.staging.is_empty(), "set-up: the staged copy should be gone after the upload");
    ino
}

// Once reproduced same-size-truncate: a same-size truncate of a clean file uploaded zeros.
#[test]
fn truncate_to_the_same_size_keeps_the_contents() {
    let mut s = Script::new(Config::default());
    let ino = uploaded_file(&mut s, 3000);
    let r = s.call(Op::SetAttr { ino, fh: None, set: truncate(3000) }).unwrap();
    assert!(matches!(r, Ok(Reply::Attr(a)) if a.size == 3000));
    s.pass(Duration::from_secs(30)).unwrap();
    let got = s.read_all(ino).unwrap().unwrap();
    assert_eq!(got, data(3000).to_vec(), "contents after a same-size truncate\n{}", s.trace_tail());
}

// Once reproduced same-size-truncate (size 0): a sealed staged copy the core no longer tracked.
#[test]
fn truncate_of_an_empty_file_leaves_no_staged_copy() {
    let mut s = Script::new(Config::default());
    let (ino, fh) = s.create("e").unwrap();
    s.call(Op::Flush { ino, fh, lock_owner: 1 }).unwrap().unwrap();
    s.call(Op::Release { ino, fh, lock_owner: Some(1) }).unwrap().unwrap();
    s.call(Op::SetAttr { ino, fh: None, set: truncate(0) }).unwrap().unwrap();
    s.pass(Duration::from_secs(30)).unwrap();
    let now = s.w.instant();
    s.w.core.begin_shutdown(now);
    s.w.run_until_idle(Duration::from_secs(60)).unwrap();
    assert!(s.w.staging.is_empty(), "staged copies left: {:?}\n{}", s.w.staging.inos(), s.trace_tail());
}

// Once reproduced exchange-self: a transaction deleting one dentry twice, EIO, the cache dropped.
#[test]
fn exchange_with_itself_is_a_no_op() {
    let mut s = Script::new(Config::default());
    let (ino, _fh) = s.create("x").unwrap();
    let op = Op::Rename { parent: 1, name: b"x".to_vec(), newparent: 1, newname: b"x".to_vec(), flags: libc::RENAME_EXCHANGE };
    assert_eq!(s.call(op).unwrap(), Ok(Reply::Empty), "\n{}", s.trace_tail());
    let r = s.call(Op::Lookup { parent: 1, name: b"x".to_vec() }).unwrap();
    assert!(matches!(r, Ok(Reply::Entry(a)) if a.ino == ino));
}

// Once reproduced version-overflow: `version += 1` on u64::MAX while a kept inode reloaded.
#[test]
fn a_failed_commit_does_not_break_the_next_change() {
    let mut s = Script::new(Config::default());
    let (ino, _fh) = s.create("v").unwrap(); // stays open: kept by forget_clean_state
    let mut armed = true;
    s.w.hook = Some(Box::new(move |req: &IoRequest| {
        if armed && matches!(req, IoRequest::Meta(MetaRequest::Commit(_))) {
            armed = false;
            return Some(Fault::Fail(IoErrorKind::Other));
        }
        None
    }));
    let chmod = |mode| Op::SetAttr { ino, fh: None, set: SetAttr { mode: Some(mode), ..SetAttr::default() } };
    assert_eq!(s.call(chmod(0o600)).unwrap(), Err(libc::EIO), "the injected failure");
    // The reload of the kept inode is in flight now; the next change must still work.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.call(chmod(0o640)).unwrap()));
    match r {
        Ok(r) => assert!(matches!(r, Ok(Reply::Attr(a)) if a.perm == 0o640), "{r:?}"),
        Err(_) => panic!("the core panicked (version overflow)"),
    }
}

// Once reproduced stale-size-during-upload: the new object stored with the old committed size.
#[test]
fn metadata_change_during_an_upload_keeps_the_size() {
    let mut s = Script::new(Config::default());
    let (ino, fh) = s.create("u").unwrap();
    assert_eq!(s.call(Op::Write { ino, fh, offset: 0, data: data(5000) }).unwrap(), Ok(Reply::Written(5000)));
    // Close: seal, upload, then the commit of the new object.
    s.call(Op::Flush { ino, fh, lock_owner: 1 }).unwrap().unwrap();
    s.call(Op::Release { ino, fh, lock_owner: Some(1) }).unwrap().unwrap();
    s.until_in_flight(|r| {
        matches!(r, IoRequest::Meta(MetaRequest::Commit(t)) if t.ops.iter().any(|o| matches!(o, TxnOp::UpdateInode { row, .. } if row.ino == ino && row.object.is_some())))
    })
    .unwrap();
    let chmod = Op::SetAttr { ino, fh: None, set: SetAttr { mode: Some(0o600), ..SetAttr::default() } };
    s.call(chmod).unwrap().unwrap();
    s.pass(Duration::from_secs(30)).unwrap();
    let row = s.w.meta.inode(ino).unwrap().clone();
    assert_eq!(row.size, 5000, "stored size after the upload and the chmod: {row:?}\n{}", s.trace_tail());
    s.w.crash_and_restart().unwrap();
    let got = s.read_all(ino).unwrap().unwrap();
    assert_eq!(got.len(), 5000);
}

// Once reproduced seal-after-remove: a late Seal re-created the staged copy of a deleted inode.
#[test]
fn deleting_a_file_during_its_seal_leaves_no_staged_copy() {
    let mut s = Script::new(Config::default());
    let (ino, fh) = s.create("s").unwrap();
    assert_eq!(s.call(Op::Write { ino, fh, offset: 0, data: data(100) }).unwrap(), Ok(Reply::Written(100)));
    // The seal is slow this time.
    s.w.hook = Some(Box::new(|req: &IoRequest| {
        matches!(req, IoRequest::Staging(StagingRequest::Seal { .. })).then_some(Fault::Slow)
    }));
    s.call(Op::Release { ino, fh, lock_owner: Some(1) }).unwrap().unwrap(); // starts the upload: seal
    s.until_in_flight(|r| matches!(r, IoRequest::Staging(StagingRequest::Seal { .. }))).unwrap();
    s.call(Op::Unlink { parent: 1, name: b"s".to_vec() }).unwrap().unwrap();
    s.pass(Duration::from_secs(30)).unwrap();
    assert!(!s.w.in_flight().any(|r| matches!(r, IoRequest::Store(StoreRequest::PutStaged { .. }))));
    assert!(s.w.staging.is_empty(), "staged copies left: {:?}\n{}", s.w.staging.inos(), s.trace_tail());
}

// Once reproduced load-failure-enoent: after a failed LoadInode every request answered ENOENT.
#[test]
fn a_failed_load_is_not_a_missing_inode() {
    let mut s = Script::new(Config::default());
    let (ino, fh) = s.create("c").unwrap();
    s.call(Op::Release { ino, fh, lock_owner: None }).unwrap().unwrap();
    s.w.crash_and_restart().unwrap();
    let mut armed = true;
    s.w.hook = Some(Box::new(move |req: &IoRequest| {
        if armed && matches!(req, IoRequest::Meta(MetaRequest::LoadInode { ino: 1 })) {
            armed = false;
            return Some(Fault::Fail(IoErrorKind::Other));
        }
        None
    }));
    let lookup = || Op::Lookup { parent: 1, name: b"c".to_vec() };
    assert_eq!(s.call(lookup()).unwrap(), Err(libc::EIO), "the injected failure");
    let r = s.call(lookup()).unwrap();
    assert!(matches!(r, Ok(Reply::Entry(a)) if a.ino == ino), "the second lookup: {r:?}\n{}", s.trace_tail());
}

fn mkdir(s: &mut Script, parent: u64, name: &str) -> u64 {
    match s.call(Op::MkDir { parent, name: name.as_bytes().to_vec(), mode: 0o755, umask: 0 }).unwrap() {
        Ok(Reply::Entry(a)) => a.ino,
        other => panic!("mkdir {name}: {other:?}"),
    }
}

// Once reproduced rename-into-subtree: with an ancestor evicted, a directory moved below itself.
#[test]
fn a_directory_is_never_moved_below_itself() {
    let mut s = Script::new(Config { inode_cache_max: 1, ..Config::default() });
    let a = mkdir(&mut s, 1, "a");
    let b = mkdir(&mut s, a, "b");
    let c = mkdir(&mut s, b, "c");
    // The kernel forgets b (it keeps a and c): the core may evict it.
    s.w.forget(b, 1).unwrap();
    for flags in [0, libc::RENAME_NOREPLACE] {
        let r = s.call(Op::Rename { parent: 1, name: b"a".to_vec(), newparent: c, newname: b"x".to_vec(), flags }).unwrap();
        assert_eq!(r, Err(libc::EINVAL), "rename /a -> /a/b/c/x (flags {flags})\n{}", s.trace_tail());
    }
    s.create("f").unwrap();
    let r = s.call(Op::Rename { parent: 1, name: b"a".to_vec(), newparent: c, newname: b"f".to_vec(), flags: 0 }).unwrap();
    assert_eq!(r, Err(libc::EINVAL), "rename /a -> /a/b/c/f\n{}", s.trace_tail());
}

// Once reproduced stale-bytes-after-extend: after a crash, bytes a truncate had cut off were back.
#[test]
fn bytes_cut_off_by_a_truncate_never_come_back() {
    let mut s = Script::new(Config::default());
    let ino = uploaded_file(&mut s, 3000);
    let orig = data(3000).to_vec();
    // An open handle holds the upload back, so the crashes come first.
    let open = |s: &mut Script| {
        let Ok(Reply::Opened { .. }) = s.call(Op::Open { ino, flags: libc::O_RDWR }).unwrap() else { panic!("open") };
    };
    open(&mut s);
    s.call(Op::SetAttr { ino, fh: None, set: truncate(100) }).unwrap().unwrap();
    s.w.crash_and_restart().unwrap();
    let base = s.read_all(ino).unwrap().unwrap();
    assert!(base == orig || base == orig[..100], "after the first crash: {} bytes", base.len());
    // Extend it, and lose power again before the upload.
    open(&mut s);
    s.call(Op::SetAttr { ino, fh: None, set: truncate(2000) }).unwrap().unwrap();
    s.w.crash_and_restart().unwrap();
    let got = s.read_all(ino).unwrap().unwrap();
    let extended = truckeefs_runtime_sim::model::resized(&base, 2000);
    assert!(
        got == base || got == extended,
        "after the second crash: {} bytes, bytes 100.. {}\n{}",
        got.len(),
        if got.len() > 100 && got[100..] == orig[100..got.len()] { "are the ones the truncate cut off" } else { "differ" },
        s.trace_tail()
    );
}

fn attr(s: &mut Script, ino: u64) -> truckeefs_core::Attr {
    match s.call(Op::GetAttr { ino }).unwrap() {
        Ok(Reply::Attr(a)) => a,
        other => panic!("getattr {ino}: {other:?}"),
    }
}

// Once reproduced dir-times-lost: lazily stored directory times went back when any transaction failed.
#[test]
fn a_failed_transaction_does_not_turn_back_directory_times() {
    let mut s = Script::new(Config::default());
    let d = mkdir(&mut s, 1, "d");
    let (g, fh) = s.create("g").unwrap();
    s.call(Op::Release { ino: g, fh, lock_owner: None }).unwrap().unwrap();
    s.pass(Duration::from_secs(5)).unwrap();
    let Ok(Reply::Entry(_)) = s.call(Op::MkNod { parent: d, name: b"x".to_vec(), mode: libc::S_IFREG | 0o644, umask: 0, rdev: 0 }).unwrap() else {
        panic!("mknod")
    };
    let before = attr(&mut s, d);
    // Any transaction failing: here a chmod of another file.
    let mut armed = true;
    s.w.hook = Some(Box::new(move |req: &IoRequest| {
        if armed && matches!(req, IoRequest::Meta(MetaRequest::Commit(_))) {
            armed = false;
            return Some(Fault::Fail(IoErrorKind::Other));
        }
        None
    }));
    let chmod = Op::SetAttr { ino: g, fh: None, set: SetAttr { mode: Some(0o600), ..SetAttr::default() } };
    assert_eq!(s.call(chmod).unwrap(), Err(libc::EIO), "the injected failure");
    s.pass(Duration::from_millis(10)).unwrap();
    let after = attr(&mut s, d);
    assert!(
        after.mtime >= before.mtime && after.ctime >= before.ctime,
        "directory times went back: mtime {:?} -> {:?}, ctime {:?} -> {:?}\n{}",
        before.mtime,
        after.mtime,
        before.ctime,
        after.ctime,
        s.trace_tail()
    );
}

// ----- bugs found later, fixed in the core -----

// Bug remove-races-init (fixed): after a failed transaction the core forgets a Remove of a staged
// copy in flight, and that late Remove deletes the next copy: bytes read as zeros, no crash.
// (Campaign: `--seed 1520 --steps 400`, step 50.)
#[test]
fn a_late_remove_does_not_delete_a_new_staged_copy() {
    let mut s = Script::new(Config::default());
    let (g, gfh) = s.create("g").unwrap();
    s.call(Op::Release { ino: g, fh: gfh, lock_owner: None }).unwrap().unwrap();
    let (ino, fh) = s.create("r").unwrap();
    assert_eq!(s.call(Op::Write { ino, fh, offset: 0, data: data(1000) }).unwrap(), Ok(Reply::Written(1000)));
    s.w.hook = Some(Box::new(|req: &IoRequest| {
        matches!(req, IoRequest::Staging(StagingRequest::Remove { .. })).then_some(Fault::Slow)
    }));
    s.call(Op::Release { ino, fh, lock_owner: None }).unwrap().unwrap(); // upload, then Remove
    s.until_in_flight(|r| matches!(r, IoRequest::Staging(StagingRequest::Remove { .. }))).unwrap();
    // Meanwhile a transaction fails (a chmod of another file).
    s.w.hook = Some(Box::new(|req: &IoRequest| {
        matches!(req, IoRequest::Meta(MetaRequest::Commit(_))).then_some(Fault::Fail(IoErrorKind::Other))
    }));
    let chmod = Op::SetAttr { ino: g, fh: None, set: SetAttr { mode: Some(0o600), ..SetAttr::default() } };
    assert_eq!(s.call(chmod).unwrap(), Err(libc::EIO), "the injected failure");
    s.w.hook = None;
    let Ok(Reply::Opened { fh, .. }) = s.call(Op::Open { ino, flags: libc::O_RDWR }).unwrap() else { panic!("open") };
    assert_eq!(s.call(Op::Write { ino, fh, offset: 2000, data: data(10) }).unwrap(), Ok(Reply::Written(10)));
    s.pass(Duration::from_secs(1)).unwrap(); // the Remove has completed
    let mut want = data(1000).to_vec();
    want.resize(2000, 0);
    want.extend_from_slice(&data(10));
    match s.read_all(ino).unwrap() {
        Ok(got) => assert!(
            got == want,
            "contents after the late Remove: {} bytes{}\n{}",
            got.len(),
            truckeefs_runtime_sim::model::first_diff(&want, &got),
            s.trace_tail()
        ),
        Err(e) => panic!("reading after the late Remove: errno {e}\n{}", s.trace_tail()),
    }
}

// Bug dir-times-lost (the rest of it, fixed): when the failing transaction is the
// directory's own atime update (relatime, on readdir), its unsaved mtime/ctime go back.
// (Campaign: `--seed 155`, step 18.)
#[test]
fn a_failed_atime_update_keeps_the_directory_times() {
    let mut s = Script::new(Config::default());
    let d = mkdir(&mut s, 1, "d");
    s.pass(Duration::from_secs(5)).unwrap();
    let Ok(Reply::Entry(_)) = s.call(Op::MkNod { parent: d, name: b"x".to_vec(), mode: libc::S_IFREG | 0o644, umask: 0, rdev: 0 }).unwrap() else {
        panic!("mknod")
    };
    let before = attr(&mut s, d);
    // (Before the lazily stored times are flushed, a second later.)
    let mut armed = true;
    s.w.hook = Some(Box::new(move |req: &IoRequest| {
        if armed && matches!(req, IoRequest::Meta(MetaRequest::Commit(_))) {
            armed = false;
            return Some(Fault::Fail(IoErrorKind::Other));
        }
        None
    }));
    // A readdir: relatime updates the atime, in a transaction that fails.
    let Ok(Reply::Opened { fh, .. }) = s.call(Op::OpenDir { ino: d, flags: libc::O_RDONLY }).unwrap() else { panic!("opendir") };
    let Ok(Reply::Dir(_)) = s.call(Op::ReadDir { ino: d, fh, offset: 0, size: 4096, plus: false }).unwrap() else { panic!("readdir") };
    s.call(Op::ReleaseDir { ino: d, fh }).unwrap().unwrap();
    s.pass(Duration::from_millis(10)).unwrap();
    let after = attr(&mut s, d);
    assert!(
        after.mtime >= before.mtime && after.ctime >= before.ctime,
        "directory times went back: mtime {:?} -> {:?}, ctime {:?} -> {:?}\n{}",
        before.mtime,
        after.mtime,
        before.ctime,
        after.ctime,
        s.trace_tail()
    );
}

// Once reproduced stale-attrs-after-failed-refresh: when a transaction fails and the refresh of an inode
// it changed fails too, readdirplus reports the failed change (here nlink 0 of a file whose
// unlink answered EIO). (Campaign: `--seed 1740 --steps 400`, step 150.)
#[test]
fn readdirplus_never_shows_a_failed_change() {
    let mut s = Script::new(Config::default());
    let d = mkdir(&mut s, 1, "d");
    // Created and left open, so the core keeps it (and refreshes it) after a failed transaction.
    let ino = match s.call(Op::Create { parent: d, name: b"f".to_vec(), mode: libc::S_IFREG | 0o644, umask: 0, flags: libc::O_RDWR }).unwrap() {
        Ok(Reply::Created { attr, .. }) => attr.ino,
        other => panic!("create: {other:?}"),
    };
    let (mut commit, mut load) = (true, true);
    s.w.hook = Some(Box::new(move |req: &IoRequest| match req {
        IoRequest::Meta(MetaRequest::Commit(_)) if commit => {
            commit = false;
            Some(Fault::Fail(IoErrorKind::Other))
        }
        IoRequest::Meta(MetaRequest::LoadInode { ino: i }) if *i == ino && load => {
            load = false;
            Some(Fault::Fail(IoErrorKind::Other))
        }
        _ => None,
    }));
    assert_eq!(s.call(Op::Unlink { parent: d, name: b"f".to_vec() }).unwrap(), Err(libc::EIO), "the injected failure");
    s.pass(Duration::from_millis(10)).unwrap();
    let Ok(Reply::Opened { fh: dfh, .. }) = s.call(Op::OpenDir { ino: d, flags: libc::O_RDONLY }).unwrap() else { panic!("opendir") };
    let Ok(Reply::Dir(entries)) = s.call(Op::ReadDir { ino: d, fh: dfh, offset: 0, size: 4096, plus: true }).unwrap() else {
        panic!("readdirplus")
    };
    let f = entries.iter().find(|e| e.name == b"f").expect("f is still listed (its unlink failed)");
    let nlink = f.attr.map(|a| a.nlink);
    assert_eq!(nlink, Some(1), "readdirplus attributes of f after its unlink failed\n{}", s.trace_tail());
}

// Once reproduced dir-times-lost-on-failed-refresh: when a transaction fails and the refresh of a
// directory with unsaved times fails too, its reload turns its mtime/ctime back.
// (Campaign: `--seed 18`, step 115; `--seed 129`, step 167.)
#[test]
fn a_failed_refresh_keeps_the_directory_times() {
    let mut s = Script::new(Config::default());
    let d = mkdir(&mut s, 1, "d");
    let (g, gfh) = s.create("g").unwrap();
    s.call(Op::Release { ino: g, fh: gfh, lock_owner: None }).unwrap().unwrap();
    s.pass(Duration::from_secs(5)).unwrap();
    let Ok(Reply::Entry(_)) = s.call(Op::MkNod { parent: d, name: b"x".to_vec(), mode: libc::S_IFREG | 0o644, umask: 0, rdev: 0 }).unwrap() else {
        panic!("mknod")
    };
    let before = attr(&mut s, d);
    // (Before the lazily stored times are flushed, a second later.) A transaction fails, and so
    // does the refresh of the directory.
    let (mut commit, mut load) = (true, true);
    s.w.hook = Some(Box::new(move |req: &IoRequest| match req {
        IoRequest::Meta(MetaRequest::Commit(_)) if commit => {
            commit = false;
            Some(Fault::Fail(IoErrorKind::Other))
        }
        IoRequest::Meta(MetaRequest::LoadInode { ino }) if *ino == d && load => {
            load = false;
            Some(Fault::Fail(IoErrorKind::Other))
        }
        _ => None,
    }));
    let chmod = Op::SetAttr { ino: g, fh: None, set: SetAttr { mode: Some(0o600), ..SetAttr::default() } };
    assert_eq!(s.call(chmod).unwrap(), Err(libc::EIO), "the injected failure");
    s.pass(Duration::from_secs(5)).unwrap();
    let after = attr(&mut s, d);
    assert!(
        after.mtime >= before.mtime && after.ctime >= before.ctime,
        "directory times went back: mtime {:?} -> {:?}, ctime {:?} -> {:?}\n{}",
        before.mtime,
        after.mtime,
        before.ctime,
        after.ctime,
        s.trace_tail()
    );
}

// Once reproduced dir-times-lost-on-two-failures: a directory's unsaved times ride on its atime update;
// an earlier transaction fails first (dropping the directory from memory, its times being in
// flight), then that one fails too: the times have nowhere to go back to.
// (Campaign: `--seed 952 --steps 400`, step 202.)
#[test]
fn two_failed_transactions_keep_the_directory_times() {
    let mut s = Script::new(Config::default());
    let d = mkdir(&mut s, 1, "d");
    let (g, gfh) = s.create("g").unwrap();
    s.call(Op::Release { ino: g, fh: gfh, lock_owner: None }).unwrap().unwrap();
    s.pass(Duration::from_secs(5)).unwrap();
    let Ok(Reply::Entry(_)) = s.call(Op::MkNod { parent: d, name: b"x".to_vec(), mode: libc::S_IFREG | 0o644, umask: 0, rdev: 0 }).unwrap() else {
        panic!("mknod")
    };
    let before = attr(&mut s, d);
    let Ok(Reply::Opened { fh, .. }) = s.call(Op::OpenDir { ino: d, flags: libc::O_RDONLY }).unwrap() else { panic!("opendir") };
    // The next two transactions fail: a chmod of another file, then the directory's atime update
    // (relatime, on readdir), emitted before the first one's answer.
    let mut failures = 2;
    s.w.hook = Some(Box::new(move |req: &IoRequest| {
        if failures > 0 && matches!(req, IoRequest::Meta(MetaRequest::Commit(_))) {
            failures -= 1;
            return Some(Fault::Fail(IoErrorKind::Other));
        }
        None
    }));
    let chmod = s.issue(Op::SetAttr { ino: g, fh: None, set: SetAttr { mode: Some(0o600), ..SetAttr::default() } }).unwrap();
    let readdir = s.issue(Op::ReadDir { ino: d, fh, offset: 0, size: 4096, plus: false }).unwrap();
    // Closed before the failures arrive: nothing keeps the directory in memory then.
    let release = s.issue(Op::ReleaseDir { ino: d, fh }).unwrap();
    assert_eq!(s.w.wait(chmod).unwrap(), Err(libc::EIO), "the injected failure");
    let _ = s.w.wait(readdir).unwrap();
    let _ = s.w.wait(release).unwrap();
    s.pass(Duration::from_secs(5)).unwrap();
    let after = attr(&mut s, d);
    assert!(
        after.mtime >= before.mtime && after.ctime >= before.ctime,
        "directory times went back: mtime {:?} -> {:?}, ctime {:?} -> {:?}\n{}",
        before.mtime,
        after.mtime,
        before.ctime,
        after.ctime,
        s.trace_tail()
    );
}

// Once reproduced leak-after-failed-upload-commit: an upload whose commit failed (an injected
// failure, or a version conflict with another writer) left its object in the store, referenced
// by no inode, for ever. The reload after the failure now shows it unreferenced, and it goes.
// And a commit applied but answered with a failure (its answer lost) left the object it replaced:
// the reload shows the new one stored, and the replaced one goes.
#[test]
fn an_upload_whose_commit_failed_leaves_no_object_behind() {
    for fault in [Fault::Fail(IoErrorKind::Other), Fault::Fail(IoErrorKind::Conflict), Fault::Lost(IoErrorKind::Other)] {
        let mut s = Script::new(Config::default());
        let (ino, fh) = s.create("f").unwrap();
        assert_eq!(s.call(Op::Write { ino, fh, offset: 0, data: data(1000) }).unwrap(), Ok(Reply::Written(1000)));
        assert_eq!(s.call(Op::Fsync { ino, fh, datasync: false }).unwrap(), Ok(Reply::Empty));
        assert_eq!(s.call(Op::Write { ino, fh, offset: 0, data: data(3000) }).unwrap(), Ok(Reply::Written(3000)));
        let mut armed = Some(fault.clone());
        s.w.hook = Some(Box::new(move |req: &IoRequest| match req {
            // The upload's commit: the only durable transaction storing an object.
            IoRequest::Meta(MetaRequest::Commit(t))
                if t.durable && t.ops.iter().any(|op| matches!(op, TxnOp::UpdateInode { row, .. } if row.object.is_some())) =>
            {
                armed.take()
            }
            _ => None,
        }));
        assert_eq!(s.call(Op::Fsync { ino, fh, datasync: false }).unwrap(), Err(libc::EIO), "the injected failure ({fault:?})");
        s.call(Op::Release { ino, fh, lock_owner: None }).unwrap().unwrap();
        // The retry uploads and commits a second object.
        s.pass(Duration::from_secs(30)).unwrap();
        assert_eq!(s.read_all(ino).unwrap().unwrap(), data(3000).to_vec());
        let referenced = s.w.meta.referenced_objects();
        let stored: Vec<&String> = s.w.objects.ids().collect();
        assert_eq!(referenced.len(), 1, "the file's object");
        assert!(
            stored.iter().all(|id| referenced.contains(*id)),
            "objects no inode references after a failed upload commit ({fault:?}): {:?} (referenced {:?})\n{}",
            stored,
            referenced,
            s.trace_tail()
        );
    }
}
