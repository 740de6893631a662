//! The harness and model for several hosts (`--hosts H`, H > 1): clients on every host act on
//! one shared filesystem ([`crate::hosts::Cluster`]); every answer is checked against a model
//! that allows exactly the freedom close-to-open consistency gives (runtime-sim/README.md,
//! "Several hosts", says what that is).
//!
//! The name space is six file names (`f0`..`f5`) in the root and in two directories (`d0`, `d1`)
//! made, removed and renamed on any host; files are renamed and linked across them (`names`). A
//! step runs one action on each of a random subset of the hosts that are up, concurrently; an
//! action is a short system call sequence (lookup, open, read, close...). Within a step each
//! file name and each file is used by one action, except for a create race (the same create on
//! two hosts at once); changes of directories and listings run alone. An F_SETLKW may sleep
//! across steps (`locks`). A file written alone (opened for
//! writing where nobody else writes it and the store holds its latest version) has one line of
//! versions; two hosts may also write one file at once (one writer handle per host), and then the
//! file is *contested* until a sync point settles which version won (`writers`). Readers and
//! lock holders are unrestricted. A file is unlinked only where no other host has it open: if
//! the unlinking host has it open, it keeps it, without names, until it closes it (an orphan:
//! `orphans`). Reads go through whole files (lookup, open, read) and through open handles.
//!
//! Submodules: `files` (the model of files and names), `names` (of directories, renames and
//! links), `writers` (of several hosts writing one file), `locks` (of record locks), `orphans` (of files without names), `checks` (sync points
//! and the liveness phase).

mod checks;
mod files;
mod locks;
mod names;
mod orphans;
mod writers;

use crate::faults::{FaultProfile, Faults};
use crate::harness::{Failure, Options, Stats};
use crate::hosts::Cluster;
use crate::meta::MemMeta;
use crate::objects::MemObjects;
use crate::rng::Rng;
use crate::sim::{Latency, World, WALL_EPOCH_SECS};
use crate::staging::{CrashMode, MemStaging};
use crate::trace::Trace;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::time::Duration;
use files::{FileM, NameM};
use names::{PathM, DIRS};
use locks::{Lingering, OwnerLocks, conflicts};
use truckeefs_core::{Config, Ctx, Ino, LockRange, Op, Reply, RequestId, Timespec, ROOT_INO};

type R<T> = Result<T, String>;

const NAMES: [&str; 6] = ["f0", "f1", "f2", "f3", "f4", "f5"];
const CTX: Ctx = Ctx { uid: 0, gid: 0, pid: 1 };
/// A check of every name and size on every host, after all messages are delivered, this often.
const SYNC_EVERY: u64 = 25;
/// Per step (seeds with faults): a host's subscription is cut for 0.2-6 s.
const CUT_CHANCE: f64 = 0.006;
const READ_ALL: u32 = 1 << 16;

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
    /// The lowest version a read through it may return (close-to-open, as of its open).
    lower: usize,
    /// A writer that wrote through it.
    wrote: bool,
    /// Its writer's version, if the file is contested and it wrote: the candidates (`writers`).
    own: Vec<Vec<u8>>,
}

