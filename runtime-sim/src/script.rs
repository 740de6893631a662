//! Scripted scenarios: one host driven request by request, with fixed latencies and no random
//! faults, for minimal reproductions of bugs (see `tests/regressions.rs`).

use crate::faults::{FaultProfile, Faults};
use crate::meta::MemMeta;
use crate::objects::MemObjects;
use crate::rng::Rng;
use crate::sim::{Latency, LoopResult, World, WALL_EPOCH_SECS};
use crate::staging::MemStaging;
use crate::trace::Trace;
use std::time::Duration;
use truckeefs_core::{Config, Ctx, Ino, IoRequest, Op, Reply, RequestId, Timespec};

pub const CTX: Ctx = Ctx { uid: 0, gid: 0, pid: 1 };

pub struct Script {
    pub w: World,
}

impl Script {
    pub fn new(config: Config) -> Script {
        let meta = MemMeta::new(0, 0, Timespec { sec: WALL_EPOCH_SECS as i64, nsec: 0 });
        let latency = Latency { meta: (100, 100), staging: (50, 50), store: (1000, 1000) };
        let w = World::new(
            config,
            meta,
            MemObjects::new(1),
            MemStaging::new(),
            Rng::new(0),
            latency,
            false,
            Faults::new(FaultProfile::none(), Rng::new(0)),
            Trace::new(200),
        );
        Script { w }
    }

    /// Send a request and wait for its answer.
    pub fn call(&mut self, op: Op) -> LoopResult<Result<Reply, i32>> {
        let id = self.w.issue(CTX, op)?;
        self.w.wait(id)
    }

    pub fn issue(&mut self, op: Op) -> LoopResult<RequestId> {
        self.w.issue(CTX, op)
    }

    /// Let virtual time pass (timers fire, uploads finish).
    pub fn pass(&mut self, d: Duration) -> LoopResult<()> {
        self.w.advance(d)
    }

    /// Run until an I/O matching `pred` has been emitted and is still in flight.
    pub fn until_in_flight(&mut self, pred: impl Fn(&IoRequest) -> bool) -> LoopResult<()> {
        for _ in 0..100_000 {
            if self.w.in_flight().any(&pred) {
                return Ok(());
            }
            if !self.w.step()? {
                break;
            }
        }
        Err("the awaited I/O was never emitted".into())
    }

    /// Create `name` in the root and return its inode and handle.
    pub fn create(&mut self, name: &str) -> LoopResult<(Ino, u64)> {
        let r = self.call(Op::Create {
            parent: 1,
            name: name.as_bytes().to_vec(),
            mode: libc::S_IFREG | 0o644,
            umask: 0o022,
            flags: libc::O_RDWR | libc::O_CREAT,
        })?;
        match r {
            Ok(Reply::Created { attr, fh }) => Ok((attr.ino, fh)),
            other => Err(format!("create {name}: {other:?}")),
        }
    }

    /// Read a whole file through a new handle.
    pub fn read_all(&mut self, ino: Ino) -> LoopResult<Result<Vec<u8>, i32>> {
        let fh = match self.call(Op::Open { ino, flags: libc::O_RDONLY })? {
            Ok(Reply::Opened { fh, .. }) => fh,
            Ok(other) => return Err(format!("open: {other:?}")),
            Err(e) => return Ok(Err(e)),
        };
        let r = self.call(Op::Read { ino, fh, offset: 0, size: 1 << 20 })?;
        let _ = self.call(Op::Release { ino, fh, lock_owner: None })?;
        Ok(match r {
            Ok(Reply::Data(d)) => Ok(d.to_vec()),
            Ok(other) => return Err(format!("read: {other:?}")),
            Err(e) => Err(e),
        })
    }

    pub fn trace_tail(&self) -> String {
        self.w.trace.tail().join("\n")
    }
}
