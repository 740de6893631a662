//! The driver: owns the [`Core`] behind one lock, feeds it requests, completions and timeouts,
//! and performs its effects.
//!
//! Whoever has an input drives: the FUSE thread for requests, a blocking-pool thread for the
//! completion of the I/O it performed, the timer thread for deadlines. Each takes the lock, hands
//! the input to the core and drains every effect before letting go. Metadata requests run inline
//! under the lock, strictly in the order the core emitted them (the core relies on that order),
//! which also saves a thread hand-off per operation; staging and store requests run on the
//! blocking pool.
//!
//! With a coordination server, an upload (`PutStaged`) first takes the file's upload lease
//! ([`LockService::take_upload_lease`]), waiting on its blocking-pool thread while another host
//! holds it; the commit of the uploaded object, which the core emits when the upload completes
//! and which runs inline in that same drain, carries the lease's fencing token, checked by the
//! metadata store ([`Fence`]); then the lease is given back. The core knows nothing of leases.

use crate::backends::{self, Backends, Fence, MetaStore, ObjectStore};
use crate::coord::{Coordinator, LockService, Process, ProcessState, Publisher};
use crate::mirror::{MetaReader, Mirror, Planner};
use crate::staging::Staging;
use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};
use truckeefs_core::{
    Config, Core, Ctx, DentryRow, Effect, Ino, IoError, IoErrorKind, IoId, IoReply, IoRequest, IoResult, KernelNotice,
    LoadedInode, LockRequest, MetaRequest, Op, Reply, RequestId, StagingRequest, StoreRequest,
};

/// Where a mount keeps its state.
#[derive(Clone, Debug)]
pub struct MountDirs {
    /// Embedded metadata (`meta.sqlite`) and the local object directory (`objects/`).
    pub data_dir: PathBuf,
    /// Staging area and journal (`staging/`).
    pub cache_dir: PathBuf,
    /// At most this many bytes staged (0: no bound but the disk).
    pub staging_limit: u64,
}

/// Receives the core's answers; implemented by the FUSE front.
pub trait Sink: Send + 'static {
    fn reply(&self, id: RequestId, result: Result<Reply, i32>);
    fn notice(&self, notice: KernelNotice);
}

/// Why a mount could not start. One line each, naming the file or directory.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create {path}: {source}")]
    Dir { path: String, source: std::io::Error },
    #[error("{path} is in use by another truckeefs process; unmount it first")]
    Busy { path: String },
    #[error(transparent)]
    Meta(#[from] crate::meta_sqlite::MetaOpenError),
    /// A shared store (MySQL, Tahoe) that cannot be used; the message names it.
    #[error("{0}")]
    Backend(String),
}

/// A running driver.
pub struct Runtime {
    shared: Arc<Shared>,
    timer: Option<JoinHandle<()>>,
    coordinator: Option<Coordinator>,
    _locks: (File, Option<File>),
}

/// The extended attribute of the root directory that reads as the mount's status
/// (`truckeefs status MOUNTPOINT`). It is not listed and cannot be set.
pub const STATUS_XATTR: &[u8] = b"user.truckeefs.status";

/// An xattr reply: the size when `size` is 0, the bytes when they fit, else ERANGE.
fn sized(bytes: Vec<u8>, size: u32) -> Result<Reply, i32> {
    if size == 0 {
        Ok(Reply::XattrSize(bytes.len() as u32))
    } else if bytes.len() > size as usize {
        Err(libc::ERANGE)
    } else {
        Ok(Reply::XattrData(bytes.into()))
    }
}

/// How long unmount waits for uploads that make no progress before giving up (the data stays
/// staged and is uploaded at the next mount).
const SHUTDOWN_STALL: Duration = Duration::from_secs(120);

/// The driver behind its lock, and the condition variable the timer thread and an unmount
/// sleep on. Lock order: only this one lock exists.
struct Shared {
    driver: Mutex<Driver>,
    wake: Condvar,
}

