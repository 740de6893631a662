//! The driver: one thread owns the [`Core`], feeds it requests, completions and timeouts, and
//! performs its effects.
//!
//! Metadata requests run inline on the driver thread, strictly in the order the core emitted
//! them (the core relies on that order). Staging and store requests run on the blocking thread
//! pool and send their completion back through the driver's channel.

use crate::meta_sqlite::SqliteMeta;
use crate::objects::{execute_store, ObjectDir};
use crate::staging::Staging;
use async_channel::{Receiver, Sender};
use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};
use truckeefs_core::{
    Config, Core, Ctx, Effect, Ino, IoId, IoRequest, IoResult, KernelNotice, Op, Reply, RequestId,
};

/// Where a mount keeps its state.
#[derive(Clone, Debug)]
pub struct MountDirs {
    /// Embedded metadata (`meta.sqlite`) and the local object directory (`objects/`).
    pub data_dir: PathBuf,
    /// Staging area and journal (`staging/`).
    pub cache_dir: PathBuf,
}

/// Receives the core's answers; implemented by the FUSE front.
pub trait Sink: Send + 'static {
    fn reply(&self, id: RequestId, result: Result<Reply, i32>);
    fn notice(&self, notice: KernelNotice);
}

enum Input {
    Request { id: RequestId, ctx: Ctx, op: Op, wall: SystemTime },
    Forget { ino: Ino, nlookup: u64 },
    Completion { io: IoId, result: IoResult },
    Shutdown,
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
}

/// A running driver.
pub struct Runtime {
    tx: Sender<Input>,
    thread: Option<JoinHandle<Result<(), String>>>,
    _lock: File,
}

/// How long unmount waits for uploads that make no progress before giving up (the data stays
/// staged and is uploaded at the next mount).
const SHUTDOWN_STALL: Duration = Duration::from_secs(120);

impl Runtime {
    /// Open the stores (errors come back here, before anything is mounted) and start the driver.
    pub fn start(dirs: &MountDirs, config: Config, sink: Box<dyn Sink>) -> Result<Runtime, StartError> {
        for d in [&dirs.data_dir, &dirs.cache_dir] {
            std::fs::create_dir_all(d).map_err(|source| StartError::Dir { path: d.display().to_string(), source })?;
        }
        let lock = lock_dir(&dirs.data_dir)?;
        let meta = SqliteMeta::open(&dirs.data_dir.join("meta.sqlite"))?;
        let objects_dir = dirs.data_dir.join("objects");
        let objects = ObjectDir::open(&objects_dir)
            .map_err(|source| StartError::Dir { path: objects_dir.display().to_string(), source })?;
        let staging_dir = dirs.cache_dir.join("staging");
        let staging = Staging::open(&staging_dir)
            .map_err(|source| StartError::Dir { path: staging_dir.display().to_string(), source })?;
        let (tx, rx) = async_channel::unbounded();
        let driver = Driver {
            core: Core::new(config, Instant::now()),
            meta,
            objects: Arc::new(objects),
            staging: Arc::new(staging),
            tx: tx.clone(),
            sink,
        };
        let thread = std::thread::Builder::new()
            .name("truckeefs-driver".into())
            .spawn(move || smol::block_on(driver.run(rx)))
            .map_err(|source| StartError::Dir { path: "driver thread".into(), source })?;
        Ok(Runtime { tx, thread: Some(thread), _lock: lock })
    }

    pub fn request(&self, id: RequestId, ctx: Ctx, op: Op) {
        let _ = self.tx.send_blocking(Input::Request { id, ctx, op, wall: SystemTime::now() });
    }

    pub fn forget(&self, ino: Ino, nlookup: u64) {
        let _ = self.tx.send_blocking(Input::Forget { ino, nlookup });
    }

