//! The harness and model for several hosts (`--hosts H`, H > 1): clients on every host act on
//! one shared filesystem ([`crate::hosts::Cluster`]); every answer is checked against a model
//! that allows exactly the freedom close-to-open consistency gives (runtime-sim/README.md,
//! "Several hosts", says what that is).
//!
//! The name space is six regular files in the root (`f0`..`f5`). A step runs one action on each
//! of a random subset of the hosts that are up, concurrently; an action is a short system call
//! sequence (lookup, open, read, close...). Within a step each name is used by one action, except
//! for a create race (the same create on two hosts at once). A file has one writer at a time in
//! the whole cluster (the harness opens a file for writing only where nobody else has it open for
//! writing and the store holds its latest version); readers and lock holders are unrestricted.
//! Files open anywhere are not unlinked (open-unlinked files across hosts are not modelled).

use crate::faults::{FaultProfile, Faults};
use crate::harness::{Failure, Options, Stats};
use crate::hosts::Cluster;
use crate::meta::MemMeta;
use crate::objects::MemObjects;
use crate::redis::HostId;
use crate::rng::Rng;
use crate::sim::{Latency, World, WALL_EPOCH_SECS};
use crate::staging::{CrashMode, MemStaging};
use crate::trace::Trace;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::time::Duration;
use truckeefs_core::{Config, Ctx, Ino, IoRequest, LockRange, MetaRequest, Op, Reply, RequestId, Timespec, ROOT_INO};

type R<T> = Result<T, String>;

const NAMES: [&str; 6] = ["f0", "f1", "f2", "f3", "f4", "f5"];
const CTX: Ctx = Ctx { uid: 0, gid: 0, pid: 1 };
/// Record locks are taken on bytes 0..16; slot 16 stands for "16 to the end of the file".
const SLOTS: usize = 17;
/// A slot without a lock (`F_RDLCK` is 0).
const NONE: i32 = -1;
/// How long a released lock may still be seen by another host (its `Publish` in flight, up to a
/// slow metadata latency).
const RELEASE_LINGER: Duration = Duration::from_secs(1);
/// A check of every name and size on every host, after all messages are delivered, this often.
const SYNC_EVERY: u64 = 25;
/// Per step (seeds with faults): a host's subscription is cut for 0.2-6 s.
const CUT_CHANCE: f64 = 0.006;
const READ_ALL: u32 = 1 << 16;

/// One file of the model.
struct FileM {
    ino: Ino,
    /// Every content the file had, in order: one per acknowledged write (the empty file first).
    versions: Vec<Vec<u8>>,
    /// The last version a close or fsync acknowledged (it is in the shared store).
    acked: usize,
    /// When each acknowledgement came: (time, version).
    acks: Vec<(Duration, usize)>,
    /// The host writing it, if it is open for writing.
    writer: Option<usize>,
    /// The host that wrote it last (its uploads may still be running).
    last_writer: Option<usize>,
    /// Its writer crashed with unacknowledged writes: until it settles, the contents are any
    /// version since the acknowledged one (or a newer one's bytes under an older one's size).
    unsettled: Option<usize>,
}

impl FileM {
    fn latest(&self) -> &[u8] {
        self.versions.last().expect("a file has at least its empty version")
    }

    /// The last version acknowledged before `t` (strictly).
    fn acked_before(&self, t: Duration) -> usize {
        self.acks.iter().rev().find(|(at, _)| *at < t).map_or(0, |(_, v)| *v)
    }

    /// The contents allowed after a crash of its writer, from version `from` on.
    fn allowed_after_crash(&self, from: usize, data: &[u8]) -> bool {
        let vs = &self.versions[from..];
        if vs.iter().any(|v| v == data) {
            return true;
        }
        // A seal record written while a later write landed: a newer version's bytes under an
        // older version's size.
        vs.iter().enumerate().any(|(i, old)| {
            old.len() == data.len() && vs[i + 1..].iter().any(|new| zero_extended(new, old.len()) == data)
        })
    }
}

fn zero_extended(v: &[u8], len: usize) -> Vec<u8> {
    let mut out = v[..v.len().min(len)].to_vec();
    out.resize(len, 0);
    out
}

/// One name of the model: its file now, and what it named before (and until when).
#[derive(Default)]
struct NameM {
    current: Option<Ino>,
    history: Vec<(Option<Ino>, Duration)>,
}

impl NameM {
    /// What a host may see: the current value, or one that changed after the last sync (a host
    /// may not have heard of the change yet).
    fn allows(&self, v: Option<Ino>, since: Duration) -> bool {
        self.current == v || self.history.iter().any(|(old, until)| *old == v && *until >= since)
    }

    fn set(&mut self, v: Option<Ino>, now: Duration) {
        let old = std::mem::replace(&mut self.current, v);
        self.history.push((old, now));
    }
}

/// A lock owner's locks on one file: per slot, the type and when it was granted.
#[derive(Clone)]
struct OwnerLocks {
    host: usize,
    redis_id: HostId,
    ino: Ino,
    slots: [(i32, Duration); SLOTS],
}

/// Locks let go of (or of a crashed host) that other hosts may still see until `until`.
struct Lingering {
    ino: Ino,
    host: usize,
    /// The holder's id in Redis (a restarted host has a new one: its old locks are another's).
    redis_id: HostId,
    slots: [i32; SLOTS],
    until: Duration,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Writer,
    Locker,
}

#[derive(Clone, Debug)]
struct Handle {
    host: usize,
    name: usize,
    ino: Ino,
    fh: u64,
    owner: u64,
    mode: Mode,
}

#[derive(Clone, Debug)]
enum Act {
    /// Create (exclusive) and keep it open for writing.
    Create {
        name: usize,
    },
    Unlink {
        name: usize,
    },
    /// Lookup, open: a writer or a lock holder.
    Open {
        name: usize,
        mode: Mode,
    },
    Write {
        h: usize,
        offset: u64,
        data: Bytes,
    },
    Fsync {
        h: usize,
    },
    /// Flush, release.
    Close {
        h: usize,
    },
    /// Lookup, open, read all, flush, release.
    ReadFile {
        name: usize,
    },
    /// Lookup, getattr.
    Stat {
        name: usize,
    },
    SetLk {
        h: usize,
        lock: LockRange,
    },
    GetLk {
        h: usize,
        lock: LockRange,
    },
    /// Opendir of the root, readdir, releasedir.
    List,
}

/// An action in progress on one host.
struct Running {
    host: usize,
    act: Act,
    stage: u8,
    id: RequestId,
    op: Op,
    /// Virtual time the action's current request was sent.
    issued: Duration,
    /// The host's fault epoch when the action started.
    epoch: u64,
    ino: Option<Ino>,
    fh: Option<u64>,
    /// Lookup references taken (forgotten at the end unless a handle keeps them).
    lookups: u64,
    /// For a read: the lowest version it may return.
    lower: usize,
    done: bool,
}

