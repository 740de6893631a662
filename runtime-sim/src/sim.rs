//! The event loop of one simulated host: one core, its in-memory stores, and the event loop on virtual time.
//!
//! I/O requests become events in a priority queue ordered by completion time, with latencies
//! drawn from the seed. Metadata requests complete strictly in emission order (one transaction
//! stream, like the real driver); staging and store requests may complete in any order. A request
//! is performed when its completion is delivered (metadata requests optionally when emitted,
//! like the real driver's inline execution; drawn per seed). Timers fire when virtual time passes
//! `Core::poll_timeout`.
//!
//! Determinism: the only clock is `now` (an offset from one `Instant` taken at start); effects
//! drained together are put in a canonical order before latencies are drawn, so nothing depends
//! on the core's hash-map iteration order.

use crate::faults::{Fault, Faults};
use crate::meta::MemMeta;
use crate::objects::MemObjects;
use crate::redis::{HostId, MemRedis};
use crate::rng::Rng;
use crate::staging::MemStaging;
use crate::trace::Trace;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use truckeefs_core::{
    Changes, Config, Core, Ctx, Effect, IoErrorKind, IoId, IoReply, IoRequest, IoResult, LockRequest, MetaRequest, Op, Reply, RequestId,
    StagingRequest, StoreRequest,
};

/// Wall-clock time of virtual time zero (2023-11-14T22:13:20Z).
pub const WALL_EPOCH_SECS: u64 = 1_700_000_000;

