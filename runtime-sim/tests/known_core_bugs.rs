//! Reproductions of known bugs of the core, found by the simulator. Each test asserts the correct
//! behaviour, so it fails while the bug is open: they only run with the `known-bugs` feature,
//! keeping CI green while the bug stays recorded:
//!
//! ```text
//! cargo test -p truckeefs-runtime-sim --features known-bugs --test known_core_bugs
//! ```
//!
//! When a bug is fixed, its test passes: move it to a regular test file and drop the matching
//! workaround in `harness.rs` (`KNOWN_BUGS`, `Options::workarounds`). The campaign also finds them
//! again with `--no-workarounds` (seeds named below reproduce as of this writing; the scripted
//! tests stay valid when the generator changes).
#![cfg(feature = "known-bugs")]

use bytes::Bytes;
use std::time::Duration;
use truckeefs_core::{Config, IoErrorKind, IoRequest, MetaRequest, Op, Reply, SetAttr, SetTime, StagingRequest, StoreRequest, TxnOp};
use truckeefs_runtime_sim::faults::Fault;
use truckeefs_runtime_sim::script::Script;
use truckeefs_runtime_sim::{run, Options};

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

/// same-size-truncate: `truncate -s <current size>` of a clean file turns it into zeros.
/// Campaign: `--seed 7 --sequential --no-faults --no-workarounds` (contents differ at step 150).
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

/// same-size-truncate, size 0: truncating an empty file leaves a staged copy behind.
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

/// exchange-self: rename(RENAME_EXCHANGE) of a name with itself must succeed and change nothing
/// (campaign: `--seed 148 --sequential --no-faults --no-workarounds`, step 93, where the EIO is
/// followed by version-overflow)
/// (Linux answers 0 without asking the filesystem; a stale cache on another host may let it
/// through). The core commits a transaction deleting one dentry twice, answers EIO and drops its
/// whole cache.
#[test]
fn exchange_with_itself_is_a_no_op() {
    let mut s = Script::new(Config::default());
    let (ino, _fh) = s.create("x").unwrap();
    let op = Op::Rename { parent: 1, name: b"x".to_vec(), newparent: 1, newname: b"x".to_vec(), flags: libc::RENAME_EXCHANGE };
    assert_eq!(s.call(op).unwrap(), Ok(Reply::Empty), "\n{}", s.trace_tail());
    let r = s.call(Op::Lookup { parent: 1, name: b"x".to_vec() }).unwrap();
    assert!(matches!(r, Ok(Reply::Entry(a)) if a.ino == ino));
}

/// version-overflow: after a failed commit, a request changing an open file before its reload
/// arrives overflows `version += 1` (a panic in debug builds, a spurious EIO in release).
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

/// stale-size-during-upload: a chmod while the upload commit of a file is in flight stores the
/// new object with the old size; after a restart the file is cut off.
/// First found by the campaign (liveness phase, after the final restart); the scripted test is
/// the stable reproduction.
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

/// seal-after-remove: deleting a file while a seal of its staged copy is in flight leaves a sealed
/// staged copy of a deleted inode behind (until the next mount).
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

/// load-failure-enoent: a transient failure loading an inode must not make it vanish: the next
/// request loads it again. The core keeps answering ENOENT.
/// Campaign: `--seed 12 --no-workarounds` (step 191).
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

/// The campaign with every workaround off: each known bug shows up within a few hundred seeds.
#[test]
fn campaign_without_workarounds_passes() {
    for seed in 0..300 {
        let mut opts = Options::new(seed, 200);
        opts.workarounds = false;
        if let Err(f) = run(opts) {
            panic!("{f}");
        }
    }
}