struct Mh {
    c: Cluster,
    opts: Options,
    rng: Rng,
    frng: Rng,
    /// Draws the cut subscriptions (a stream of its own: the other faults stay as they were).
    cut_rng: Rng,
    profile: FaultProfile,
    names: Vec<NameM>,
    files: BTreeMap<Ino, FileM>,
    handles: BTreeMap<usize, Handle>,
    next_handle: usize,
    next_owner: u64,
    locks: BTreeMap<u64, OwnerLocks>,
    lingering: Vec<Lingering>,
    /// When every host last heard of every change (all messages delivered and applied).
    last_sync: Duration,
    step: u64,
    crashes: u64,
    cluster_faults: u64,
    batches: BTreeMap<usize, u64>,
    staged_is_durable: bool,
    /// Names two creates race for in the current batch, and those a loser got EEXIST for
    /// (checked once the batch is over: the winner's answer may come later).
    racing: Vec<usize>,
    race_losses: Vec<(usize, Duration)>,
}

fn slots_of(l: &LockRange) -> std::ops::RangeInclusive<usize> {
    let start = l.start.min(16) as usize;
    let end = if l.end >= 16 { 16 } else { l.end as usize };
    start..=end
}

fn conflicts(a: i32, b: i32) -> bool {
    a != NONE && b != NONE && a != libc::F_UNLCK && b != libc::F_UNLCK && (a == libc::F_WRLCK || b == libc::F_WRLCK)
}

pub fn run(opts: Options) -> Result<Stats, Failure> {
    let mut m = Mh::new(opts);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| m.run_inner()));
    let message = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(payload) => Some(format!(
            "panic: {}",
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into())
        )),
    };
    if let Some(message) = message {
        return Err(Failure {
            seed: m.opts.seed,
            steps: m.opts.steps,
            step: m.step,
            message,
            tail: m.c.trace.tail(),
            flags: m.opts.flags(),
        });
    }
    let referenced = m.c.meta.referenced_objects();
    let leaked = m.c.objects.ids().filter(|id| !referenced.contains(*id)).count();
    let mut histogram: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
    for h in &m.c.hosts {
        for (k, (ok, err)) in &h.w.histogram {
            let e = histogram.entry(*k).or_default();
            e.0 += ok;
            e.1 += err;
        }
    }
    let s = m.c.stats;
    Ok(Stats {
        steps: m.step,
        ops: m.c.hosts.iter().map(|h| h.w.requests).sum(),
        faults: m.c.hosts.iter().map(|h| h.w.faults.injected).sum::<u64>() + m.crashes + m.cluster_faults,
        crashes: m.crashes,
        ios: m.c.hosts.iter().map(|h| h.w.ios).sum(),
        trace_hash: m.c.trace.hash.0,
        leaked_objects: leaked,
        profile: format!(
            "hosts {} faults {:?} staged_is_durable {} messages published {} delivered {} delayed {} missed {} lost {} resyncs {} lock scripts {}",
            m.c.hosts.len(),
            m.profile,
            m.staged_is_durable,
            s.published,
            s.delivered,
            s.delayed,
            s.missed,
            s.lost,
            s.resyncs,
            m.c.redis.scripts
        ),
        divergences: BTreeMap::new(),
        histogram,
        batches: std::mem::take(&mut m.batches),
    })
}

impl Mh {
    fn new(opts: Options) -> Mh {
        let mut root = Rng::new(opts.seed);
        let mut cfg_rng = root.fork(1);
        let rng = root.fork(4);
        let frng = root.fork(5);
        let msg_rng = root.fork(7);
        let cut_rng = root.fork(8);
        // fsync answers after the upload is committed, so that what it acknowledges is what the
        // other hosts read.
        let config = Config {
            ids_per_alloc: *cfg_rng.pick(&[2, 3, 8, 64, 1024]),
            upload_delay: Duration::from_millis(cfg_rng.range(500, 8000)),
            upload_retry: Duration::from_millis(cfg_rng.range(200, 5000)),
            staged_is_durable: false,
            inode_cache_max: *cfg_rng.pick(&[4, 16, 100_000]),
            multi_host: true,
            ..Config::default()
        };
        let profile = if opts.faults { FaultProfile::draw(&mut cfg_rng) } else { FaultProfile::none() };
        let delay_chance = if opts.faults { *cfg_rng.pick(&[0.0, 0.05, 0.3]) } else { 0.0 };
        // Reordered data writes (a torn staged copy under a seal record) are left to the
        // single-host model, which knows every version's bytes by offset.
        let crash_mode = *cfg_rng.pick(&[CrashMode::SealedOnly, CrashMode::RandomPrefix, CrashMode::Everything]);
        let mut trace = Trace::new(opts.trace_tail);
        trace.echo = opts.verbose;
        let t0 = Timespec { sec: WALL_EPOCH_SECS as i64, nsec: 0 };
        let mut worlds = Vec::new();
        for h in 0..opts.hosts.max(2) {
            let mut hr = root.fork(100 + h as u64);
            let latency = Latency::draw(&mut hr);
            let meta_at_emit = hr.chance(0.5);
            let mut w = World::new(
                config.clone(),
                MemMeta::default(),
                MemObjects::new(0),
                MemStaging::new(),
                hr.fork(1),
                latency,
                meta_at_emit,
                Faults::new(profile.clone(), hr.fork(2)),
                Trace::new(0),
            );
            w.crash_mode = crash_mode;
            w.crash_rng = hr.fork(3);
            worlds.push(w);
        }
        let mut c = Cluster::new(worlds, MemMeta::new(0, 0, t0), MemObjects::new(opts.seed), trace, msg_rng);
        c.delay_chance = delay_chance;
        let desc = format!(
            "hosts {} config {config:?} faults {profile:?} delay_chance {delay_chance} crash_mode {crash_mode:?}",
            c.hosts.len()
        );
        c.trace.note(0, desc);
        Mh {
            c,
            opts,
            rng,
            frng,
            cut_rng,
            profile,
            names: (0..NAMES.len()).map(|_| NameM::default()).collect(),
            files: BTreeMap::new(),
            handles: BTreeMap::new(),
            next_handle: 1,
            next_owner: 1,
            locks: BTreeMap::new(),
            lingering: Vec::new(),
            last_sync: Duration::ZERO,
            step: 0,
            crashes: 0,
            cluster_faults: 0,
            batches: BTreeMap::new(),
            staged_is_durable: config.staged_is_durable,
            racing: Vec::new(),
            race_losses: Vec::new(),
        }
    }

    fn run_inner(&mut self) -> R<()> {
        // Let every host finish starting (journal scan) before the first request.
        self.c.advance(Duration::from_millis(50))?;
        while self.step < self.opts.steps {
            self.step += 1;
            if self.opts.faults {
                self.cluster_fault()?;
            }
            self.one_step()?;
            self.settle_files();
            if self.step.is_multiple_of(SYNC_EVERY) {
                self.sync_check()?;
            }
        }
        self.liveness()
    }

    // ----- faults of the cluster -----