impl Runtime {
    /// Open the stores (errors come back here, before anything is mounted) and start the driver.
    pub fn start(dirs: &MountDirs, backends: Backends, config: Config, sink: Box<dyn Sink>) -> Result<Runtime, StartError> {
        for d in [&dirs.data_dir, &dirs.cache_dir] {
            std::fs::create_dir_all(d).map_err(|source| StartError::Dir { path: d.display().to_string(), source })?;
        }
        // One mount per staging area (and per embedded database).
        let lock = lock_dir(&dirs.data_dir)?;
        let cache_lock = if dirs.cache_dir != dirs.data_dir { Some(lock_dir(&dirs.cache_dir)?) } else { None };
        let coordination = backends.coordination.clone();
        let (meta, objects) = backends::open(backends, &dirs.data_dir, &dirs.cache_dir)?;
        let staging_dir = dirs.cache_dir.join("staging");
        let staging = Staging::open(&staging_dir)
            .map_err(|source| StartError::Dir { path: staging_dir.display().to_string(), source })?
            .with_limit(dirs.staging_limit);
        let driver = Driver {
            core: Core::new(config, Instant::now()),
            meta,
            objects: Arc::new(objects),
            staging: Arc::new(staging),
            sink,
            timer_sleeps_until: None,
            stopping: false,
            last_progress: Instant::now(),
            publisher: None,
            locks: None,
            mirror: None,
            held_orphans: std::collections::HashSet::new(),
            coordination_failed_at: None,
            reaped: std::collections::HashSet::new(),
            running: std::collections::HashSet::new(),
            gone: std::collections::HashSet::new(),
            upload_fence: None,
        };
        let shared = Arc::new(Shared { driver: Mutex::new(driver), wake: Condvar::new() });
        let coordinator = match &coordination {
            Some(config) => {
                let weak = Arc::downgrade(&shared);
                let (weak_resync, weak_collect) = (weak.clone(), weak.clone());
                let c = Coordinator::start(
                    config,
                    move |changes| {
                        let Some(shared) = weak.upgrade() else { return };
                        let mut d = shared.lock();
                        d.core.handle_invalidation(Instant::now(), changes);
                        d.drain(&shared);
                    },
                    // Changes were lost while the subscription was cut.
                    move || {
                        let Some(shared) = weak_resync.upgrade() else { return };
                        let mut d = shared.lock();
                        d.core.invalidate_all(Instant::now());
                        d.drain(&shared);
                    },
                    move || {
                        let Some(shared) = weak_collect.upgrade() else { return };
                        let mut d = shared.lock();
                        d.core.collect_orphans(Instant::now());
                        d.drain(&shared);
                    },
                )
                .map_err(StartError::Backend)?;
                let mut d = shared.lock();
                d.publisher = Some(c.publisher());
                d.locks = Some(c.locks());
                d.raise_fence();
                drop(d);
                Some(c)
            }
            None => None,
        };
        let mirrored = shared.lock().objects.mirrored();
        if let Some((client, rootcap)) = mirrored {
            let reader = Box::new(DriverReader(Arc::downgrade(&shared)));
            let mirror = Mirror::start(client, rootcap, reader)
                .map_err(|source| StartError::Dir { path: "mirror thread".into(), source })?;
            shared.lock().mirror = Some((Planner::default(), mirror));
        }
        shared.lock().drain(&shared);
        let timer_shared = shared.clone();
        let timer = std::thread::Builder::new()
            .name("truckeefs-timer".into())
            .spawn(move || timer_thread(&timer_shared))
            .map_err(|source| StartError::Dir { path: "timer thread".into(), source })?;
        Ok(Runtime { shared, timer: Some(timer), coordinator, _locks: (lock, cache_lock) })
    }

