//! Operation sequences against the core with an in-memory store: no sequence may panic the
//! core (debug assertions included), and every request gets exactly one reply.
//!
//! Inode numbers are arbitrary (the core must cope with any), but requests on a file handle keep
//! the kernel's contract: the handle is one the core handed out, with its own inode, and it is
//! released once.
#![no_main]
use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
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
    Write { handle: u8, offset: u16, len: u8 },
    Read { handle: u8, offset: u16, len: u16 },
    Truncate { ino: u8, size: u16 },
    Flush { handle: u8 },
    Fsync { handle: u8 },
    Release { handle: u8 },
    Open { ino: u8 },
    ReadDir { ino: u8, offset: u8, plus: bool },
    SetXattr { ino: u8, name: u8, flags: u8 },
    RemoveXattr { ino: u8, name: u8 },
    SetLk { handle: u8, owner: u8, start: u8, len: u8, write: bool },
    GetLk { handle: u8, owner: u8, start: u8, len: u8 },
    Forget { ino: u8 },
    Timeout,
}

fn name(n: u8) -> Vec<u8> {
    format!("n{}", n % 8).into_bytes()
}

fn ino(i: u8) -> Ino {
    (i % 16) as Ino + 1
}

/// The open handles, in the order the core handed them out: (fh, ino).
type Handles = Vec<(u64, Ino)>;

fn pick(handles: &Handles, h: u8) -> Option<(u64, Ino)> {
    (!handles.is_empty()).then(|| handles[h as usize % handles.len()])
}

fn lock(start: u8, len: u8, typ: i32) -> LockRange {
    LockRange { start: start as u64, end: start as u64 + len as u64, typ, pid: 1 }
}

fn to_op(f: &FuzzOp, handles: &Handles) -> Option<Op> {
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
        FuzzOp::Write { handle, offset, len } => {
            let (fh, ino) = pick(handles, handle)?;
            Op::Write { ino, fh, offset: offset as u64, data: Bytes::from(vec![len; len as usize]) }
        }
        FuzzOp::Read { handle, offset, len } => {
            let (fh, ino) = pick(handles, handle)?;
            Op::Read { ino, fh, offset: offset as u64, size: len as u32 }
        }
        FuzzOp::Truncate { ino: i, size } => {
            Op::SetAttr { ino: ino(i), fh: None, set: SetAttr { size: Some(size as u64), ..SetAttr::default() } }
        }
        FuzzOp::Flush { handle } => {
            let (fh, ino) = pick(handles, handle)?;
            Op::Flush { ino, fh, lock_owner: 1 }
        }
        FuzzOp::Fsync { handle } => {
            let (fh, ino) = pick(handles, handle)?;
            Op::Fsync { ino, fh, datasync: false }
        }
        FuzzOp::Release { handle } => {
            let (fh, ino) = pick(handles, handle)?;
            Op::Release { ino, fh, lock_owner: None }
        }
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
        FuzzOp::SetLk { handle, owner, start, len, write } => {
            let (fh, ino) = pick(handles, handle)?;
            let typ = if write { libc::F_WRLCK } else { libc::F_RDLCK };
            // Blocking locks would wait for ever in a sequential run.
            Op::SetLk { ino, fh, owner: owner as u64 % 3, lock: lock(start, len, typ), sleep: false }
        }
        FuzzOp::GetLk { handle, owner, start, len } => {
            let (fh, ino) = pick(handles, handle)?;
            Op::GetLk { ino, fh, owner: owner as u64 % 3, lock: lock(start, len, libc::F_WRLCK) }
        }
        FuzzOp::Forget { .. } | FuzzOp::Timeout => return None,
    })
}

struct Run {
    core: Core,
    store: MemStore,
    /// Requests without an answer yet, with the inode an `Open` names.
    outstanding: HashMap<RequestId, Option<Ino>>,
    handles: Handles,
}

impl Run {
    fn drain(&mut self, now: Instant) {
        while let Some(e) = self.core.poll_effect() {
            match e {
                Effect::Reply { id, result } => {
                    let Some(open) = self.outstanding.remove(&id) else { panic!("reply to {id:?} twice or unasked") };
                    match result {
                        Ok(Reply::Opened { fh, .. }) => self.handles.push((fh, open.expect("a handle for an open"))),
                        Ok(Reply::Created { attr, fh }) => self.handles.push((fh, attr.ino)),
                        _ => {}
                    }
                }
                Effect::Io { io, request } => {
                    let r = self.store.execute(&request);
                    self.core.handle_completion(now, io, r);
                }
                Effect::Kernel(_) => {}
            }
        }
    }
}

fuzz_target!(|ops: Vec<FuzzOp>| {
    let mut now = Instant::now();
    let mut run = Run { core: Core::new(Config::default(), now), store: MemStore::new(), outstanding: HashMap::new(), handles: Vec::new() };
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let ctx = Ctx { uid: 0, gid: 0, pid: 1 };
    run.drain(now);
    for (i, f) in ops.iter().enumerate().take(200) {
        match f {
            FuzzOp::Forget { ino: n } => run.core.handle_forget(now, ino(*n), 1),
            FuzzOp::Timeout => {
                now += Duration::from_secs(10);
                run.core.handle_timeout(now);
            }
            other => {
                if let Some(op) = to_op(other, &run.handles) {
                    if let Op::Release { fh, .. } = op {
                        run.handles.retain(|(h, _)| *h != fh); // the kernel releases a handle once
                    }
                    let id = RequestId(i as u64 + 1);
                    let open = match op {
                        Op::Open { ino, .. } => Some(ino),
                        _ => None,
                    };
                    run.outstanding.insert(id, open);
                    run.core.handle_request(now, wall, id, ctx, op);
                }
            }
        }
        run.drain(now);
    }
    run.core.begin_shutdown(now);
    run.drain(now);
});
