//! The simulator's staging area (`MemStaging`) against the real one (`runtime-smol`'s `Staging`
//! on a temporary directory): random request sequences get the same answers, and the same `Scan`
//! (what a restart replays) after every request. Crash semantics are the simulator's own.

use bytes::Bytes;
use truckeefs_core::{IoReply, IoResult, SealRecord, StagedEntry, StagingRequest, Timespec};
use truckeefs_runtime_sim::objects::MemObjects;
use truckeefs_runtime_sim::rng::Rng;
use truckeefs_runtime_sim::staging::MemStaging;
use truckeefs_runtime_smol::objects::ObjectDir;
use truckeefs_runtime_smol::staging::Staging;

fn same(a: &IoResult, b: &IoResult) -> bool {
    match (a, b) {
        (Ok(x), Ok(y)) => x == y,
        (Err(x), Err(y)) => x.kind == y.kind,
        _ => false,
    }
}

fn scan(r: IoResult) -> Vec<StagedEntry> {
    match r {
        Ok(IoReply::Staged(mut s)) => {
            s.sort_by_key(|e| e.ino);
            s
        }
        other => panic!("scan: {other:?}"),
    }
}

fn random_request(rng: &mut Rng) -> StagingRequest {
    let ino = rng.range(1, 3);
    match rng.below(8) {
        0 => StagingRequest::Init { ino, from: None, size: rng.below(300) },
        1 => {
            let mut v = vec![0u8; rng.range(1, 200) as usize];
            rng.fill(&mut v);
            StagingRequest::Write { ino, offset: rng.below(400), data: Bytes::from(v) }
        }
        2 => StagingRequest::Read { ino, offset: rng.below(400), len: rng.range(1, 300) as u32 },
        3 => StagingRequest::Truncate { ino, size: rng.below(400) },
        4 => StagingRequest::Allocate { ino, offset: rng.below(300), len: rng.range(1, 300) },
        5 => StagingRequest::Seal {
            ino,
            record: SealRecord {
                size: rng.below(400),
                mtime: Timespec { sec: rng.below(1000) as i64, nsec: 5 },
                ctime: Timespec { sec: 7, nsec: rng.below(1000) as u32 },
            },
        },
        6 => StagingRequest::Unseal { ino },
        _ => StagingRequest::Remove { ino },
    }
}

#[test]
fn random_requests_get_the_same_answers_and_scans() {
    let mut kinds: std::collections::BTreeMap<String, u64> = Default::default();
    for seed in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let real = Staging::open(&dir.path().join("staging")).unwrap();
        let objects = ObjectDir::open(&dir.path().join("objects")).unwrap();
        let mut mem = MemStaging::new();
        let mem_objects = MemObjects::new(seed);
        let mut rng = Rng::new(seed);
        for i in 0..150 {
            let req = random_request(&mut rng);
            let a = mem.execute(&req, &mem_objects);
            let b = real.execute(&req, &objects);
            assert!(same(&a, &b), "seed {seed}, request {i}: {req:?}\n  mem:  {a:?}\n  real: {b:?}");
            let sa = scan(mem.execute(&StagingRequest::Scan, &mem_objects));
            let sb = scan(real.execute(&StagingRequest::Scan, &objects));
            assert_eq!(sa, sb, "seed {seed}: scan after request {i}: {req:?}");
            let name = format!("{req:?}");
            let kind = name.split([' ', '{']).next().unwrap_or_default().to_string();
            *kinds.entry(format!("{kind} {}", if a.is_ok() { "ok" } else { "err" })).or_default() += 1;
        }
    }
    for k in ["Read err", "Read ok", "Unseal ok", "Remove ok", "Seal ok", "Write ok"] {
        assert!(kinds.get(k).copied().unwrap_or(0) >= 5, "too few {k:?}: {kinds:?}");
    }
}

/// The case the campaign once tripped over (an `Unseal` completing after the `Remove` of the same
/// copy, as the core may issue them together): nothing is left behind.
#[test]
fn unseal_after_remove_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let real = Staging::open(&dir.path().join("staging")).unwrap();
    let objects = ObjectDir::open(&dir.path().join("objects")).unwrap();
    let mut mem = MemStaging::new();
    let mem_objects = MemObjects::new(0);
    let record = SealRecord { size: 3, mtime: Timespec::default(), ctime: Timespec::default() };
    for req in [
        StagingRequest::Write { ino: 5, offset: 0, data: Bytes::from_static(b"abc") },
        StagingRequest::Seal { ino: 5, record },
        StagingRequest::Remove { ino: 5 },
        StagingRequest::Unseal { ino: 5 },
    ] {
        mem.execute(&req, &mem_objects).unwrap();
        real.execute(&req, &objects).unwrap();
    }
    assert_eq!(scan(real.execute(&StagingRequest::Scan, &objects)), vec![]);
    assert_eq!(scan(mem.execute(&StagingRequest::Scan, &mem_objects)), vec![]);
    assert!(mem.is_empty());
}
