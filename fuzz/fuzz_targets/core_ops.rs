//! Operation sequences against the core with an in-memory store: no sequence may panic the
//! core, and every request gets exactly one reply.
#![no_main]
use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};
use truckeefs_core::testkit::MemStore;
use truckeefs_core::*;

#[derive(Arbitrary, Debug)]
enum FuzzOp {
    Lookup { parent: u8, name: u8 },
    Create { parent: u8, name: u8 },
    MkDir { parent: u8, name: u8 },
    Symlink { parent: u8, name: u8 },
    Unlink { parent: u8, name: u8 },
    RmDir { parent: u8, name: u8 },
    Link { ino: u8, parent: u8, name: u8 },
    Rename { parent: u8, name: u8, newparent: u8, newname: u8, flags: u8 },
    Write { ino: u8, fh: u8, offset: u16, len: u8 },
    Read { ino: u8, offset: u16, len: u16 },
    Truncate { ino: u8, size: u16 },
    Flush { ino: u8, fh: u8 },
    Fsync { ino: u8, fh: u8 },
    Release { ino: u8, fh: u8 },
    Open { ino: u8 },
    ReadDir { ino: u8, offset: u8, plus: bool },
    SetXattr { ino: u8, name: u8, flags: u8 },
    RemoveXattr { ino: u8, name: u8 },
    SetLk { ino: u8, owner: u8, start: u8, len: u8, write: bool, sleep: bool },
    Forget { ino: u8 },
    Timeout,
}

fn name(n: u8) -> Vec<u8> {
    format!("n{}", n % 8).into_bytes()
}

fn ino(i: u8) -> Ino {
    (i % 16) as Ino + 1
}

fn to_op(f: &FuzzOp) -> Option<Op> {
    Some(match *f {
        FuzzOp::Lookup { parent, name: n } => Op::Lookup { parent: ino(parent), name: name(n) },
        FuzzOp::Create { parent, name: n } => {
            Op::Create { parent: ino(parent), name: name(n), mode: 0o644, umask: 0, flags: libc::O_RDWR }
        }
        FuzzOp::MkDir { parent, name: n } => Op::MkDir { parent: ino(parent), name: name(n), mode: 0o755, umask: 0 },
        FuzzOp::Symlink { parent, name: n } => Op::Symlink { parent: ino(parent), name: name(n), target: b"t".to_vec() },
        FuzzOp::Unlink { parent, name: n } => Op::Unlink { parent: ino(parent), name: name(n) },
        FuzzOp::RmDir { parent, name: n } => Op::RmDir { parent: ino(parent), name: name(n) },
        FuzzOp::Link { ino: i, parent, name: n } => Op::Link { ino: ino(i), newparent: ino(parent), newname: name(n) },
        FuzzOp::Rename { parent, name: n, newparent, newname, flags } => Op::Rename {
            parent: ino(parent),
            name: name(n),
            newparent: ino(newparent),
            newname: name(newname),
            flags: (flags % 4) as u32,
        },
        FuzzOp::Write { ino: i, fh, offset, len } => {
            Op::Write { ino: ino(i), fh: fh as u64, offset: offset as u64, data: Bytes::from(vec![len; len as usize]) }
        }
        FuzzOp::Read { ino: i, offset, len } => Op::Read { ino: ino(i), fh: 0, offset: offset as u64, size: len as u32 },
        FuzzOp::Truncate { ino: i, size } => {
            Op::SetAttr { ino: ino(i), fh: None, set: SetAttr { size: Some(size as u64), ..SetAttr::default() } }
        }
        FuzzOp::Flush { ino: i, fh } => Op::Flush { ino: ino(i), fh: fh as u64, lock_owner: 1 },
        FuzzOp::Fsync { ino: i, fh } => Op::Fsync { ino: ino(i), fh: fh as u64, datasync: false },
        FuzzOp::Release { ino: i, fh } => Op::Release { ino: ino(i), fh: fh as u64, lock_owner: None },
        FuzzOp::Open { ino: i } => Op::Open { ino: ino(i), flags: libc::O_RDWR },
        FuzzOp::ReadDir { ino: i, offset, plus } => {
            Op::ReadDir { ino: ino(i), fh: 0, offset: offset as u64, size: 4096, plus }
        }
        FuzzOp::SetXattr { ino: i, name: n, flags } => Op::SetXattr {
            ino: ino(i),
            name: [b"user.".as_slice(), &name(n)].concat(),
            value: Bytes::from_static(b"v"),
            flags: (flags % 3) as i32,
        },
        FuzzOp::RemoveXattr { ino: i, name: n } => {
            Op::RemoveXattr { ino: ino(i), name: [b"user.".as_slice(), &name(n)].concat() }
        }
        FuzzOp::SetLk { ino: i, owner, start, len, write, sleep: _ } => Op::SetLk {
            ino: ino(i),
            fh: 0,
            owner: owner as u64 % 3,
            lock: LockRange {
                start: start as u64,
                end: start as u64 + len as u64,
                typ: if write { libc::F_WRLCK } else { libc::F_RDLCK },
                pid: 1,
            },
            // Blocking locks would wait for ever in a sequential run.
            sleep: false,
        },
        FuzzOp::Forget { .. } | FuzzOp::Timeout => return None,
    })
}

fuzz_target!(|ops: Vec<FuzzOp>| {
    let mut store = MemStore::new();
    let mut now = Instant::now();
    let mut core = Core::new(Config::default(), now);
    let mut outstanding: HashSet<RequestId> = HashSet::new();
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let ctx = Ctx { uid: 0, gid: 0, pid: 1 };
    let mut drain = |core: &mut Core, store: &mut MemStore, outstanding: &mut HashSet<RequestId>, now: Instant| {
        while let Some(e) = core.poll_effect() {
            match e {
                Effect::Reply { id, .. } => assert!(outstanding.remove(&id), "reply to {id:?} twice or unasked"),
                Effect::Io { io, request } => {
                    let r = store.execute(&request);
                    core.handle_completion(now, io, r);
                }
                Effect::Kernel(_) => {}
            }
        }
    };
    drain(&mut core, &mut store, &mut outstanding, now);
    for (i, f) in ops.iter().enumerate().take(200) {
        match f {
            FuzzOp::Forget { ino: n } => core.handle_forget(now, ino(*n), 1),
            FuzzOp::Timeout => {
                now += Duration::from_secs(10);
                core.handle_timeout(now);
            }
            other => {
                if let Some(op) = to_op(other) {
                    let id = RequestId(i as u64 + 1);
                    outstanding.insert(id);
                    core.handle_request(now, wall, id, ctx, op);
                }
            }
        }
        drain(&mut core, &mut store, &mut outstanding, now);
    }
    core.begin_shutdown(now);
    drain(&mut core, &mut store, &mut outstanding, now);
});