    fn cluster_fault(&mut self) -> R<()> {
        let hosts = self.c.hosts.len();
        let all_up = (0..hosts).all(|h| self.c.is_up(h));
        if all_up && self.profile.crash > 0.0 && self.frng.chance(self.profile.crash * 2.0) {
            let h = self.frng.below(hosts as u64) as usize;
            let down = Duration::from_millis(self.frng.range(100, 8000));
            let lose = self.frng.chance(0.2);
            self.crash(h, down, lose)?;
        }
        if self.profile.crash > 0.0 && self.frng.chance(0.004) {
            let h = self.frng.below(hosts as u64) as usize;
            if self.c.is_up(h) {
                self.cluster_faults += 1;
                let d = Duration::from_millis(self.frng.range(5500, 9000));
                self.c.lose_lease(h, d);
            }
        }
        if !self.profile.is_none() && self.frng.chance(0.01) {
            self.cluster_faults += 1;
            let d = Duration::from_millis(self.frng.range(200, 3500));
            self.c.jump(d);
        }
        if !self.profile.is_none() && self.cut_rng.chance(CUT_CHANCE) {
            let h = self.cut_rng.below(hosts as u64) as usize;
            let d = Duration::from_millis(self.cut_rng.range(200, 6000));
            if self.c.is_subscribed(h) {
                self.cluster_faults += 1;
                self.c.cut_subscription(h, d);
            }
        }
        Ok(())
    }

    fn crash(&mut self, h: usize, down: Duration, lose_staging: bool) -> R<()> {
        self.crashes += 1;
        let old_id = self.c.hosts[h].w.host_id;
        let expiry = self.c.redis.expiry(old_id).unwrap_or(self.c.now);
        self.c.crash(h, down, lose_staging)?;
        // Its handles are gone; a file with writes since its last acknowledgement is unsettled.
        let gone: Vec<usize> = self.handles.iter().filter(|(_, x)| x.host == h).map(|(k, _)| *k).collect();
        for k in gone {
            let x = self.handles.remove(&k).expect("listed above");
            if x.mode == Mode::Writer {
                let f = self.files.get_mut(&x.ino).expect("a handle's file is modelled");
                f.writer = None;
            }
        }
        for f in self.files.values_mut() {
            if f.last_writer == Some(h) && (f.acked + 1 < f.versions.len() || f.unsettled.is_some()) {
                f.unsettled = Some(h);
            }
        }
        // Its locks stay in the table until its heartbeat expires, and so do those it let go of
        // whose `Publish` the crash may have cut off.
        for g in self.lingering.iter_mut().filter(|g| g.redis_id == old_id && g.until > self.c.now) {
            g.until = g.until.max(expiry);
        }
        let owners: Vec<u64> = self.locks.iter().filter(|(_, l)| l.host == h).map(|(o, _)| *o).collect();
        for o in owners {
            let l = self.locks.remove(&o).expect("listed above");
            self.lingering.push(Lingering {
                ino: l.ino,
                host: h,
                redis_id: old_id,
                slots: l.slots.map(|s| s.0),
                until: expiry,
            });
        }
        Ok(())
    }

    // ----- steps -----

    fn up_hosts(&self) -> Vec<usize> {
        (0..self.c.hosts.len()).filter(|h| self.c.is_up(*h)).collect()
    }

    fn one_step(&mut self) -> R<()> {
        let mut used_names: Vec<usize> = Vec::new();
        let mut used_handles: Vec<usize> = Vec::new();
        let mut batch: Vec<(usize, Act)> = Vec::new();
        let up = self.up_hosts();
        // A create race: the same exclusive create on two hosts at once.
        if up.len() >= 2 && self.rng.chance(0.08) {
            let free: Vec<usize> = (0..NAMES.len()).filter(|n| self.names[*n].current.is_none()).collect();
            if !free.is_empty() {
                let name = *self.rng.pick(&free);
                let a = *self.rng.pick(&up);
                let others: Vec<usize> = up.iter().copied().filter(|h| *h != a).collect();
                let b = *self.rng.pick(&others);
                used_names.push(name);
                batch.push((a, Act::Create { name }));
                batch.push((b, Act::Create { name }));
            }
        }
        for &h in &up {
            if batch.iter().any(|(x, _)| *x == h) || (!batch.is_empty() && self.rng.chance(0.4)) {
                continue;
            }
            if let Some(act) = self.pick_action(h, &used_names, &used_handles) {
                match &act {
                    Act::Create { name }
                    | Act::Unlink { name }
                    | Act::Open { name, .. }
                    | Act::ReadFile { name }
                    | Act::Stat { name } => used_names.push(*name),
                    // A listing sees every name: nothing else in the step may change one.
                    Act::List => used_names.extend(0..NAMES.len()),
                    Act::Write { h, .. }
                    | Act::Fsync { h }
                    | Act::Close { h }
                    | Act::SetLk { h, .. }
                    | Act::GetLk { h, .. } => {
                        used_handles.push(*h);
                        used_names.push(self.handles[h].name);
                    }
                }
                batch.push((h, act));
            }
        }
        if batch.is_empty() {
            return self.c.advance(Duration::from_millis(self.rng.range(1, 50)));
        }
        *self.batches.entry(batch.len()).or_default() += 1;
        self.run_batch(batch)?;
        // Think time between steps.
        let pause = Duration::from_micros(self.rng.range(0, 3000) * self.rng.range(1, 100));
        self.c.advance(pause)
    }

    fn pick_action(&mut self, h: usize, used_names: &[usize], used_handles: &[usize]) -> Option<Act> {
        let mine: Vec<usize> = self
            .handles
            .iter()
            .filter(|(k, x)| x.host == h && !used_handles.contains(k) && !used_names.contains(&x.name))
            .map(|(k, _)| *k)
            .collect();
        let free_names: Vec<usize> = (0..NAMES.len()).filter(|n| !used_names.contains(n)).collect();
        if used_names.is_empty() && self.rng.chance(0.05) {
            return Some(Act::List);
        }
        for _ in 0..8 {
            let kind = self.rng.weighted(&[8, 3, 8, 20, 4, 8, 12, 6, 8, 4]);
            if (3..=5).contains(&kind) || kind >= 8 {
                // On a handle of this host.
                let fitting: Vec<usize> = mine
                    .iter()
                    .copied()
                    .filter(|k| {
                        let m = self.handles[k].mode;
                        match kind {
                            3..=5 => m == Mode::Writer,
                            _ => m == Mode::Locker || m == Mode::Writer,
                        }
                    })
                    .collect();
                if fitting.is_empty() {
                    continue;
                }
                let k = *self.rng.pick(&fitting);
                return Some(match kind {
                    3 => {
                        let size = self.files[&self.handles[&k].ino].latest().len() as u64;
                        let offset = if self.rng.chance(0.3) { size } else { self.rng.below(size.min(12_000) + 200) };
                        let mut data = vec![0u8; self.rng.range(1, 700) as usize];
                        self.rng.fill(&mut data);
                        Act::Write { h: k, offset, data: Bytes::from(data) }
                    }
                    4 => Act::Fsync { h: k },
                    5 => Act::Close { h: k },
                    8 | 9 => {
                        let start = self.rng.below(16);
                        let end = if self.rng.chance(0.2) { u64::MAX } else { (start + self.rng.below(6)).min(15) };
                        let typ = match self.rng.below(if kind == 8 { 5 } else { 2 }) {
                            0 => libc::F_RDLCK,
                            1 => libc::F_WRLCK,
                            _ => libc::F_UNLCK,
                        };
                        let lock = LockRange { start, end, typ, pid: self.handles[&k].owner as u32 };
                        if kind == 8 {
                            Act::SetLk { h: k, lock }
                        } else {
                            Act::GetLk { h: k, lock }
                        }
                    }
                    _ => unreachable!("kinds on handles"),
                });
            }
            if kind == 6 {
                // Closing a lock holder or a reader.
                let others: Vec<usize> =
                    mine.iter().copied().filter(|k| self.handles[k].mode != Mode::Writer).collect();
                if others.is_empty() {
                    continue;
                }
                return Some(Act::Close { h: *self.rng.pick(&others) });
            }
            if free_names.is_empty() {
                return None;
            }
            let name = *self.rng.pick(&free_names);
            match kind {
                0 => return Some(Act::Create { name }),
                1 => {
                    // Not while open anywhere or unsettled.
                    let ino = self.names[name].current;
                    let busy = ino.is_some_and(|i| {
                        self.handles.values().any(|x| x.ino == i)
                            || self.files.get(&i).is_some_and(|f| f.unsettled.is_some())
                    });
                    if busy {
                        continue;
                    }
                    return Some(Act::Unlink { name });
                }
                2 => {
                    let Some(ino) = self.names[name].current else {
                        continue;
                    };
                    if self.handles.values().filter(|x| x.host == h).count() >= 4 {
                        continue;
                    }
                    if self.rng.chance(0.5) {
                        if !self.writable(ino) {
                            continue;
                        }
                        return Some(Act::Open { name, mode: Mode::Writer });
                    }
                    return Some(Act::Open { name, mode: Mode::Locker });
                }
                7 => return Some(Act::Stat { name }),
                _ => return Some(Act::ReadFile { name }),
            }
        }
        None
    }