    /// Finish every pending upload and stop. Returns an error naming what could not be finished.
    pub fn shutdown(mut self) -> Result<(), String> {
        let _ = self.tx.send_blocking(Input::Shutdown);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err("the driver thread panicked".into()),
            None => Ok(()),
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
    meta: SqliteMeta,
    objects: Arc<ObjectDir>,
    staging: Arc<Staging>,
    tx: Sender<Input>,
    sink: Box<dyn Sink>,
}

impl Driver {
    async fn run(mut self, rx: Receiver<Input>) -> Result<(), String> {
        let mut shutting_down = false;
        let mut last_progress = Instant::now();
        let mut last_status = Instant::now();
        self.drain();
        loop {
            if shutting_down {
                if self.core.is_idle() {
                    tracing::info!("all data uploaded; stopped");
                    return Ok(());
                }
                if last_status.elapsed() > Duration::from_secs(5) {
                    let s = self.core.status();
                    tracing::info!(files = s.dirty_files, bytes = s.dirty_bytes, "unmount: waiting for uploads");
                    last_status = Instant::now();
                }
                if last_progress.elapsed() > SHUTDOWN_STALL {
                    let s = self.core.status();
                    return Err(format!(
                        "{} file(s) could not be uploaded; they stay in the staging area and are uploaded at the next mount",
                        s.dirty_files
                    ));
                }
            }
            let deadline = self.core.poll_timeout();
            let tick = if shutting_down { Some(Instant::now() + Duration::from_secs(1)) } else { None };
            let wake = match (deadline, tick) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let input = match wake {
                Some(at) => {
                    smol::future::or(async { rx.recv().await.ok() }, async {
                        async_io::Timer::at(at).await;
                        None
                    })
                    .await
                }
                None => rx.recv().await.ok(),
            };
            let now = Instant::now();
            match input {
                Some(Input::Request { id, ctx, op, wall }) => {
                    tracing::trace!(?id, ?op, "request");
                    self.core.handle_request(now, wall, id, ctx, op)
                }
                Some(Input::Forget { ino, nlookup }) => self.core.handle_forget(now, ino, nlookup),
                Some(Input::Completion { io, result }) => {
                    last_progress = now;
                    self.core.handle_completion(now, io, result)
                }
                Some(Input::Shutdown) => {
                    shutting_down = true;
                    last_progress = now;
                    self.core.begin_shutdown(now);
                }
                None => self.core.handle_timeout(now),
            }
            self.drain();
        }
    }

    /// Perform every effect; metadata requests complete inline, in order.
    fn drain(&mut self) {
        let mut inline: VecDeque<(IoId, IoResult)> = VecDeque::new();
        loop {
            while let Some(effect) = self.core.poll_effect() {
                match effect {
                    Effect::Reply { id, result } => self.sink.reply(id, result),
                    Effect::Kernel(notice) => self.sink.notice(notice),
                    Effect::Io { io, request: IoRequest::Meta(req) } => {
                        let result = self.meta.execute(&req);
                        if let Err(e) = &result {
                            tracing::error!(error = %e, "metadata store");
                        }
                        inline.push_back((io, result));
                    }
                    Effect::Io { io, request } => self.spawn_io(io, request),
                }
            }
            match inline.pop_front() {
                Some((io, result)) => self.core.handle_completion(Instant::now(), io, result),
                None => return,
            }
        }
    }

    fn spawn_io(&self, io: IoId, request: IoRequest) {
        let tx = self.tx.clone();
        let objects = self.objects.clone();
        let staging = self.staging.clone();
        smol::unblock(move || {
            let result = match &request {
                IoRequest::Staging(r) => staging.execute(r, &objects),
                IoRequest::Store(r) => execute_store(&objects, &staging, r),
                IoRequest::Meta(_) => unreachable!("metadata requests run inline"),
            };
            if let Err(e) = &result {
                tracing::warn!(error = %e, "local I/O");
            }
            let _ = tx.send_blocking(Input::Completion { io, result });
        })
        .detach();
    }
}