    /// One kernel request, run on the caller's thread: metadata transactions complete inline,
    /// data I/O continues on the blocking pool.
    pub fn request(&self, id: RequestId, ctx: Ctx, op: Op) {
        let mut d = self.shared.lock();
        tracing::trace!(?id, ?op, "request");
        match &op {
            Op::GetXattr { ino: 1, name, size } if name == STATUS_XATTR => {
                let text = d.status_text();
                d.sink.reply(id, sized(text.into_bytes(), *size));
                return;
            }
            Op::SetXattr { ino: 1, name, .. } | Op::RemoveXattr { ino: 1, name } if name == STATUS_XATTR => {
                d.sink.reply(id, Err(libc::EPERM));
                return;
            }
            _ => {}
        }
        d.core.handle_request(Instant::now(), SystemTime::now(), id, ctx, op);
        d.drain(&self.shared);
    }

    pub fn forget(&self, ino: Ino, nlookup: u64) {
        let mut d = self.shared.lock();
        d.core.handle_forget(Instant::now(), ino, nlookup);
        d.drain(&self.shared);
    }

    /// Finish every pending upload and stop. Returns an error naming what could not be finished.
    pub fn shutdown(mut self) -> Result<(), String> {
        let result = self.wait_idle();
        self.shared.lock().stopping = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.timer.take() {
            let _ = t.join();
        }
        // After the last upload: its change is published before the coordinator stops.
        self.shared.lock().publisher = None;
        self.coordinator.take();
        // The Tahoe tree is a copy: one left behind is repaired at the next mount, and no data
        // depends on it, so it does not fail the unmount.
        let mirror = self.shared.lock().mirror.take();
        if let Some((_, mirror)) = mirror {
            if let Err(e) = mirror.finish(SHUTDOWN_STALL) {
                tracing::warn!("{e}");
            }
        }
        result
    }