    /// Whether a file may get a new writer: nobody writes it, the store holds its latest
    /// version, and its last writer has nothing left to upload.
    fn writable(&self, ino: Ino) -> bool {
        let Some(f) = self.files.get(&ino) else {
            return false;
        };
        if f.writer.is_some() || f.unsettled.is_some() {
            return false;
        }
        if let Some(h) = f.last_writer {
            if !self.c.is_up(h) || !self.host_quiet(h) {
                return false;
            }
        }
        self.stored(ino).is_some_and(|d| d == f.latest())
    }

    /// Host `h` has nothing dirty, nothing being uploaded, no I/O in flight.
    fn host_quiet(&self, h: usize) -> bool {
        let w = &self.c.hosts[h].w;
        let s = w.core.status();
        s.dirty_files == 0 && s.uploads_in_flight == 0 && w.pending_io() == 0
    }

    /// The contents of `ino` in the shared stores.
    fn stored(&self, ino: Ino) -> Option<Vec<u8>> {
        let row = self.c.meta.inode(ino)?;
        let data = match &row.object {
            Some(o) => self.c.objects.get(o)?.to_vec(),
            None => Vec::new(),
        };
        Some(zero_extended(&data, row.size as usize))
    }

    /// A file whose writer crashed settles once that host is back and quiet: the store must
    /// hold one of the contents allowed after the crash, which becomes the acknowledged version.
    fn settle_files(&mut self) {
        let inos: Vec<Ino> = self.files.iter().filter(|(_, f)| f.unsettled.is_some()).map(|(i, _)| *i).collect();
        for ino in inos {
            let h = self.files[&ino].unsettled.expect("filtered");
            if !self.c.is_up(h) || !self.host_quiet(h) {
                continue;
            }
            let Some(data) = self.stored(ino) else {
                continue;
            };
            let now = self.c.now;
            let f = self.files.get_mut(&ino).expect("listed");
            // Checked where it is read (`check_content`); here it only becomes the one version.
            if f.allowed_after_crash(f.acked, &data) {
                f.versions.push(data);
                f.acked = f.versions.len() - 1;
                f.acks.push((now, f.acked));
                f.unsettled = None;
            }
        }
    }

    // ----- running actions -----

    fn first_op(&mut self, host: usize, act: &Act) -> Op {
        let name = |n: usize| NAMES[n].as_bytes().to_vec();
        match act {
            Act::Create { name: n } => Op::Create {
                parent: ROOT_INO,
                name: name(*n),
                mode: libc::S_IFREG | 0o644,
                umask: 0,
                flags: libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
            },
            Act::Unlink { name: n } => Op::Unlink { parent: ROOT_INO, name: name(*n) },
            Act::List => Op::OpenDir { ino: ROOT_INO, flags: libc::O_RDONLY },
            Act::Open { name: n, .. } | Act::ReadFile { name: n } | Act::Stat { name: n } => {
                Op::Lookup { parent: ROOT_INO, name: name(*n) }
            }
            Act::Write { h, offset, data } => {
                let x = &self.handles[h];
                Op::Write { ino: x.ino, fh: x.fh, offset: *offset, data: data.clone() }
            }
            Act::Fsync { h } => {
                let x = &self.handles[h];
                Op::Fsync { ino: x.ino, fh: x.fh, datasync: false }
            }
            Act::Close { h } => {
                let x = &self.handles[h];
                Op::Flush { ino: x.ino, fh: x.fh, lock_owner: x.owner }
            }
            Act::SetLk { h, lock } => {
                let x = &self.handles[h];
                Op::SetLk { ino: x.ino, fh: x.fh, owner: x.owner, lock: *lock, sleep: false }
            }
            Act::GetLk { h, lock } => {
                let x = &self.handles[h];
                debug_assert_eq!(x.host, host);
                Op::GetLk { ino: x.ino, fh: x.fh, owner: x.owner, lock: *lock }
            }
        }
    }

    fn send(&mut self, r: &mut Running, op: Op) -> R<()> {
        r.issued = self.c.now;
        r.id = self.c.issue(r.host, CTX, op.clone())?;
        r.op = op;
        Ok(())
    }

    fn run_batch(&mut self, batch: Vec<(usize, Act)>) -> R<()> {
        self.racing.clear();
        self.race_losses.clear();
        for (i, (_, a)) in batch.iter().enumerate() {
            if let Act::Create { name } = a {
                if batch[..i].iter().any(|(_, b)| matches!(b, Act::Create { name: n } if n == name)) {
                    self.racing.push(*name);
                }
            }
        }
        let mut running = Vec::new();
        for (host, act) in batch {
            let op = self.first_op(host, &act);
            let epoch = self.c.hosts[host].w.fault_epoch;
            let mut r = Running {
                host,
                act,
                stage: 0,
                id: RequestId(0),
                op: Op::StatFs,
                issued: self.c.now,
                epoch,
                ino: None,
                fh: None,
                lookups: 0,
                lower: 0,
                done: false,
            };
            self.send(&mut r, op)?;
            running.push(r);
        }
        let limit = self.c.now + Duration::from_secs(3600);
        let mut created = Vec::new();
        loop {
            // Answers given at once (from the cache) come before anything else happens.
            let mut answered = false;
            for r in running.iter_mut() {
                if r.done {
                    continue;
                }
                let Some(reply) = self.c.take_reply(r.host, r.id) else {
                    continue;
                };
                answered = true;
                self.c.trace.note(
                    self.c.now.as_micros() as u64,
                    format!("host {}: {:?} -> {}", r.host, r.act_name(), short(&reply)),
                );
                match self.on_reply(r, reply, &mut created)? {
                    Some(op) => self.send(r, op)?,
                    None => {
                        r.done = true;
                        if r.lookups > 0 {
                            let ino = r.ino.expect("a lookup names its inode");
                            self.c.forget(r.host, ino, r.lookups)?;
                        }
                    }
                }
            }
            if answered {
                continue;
            }
            if running.iter().all(|r| r.done) {
                break;
            }
            if self.c.now > limit {
                return Err("requests not answered within an hour of virtual time".into());
            }
            if !self.c.step()? {
                let ids: Vec<_> = running.iter().filter(|r| !r.done).map(|r| (r.host, r.op.clone())).collect();
                return Err(format!("requests are never answered (nothing in flight, no timer): {ids:?}"));
            }
        }
        // A create race: never two winners.
        for (name, issued) in std::mem::take(&mut self.race_losses) {
            if !created.iter().any(|(n, _)| *n == name) && !self.existed_since(name, self.last_sync.min(issued)) {
                return Err(format!("{}: EEXIST for a create that lost a race nobody won", NAMES[name]));
            }
        }
        for (i, (name, _)) in created.iter().enumerate() {
            if created[..i].iter().any(|(n, _)| n == name) {
                return Err(format!("{} created on several hosts at once: {created:?} (name, host)", NAMES[*name]));
            }
        }
        Ok(())
    }