#[derive(Clone, Debug)]
enum Act {
    /// Create (exclusive) and keep it open for writing.
    Create {
        dir: Option<usize>,
        name: usize,
    },
    Unlink {
        dir: Option<usize>,
        name: usize,
    },
    /// Lookup, open: a writer or a lock holder.
    Open {
        dir: Option<usize>,
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
        dir: Option<usize>,
        name: usize,
    },
    /// Read all through an open handle.
    ReadHandle {
        h: usize,
    },
    /// Lookup, getattr.
    Stat {
        dir: Option<usize>,
        name: usize,
    },
    SetLk {
        h: usize,
        lock: LockRange,
    },
    /// F_SETLKW: may sleep across steps until the lock is free (`locks::Waiter`).
    SetLkW {
        h: usize,
        lock: LockRange,
    },
    GetLk {
        h: usize,
        lock: LockRange,
    },
    /// Opendir of the root (or a directory), readdir, releasedir.
    List {
        dir: Option<usize>,
    },
    /// Mkdir of a directory name in the root.
    Mkdir {
        d: usize,
    },
    Rmdir {
        d: usize,
    },
    /// Rename of a directory name in the root onto another (absent, or a directory: replaced
    /// if empty).
    RenameDir {
        from: usize,
        to: usize,
    },
    /// Rename of a file's name onto another (absent, or a file: replaced), in the root or a
    /// directory, within a directory or between two.
    Rename {
        from: PathM,
        to: PathM,
    },
    /// Lookup of a file, link under another name.
    Link {
        from: PathM,
        to: PathM,
    },
    /// Lookup of a directory name in the root.
    StatDir {
        d: usize,
    },
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
    /// The host's fault epoch when the action started, and its count of conflicts.
    epoch: u64,
    conflicts: u64,
    ino: Option<Ino>,
    fh: Option<u64>,
    /// Lookup references taken (forgotten at the end unless a handle keeps them).
    lookups: u64,
    /// For a read: the lowest version it may return.
    lower: usize,
    done: bool,
    /// The lock owner of a close or a SetLk (its locks may go while it runs).
    owner: u64,
    /// The directories of its paths (the root unless looked up: `names`), the directory
    /// names still to look up (slot, name), the one being looked up, and the lookup
    /// references taken on directories.
    parents: [Ino; 2],
    resolve: Vec<(usize, usize)>,
    resolving: Option<(usize, usize)>,
    dir_refs: Vec<Ino>,
    /// Its last answer was an EIO whose transaction was applied (its answer lost): taken as
    /// made, though the kernel learnt of no inode or handle it made.
    made: bool,
}