    fn wait_idle(&self) -> Result<(), String> {
        let mut d = self.shared.lock();
        d.core.begin_shutdown(Instant::now());
        d.last_progress = Instant::now();
        d.drain(&self.shared);
        let mut last_status = Instant::now();
        loop {
            if d.core.is_idle() {
                tracing::info!("all data uploaded; stopped");
                return Ok(());
            }
            if last_status.elapsed() > Duration::from_secs(5) {
                let s = d.core.status();
                tracing::info!(files = s.dirty_files, bytes = s.dirty_bytes, "unmount: waiting for uploads");
                last_status = Instant::now();
            }
            if d.last_progress.elapsed() > SHUTDOWN_STALL {
                let s = d.core.status();
                return Err(format!(
                    "{} file(s) could not be uploaded; they stay in the staging area and are uploaded at the next mount",
                    s.dirty_files
                ));
            }
            d = self.shared.wake.wait_timeout(d, Duration::from_secs(1)).map(|(g, _)| g).unwrap_or_else(|e| e.into_inner().0);
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Driver> {
        // A panic while holding the lock already reported itself; the state is still the core's.
        self.driver.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The mirror thread's view of the metadata store: the driver's, taken under its lock.
struct DriverReader(std::sync::Weak<Shared>);

impl DriverReader {
    fn with<T>(&self, f: impl FnOnce(&mut MetaStore) -> Result<T, IoError>) -> Result<T, IoError> {
        match self.0.upgrade() {
            Some(shared) => f(&mut shared.lock().meta),
            None => Err(IoError::new(IoErrorKind::Other, "the mount stopped")),
        }
    }
}

impl MetaReader for DriverReader {
    fn load_dir(&self, ino: Ino) -> Result<Vec<(DentryRow, LoadedInode)>, IoError> {
        self.with(|meta| match meta.execute(&MetaRequest::LoadDir { ino })? {
            IoReply::Dir(entries) => Ok(entries),
            _ => Err(IoError::new(IoErrorKind::Other, "the metadata store answered LoadDir with something else")),
        })
    }

    fn names(&self, ino: Ino) -> Result<Vec<(Ino, Vec<u8>)>, IoError> {
        self.with(|meta| meta.names(ino))
    }
}

/// Fires the core's timers: sleeps until `poll_timeout`, or until woken because it moved earlier.
fn timer_thread(shared: &Arc<Shared>) {
    let mut d = shared.lock();
    loop {
        if d.stopping {
            return;
        }
        let now = Instant::now();
        match d.core.poll_timeout() {
            Some(at) if at <= now => {
                d.core.handle_timeout(now);
                d.drain(shared);
            }
            next => {
                d.timer_sleeps_until = Some(next.unwrap_or(now + Duration::from_secs(3600)));
                let wait = d.timer_sleeps_until.map_or(Duration::from_secs(3600), |t| t.saturating_duration_since(now));
                d = shared.wake.wait_timeout(d, wait).map(|(g, _)| g).unwrap_or_else(|e| e.into_inner().0);
                d.timer_sleeps_until = None;
            }
        }
    }
}

/// One mount per data directory: a second one would corrupt nothing (SQLite locks) but would
/// upload the same staged files twice.
fn lock_dir(dir: &Path) -> Result<File, StartError> {
    let path = dir.join("lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| StartError::Dir { path: path.display().to_string(), source })?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r != 0 {
        return Err(StartError::Busy { path: dir.display().to_string() });
    }
    Ok(file)
}

struct Driver {
    core: Core,
    meta: MetaStore,
    objects: Arc<ObjectStore>,
    staging: Arc<Staging>,
    sink: Box<dyn Sink>,
    /// The deadline the timer thread sleeps until (`None` while it runs).
    timer_sleeps_until: Option<Instant>,
    stopping: bool,
    /// The last I/O completion, for noticing a stalled unmount.
    last_progress: Instant,
    /// Where committed changes go for the other hosts, when hosts share the stores.
    publisher: Option<Publisher>,
    /// Where record locks are checked against the other hosts (none: this host only).
    locks: Option<Arc<LockService>>,
    /// MIRROR: what each commit changes in the Tahoe tree, and the thread that changes it.
    mirror: Option<(Planner, Mirror)>,
    /// The upload lease of an upload that just finished, with the object it stored: the commit
    /// of that object checks the lease's fencing token (taken by the first commit that does).
    upload_fence: Option<(Fence, truckeefs_core::ObjectId)>,
    /// The files this host keeps open after their last name went, as listed for the other hosts.
    held_orphans: std::collections::HashSet<Ino>,
    /// When an inline call to the coordination server last failed (see `open_files`).
    coordination_failed_at: Option<Instant>,
    /// Files whose `Reap` answered free: this host deletes them, and their mark as being
    /// deleted goes once their row is gone (it keeps other hosts from opening them meanwhile).
    reaped: std::collections::HashSet<Ino>,
    /// The per-inode processes reported running (a state is written only when it changes).
    running: std::collections::HashSet<(Ino, Process)>,
    /// Deleted files: their states are removed once none of their processes runs.
    gone: std::collections::HashSet<Ino>,
}

impl Driver {
    /// What `truckeefs status` shows, one `key: value` per line.
    fn status_text(&self) -> String {
        let s = self.core.status();
        let mut out = String::new();
        let mut line = |k: &str, v: String| out.push_str(&format!("{k}: {v}\n"));
        line("files waiting to upload", s.dirty_files.to_string());
        line("bytes waiting to upload", s.dirty_bytes.to_string());
        let (staged, limit) = self.staging.usage();
        let limit = if limit == 0 { "no limit but the disk".to_string() } else { format!("limit {limit}") };
        line("staging area bytes", format!("{staged} ({limit})"));
        line("uploads in flight", s.uploads_in_flight.to_string());
        for u in self.objects.uploads_in_flight() {
            let what = u.name.strip_suffix(".data").map_or(u.name.clone(), |ino| format!("inode {ino}"));
            let mib = |b: u64| b as f64 / (1 << 20) as f64;
            let state = if u.storing {
                format!("all {:.1} MiB sent, the gateway is storing it", mib(u.len))
            } else {
                format!("{:.1} of {:.1} MiB sent ({}%)", mib(u.sent), mib(u.len), u.sent * 100 / u.len.max(1))
            };
            line(&format!("upload of {what}"), format!("{state}, {} s", u.elapsed.as_secs()));
        }
        line("failed uploads (retried)", s.failed_uploads.to_string());
        line("open handles", s.open_handles.to_string());
        line("cached inodes", s.cached_inodes.to_string());
        line("metadata store", self.meta.describe());
        line("object store", self.objects.describe());
        if let Some((used, limit)) = self.objects.cache_usage() {
            let limit = if limit == 0 { "unlimited".to_string() } else { limit.to_string() };
            line("block cache bytes", format!("{used} of {limit}"));
        }
        if let Some((_, mirror)) = &self.mirror {
            line("tahoe tree (MIRROR)", mirror.status());
        }
        let hosts = match &self.locks {
            None => "this one (no coordination server configured)".to_string(),
            Some(locks) => match locks.hosts() {
                Ok(hosts) => format!("{} connected: {} (this one){}", hosts.len(), hosts[0], hosts[1..].iter().map(|h| format!(", {h}")).collect::<String>()),
                Err(e) => format!("unknown ({e})"),
            },
        };
        line("hosts", hosts);
        if let Some(locks) = &self.locks {
            let waits = locks.lease_waits();
            line("uploads waiting for another host's lease", waits.len().to_string());
            for (ino, w) in waits {
                line(
                    &format!("waiting for the upload lease of inode {ino}"),
                    format!("held by {} (fencing token {}), {} s", w.holder, w.token, w.since.elapsed().as_secs()),
                );
            }
            for (ino, token) in locks.upload_leases() {
                line(&format!("upload lease of inode {ino}"), format!("fencing token {token}"));
            }
            for (ino, token) in locks.lock_tokens() {
                line(&format!("record locks on inode {ino}"), format!("fencing token {token}"));
            }
        }
        out
    }

    /// Makes the coordination server's token counter count on from above every fence the
    /// metadata store holds (it may have lost its data, or been reset with `reset_redis`).
    fn raise_fence(&mut self) {
        let Some(locks) = &self.locks else { return };
        match self.meta.max_fence() {
            Ok(floor) => {
                if let Err(e) = locks.raise_fence(floor) {
                    tracing::warn!(error = %e, "cannot raise the fencing-token counter");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the highest fencing token"),
        }
    }

    /// The fence of `txn` if it commits the object of the upload that just finished.
    fn fence_of(&mut self, txn: &truckeefs_core::Txn) -> Option<Fence> {
        let (fence, object) = self.upload_fence.as_ref()?;
        let commits = txn.ops.iter().any(|op| match op {
            truckeefs_core::TxnOp::UpdateInode { row, .. } => row.ino == fence.ino && row.object.as_ref() == Some(object),
            _ => false,
        });
        commits.then(|| self.upload_fence.take().map(|(f, _)| f)).flatten()
    }

    /// Perform every effect; metadata requests complete inline, in order.
    fn drain(&mut self, shared: &Arc<Shared>) {
        let mut inline: VecDeque<(IoId, IoResult)> = VecDeque::new();
        loop {
            while let Some(effect) = self.core.poll_effect() {
                match effect {
                    Effect::Reply { id, result } => self.sink.reply(id, result),
                    Effect::Kernel(notice) => self.sink.notice(notice),
                    Effect::Io { io, request: IoRequest::Meta(req) } => {
                        let mut fence = None;
                        if let MetaRequest::Commit(txn) = &req {
                            self.hold_orphans(txn);
                            fence = self.fence_of(txn);
                        }
                        let mut result = self.meta.execute_fenced(&req, fence);
                        // A transaction whose outcome is unknown (its answer lost) may have
                        // committed: the other hosts hear of it too (what did not change costs
                        // them a reload).
                        let maybe_committed = result.is_ok() || self.meta.last_in_doubt();
                        if let (Some(f), Err(e)) = (fence, &result) {
                            if e.kind == IoErrorKind::Conflict {
                                // Refused (or another host changed the row): the core commits
                                // the object again on the row read afresh; the next upload's
                                // lease gets a token above every fence the store holds, even if
                                // the coordination server lost its counter.
                                tracing::info!(ino = f.ino, token = f.token, error = %e, "upload commit refused; committing again on the fresh row");
                                self.raise_fence();
                            }
                        }
                        if let (MetaRequest::ListOrphans, Ok(IoReply::Orphans(rows))) = (&req, &mut result) {
                            self.spare_live_hosts_orphans(rows);
                        }
                        match &result {
                            // Another host changed a row first: the core runs the request again
                            // on the rows read afresh, or answers it with an errno; not a fault.
                            Err(e) if e.kind == IoErrorKind::Conflict => tracing::debug!(error = %e, "metadata store"),
                            Err(e) => tracing::error!(error = %e, "metadata store"),
                            Ok(_) => {}
                        }
                        if let MetaRequest::Commit(txn) = &req {
                            if let (Some(p), true) = (&self.publisher, maybe_committed) {
                                let changes = txn.changes();
                                if !changes.is_empty() {
                                    p.publish(changes);
                                }
                            }
                        }
                        if let (Ok(_), MetaRequest::Commit(txn)) = (&result, &req) {
                            if let Some((planner, mirror)) = &mut self.mirror {
                                mirror.mark(planner.plan(&mut self.meta, txn));
                            }
                            self.drop_orphans(txn);
                        }
                        inline.push_back((io, result));
                    }
                    Effect::Io { io, request: IoRequest::Lock(req) } if req.in_meta_stream() => {
                        let result = self.open_files(&req);
                        inline.push_back((io, result));
                    }
                    Effect::Io { io, request } => self.spawn_io(shared, io, request),
                }
            }
            match inline.pop_front() {
                Some((io, result)) => self.core.handle_completion(Instant::now(), io, result),
                None => break,
            }
        }
        // Wake the timer if the next deadline moved before the one it sleeps until.
        if let (Some(next), Some(sleeping)) = (self.core.poll_timeout(), self.timer_sleeps_until) {
            if next < sleeping {
                shared.wake.notify_all();
            }
        }
    }

    /// The listings of open files (`LockRequest::Open`, `Close`, `Reap`), run inline like the
    /// metadata requests and in their order: an `Open` the core emitted before a transaction is
    /// in force when that transaction runs, and a `Close` never overtakes the next `Open`.
    fn open_files(&mut self, req: &LockRequest) -> IoResult {
        let Some(locks) = &self.locks else {
            // No coordination server: no other host to ask (the core asks only with one).
            return Ok(match req {
                LockRequest::Reap { .. } => IoReply::Held(false),
                _ => IoReply::Done,
            });
        };
        // While the server fails, inline calls fail at once instead of each waiting for its
        // connection timeout with the driver's lock held (the core sends them again later).
        const FAILING_FOR: Duration = Duration::from_secs(1);
        if self.coordination_failed_at.is_some_and(|t| t.elapsed() < FAILING_FOR) {
            return Err(IoError::new(IoErrorKind::Other, "the coordination server failed a moment ago"));
        }
        let result = locks.execute(req);
        self.coordination_failed_at = match &result {
            Err(e) if e.kind != IoErrorKind::NotFound => Some(Instant::now()),
            _ => None,
        };
        match (&result, req) {
            (Ok(IoReply::Held(true)), LockRequest::Reap { ino }) | (Ok(_), LockRequest::Close { ino }) => {
                // Out of this host's orphan set (another host holds it, or it keeps its name).
                self.held_orphans.remove(ino);
            }
            (Ok(IoReply::Held(false)), LockRequest::Reap { ino }) => {
                self.reaped.insert(*ino);
            }
            (Err(e), _) if e.kind != IoErrorKind::NotFound => {
                tracing::warn!(error = %e, "cannot list an open file for the other hosts");
            }
            _ => {}
        }
        result
    }

    /// Before a transaction that takes a file's last name (kept open here, or, with
    /// `Config::shared_opens`, until this host knows whether another has it open), the other
    /// hosts learn that this host holds it: they must not delete it while this host lives. A
    /// later commit of its row (its upload, say) lists it no more: the reap may have unlisted it
    /// already, another host holding it (`Txn::unnamed`).
    fn hold_orphans(&mut self, txn: &truckeefs_core::Txn) {
        let Some(locks) = &self.locks else { return };
        for ino in txn.unnamed() {
            if self.held_orphans.contains(&ino) {
                continue;
            }
            match locks.hold_orphan(ino) {
                Ok(()) => {
                    self.held_orphans.insert(ino);
                }
                Err(e) => tracing::warn!(ino, error = %e, "cannot list an open unlinked file for the other hosts"),
            }
        }
    }

    /// After a committed transaction that deleted files this host listed as held.
    fn drop_orphans(&mut self, txn: &truckeefs_core::Txn) {
        for op in &txn.ops {
            if let truckeefs_core::TxnOp::DeleteInode { ino } = op {
                self.forget_states(*ino, true);
            }
        }
        let Some(locks) = &self.locks else { return };
        for op in &txn.ops {
            if let truckeefs_core::TxnOp::DeleteInode { ino } = op {
                if self.held_orphans.remove(ino) {
                    if let Err(e) = locks.drop_orphan(*ino) {
                        tracing::warn!(ino, error = %e, "cannot unlist a deleted file");
                    }
                }
                // (If this fails, the mark expires by itself.)
                if self.reaped.remove(ino) {
                    if let Err(e) = locks.forget_reaping(*ino) {
                        tracing::debug!(ino, error = %e, "cannot remove a deleted file's mark as being deleted");
                    }
                }
            }
        }
    }

    /// The orphans the core may delete: none that a live host holds (with no coordination
    /// server, every one: hosts that share the stores without one take turns). A dead host's
    /// set is forgotten once none of its files is left, at the first collection after they went.
    fn spare_live_hosts_orphans(&self, rows: &mut Vec<truckeefs_core::InodeRow>) {
        let Some(locks) = &self.locks else { return };
        match locks.orphans() {
            Ok(o) => {
                let left: std::collections::HashSet<Ino> = rows.iter().map(|r| r.ino).collect();
                // (A live host's open listing of the file itself counts too; one that cannot be
                // read spares the file.)
                rows.retain(|r| !o.held.contains(&r.ino) && !locks.held_open(r.ino).unwrap_or(true));
                if let Err(e) = locks.forget_sets(&o.done_sets(&left)) {
                    tracing::warn!(error = %e, "cannot remove a dead host's list of open files");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell which unlinked files other hosts hold open; deleting none now");
                rows.clear();
            }
        }
    }

    /// Writes a per-inode process state for operators (hosts with a coordination server).
    fn report(&mut self, ino: Ino, process: Process, state: ProcessState) {
        let Some(p) = &self.publisher else { return };
        let changed = match state {
            ProcessState::Running => self.running.insert((ino, process)),
            _ => self.running.remove(&(ino, process)),
        };
        if changed || state == ProcessState::Error {
            p.state(ino, process, state);
        }
    }

    /// A deleted file's process states go once none of its processes runs (`deleted`: it was
    /// just deleted; otherwise one of its processes ended).
    fn forget_states(&mut self, ino: Ino, deleted: bool) {
        let Some(p) = &self.publisher else { return };
        if deleted {
            if self.gone.len() > 100_000 {
                self.gone.clear();
            }
            self.gone.insert(ino);
        }
        if self.gone.contains(&ino) && !self.running.iter().any(|(i, _)| *i == ino) {
            p.forget_states(ino);
        }
    }

    /// The process an I/O request is part of, if operators see it.
    fn process_of(request: &IoRequest) -> Option<(Ino, Process)> {
        match request {
            IoRequest::Staging(StagingRequest::Init { ino, from: Some(_), .. }) => Some((*ino, Process::Read)),
            IoRequest::Staging(StagingRequest::Write { ino, .. }) => Some((*ino, Process::Write)),
            IoRequest::Store(StoreRequest::PutStaged { ino }) => Some((*ino, Process::Sync)),
            IoRequest::Store(StoreRequest::Delete { ino, .. }) => Some((*ino, Process::Delete)),
            _ => None,
        }
    }

    fn spawn_io(&mut self, shared: &Arc<Shared>, io: IoId, request: IoRequest) {
        if let IoRequest::Staging(StagingRequest::Remove { ino }) = &request {
            // Nothing of the file is staged any more: no state of it stays running.
            self.running.retain(|(i, _)| i != ino);
            self.forget_states(*ino, false);
        }
        let process = Self::process_of(&request);
        if let Some((ino, p)) = process {
            self.report(ino, p, ProcessState::Running);
        }
        let shared = shared.clone();
        let objects = self.objects.clone();
        let staging = self.staging.clone();
        let locks = self.locks.clone();
        smol::unblock(move || {
            // With other hosts, an upload holds the file's upload lease from before it starts
            // until its object is committed (or no commit comes).
            let mut lease = None;
            let result = match &request {
                IoRequest::Lock(r) => match &locks {
                    Some(service) => service.execute(r),
                    // No coordination server: this host's locks are all there are.
                    None => Ok(match r {
                        LockRequest::Publish { .. } => IoReply::Done,
                        _ => IoReply::LockConflict(None),
                    }),
                },
                IoRequest::Staging(r) => staging.execute(r, &*objects),
                IoRequest::Store(r) => match (r, &locks) {
                    (StoreRequest::PutStaged { ino }, Some(service)) => match service.take_upload_lease(*ino) {
                        Ok(l) => {
                            lease = Some(l);
                            objects.execute(&staging, r)
                        }
                        Err(e) => Err(IoError::new(IoErrorKind::Other, e)),
                    },
                    _ => objects.execute(&staging, r),
                },
                IoRequest::Meta(_) => unreachable!("metadata requests run inline"),
            };
            if let Err(e) = &result {
                tracing::warn!(error = %e, "I/O request failed");
            }
            let mut d = shared.lock();
            d.last_progress = Instant::now();
            match (process, &result) {
                // A write's process runs until the file's upload is done.
                (Some((_, Process::Write)), Ok(_)) | (None, _) => {}
                (Some((ino, p)), Ok(_)) => {
                    d.report(ino, p, ProcessState::Complete);
                    if p == Process::Sync {
                        d.report(ino, Process::Write, ProcessState::Complete);
                    }
                }
                (Some((ino, p)), Err(_)) => d.report(ino, p, ProcessState::Error),
            }
            if let Some((ino, _)) = process {
                d.forget_states(ino, false);
            }
            if let (Some(l), Ok(IoReply::Object(object))) = (&lease, &result) {
                d.upload_fence = Some((Fence { ino: l.ino, token: l.token }, object.clone()));
            }
            d.core.handle_completion(Instant::now(), io, result);
            d.drain(&shared);
            // The commit ran inline in that drain, if one came.
            d.upload_fence = None;
            if d.core.is_idle() {
                // An unmount may be waiting for exactly this.
                shared.wake.notify_all();
            }
            drop(d);
            if let (Some(l), Some(locks)) = (lease, &locks) {
                locks.release_upload_lease(l);
            }
        })
        .detach();
    }
}