    /// Whether an I/O error is explained by a fault seen since the action started.
    fn fault_seen(&self, r: &Running) -> bool {
        self.c.hosts[r.host].w.fault_epoch != r.epoch
    }

    fn io_error_ok(&self, r: &Running, e: i32) -> bool {
        (e == libc::EIO || e == libc::ENOSPC) && self.fault_seen(r)
    }

    fn unexpected(&self, r: &Running, what: String) -> String {
        let op = crate::trace::op_str(&r.op);
        format!("host {} {} stage {} ({op}): {what}", r.host, r.act_name(), r.stage)
    }

    /// Check one answer and decide the action's next request.
    fn on_reply(
        &mut self,
        r: &mut Running,
        reply: Result<Reply, i32>,
        created: &mut Vec<(usize, usize)>,
    ) -> R<Option<Op>> {
        let now = self.c.now;
        let stage = r.stage;
        r.stage += 1;
        let act = r.act.clone();
        match (act, stage) {
            (Act::Create { name }, _) => match reply {
                Ok(Reply::Created { attr, fh }) => {
                    if self.names[name].current.is_some() {
                        return Err(
                            self.unexpected(r, format!("created, but the name is file {:?}", self.names[name].current))
                        );
                    }
                    created.push((name, r.host));
                    self.names[name].set(Some(attr.ino), now);
                    self.files.insert(
                        attr.ino,
                        FileM {
                            ino: attr.ino,
                            versions: vec![Vec::new()],
                            acked: 0,
                            acks: vec![(now, 0)],
                            writer: Some(r.host),
                            last_writer: Some(r.host),
                            unsettled: None,
                        },
                    );
                    self.add_handle(r.host, name, attr.ino, fh, Mode::Writer);
                    Ok(None)
                }
                Err(libc::EEXIST) => {
                    // The name exists, existed until recently, or a racing create won.
                    let since = self.last_sync.min(r.issued);
                    if self.racing.contains(&name) {
                        self.race_losses.push((name, r.issued));
                    } else if !self.existed_since(name, since) {
                        return Err(self.unexpected(r, "EEXIST, but the name never existed since the last sync".into()));
                    }
                    Ok(None)
                }
                Err(e) if self.io_error_ok(r, e) => Ok(None),
                other => Err(self.unexpected(r, format!("{other:?}"))),
            },
            (Act::Unlink { name }, _) => match reply {
                Ok(Reply::Empty) => {
                    let Some(ino) = self.names[name].current else {
                        return Err(self.unexpected(r, "unlinked a name that does not exist".into()));
                    };
                    self.names[name].set(None, now);
                    self.files.remove(&ino);
                    Ok(None)
                }
                Err(libc::ENOENT) => {
                    if !self.names[name].allows(None, self.last_sync) {
                        return Err(
                            self.unexpected(r, "ENOENT, but the name exists (since before the last sync)".into())
                        );
                    }
                    Ok(None)
                }
                Err(e) if self.io_error_ok(r, e) => Ok(None),
                other => Err(self.unexpected(r, format!("{other:?}"))),
            },
            (Act::Open { name, .. } | Act::ReadFile { name } | Act::Stat { name }, 0) => {
                let seen = match &reply {
                    Ok(Reply::Entry(a)) => Some(a.ino),
                    Err(libc::ENOENT) => None,
                    Err(e) if self.io_error_ok(r, *e) => return Ok(None),
                    other => return Err(self.unexpected(r, format!("{other:?}"))),
                };
                if !self.names[name].allows(seen, self.last_sync) {
                    return Err(self.unexpected(
                        r,
                        format!(
                            "lookup found {seen:?}; the name is {:?} (and was, since the last sync: {:?})",
                            self.names[name].current, self.names[name].history
                        ),
                    ));
                }
                let Some(ino) = seen else { return Ok(None) };
                r.ino = Some(ino);
                r.lookups = 1;
                if self.names[name].current != Some(ino) {
                    // A stale entry: what follows may fail; nothing more to check.
                    return Ok(Some(Op::GetAttr { ino }));
                }
                Ok(Some(match &r.act {
                    Act::Stat { .. } => Op::GetAttr { ino },
                    Act::Open { mode: Mode::Writer, .. } => Op::Open { ino, flags: libc::O_RDWR },
                    Act::Open { .. } => Op::Open { ino, flags: libc::O_RDWR },
                    _ => {
                        r.lower = self.read_lower_bound(r.host, ino);
                        Op::Open { ino, flags: libc::O_RDONLY }
                    }
                }))
            }
            (_, 1) if matches!(r.op, Op::GetAttr { .. }) => {
                let ino = r.ino.expect("looked up");
                let current = self.names[r.act_name_index()].current == Some(ino);
                match reply {
                    Ok(Reply::Attr(a)) if current => {
                        self.check_size(r.host, ino, a.size).map_err(|e| self.unexpected(r, e))?;
                        Ok(None)
                    }
                    Ok(Reply::Attr(_)) | Err(libc::ENOENT) | Err(libc::ESTALE) if !current => Ok(None),
                    Err(e) if self.io_error_ok(r, e) => Ok(None),
                    other => Err(self.unexpected(r, format!("{other:?}"))),
                }
            }
            (Act::Open { name, mode }, 1) => match reply {
                Ok(Reply::Opened { fh, .. }) => {
                    let ino = r.ino.expect("looked up");
                    if mode == Mode::Writer {
                        self.files.get_mut(&ino).expect("current").writer = Some(r.host);
                        self.files.get_mut(&ino).expect("current").last_writer = Some(r.host);
                    }
                    self.add_handle(r.host, name, ino, fh, mode);
                    // The handle keeps the lookup reference until it is closed.
                    r.lookups = 0;
                    Ok(None)
                }
                Err(e) if self.io_error_ok(r, e) => Ok(None),
                other => Err(self.unexpected(r, format!("{other:?}"))),
            },
            (Act::ReadFile { .. }, 1) => match reply {
                Ok(Reply::Opened { fh, .. }) => {
                    r.fh = Some(fh);
                    Ok(Some(Op::Read { ino: r.ino.expect("looked up"), fh, offset: 0, size: READ_ALL }))
                }
                Err(e) if self.io_error_ok(r, e) => Ok(None),
                other => Err(self.unexpected(r, format!("{other:?}"))),
            },
            (Act::ReadFile { .. }, 2) => {
                let ino = r.ino.expect("looked up");
                match reply {
                    Ok(Reply::Data(d)) => {
                        self.check_content(r.host, ino, r.lower, &d).map_err(|e| self.unexpected(r, e))?
                    }
                    Err(e) if self.io_error_ok(r, e) => {}
                    other => return Err(self.unexpected(r, format!("{other:?}"))),
                }
                Ok(Some(Op::Flush { ino, fh: r.fh.expect("opened"), lock_owner: 0 }))
            }
            (Act::ReadFile { .. }, 3) => {
                match reply {
                    Ok(Reply::Empty) => {}
                    Err(e) if self.io_error_ok(r, e) => {}
                    other => return Err(self.unexpected(r, format!("{other:?}"))),
                }
                Ok(Some(Op::Release { ino: r.ino.expect("looked up"), fh: r.fh.expect("opened"), lock_owner: None }))
            }
            (Act::ReadFile { .. }, 4) => match reply {
                Ok(Reply::Empty) => Ok(None),
                other => Err(self.unexpected(r, format!("release: {other:?}"))),
            },
            (Act::Write { h, offset, data }, _) => match reply {
                Ok(Reply::Written(n)) if n as usize == data.len() => {
                    let ino = self.handles[&h].ino;
                    let f = self.files.get_mut(&ino).expect("open");
                    let mut v = f.latest().to_vec();
                    let end = offset as usize + data.len();
                    if v.len() < end {
                        v.resize(end, 0);
                    }
                    v[offset as usize..end].copy_from_slice(&data);
                    f.versions.push(v);
                    Ok(None)
                }
                Err(e) if self.io_error_ok(r, e) => Ok(None),
                other => Err(self.unexpected(r, format!("{other:?}"))),
            },
            (Act::Fsync { h }, _) => match reply {
                Ok(Reply::Empty) => {
                    self.ack(self.handles[&h].ino, now);
                    Ok(None)
                }
                Err(e) if self.io_error_ok(r, e) => Ok(None),
                other => Err(self.unexpected(r, format!("{other:?}"))),
            },
            (Act::Close { h }, 0) => {
                let x = self.handles[&h].clone();
                match reply {
                    // A close whose upload failed is answered once the data is sealed here (the
                    // core's fallback): not committed, so no promise to other hosts.
                    Ok(Reply::Empty) if x.mode == Mode::Writer && !self.fault_seen(r) => self.ack(x.ino, now),
                    Ok(Reply::Empty) => {}
                    Err(e) if self.io_error_ok(r, e) => {}
                    other => return Err(self.unexpected(r, format!("{other:?}"))),
                }
                // A flush lets go of the owner's locks.
                self.release_owner(x.owner, now);
                Ok(Some(Op::Release { ino: x.ino, fh: x.fh, lock_owner: None }))
            }
            (Act::Close { h }, _) => match reply {
                Ok(Reply::Empty) => {
                    let x = self.handles.remove(&h).expect("closing an open handle");
                    if x.mode == Mode::Writer {
                        if let Some(f) = self.files.get_mut(&x.ino) {
                            f.writer = None;
                        }
                    }
                    r.ino = Some(x.ino);
                    r.lookups = 1;
                    Ok(None)
                }
                other => Err(self.unexpected(r, format!("release: {other:?}"))),
            },
            (Act::SetLk { h, lock }, _) => {
                let x = self.handles[&h].clone();
                match reply {
                    Ok(Reply::Empty) => {
                        self.check_grant(&x, &lock).map_err(|e| self.unexpected(r, e))?;
                        self.set_lock(&x, &lock, now);
                        Ok(None)
                    }
                    Err(libc::EAGAIN) if lock.typ != libc::F_UNLCK => {
                        if !self.conflict_explained(&x, &lock, r.issued) {
                            return Err(self.unexpected(
                                r,
                                format!("EAGAIN, but no other owner held a conflicting lock: {}", self.locks_of(x.ino)),
                            ));
                        }
                        Ok(None)
                    }
                    Err(e) if self.io_error_ok(r, e) => Ok(None),
                    other => Err(self.unexpected(r, format!("{other:?}"))),
                }
            }
            (Act::GetLk { h, lock }, _) => {
                let x = self.handles[&h].clone();
                match reply {
                    Ok(Reply::Lock(l)) if l.typ == libc::F_UNLCK => {
                        if let Some(o) = self.must_report(&x, &lock, r.issued) {
                            return Err(self.unexpected(
                                r,
                                format!("F_GETLK found nothing, but owner {o} holds a conflicting lock"),
                            ));
                        }
                        Ok(None)
                    }
                    Ok(Reply::Lock(l)) => {
                        let overlap = l.start <= lock.end && lock.start <= l.end;
                        // Some other owner held a lock conflicting with the wanted one where
                        // the reported lock overlaps it.
                        let common = LockRange { start: l.start.max(lock.start), end: l.end.min(lock.end), ..lock };
                        if !overlap || !conflicts(l.typ, lock.typ) || !self.conflict_explained(&x, &common, r.issued) {
                            return Err(
                                self.unexpected(r, format!("F_GETLK reported {l:?}, which no other owner held"))
                            );
                        }
                        Ok(None)
                    }
                    Err(e) if self.io_error_ok(r, e) => Ok(None),
                    other => Err(self.unexpected(r, format!("{other:?}"))),
                }
            }
            (Act::List, 0) => match reply {
                Ok(Reply::Opened { fh, .. }) => {
                    r.fh = Some(fh);
                    Ok(Some(Op::ReadDir { ino: ROOT_INO, fh, offset: 0, size: 1 << 16, plus: false }))
                }
                Err(e) if self.io_error_ok(r, e) => Ok(None),
                other => Err(self.unexpected(r, format!("{other:?}"))),
            },
            (Act::List, 1) => {
                match reply {
                    Ok(Reply::Dir(entries)) => self.check_listing(&entries).map_err(|e| self.unexpected(r, e))?,
                    Err(e) if self.io_error_ok(r, e) => {}
                    other => return Err(self.unexpected(r, format!("{other:?}"))),
                }
                Ok(Some(Op::ReleaseDir { ino: ROOT_INO, fh: r.fh.expect("opened") }))
            }
            (Act::List, _) => match reply {
                Ok(Reply::Empty) => Ok(None),
                other => Err(self.unexpected(r, format!("releasedir: {other:?}"))),
            },
            (act, stage) => Err(format!("harness: no stage {stage} of {act:?}")),
        }
    }