struct Mh {
    c: Cluster,
    opts: Options,
    rng: Rng,
    frng: Rng,
    /// Draws the cut subscriptions (a stream of its own: the other faults stay as they were).
    cut_rng: Rng,
    profile: FaultProfile,
    /// Names of files, by (directory, name): the root's and those of directories.
    names: BTreeMap<(Ino, usize), NameM>,
    /// The directory names in the root.
    dnames: Vec<NameM>,
    files: BTreeMap<Ino, FileM>,
    handles: BTreeMap<usize, Handle>,
    next_handle: usize,
    next_owner: u64,
    locks: BTreeMap<u64, OwnerLocks>,
    lingering: Vec<Lingering>,
    /// F_SETLKW requests asleep (across steps).
    waiters: Vec<locks::Waiter>,
    /// Lock owners with a close or a SetLk in flight, and the range it may let go of: a
    /// sleeping F_SETLKW on another host may be granted as soon as the holder's host
    /// publishes the release, before the request is answered.
    releasing: Vec<(u64, LockRange)>,
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
    /// Orphans of hosts that crashed, to be collected by the end.
    dead_orphans: Vec<orphans::DeadOrphan>,
    /// Contests of writers begun, and ended with the store checked (statistics).
    contests: u64,
    contests_resolved: u64,
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
            "hosts {} faults {:?} staged_is_durable {} messages published {} delivered {} delayed {} missed {} lost {} resyncs {} orphan collections {} lock scripts {} contests {} contests resolved {}",
            m.c.hosts.len(),
            m.profile,
            m.staged_is_durable,
            s.published,
            s.delivered,
            s.delayed,
            s.missed,
            s.lost,
            s.resyncs,
            s.collections,
            m.c.redis.scripts,
            m.contests,
            m.contests_resolved
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
            shared_opens: true,
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
            names: BTreeMap::new(),
            dnames: (0..DIRS.len()).map(|_| NameM::default()).collect(),
            files: BTreeMap::new(),
            handles: BTreeMap::new(),
            next_handle: 1,
            next_owner: 1,
            locks: BTreeMap::new(),
            lingering: Vec::new(),
            waiters: Vec::new(),
            releasing: Vec::new(),
            last_sync: Duration::ZERO,
            step: 0,
            crashes: 0,
            cluster_faults: 0,
            batches: BTreeMap::new(),
            staged_is_durable: config.staged_is_durable,
            racing: Vec::new(),
            race_losses: Vec::new(),
            dead_orphans: Vec::new(),
            contests: 0,
            contests_resolved: 0,
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
            self.poll_waiters()?;
            self.check_waiters()?;
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
        // Its sleeping F_SETLKW requests die with it.
        self.waiters.retain(|w| w.r.host != h);
        let old_id = self.c.hosts[h].w.host_id;
        let expiry = self.c.redis.expiry(old_id).unwrap_or(self.c.now);
        self.c.crash(h, down, lose_staging)?;
        self.orphans_of_crashed(h);
        self.closes_crashed(h);
        // Its handles are gone; a file with writes since its last acknowledgement is unsettled.
        let gone: Vec<usize> = self.handles.iter().filter(|(_, x)| x.host == h).map(|(k, _)| *k).collect();
        for k in gone {
            let x = self.handles.remove(&k).expect("listed above");
            if x.mode == Mode::Writer && self.is_contested(x.ino) {
                self.contest_crashed(x.ino);
            }
            if let (Mode::Writer, Some(f)) = (x.mode, self.files.get_mut(&x.ino)) {
                if f.writer == Some(h) {
                    f.writer = None;
                }
            }
        }
        for f in self.files.values_mut() {
            if f.contest.is_some() {
                continue;
            }
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
        let mut used_inos: Vec<Ino> = Vec::new();
        let mut batch: Vec<(usize, Act)> = Vec::new();
        let up = self.up_hosts();
        // A create race: the same exclusive create on two hosts at once.
        if up.len() >= 2 && self.rng.chance(0.08) {
            let free: Vec<usize> = (0..NAMES.len()).filter(|n| self.entry(ROOT_INO, *n).current.is_none()).collect();
            if !free.is_empty() {
                let name = *self.rng.pick(&free);
                let a = *self.rng.pick(&up);
                let others: Vec<usize> = up.iter().copied().filter(|h| *h != a).collect();
                let b = *self.rng.pick(&others);
                used_names.push(name);
                batch.push((a, Act::Create { dir: None, name }));
                batch.push((b, Act::Create { dir: None, name }));
            }
        }
        for &h in &up {
            if batch.iter().any(|(x, _)| *x == h) || (!batch.is_empty() && self.rng.chance(0.4)) {
                continue;
            }
            if let Some(act) = self.pick_action(h, &used_names, &used_handles) {
                // One action per file (a file may have several names, or be open under one it
                // lost since).
                let inos = self.act_inos(&act);
                if inos.iter().any(|i| used_inos.contains(i)) {
                    continue;
                }
                used_inos.extend(inos);
                match &act {
                    Act::Create { name, .. }
                    | Act::Unlink { name, .. }
                    | Act::Open { name, .. }
                    | Act::ReadFile { name, .. }
                    | Act::Stat { name, .. } => used_names.push(*name),
                    Act::Rename { from, to } | Act::Link { from, to } => used_names.extend([from.1, to.1]),
                    // A listing sees every name, and a change of directories may move any:
                    // alone in their step.
                    Act::List { .. }
                    | Act::Mkdir { .. }
                    | Act::Rmdir { .. }
                    | Act::RenameDir { .. }
                    | Act::StatDir { .. } => used_names.extend(0..NAMES.len()),
                    Act::Write { h, .. }
                    | Act::Fsync { h }
                    | Act::Close { h }
                    | Act::ReadHandle { h }
                    | Act::SetLk { h, .. }
                    | Act::SetLkW { h, .. }
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
            .filter(|(k, x)| {
                x.host == h
                    && !used_handles.contains(k)
                    && !used_names.contains(&x.name)
                    && !self.waiters.iter().any(|w| w.handle() == **k)
            })
            .map(|(k, _)| *k)
            .collect();
        let free_names: Vec<usize> = (0..NAMES.len()).filter(|n| !used_names.contains(n)).collect();
        if used_names.is_empty() && self.rng.chance(0.05) {
            let dir = self.pick_dir();
            return Some(Act::List { dir });
        }
        if used_names.is_empty() && self.rng.chance(0.02) {
            return Some(self.pick_dir_change());
        }
        for _ in 0..8 {
            // Create, unlink, open, write, fsync, close a writer, close another, stat, F_SETLK,
            // F_GETLK, read a file whole, read through a handle.
            // Then rename a file, link one.
            let kind = self.rng.weighted(&[8, 3, 8, 20, 4, 8, 12, 6, 8, 4, 8, 6, 3, 1]);
            if kind >= 12 {
                match self.pick_rename_or_link(kind == 13, &free_names) {
                    Some(act) => return Some(act),
                    None => continue,
                }
            }
            if matches!(kind, 3..=5 | 8 | 9 | 11) {
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
                if kind == 11 {
                    // Reads of files without names more often: they must outlive other hosts'
                    // restarts.
                    let orphans: Vec<usize> =
                        fitting.iter().copied().filter(|k| self.is_orphan(self.handles[k].ino)).collect();
                    if !orphans.is_empty() && self.rng.chance(0.5) {
                        return Some(Act::ReadHandle { h: *self.rng.pick(&orphans) });
                    }
                    return Some(Act::ReadHandle { h: k });
                }
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
                        let owner = self.handles[&k].owner;
                        let lock = LockRange { start, end, typ, pid: owner as u32 };
                        // F_SETLKW only by an owner holding no lock: a waiter never holds what
                        // another waits for, so waits never form a cycle (no deadlock across
                        // hosts, which nothing could detect).
                        if kind == 8 && typ != libc::F_UNLCK && !self.locks.contains_key(&owner) && self.rng.chance(0.3) {
                            Act::SetLkW { h: k, lock }
                        } else if kind == 8 {
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
            let dir = self.pick_dir();
            match kind {
                0 => return Some(Act::Create { dir, name }),
                1 => {
                    // Also while open on other hosts (they keep it), not while unsettled.
                    if self.model_file((dir, name)).is_some_and(|i| self.busy(i)) {
                        continue;
                    }
                    return Some(Act::Unlink { dir, name });
                }
                2 => {
                    let Some(ino) = self.model_file((dir, name)) else {
                        continue;
                    };
                    if self.handles.values().filter(|x| x.host == h).count() >= 4 {
                        continue;
                    }
                    if self.rng.chance(0.5) {
                        // Alone, or beside another writer (`writers`).
                        if !(self.writable(ino) || self.may_contest(h, ino) && self.rng.chance(0.5)) {
                            continue;
                        }
                        return Some(Act::Open { dir, name, mode: Mode::Writer });
                    }
                    return Some(Act::Open { dir, name, mode: Mode::Locker });
                }
                7 => return Some(Act::Stat { dir, name }),
                10 => return Some(Act::ReadFile { dir, name }),
                _ => unreachable!("kinds on names"),
            }
        }
        None
    }

    // ----- running actions -----

    fn add_handle(&mut self, host: usize, name: usize, ino: Ino, fh: u64, mode: Mode, lower: usize) {
        let owner = self.next_owner;
        self.next_owner += 1;
        let h = Handle { host, name, ino, fh, owner, mode, lower, wrote: false, own: Vec::new() };
        self.handles.insert(self.next_handle, h);
        self.next_handle += 1;
    }

    fn first_op(&mut self, host: usize, act: &Act, parents: [Ino; 2]) -> Op {
        let name = |n: usize| NAMES[n].as_bytes().to_vec();
        let dname = |d: usize| DIRS[d].as_bytes().to_vec();
        match act {
            Act::Create { name: n, .. } => Op::Create {
                parent: parents[0],
                name: name(*n),
                mode: libc::S_IFREG | 0o644,
                umask: 0,
                flags: libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
            },
            Act::Unlink { name: n, .. } => Op::Unlink { parent: parents[0], name: name(*n) },
            Act::List { .. } => Op::OpenDir { ino: parents[0], flags: libc::O_RDONLY },
            Act::Open { name: n, .. } | Act::ReadFile { name: n, .. } | Act::Stat { name: n, .. } => {
                Op::Lookup { parent: parents[0], name: name(*n) }
            }
            Act::Mkdir { d } => Op::MkDir { parent: ROOT_INO, name: dname(*d), mode: libc::S_IFDIR | 0o755, umask: 0 },
            Act::Rmdir { d } => Op::RmDir { parent: ROOT_INO, name: dname(*d) },
            Act::StatDir { d } => Op::Lookup { parent: ROOT_INO, name: dname(*d) },
            Act::RenameDir { from, to } => {
                Op::Rename { parent: ROOT_INO, name: dname(*from), newparent: ROOT_INO, newname: dname(*to), flags: 0 }
            }
            Act::Rename { from, to } => Op::Rename {
                parent: parents[0],
                name: name(from.1),
                newparent: parents[1],
                newname: name(to.1),
                flags: 0,
            },
            Act::Link { from, .. } => Op::Lookup { parent: parents[0], name: name(from.1) },
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
            Act::ReadHandle { h } => {
                let x = &self.handles[h];
                Op::Read { ino: x.ino, fh: x.fh, offset: 0, size: READ_ALL }
            }
            Act::SetLk { h, lock } => {
                let x = &self.handles[h];
                Op::SetLk { ino: x.ino, fh: x.fh, owner: x.owner, lock: *lock, sleep: false }
            }
            Act::SetLkW { h, lock } => {
                let x = &self.handles[h];
                Op::SetLk { ino: x.ino, fh: x.fh, owner: x.owner, lock: *lock, sleep: true }
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
            if let Act::Create { dir: None, name } = a {
                if batch[..i].iter().any(|(_, b)| matches!(b, Act::Create { dir: None, name: n } if n == name)) {
                    self.racing.push(*name);
                }
            }
        }
        let mut running = Vec::new();
        for (host, act) in batch {
            let resolve = names::dirs_of(&act);
            let op = match resolve.first() {
                Some((_, d)) => Op::Lookup { parent: ROOT_INO, name: DIRS[*d].as_bytes().to_vec() },
                None => self.first_op(host, &act, [ROOT_INO; 2]),
            };
            let epoch = self.c.hosts[host].w.fault_epoch;
            let conflicts = self.c.hosts[host].w.conflicts;
            let mut r = Running {
                host,
                act,
                stage: 0,
                id: RequestId(0),
                op: Op::StatFs,
                issued: self.c.now,
                epoch,
                conflicts,
                ino: None,
                fh: None,
                lookups: 0,
                lower: 0,
                done: false,
                owner: 0,
                parents: [ROOT_INO; 2],
                resolving: resolve.first().copied(),
                resolve: resolve.into_iter().skip(1).collect(),
                dir_refs: Vec::new(),
                made: false,
            };
            match &r.act {
                Act::Close { h } => {
                    let everything = LockRange { start: 0, end: u64::MAX, typ: libc::F_UNLCK, pid: 0 };
                    self.releasing.push((self.handles[h].owner, everything));
                }
                Act::SetLk { h, lock } => self.releasing.push((self.handles[h].owner, *lock)),
                _ => {}
            }
            if let Act::Close { h } | Act::SetLk { h, .. } = &r.act {
                r.owner = self.handles[h].owner;
            }
            self.send(&mut r, op)?;
            running.push(r);
        }
        let limit = self.c.now + Duration::from_secs(3600);
        let mut created = Vec::new();
        loop {
            // Answers given at once (from the cache) come before anything else happens. Those
            // of sleeping F_SETLKW requests first: a lock granted in the same instant as an
            // F_SETLK refused because of it must be known when the refusal is checked (a
            // release in the batch is known before its answer, through `releasing`).
            let mut answered = self.poll_waiters()?;
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
                let next = if r.resolving.is_some() {
                    self.on_dir_lookup(r, reply)?
                } else {
                    let reply = self.made_anyway(r, reply);
                    self.on_reply(r, reply, &mut created)?
                };
                match next {
                    Some(op) => self.send(r, op)?,
                    None => {
                        r.done = true;
                        for d in std::mem::take(&mut r.dir_refs) {
                            self.c.forget(r.host, d, 1)?;
                        }
                        if let Act::Close { .. } | Act::SetLk { .. } = r.act {
                            let owner = r.owner;
                            self.releasing.retain(|(o, _)| *o != owner);
                        }
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
            if running.iter().all(|r| r.done || matches!(r.act, Act::SetLkW { .. })) {
                // An F_SETLKW still asleep sleeps on across steps.
                let now = self.c.now;
                for r in std::mem::take(&mut running).into_iter().filter(|r| !r.done) {
                    self.waiters.push(locks::Waiter { r, blocked_at: now });
                }
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
            if !created.iter().any(|(n, _)| *n == name)
                && !self.existed_since(ROOT_INO, name, self.last_sync.min(issued))
            {
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

    /// The answer the checks take: an EIO whose transaction was applied (its answer lost) is the
    /// success it was (a create's, the entry of the file it made: `Running::made`).
    fn made_anyway(&mut self, r: &mut Running, reply: Result<Reply, i32>) -> Result<Reply, i32> {
        r.made = false;
        if reply != Err(libc::EIO) {
            return reply;
        }
        let w = &mut self.c.hosts[r.host].w;
        match w.made_since(r.epoch, &r.op) {
            Some((_, made)) => {
                r.made = true;
                Ok(made)
            }
            None => reply,
        }
    }

    /// Whether an I/O error is explained by a fault seen since the action started.
    fn fault_seen(&self, r: &Running) -> bool {
        self.c.hosts[r.host].w.fault_epoch != r.epoch
    }

    /// Whether an injected fault (a crash, a failure: not a conflict with another host's
    /// transaction, which the core runs again) reached the host since the action started.
    fn injected_fault_seen(&self, r: &Running) -> bool {
        let w = &self.c.hosts[r.host].w;
        w.fault_epoch - r.epoch > w.conflicts - r.conflicts
    }

    fn io_error_ok(&self, r: &Running, e: i32) -> bool {
        (e == libc::EIO || e == libc::ENOSPC) && self.fault_seen(r)
    }

    /// An error of a request on handle `h`: a fault, or its file is an orphan other hosts may
    /// have deleted (its host's heartbeat lapsed): its object gone (EIO) or its row (ENOENT).
    fn handle_error_ok(&self, r: &Running, h: usize, e: i32) -> bool {
        let forfeited = || self.orphan_forfeited(self.handles[&h].ino);
        self.io_error_ok(r, e) || ((e == libc::EIO || e == libc::ENOENT) && forfeited())
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
            (Act::Create { name, .. }, _) => match reply {
                // Made with a handle, or (its answer lost) without one.
                Ok(Reply::Created { attr, .. }) | Ok(Reply::Entry(attr)) if r.made == matches!(reply, Ok(Reply::Entry(_))) => {
                    let parent = r.parents[0];
                    if let Some(old) = self.entry(parent, name).current {
                        return Err(self.unexpected(r, format!("created, but the name is file {old}")));
                    }
                    let writer = (!r.made).then_some(r.host);
                    created.push((name, r.host));
                    self.entry_mut(parent, name).set(Some(attr.ino), now);
                    self.files.insert(
                        attr.ino,
                        FileM {
                            ino: attr.ino,
                            versions: vec![Vec::new()],
                            acked: 0,
                            acks: vec![(now, 0)],
                            writer,
                            last_writer: writer,
                            unsettled: None,
                            orphan: None,
                            contest: None,
                        },
                    );
                    if let Ok(Reply::Created { fh, .. }) = reply {
                        self.add_handle(r.host, name, attr.ino, fh, Mode::Writer, 0);
                    }
                    Ok(None)
                }
                Err(libc::EEXIST) => {
                    // The name exists, existed until recently, or a racing create won.
                    let since = self.last_sync.min(r.issued);
                    if self.racing.contains(&name) {
                        self.race_losses.push((name, r.issued));
                    } else if !self.existed_since(r.parents[0], name, since) {
                        return Err(self.unexpected(r, "EEXIST, but the name never existed since the last sync".into()));
                    }
                    Ok(None)
                }
                Err(e) if self.io_error_ok(r, e) => Ok(None),
                other => Err(self.unexpected(r, format!("{other:?}"))),
            },
            (Act::Unlink { name, .. }, _) => match reply {
                Ok(Reply::Empty) => {
                    let parent = r.parents[0];
                    let Some(ino) = self.entry(parent, name).current else {
                        return Err(self.unexpected(r, "unlinked a name that does not exist".into()));
                    };
                    self.entry_mut(parent, name).set(None, now);
                    self.unlinked(ino, r.issued);
                    Ok(None)
                }
                Err(libc::ENOENT) => {
                    if !self.entry(r.parents[0], name).allows(None, self.last_sync) {
                        return Err(
                            self.unexpected(r, "ENOENT, but the name exists (since before the last sync)".into())
                        );
                    }
                    Ok(None)
                }
                Err(e) if self.io_error_ok(r, e) => Ok(None),
                other => Err(self.unexpected(r, format!("{other:?}"))),
            },
            (Act::Open { name, .. } | Act::ReadFile { name, .. } | Act::Stat { name, .. }, 0) => {
                let n = self.entry(r.parents[0], name);
                let (current, history) = (n.current, n.history.clone());
                let seen = match &reply {
                    Ok(Reply::Entry(a)) => Some(a.ino),
                    Err(libc::ENOENT) => None,
                    Err(e) if self.io_error_ok(r, *e) => return Ok(None),
                    other => return Err(self.unexpected(r, format!("{other:?}"))),
                };
                if !self.entry(r.parents[0], name).allows(seen, self.last_sync) {
                    return Err(self.unexpected(
                        r,
                        format!(
                            "lookup found {seen:?}; the name is {current:?} (and was, since the last sync: {history:?})"
                        ),
                    ));
                }
                let Some(ino) = seen else { return Ok(None) };
                r.ino = Some(ino);
                r.lookups = 1;
                if current != Some(ino) {
                    // A stale entry: what follows may fail; nothing more to check.
                    return Ok(Some(Op::GetAttr { ino }));
                }
                r.lower = self.read_lower_bound(r.host, ino);
                Ok(Some(match &r.act {
                    Act::Stat { .. } => Op::GetAttr { ino },
                    Act::Open { .. } => Op::Open { ino, flags: libc::O_RDWR },
                    _ => Op::Open { ino, flags: libc::O_RDONLY },
                }))
            }
            (_, 1) if matches!(r.op, Op::GetAttr { .. }) => {
                let ino = r.ino.expect("looked up");
                let current = self.entry(r.parents[0], r.act_name_index()).current == Some(ino);
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
            (Act::Open { name, mode, .. }, 1) => match reply {
                Ok(Reply::Opened { fh, .. }) => {
                    let ino = r.ino.expect("looked up");
                    if mode == Mode::Writer {
                        if self.writable(ino) {
                            let f = self.files.get_mut(&ino).expect("current");
                            f.writer = Some(r.host);
                            f.last_writer = Some(r.host);
                        } else {
                            self.join_contest(ino);
                        }
                    }
                    self.add_handle(r.host, name, ino, fh, mode, r.lower);
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
                        self.check_content(r.host, ino, r.lower, &d).map_err(|e| self.unexpected(r, e))?;
                        self.narrow_by_read(r.host, ino, &d);
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
                Ok(Reply::Written(n)) if n as usize == data.len() && self.is_contested(self.handles[&h].ino) => {
                    self.contested_write(h, offset, &data);
                    Ok(None)
                }
                Ok(Reply::Written(n)) if n as usize == data.len() => {
                    let ino = self.handles[&h].ino;
                    self.handles.get_mut(&h).expect("open").wrote = true;
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
                Err(e) if self.handle_error_ok(r, h, e) => Ok(None),
                other => Err(self.unexpected(r, format!("{other:?}"))),
            },
            (Act::Fsync { h }, _) => match reply {
                Ok(Reply::Empty) => {
                    self.ack(self.handles[&h].ino, now);
                    Ok(None)
                }
                Err(e) if self.handle_error_ok(r, h, e) => Ok(None),
                other => Err(self.unexpected(r, format!("{other:?}"))),
            },
            (Act::ReadHandle { h }, _) => {
                let x = &self.handles[&h];
                match reply {
                    Ok(Reply::Data(d)) => {
                        self.check_content(x.host, x.ino, x.lower, &d).map_err(|e| self.unexpected(r, e))?;
                        let (host, ino) = (x.host, x.ino);
                        self.narrow_by_read(host, ino, &d);
                        Ok(None)
                    }
                    Err(e) if self.handle_error_ok(r, h, e) => Ok(None),
                    other => Err(self.unexpected(r, format!("{other:?}"))),
                }
            }
            (Act::Close { h }, 0) => {
                let x = self.handles[&h].clone();
                match reply {
                    // Concurrent writers: a close that failed may still commit later (the data
                    // stays to be uploaded), like one answered without its commit.
                    Ok(Reply::Empty) if x.mode == Mode::Writer && self.is_contested(x.ino) => {
                        let acked = !self.injected_fault_seen(r);
                        self.contested_close(h, r.issued, acked);
                    }
                    Err(e) if x.mode == Mode::Writer && self.is_contested(x.ino) && self.handle_error_ok(r, h, e) => {
                        self.contested_close(h, r.issued, false);
                    }
                    // A close whose upload failed is answered once the data is sealed here (the
                    // core's fallback): not committed, so no promise to other hosts.
                    Ok(Reply::Empty) if x.mode == Mode::Writer && !self.fault_seen(r) => self.ack(x.ino, now),
                    Ok(Reply::Empty) => {}
                    Err(e) if self.handle_error_ok(r, h, e) => {}
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
                        if let Some(f) = self.files.get_mut(&x.ino).filter(|f| f.writer == Some(x.host)) {
                            f.writer = None;
                        }
                    }
                    self.maybe_orphan_closed(x.ino);
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
                    Err(e) if self.handle_error_ok(r, h, e) => Ok(None),
                    other => Err(self.unexpected(r, format!("{other:?}"))),
                }
            }
            (Act::SetLkW { h, lock }, _) => {
                self.waiter_answered(r, h, &lock, reply)?;
                Ok(None)
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
                    Err(e) if self.handle_error_ok(r, h, e) => Ok(None),
                    other => Err(self.unexpected(r, format!("{other:?}"))),
                }
            }
            (Act::List { .. }, 0) => match reply {
                Ok(Reply::Opened { fh, .. }) => {
                    r.fh = Some(fh);
                    Ok(Some(Op::ReadDir { ino: r.parents[0], fh, offset: 0, size: 1 << 16, plus: false }))
                }
                Err(e) if self.io_error_ok(r, e) => Ok(None),
                other => Err(self.unexpected(r, format!("{other:?}"))),
            },
            (Act::List { .. }, 1) => {
                match reply {
                    Ok(Reply::Dir(entries)) => {
                        self.check_listing(r.parents[0], &entries).map_err(|e| self.unexpected(r, e))?
                    }
                    Err(e) if self.io_error_ok(r, e) => {}
                    other => return Err(self.unexpected(r, format!("{other:?}"))),
                }
                Ok(Some(Op::ReleaseDir { ino: r.parents[0], fh: r.fh.expect("opened") }))
            }
            (Act::List { .. }, _) => match reply {
                Ok(Reply::Empty) => Ok(None),
                other => Err(self.unexpected(r, format!("releasedir: {other:?}"))),
            },
            (
                Act::Mkdir { .. } | Act::Rmdir { .. } | Act::RenameDir { .. } | Act::Rename { .. } | Act::Link { .. } | Act::StatDir { .. },
                _,
            ) => self.on_names_reply(r, reply, stage),
            (act, stage) => Err(format!("harness: no stage {stage} of {act:?}")),
        }
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
            | Act::ReadFile { name, .. }
            | Act::Stat { name, .. }
            | Act::Create { name, .. }
            | Act::Unlink { name, .. } => *name,
            _ => usize::MAX,
        }
    }
}

fn short(r: &Result<Reply, i32>) -> String {
    match r {
        Ok(Reply::Data(d)) => format!("Data({} bytes)", d.len()),
        Ok(Reply::Attr(a)) | Ok(Reply::Entry(a)) => format!("Attr(ino {} size {})", a.ino, a.size),
        // (Not the whole listing: formatted only to be cut short.)
        Ok(Reply::Dir(entries)) => format!("Dir({} entries)", entries.len()),
        other => format!("{other:?}").chars().take(80).collect(),
    }
}