#[derive(Debug)]
struct Event {
    at: Duration,
    seq: u64,
    io: IoId,
    request: IoRequest,
    fault: Option<Fault>,
    /// Metadata executed when emitted: the result to deliver.
    result: Option<IoResult>,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Picks the fault of one I/O in a scripted test.
pub type Hook = Box<dyn FnMut(&IoRequest) -> Option<Fault>>;

/// Latency ranges in microseconds.
#[derive(Clone, Debug)]
pub struct Latency {
    pub meta: (u64, u64),
    pub staging: (u64, u64),
    pub store: (u64, u64),
}

impl Latency {
    pub fn draw(rng: &mut Rng) -> Latency {
        let scale = [1, 1, 3, 10][rng.below(4) as usize];
        Latency { meta: (20, 400 * scale), staging: (5, 200 * scale), store: (200, 20_000 * scale) }
    }
}

pub struct World {
    pub core: Core,
    pub config: Config,
    base: Instant,
    pub now: Duration,
    pub meta: MemMeta,
    pub objects: MemObjects,
    pub staging: MemStaging,
    queue: BinaryHeap<Reverse<Event>>,
    meta_tail: Duration,
    seq: u64,
    lat_rng: Rng,
    pub latency: Latency,
    pub meta_at_emit: bool,
    pub faults: Faults,
    /// Bumped on every injected failure and crash: lets a check accept EIO/ENOSPC for requests
    /// that were in flight when one happened.
    pub fault_epoch: u64,
    /// Transactions that lost to another writer's (counted in `fault_epoch` too).
    pub conflicts: u64,
    /// The last transactions applied whose answer was lost, each with the `fault_epoch` its
    /// failure showed in.
    pub lost: std::collections::VecDeque<(u64, truckeefs_core::Txn)>,
    /// Such transactions applied whose failure has not shown yet.
    lost_unseen: Vec<truckeefs_core::Txn>,
    replies: HashMap<RequestId, Result<Reply, i32>>,
    outstanding: HashSet<RequestId>,
    next_request: u64,
    pub trace: Trace,
    pub ios: u64,
    pub requests: u64,
    pub timeouts: u64,
    /// What a crash keeps of unsealed staged writes, and the stream that picks it.
    pub crash_mode: crate::staging::CrashMode,
    pub crash_rng: Rng,
    /// Consulted for every I/O before the seed's faults: scripted tests inject a fault into one
    /// particular request with it.
    pub hook: Option<Hook>,
    /// Per request kind: (answered with success, answered with an error).
    pub histogram: std::collections::BTreeMap<&'static str, (u64, u64)>,
    names: HashMap<RequestId, &'static str>,
    /// Several hosts: the shared Redis stand-in (moved in by [`crate::hosts::Cluster`] around
    /// every call into this host) and this host's id in it. `None`: one host, nobody else holds
    /// locks.
    pub redis: Option<MemRedis>,
    pub host_id: HostId,
    /// Several hosts: what this host's committed transactions changed, in commit order, for the
    /// cluster to publish (as `runtime-smol`'s driver publishes `txn.changes()` after each
    /// successful commit).
    pub published: Vec<Changes>,
    /// Several hosts: the files this host listed in its orphan set (the driver's `held_orphans`).
    pub held_orphans: std::collections::BTreeSet<truckeefs_core::Ino>,
}

/// A failure of the core's contract seen by the event loop (not by the model).
pub type LoopResult<T> = Result<T, String>;

fn tag(r: &IoRequest) -> (u8, u64, u64) {
    match r {
        IoRequest::Meta(m) => match m {
            MetaRequest::LoadInode { ino } => (0, *ino, 0),
            MetaRequest::LoadDir { ino } => (1, *ino, 0),
            _ => (2, 0, 0),
        },
        IoRequest::Staging(s) => match s {
            StagingRequest::Scan => (10, 0, 0),
            StagingRequest::Init { ino, .. } => (11, *ino, 0),
            StagingRequest::Write { ino, offset, .. } => (12, *ino, *offset),
            StagingRequest::Read { ino, offset, .. } => (13, *ino, *offset),
            StagingRequest::Truncate { ino, size } => (14, *ino, *size),
            StagingRequest::Allocate { ino, offset, .. } => (15, *ino, *offset),
            StagingRequest::Seal { ino, .. } => (16, *ino, 0),
            StagingRequest::Remove { ino } => (17, *ino, 0),
            StagingRequest::Unseal { ino } => (18, *ino, 0),
        },
        IoRequest::Store(s) => match s {
            StoreRequest::PutStaged { ino } => (20, *ino, 0),
            StoreRequest::Read { offset, .. } => (21, 0, *offset),
            StoreRequest::Delete { .. } => (22, 0, 0),
            StoreRequest::Space => (23, 0, 0),
            StoreRequest::Share { ino, .. } => (24, *ino, 0),
        },
        IoRequest::Lock(l) => match l {
            LockRequest::Acquire { ino, .. } => (30, *ino, 0),
            LockRequest::Publish { ino, .. } => (31, *ino, 0),
            LockRequest::Query { ino, .. } => (32, *ino, 0),
            LockRequest::Open { ino } => (33, *ino, 0),
            LockRequest::Close { ino } => (34, *ino, 0),
            LockRequest::Reap { ino } => (35, *ino, 0),
        },
    }
}

fn object_key(r: &IoRequest) -> &str {
    match r {
        IoRequest::Store(StoreRequest::Read { object, .. }) | IoRequest::Store(StoreRequest::Delete { object, .. }) => {
            &object.0
        }
        _ => "",
    }
}

impl World {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Config,
        meta: MemMeta,
        objects: MemObjects,
        staging: MemStaging,
        lat_rng: Rng,
        latency: Latency,
        meta_at_emit: bool,
        faults: Faults,
        trace: Trace,
    ) -> World {
        let base = Instant::now();
        let core = Core::new(config.clone(), base);
        let mut w = World {
            core,
            config,
            base,
            now: Duration::ZERO,
            meta,
            objects,
            staging,
            queue: BinaryHeap::new(),
            meta_tail: Duration::ZERO,
            seq: 0,
            lat_rng,
            latency,
            meta_at_emit,
            faults,
            fault_epoch: 0,
            lost: std::collections::VecDeque::new(),
            lost_unseen: Vec::new(),
            conflicts: 0,
            replies: HashMap::new(),
            outstanding: HashSet::new(),
            next_request: 1,
            trace,
            ios: 0,
            requests: 0,
            timeouts: 0,
            histogram: Default::default(),
            names: HashMap::new(),
            hook: None,
            crash_mode: crate::staging::CrashMode::SealedOnly,
            crash_rng: Rng::new(0),
            redis: None,
            host_id: 0,
            published: Vec::new(),
            held_orphans: Default::default(),
        };
        w.drain().expect("a new core emits only I/O");
        w
    }