    /// Whether the name named a file at some time since `since` (or now).
    fn existed_since(&self, name: usize, since: Duration) -> bool {
        let n = &self.names[name];
        n.current.is_some() || n.history.iter().any(|(v, until)| v.is_some() && *until >= since)
    }

    fn add_handle(&mut self, host: usize, name: usize, ino: Ino, fh: u64, mode: Mode) {
        let owner = self.next_owner;
        self.next_owner += 1;
        self.handles.insert(self.next_handle, Handle { host, name, ino, fh, owner, mode });
        self.next_handle += 1;
    }

    /// A close or fsync of the writer acknowledged the latest version.
    fn ack(&mut self, ino: Ino, now: Duration) {
        let f = self.files.get_mut(&ino).expect("open");
        f.acked = f.versions.len() - 1;
        f.acks.push((now, f.acked));
    }

    /// The lowest version a read on `host`, opening `ino` now, may return.
    fn read_lower_bound(&self, host: usize, ino: Ino) -> usize {
        let f = &self.files[&ino];
        if f.writer == Some(host) {
            return f.versions.len() - 1;
        }
        if f.unsettled.is_some() {
            return f.acked;
        }
        // Close-to-open: every close acknowledged before this open.
        f.acked_before(self.c.now)
    }

    fn check_content(&self, host: usize, ino: Ino, lower: usize, data: &[u8]) -> Result<(), String> {
        let f = &self.files[&ino];
        if f.writer == Some(host) {
            if data != f.latest() {
                return Err(format!(
                    "the writer's host reads {} bytes, not its latest version ({} bytes)",
                    data.len(),
                    f.latest().len()
                ));
            }
            return Ok(());
        }
        if f.unsettled.is_some() && f.allowed_after_crash(lower.min(f.acked), data) {
            return Ok(());
        }
        if f.versions[lower..].iter().any(|v| v == data) {
            return Ok(());
        }
        let older = f.versions[..lower].iter().rposition(|v| v == data);
        Err(format!(
            "read {} bytes that are none of versions {lower}..={} (acked {}, latest {} bytes){}",
            data.len(),
            f.versions.len() - 1,
            f.acked,
            f.latest().len(),
            older.map(|i| format!("; they are the older version {i}")).unwrap_or_default()
        ))
    }

    /// A listing of the root: every name as a lookup may see it (exactly, right after a sync).
    fn check_listing(&self, entries: &[truckeefs_core::DirEntry]) -> Result<(), String> {
        let mut seen: Vec<Option<Ino>> = vec![None; NAMES.len()];
        for e in entries.iter().filter(|e| e.name != b"." && e.name != b"..") {
            let Some(n) = NAMES.iter().position(|n| n.as_bytes() == e.name.as_slice()) else {
                return Err(format!("listed {:?}, which no client created", String::from_utf8_lossy(&e.name)));
            };
            if seen[n].replace(e.ino).is_some() {
                return Err(format!("{} listed twice", NAMES[n]));
            }
        }
        for (n, v) in seen.into_iter().enumerate() {
            if !self.names[n].allows(v, self.last_sync) {
                return Err(format!(
                    "{} listed as {v:?}; it is {:?} (since before the last sync)",
                    NAMES[n], self.names[n].current
                ));
            }
        }
        Ok(())
    }

    fn check_size(&self, host: usize, ino: Ino, size: u64) -> Result<(), String> {
        let f = &self.files[&ino];
        let lower = if f.writer == Some(host) {
            f.versions.len() - 1
        } else if f.unsettled.is_some() {
            f.acked_before(self.last_sync).min(f.acked)
        } else {
            f.acked_before(self.last_sync)
        };
        let ok = f.versions[lower..].iter().any(|v| v.len() as u64 == size)
            || (f.unsettled.is_some() && f.versions[f.acked..].iter().any(|v| v.len() as u64 == size));
        if !ok {
            let sizes: Vec<usize> = f.versions[lower..].iter().map(Vec::len).collect();
            return Err(format!("size {size}, not one of versions {lower}.. (sizes {sizes:?})"));
        }
        Ok(())
    }

    // ----- record locks -----

    fn forfeited(&self, l: &OwnerLocks, slot: usize) -> bool {
        self.c.lapsed_between(l.redis_id, l.slots[slot].1, self.c.now)
    }

    /// A granted lock must conflict with no lock another owner holds (unless the holder's
    /// lease lapsed meanwhile, so that other hosts rightly stopped counting it).
    fn check_grant(&self, x: &Handle, lock: &LockRange) -> Result<(), String> {
        if lock.typ == libc::F_UNLCK {
            return Ok(());
        }
        for (o, l) in &self.locks {
            if *o == x.owner || l.ino != x.ino {
                continue;
            }
            for s in slots_of(lock) {
                if conflicts(l.slots[s].0, lock.typ) && (l.host == x.host || !self.forfeited(l, s)) {
                    return Err(format!(
                        "granted {lock:?}, but owner {o} on host {} holds a conflicting lock on byte {s} (granted at {:?})",
                        l.host, l.slots[s].1
                    ));
                }
            }
        }
        Ok(())
    }

    /// An EAGAIN (or a lock reported by F_GETLK) is explained by another owner's conflicting
    /// lock held now, let go of lately, or of a crashed host whose heartbeat had not expired.
    fn conflict_explained(&self, x: &Handle, lock: &LockRange, issued: Duration) -> bool {
        let held = self
            .locks
            .iter()
            .any(|(o, l)| *o != x.owner && l.ino == x.ino && slots_of(lock).any(|s| conflicts(l.slots[s].0, lock.typ)));
        let lingering = self.lingering.iter().any(|g| {
            g.ino == x.ino
                && g.until > issued
                && g.redis_id != self.c.hosts[x.host].w.host_id
                && slots_of(lock).any(|s| conflicts(g.slots[s], lock.typ))
        });
        held || lingering
    }

    /// A conflicting lock F_GETLK must report: held by another owner since before the request
    /// was sent (and not forfeited by a lapsed lease).
    fn must_report(&self, x: &Handle, lock: &LockRange, issued: Duration) -> Option<u64> {
        if lock.typ == libc::F_UNLCK {
            return None;
        }
        self.locks
            .iter()
            .find(|(o, l)| {
                **o != x.owner
                    && l.ino == x.ino
                    && slots_of(lock).any(|s| {
                        conflicts(l.slots[s].0, lock.typ)
                            && l.slots[s].1 < issued
                            && (l.host == x.host || !self.forfeited(l, s))
                    })
            })
            .map(|(o, _)| *o)
    }

    /// The model's locks on `ino`, for failure messages.
    fn locks_of(&self, ino: Ino) -> String {
        let show = |slots: &[i32]| {
            slots
                .iter()
                .map(|t| match *t {
                    libc::F_RDLCK => 'r',
                    libc::F_WRLCK => 'w',
                    _ => '.',
                })
                .collect::<String>()
        };
        let mut out = String::new();
        for (o, l) in self.locks.iter().filter(|(_, l)| l.ino == ino) {
            out.push_str(&format!("owner {o} host {}: {} ", l.host, show(&l.slots.map(|s| s.0))));
        }
        for g in self.lingering.iter().filter(|g| g.ino == ino) {
            out.push_str(&format!("lingering host {} until {:?}: {} ", g.host, g.until, show(&g.slots)));
        }
        out
    }