    pub fn instant(&self) -> Instant {
        self.base + self.now
    }

    pub fn wall(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(WALL_EPOCH_SECS) + self.now
    }

    pub fn now_us(&self) -> u64 {
        self.now.as_micros() as u64
    }

    pub fn pending_io(&self) -> usize {
        self.queue.len()
    }

    /// Send one kernel request; its reply is collected by [`World::take_reply`].
    pub fn issue(&mut self, ctx: Ctx, op: Op) -> LoopResult<RequestId> {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.requests += 1;
        self.trace.op(self.now_us(), id, &op);
        self.outstanding.insert(id);
        self.names.insert(id, op_name(&op));
        let (now, wall) = (self.instant(), self.wall());
        self.core.handle_request(now, wall, id, ctx, op);
        self.drain()?;
        Ok(id)
    }

    pub fn forget(&mut self, ino: u64, n: u64) -> LoopResult<()> {
        self.trace.note(self.now_us(), format!("forget {ino} x{n}"));
        let now = self.instant();
        self.core.handle_forget(now, ino, n);
        self.drain()
    }

    pub fn take_reply(&mut self, id: RequestId) -> Option<Result<truckeefs_core::Reply, i32>> {
        self.replies.remove(&id)
    }

    pub fn has_reply(&self, id: RequestId) -> bool {
        self.replies.contains_key(&id)
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Collect every effect of the last input, in a canonical order, and act on it.
    fn drain(&mut self) -> LoopResult<()> {
        let mut replies = Vec::new();
        let mut metas = Vec::new();
        let mut others = Vec::new();
        while let Some(effect) = self.core.poll_effect() {
            match effect {
                Effect::Reply { id, result } => replies.push((id, result)),
                Effect::Io { io, request: IoRequest::Meta(m) } => metas.push((io, IoRequest::Meta(m))),
                // The listings of open files run in the metadata stream (driver.rs `open_files`).
                Effect::Io { io, request: IoRequest::Lock(l) } if l.in_meta_stream() => metas.push((io, IoRequest::Lock(l))),
                Effect::Io { io, request } => others.push((io, request)),
                e @ Effect::Kernel(_) => self.trace.effect(&e),
            }
        }
        replies.sort_by_key(|(id, _)| *id);
        for (id, result) in replies {
            self.trace.reply(self.now_us(), id, &result);
            if !self.outstanding.remove(&id) {
                return Err(format!("reply to request {} which is not outstanding (unknown or answered twice)", id.0));
            }
            if let Some(name) = self.names.remove(&id) {
                let e = self.histogram.entry(name).or_default();
                if result.is_ok() {
                    e.0 += 1;
                } else {
                    e.1 += 1;
                }
            }
            self.replies.insert(id, result);
        }
        // Runs of consecutive loads commute with each other: sort them, so that the order does
        // not depend on the core's hash maps.
        let mut i = 0;
        while i < metas.len() {
            let mut j = i;
            while j < metas.len() && tag(&metas[j].1).0 < 2 {
                j += 1;
            }
            metas[i..j].sort_by_key(|(_, r)| tag(r));
            i = j.max(i + 1);
        }
        for (io, request) in metas {
            self.schedule(io, request);
        }
        others.sort_by(|(_, a), (_, b)| tag(a).cmp(&tag(b)).then_with(|| object_key(a).cmp(object_key(b))));
        for (io, request) in others {
            self.schedule(io, request);
        }
        Ok(())
    }

    fn schedule(&mut self, io: IoId, request: IoRequest) {
        self.ios += 1;
        let hooked = self.hook.as_mut().and_then(|h| h(&request));
        let fault = hooked.or_else(|| self.faults.decide(&request));
        let (lo, hi) = match &request {
            IoRequest::Meta(_) => self.latency.meta,
            IoRequest::Staging(_) => self.latency.staging,
            IoRequest::Store(_) => self.latency.store,
            // One host: lock requests only reach a multi-host core; answered like metadata.
            IoRequest::Lock(_) => self.latency.meta,
        };
        let mut lat = Duration::from_micros(self.lat_rng.range(lo, hi));
        if fault == Some(Fault::Slow) {
            lat *= 100;
        }
        let mut at = self.now + lat;
        let mut result = None;
        if request.in_meta_stream() {
            at = at.max(self.meta_tail);
            self.meta_tail = at;
            if self.meta_at_emit {
                result = Some(match &request {
                    IoRequest::Meta(m) => self.perform_meta(m, &fault),
                    other => self.perform(other, &fault),
                });
            }
        }
        self.trace.io(self.now_us(), &request, fault.as_ref().map(|f| format!("{f:?}")));
        self.seq += 1;
        self.queue.push(Reverse(Event { at, seq: self.seq, io, request, fault, result }));
    }

    fn perform_meta(&mut self, m: &MetaRequest, fault: &Option<Fault>) -> IoResult {
        self.before_meta(m);
        if let (Some(Fault::Lost(_)), MetaRequest::Commit(txn)) = (fault, m) {
            // Executed, but the driver hears a failure in doubt: it publishes the change (it may
            // have committed), and keeps the orphans it listed. (A transaction that conflicts
            // changes nothing here either.)
            if self.meta.execute(m).is_ok() {
                self.lost_unseen.push(txn.clone());
            }
            self.publish(txn);
        }
        if let Some(e) = fault.as_ref().and_then(|f| f.error("metadata commit")) {
            return Err(e);
        }
        self.execute_meta(m)
    }

    /// Several hosts: before the store executes a transaction, the files it leaves without
    /// names are listed in this host's orphan set (even if it then fails, as in the driver).
    fn before_meta(&mut self, m: &MetaRequest) {
        if let (Some(redis), MetaRequest::Commit(txn)) = (&mut self.redis, m) {
            crate::orphans::hold(redis, self.host_id, &mut self.held_orphans, txn);
        }
    }

    /// The metadata store executes `m`; with several hosts, a committed change is published
    /// right then (the real driver publishes as soon as its inline execution succeeds), and
    /// orphans are answered as the driver answers them.
    fn execute_meta(&mut self, m: &MetaRequest) -> IoResult {
        let mut result = self.meta.execute(m);
        let (me, now) = (self.host_id, self.now);
        let Some(redis) = &mut self.redis else { return result };
        match (m, &mut result) {
            (MetaRequest::Commit(txn), Ok(_)) => {
                crate::orphans::release(redis, me, &mut self.held_orphans, txn);
                self.publish(txn);
            }
            (MetaRequest::ListOrphans, Ok(IoReply::Orphans(rows))) => crate::orphans::spare(redis, me, now, rows),
            _ => {}
        }
        result
    }

    /// Several hosts: what `txn` changed goes to the others (`published`).
    fn publish(&mut self, txn: &truckeefs_core::Txn) {
        let changes = txn.changes();
        if self.redis.is_some() && !changes.is_empty() {
            self.published.push(changes);
        }
    }

    fn perform(&mut self, request: &IoRequest, fault: &Option<Fault>) -> IoResult {
        if let IoRequest::Meta(m) = request {
            return self.perform_meta(m, fault);
        }
        if let Some(e) = fault.as_ref().and_then(|f| f.error(&format!("{:?}", tag(request)))) {
            return Err(e);
        }
        match request {
            IoRequest::Meta(_) => unreachable!("performed above"),
            IoRequest::Staging(s) => self.staging.execute(s, &self.objects),
            IoRequest::Store(s) => self.objects.execute(s, &self.staging),
            IoRequest::Lock(l) if self.redis.is_some() => {
                let (me, now) = (self.host_id, self.now);
                let result = self.redis.as_mut().expect("checked by the guard").execute(me, now, l);
                match (l, &result) {
                    // Out of this host's orphan set (driver.rs `open_files`).
                    (LockRequest::Reap { ino }, Ok(IoReply::Held(true))) | (LockRequest::Close { ino }, Ok(_)) => {
                        self.held_orphans.remove(ino);
                    }
                    _ => {}
                }
                result
            }
            // One host: nobody else holds locks or files.
            IoRequest::Lock(LockRequest::Acquire { .. } | LockRequest::Query { .. }) => Ok(IoReply::LockConflict(None)),
            IoRequest::Lock(LockRequest::Reap { .. }) => Ok(IoReply::Held(false)),
            IoRequest::Lock(LockRequest::Publish { .. } | LockRequest::Open { .. } | LockRequest::Close { .. }) => {
                Ok(IoReply::Done)
            }
        }
    }

    /// The I/O requests in flight.
    pub fn in_flight(&self) -> impl Iterator<Item = &IoRequest> {
        self.queue.iter().map(|Reverse(e)| &e.request)
    }

    /// The time of the next thing that will happen, if anything is pending.
    pub fn next_time(&self) -> Option<Duration> {
        let ev = self.queue.peek().map(|Reverse(e)| e.at);
        let to = self.core.poll_timeout().map(|t| t.saturating_duration_since(self.base));
        match (ev, to) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Deliver the next completion or fire the next timer. False when nothing is pending.
    pub fn step(&mut self) -> LoopResult<bool> {
        let ev = self.queue.peek().map(|Reverse(e)| e.at);
        let to = self.core.poll_timeout().map(|t| t.saturating_duration_since(self.base));
        let fire_timer = match (ev, to) {
            (None, None) => return Ok(false),
            (Some(e), Some(t)) => t <= e,
            (None, Some(_)) => true,
            (Some(_), None) => false,
        };
        if fire_timer {
            let t = to.unwrap();
            if t > self.now {
                self.now = t;
            } else {
                self.timeouts += 1;
            }
            self.trace.timeout(self.now_us());
            let now = self.instant();
            self.core.handle_timeout(now);
            // A deadline that handle_timeout leaves in the past would spin forever.
            if let Some(again) = self.core.poll_timeout() {
                if again <= now {
                    return Err("poll_timeout still returns a passed deadline after handle_timeout".into());
                }
            }
        } else {
            let Reverse(e) = self.queue.pop().unwrap();
            if e.at > self.now {
                self.now = e.at;
            }
            if matches!(e.fault, Some(Fault::Fail(_) | Fault::Lost(_))) {
                // The failure shows now: requests in flight may see it.
                self.fault_epoch += 1;
            }
            let result = match e.result {
                Some(r) => r,
                None => self.perform(&e.request, &e.fault),
            };
            if let (Some(Fault::Lost(_)), IoRequest::Meta(MetaRequest::Commit(txn))) = (&e.fault, &e.request) {
                if let Some(i) = self.lost_unseen.iter().position(|t| t == txn) {
                    self.lost_unseen.swap_remove(i);
                    if self.lost.len() == 64 {
                        self.lost.pop_front();
                    }
                    self.lost.push_back((self.fault_epoch, txn.clone()));
                }
            }
            if matches!(e.request, IoRequest::Meta(_)) && result.as_ref().is_err_and(|e| e.kind == IoErrorKind::Conflict) {
                // A conflict with another writer fails the transaction like an injected fault.
                self.fault_epoch += 1;
                self.conflicts += 1;
            }
            self.trace.done(self.now_us(), &e.request, &result);
            let now = self.instant();
            self.core.handle_completion(now, e.io, result);
        }
        self.drain()?;
        Ok(true)
    }

    /// Another host's committed changes arrive (several hosts).
    pub fn invalidate(&mut self, changes: Changes) -> LoopResult<()> {
        self.trace.note(self.now_us(), format!("invalidation {:?} {:?}", changes.inodes, changes.entries));
        let now = self.instant();
        self.core.handle_invalidation(now, changes);
        self.drain()
    }

    /// Several hosts: a dead host's orphan set was found (the periodic check of the heartbeat
    /// thread): collect the orphans no live host holds.
    pub fn collect_orphans(&mut self) -> LoopResult<()> {
        self.trace.note(self.now_us(), "collect orphans of dead hosts".into());
        let now = self.instant();
        self.core.collect_orphans(now);
        self.drain()
    }

    /// This host subscribed again after its subscription was cut (several hosts): what it
    /// missed is unknown, so it drops every cached copy.
    pub fn resync(&mut self) -> LoopResult<()> {
        self.trace.note(self.now_us(), "resync: subscribed again".into());
        let now = self.instant();
        self.core.invalidate_all(now);
        self.drain()
    }

    /// Run until `id` is answered. Fails on a deadlock or when virtual time runs away.
    pub fn wait(&mut self, id: RequestId) -> LoopResult<Result<Reply, i32>> {
        let limit = self.now + Duration::from_secs(3600);
        loop {
            if let Some(r) = self.take_reply(id) {
                return Ok(r);
            }
            if self.now > limit {
                return Err(format!("request {} not answered within an hour of virtual time", id.0));
            }
            if !self.step()? {
                return Err(format!("request {} is never answered: nothing is in flight and no timer is set", id.0));
            }
        }
    }

    /// Run until one of `ids` is answered; returns its id.
    pub fn wait_any(&mut self, ids: &[RequestId]) -> LoopResult<RequestId> {
        let limit = self.now + Duration::from_secs(3600);
        loop {
            if let Some(id) = ids.iter().find(|id| self.has_reply(**id)) {
                return Ok(*id);
            }
            if self.now > limit {
                return Err(format!("requests {ids:?} not answered within an hour of virtual time"));
            }
            if !self.step()? {
                return Err(format!("requests {ids:?} are never answered: nothing is in flight and no timer is set"));
            }
        }
    }

    /// Let `d` of virtual time pass, processing whatever completes meanwhile.
    pub fn advance(&mut self, d: Duration) -> LoopResult<()> {
        let target = self.now + d;
        while let Some(t) = self.next_time() {
            if t > target {
                break;
            }
            self.step()?;
        }
        if target > self.now {
            self.now = target;
        }
        Ok(())
    }

    /// Unmount: the core uploads what is left; run until [`Core::is_idle`].
    pub fn shutdown(&mut self) -> LoopResult<()> {
        self.trace.note(self.now_us(), "shutdown".into());
        let now = self.instant();
        self.core.begin_shutdown(now);
        self.drain()
    }

    /// Run until the core is idle (shutdown), within `limit` of virtual time.
    pub fn run_until_idle(&mut self, limit: Duration) -> LoopResult<()> {
        let end = self.now + limit;
        while !self.core.is_idle() {
            if self.now > end {
                return Err(format!("the core is not idle after {limit:?}: {:?}", self.core.status()));
            }
            if !self.step()? {
                return Err(format!("the core is not idle but nothing is in flight: {:?}", self.core.status()));
            }
        }
        Ok(())
    }

    /// The mount process dies: every in-flight I/O is lost, the staging area keeps what was
    /// sealed, the metadata and object stores keep everything. A new core starts.
    pub fn crash_and_restart(&mut self) -> LoopResult<()> {
        self.crash_and_restart_with(false)
    }

    /// A crash; with `lose_staging` the staging area is lost as well (the host is replaced).
    pub fn crash_and_restart_with(&mut self, lose_staging: bool) -> LoopResult<()> {
        self.crash(lose_staging);
        self.start_again()
    }

    /// The mount process dies (see [`World::crash_and_restart_with`]); nothing of this host
    /// runs until [`World::start_again`].
    pub fn crash(&mut self, lose_staging: bool) {
        let what = if lose_staging { " (the staging area is lost)" } else { "" };
        self.trace.note(self.now_us(), format!("CRASH with {} I/O in flight{what}", self.queue.len()));
        self.fault_epoch += 1;
        self.queue.clear();
        self.lost_unseen.clear();
        self.meta_tail = self.now;
        self.outstanding.clear();
        self.replies.clear();
        self.names.clear();
        // A new process: its set (under a new Redis id) starts empty.
        self.held_orphans.clear();
        let mode = self.crash_mode;
        self.staging.crash(mode, &mut self.crash_rng);
        if lose_staging {
            self.staging.lose_all();
        }
    }

    /// What `op`, sent when the fault epoch was `epoch`, did if one of the transactions whose
    /// answer was lost since is its own: the request and answer the checks take it as. Counted
    /// for `--stats` (`answer lost, change made`, and `answer lost, link made` for a link).
    pub fn made_since(&mut self, epoch: u64, op: &Op) -> Option<(Op, Reply)> {
        let made = self.lost.iter().filter(|(at, _)| *at > epoch).find_map(|(_, txn)| crate::lost::made_by(op, txn))?;
        self.histogram.entry("answer lost, change made").or_default().0 += 1;
        if let Op::Link { .. } = made.0 {
            self.histogram.entry("answer lost, link made").or_default().0 += 1;
        }
        Some(made)
    }

    /// A new mount process starts on what the crash left: a new core.
    pub fn start_again(&mut self) -> LoopResult<()> {
        self.core = Core::new(self.config.clone(), self.instant());
        self.drain()
    }
}

/// A short name for a request kind (statistics).
pub fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Lookup { .. } => "lookup",
        Op::GetAttr { .. } => "getattr",
        Op::SetAttr { set, .. } if set.size.is_some() => "truncate",
        Op::SetAttr { .. } => "setattr",
        Op::MkNod { .. } => "mknod",
        Op::MkDir { .. } => "mkdir",
        Op::Unlink { .. } => "unlink",
        Op::RmDir { .. } => "rmdir",
        Op::Symlink { .. } => "symlink",
        Op::ReadLink { .. } => "readlink",
        Op::Link { .. } => "link",
        Op::Rename { .. } => "rename",
        Op::Open { .. } => "open",
        Op::Create { .. } => "create",
        Op::Read { .. } => "read",
        Op::Write { .. } => "write",
        Op::Flush { .. } => "flush",
        Op::Fsync { .. } => "fsync",
        Op::Release { .. } => "release",
        Op::OpenDir { .. } => "opendir",
        Op::ReadDir { .. } => "readdir",
        Op::ReleaseDir { .. } => "releasedir",
        Op::FsyncDir { .. } => "fsyncdir",
        Op::StatFs => "statfs",
        Op::SetXattr { .. } => "setxattr",
        Op::GetXattr { .. } => "getxattr",
        Op::ListXattr { .. } => "listxattr",
        Op::RemoveXattr { .. } => "removexattr",
        Op::Access { .. } => "access",
        Op::GetLk { .. } => "getlk",
        Op::SetLk { sleep: true, .. } => "setlkw",
        Op::SetLk { .. } => "setlk",
        Op::Fallocate { .. } => "fallocate",
        Op::CopyFileRange { .. } => "copy_file_range",
    }
}