    fn set_lock(&mut self, x: &Handle, lock: &LockRange, now: Duration) {
        let redis_id = self.c.hosts[x.host].w.host_id;
        let entry = self.locks.entry(x.owner).or_insert(OwnerLocks {
            host: x.host,
            redis_id,
            ino: x.ino,
            slots: [(NONE, Duration::ZERO); SLOTS],
        });
        let mut released = [NONE; SLOTS];
        for s in slots_of(lock) {
            if lock.typ == libc::F_UNLCK {
                released[s] = entry.slots[s].0;
                entry.slots[s] = (NONE, Duration::ZERO);
            } else {
                if entry.slots[s].0 == libc::F_WRLCK && lock.typ == libc::F_RDLCK {
                    released[s] = libc::F_WRLCK;
                }
                entry.slots[s] = (lock.typ, now);
            }
        }
        if entry.slots.iter().all(|s| s.0 == NONE) {
            self.locks.remove(&x.owner);
        }
        if released.iter().any(|t| *t != NONE) {
            self.lingering.push(Lingering {
                ino: x.ino,
                host: x.host,
                redis_id: self.c.hosts[x.host].w.host_id,
                slots: released,
                until: now + RELEASE_LINGER,
            });
        }
    }

    fn release_owner(&mut self, owner: u64, now: Duration) {
        if let Some(l) = self.locks.remove(&owner) {
            self.lingering.push(Lingering {
                ino: l.ino,
                host: l.host,
                redis_id: l.redis_id,
                slots: l.slots.map(|s| s.0),
                until: now + RELEASE_LINGER,
            });
        }
        self.lingering.retain(|g| g.until + Duration::from_secs(60) > now);
    }

    // ----- whole-cluster checks -----

    /// Run until every published change is delivered and applied (no host has a commit in
    /// flight), within a bound. Returns whether that was reached.
    fn quiesce(&mut self, limit: Duration) -> R<bool> {
        let end = self.c.now + limit;
        loop {
            let commits = self
                .c
                .hosts
                .iter()
                .any(|h| h.w.in_flight().any(|r| matches!(r, IoRequest::Meta(MetaRequest::Commit(_)))));
            let down = (0..self.c.hosts.len()).any(|h| !self.c.is_up(h));
            if self.c.all_heard() && !commits && !down {
                return Ok(true);
            }
            if self.c.now > end {
                return Ok(false);
            }
            self.c.advance(Duration::from_millis(5))?;
        }
    }

    /// After every change reached every host: each host sees every name as it is, and every
    /// file's size as of its last acknowledged version or later.
    fn sync_check(&mut self) -> R<()> {
        if !self.quiesce(Duration::from_secs(30))? {
            return Ok(());
        }
        self.last_sync = self.c.now;
        self.c.trace.note(self.c.now.as_micros() as u64, "sync point: every change delivered".into());
        for n in 0..NAMES.len() {
            let up = self.up_hosts();
            let batch: Vec<(usize, Act)> = up.into_iter().map(|h| (h, Act::Stat { name: n })).collect();
            self.run_batch(batch)?;
        }
        let up = self.up_hosts();
        self.run_batch(up.into_iter().map(|h| (h, Act::List)).collect())?;
        Ok(())
    }

    /// Faults off: every handle closed, every upload done, every message delivered; then every
    /// host reads every file byte for byte as its last version, and sees every name as it is.
    fn liveness(&mut self) -> R<()> {
        for h in &mut self.c.hosts {
            h.w.faults.enabled = false;
            h.lease_lost_until = None;
        }
        self.c.delay_chance = 0.0;
        // Hosts that are down come back.
        for _ in 0..100 {
            if self.up_hosts().len() == self.c.hosts.len() {
                break;
            }
            self.c.advance(Duration::from_millis(100))?;
        }
        let keys: Vec<usize> = self.handles.keys().copied().collect();
        for k in keys {
            let host = self.handles[&k].host;
            self.run_batch(vec![(host, Act::Close { h: k })])?;
        }
        // Everything uploaded and heard of everywhere.
        let mut quiet = false;
        for _ in 0..600 {
            self.settle_files();
            let files_quiet = self.files.values().all(|f| f.unsettled.is_none());
            if files_quiet && (0..self.c.hosts.len()).all(|h| self.host_quiet(h)) && self.c.all_heard() {
                quiet = true;
                break;
            }
            self.c.advance(Duration::from_secs(1))?;
        }
        if !quiet {
            let unsettled: Vec<Ino> = self.files.values().filter(|f| f.unsettled.is_some()).map(|f| f.ino).collect();
            let status: Vec<_> = self.c.hosts.iter().map(|h| (h.w.core.status(), h.w.pending_io())).collect();
            return Err(format!(
                "liveness: not quiet after 600 s without faults: unsettled files {unsettled:?}, hosts {status:?}"
            ));
        }
        // Every write is uploaded, acknowledged or not (a close that failed leaves it to a retry).
        for f in self.files.values() {
            let stored = self.stored(f.ino).unwrap_or_default();
            if stored != f.latest() {
                return Err(format!(
                    "liveness: the store holds {} bytes of file {}, not its last version ({} bytes)",
                    stored.len(),
                    f.ino,
                    f.latest().len()
                ));
            }
        }
        let now = self.c.now;
        for f in self.files.values_mut() {
            f.acked = f.versions.len() - 1;
            f.acks.push((now, f.acked));
        }
        self.last_sync = now;
        // Every host reads every file whole, and sees every name.
        for n in 0..NAMES.len() {
            let hosts = self.up_hosts();
            self.run_batch(hosts.iter().map(|h| (*h, Act::ReadFile { name: n })).collect())?;
            self.run_batch(hosts.iter().map(|h| (*h, Act::Stat { name: n })).collect())?;
        }
        let hosts = self.up_hosts();
        self.run_batch(hosts.iter().map(|h| (*h, Act::List)).collect())?;
        // Unmount everywhere: nothing staged may be left.
        for h in 0..self.c.hosts.len() {
            self.c.with(h, |w| w.shutdown())?;
        }
        for _ in 0..600 {
            if self.c.hosts.iter().all(|h| h.w.core.is_idle()) {
                break;
            }
            self.c.advance(Duration::from_secs(1))?;
        }
        for (h, host) in self.c.hosts.iter().enumerate() {
            if !host.w.core.is_idle() {
                return Err(format!("liveness: host {h} not idle after shutdown: {:?}", host.w.core.status()));
            }
            if !host.w.staging.is_empty() {
                return Err(format!(
                    "liveness: staged copies left on host {h} after shutdown: inodes {:?}",
                    host.w.staging.inos()
                ));
            }
        }
        Ok(())
    }
}

impl Running {
    fn act_name(&self) -> String {
        match &self.act {
            Act::Write { h, offset, data } => {
                format!("Write {{ h: {h}, offset: {offset}, {} bytes }}", data.len())
            }
            other => format!("{other:?}"),
        }
    }

    fn act_name_index(&self) -> usize {
        match &self.act {
            Act::Open { name, .. }
            | Act::ReadFile { name }
            | Act::Stat { name }
            | Act::Create { name }
            | Act::Unlink { name } => *name,
            _ => usize::MAX,
        }
    }
}

fn short(r: &Result<Reply, i32>) -> String {
    match r {
        Ok(Reply::Data(d)) => format!("Data({} bytes)", d.len()),
        Ok(Reply::Attr(a)) | Ok(Reply::Entry(a)) => format!("Attr(ino {} size {})", a.ino, a.size),
        other => format!("{other:?}").chars().take(80).collect(),
    }
}
