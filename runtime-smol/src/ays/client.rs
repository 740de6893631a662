//! The aysfs client runtime (`truckeefs ays mount`): drives one [`AysCore`] per mount and
//! performs its effects: Redis pipelines against the local cache and the debug Redis, HTTP
//! requests to the grid caches and the store, and the on-disk blob cache
//! ([`blobs::BlobCache`]) shared by every mount of the process.
//!
//! Like [`crate::driver`]: whoever has an input (the FUSE thread, a blocking-pool thread with a
//! completion, the timer thread) takes the mount's lock, hands it to the core and performs every
//! effect before letting go; I/O runs on the blocking pool and never under the lock.

#[path = "client_blobs.rs"]
pub mod blobs;
#[path = "client_net.rs"]
pub mod net;

pub use blobs::BlobCache;
pub use net::{HttpTarget, RedisTarget};

use crate::ays::proto::{self, StorAnnounce};
use crate::driver::Sink;
use bytes::Bytes;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};
use truckeefs_core::ays::{
    AysCore, AysEffect, AysIo, AysReply, AysResult, BlobOp, HttpServer, LogLevel, MountSpec, RedisServer,
};
use truckeefs_core::{Ctx, IoId, Op, RequestId};

/// The servers one mount talks to (credentials included; never logged).
#[derive(Clone, Debug, Default)]
pub struct MountServers {
    pub local: Option<RedisTarget>,
    pub debug: Option<RedisTarget>,
    pub grids: Vec<HttpTarget>,
    pub store: Option<HttpTarget>,
}

/// What every mount of the process shares: the blob cache, the HTTP client, Redis connections.
pub struct Client {
    pub blobs: BlobCache,
    http: isahc::HttpClient,
    redis: net::RedisPool,
}

impl Client {
    /// `blob_dir`: the blob cache directory; `limit`: its bound in bytes.
    pub fn new(blob_dir: &Path, limit: u64) -> Result<Arc<Client>, String> {
        let blobs = BlobCache::open(blob_dir, limit).map_err(|e| format!("blob cache {}: {e}", blob_dir.display()))?;
        Ok(Arc::new(Client { blobs, http: net::http_client()?, redis: net::RedisPool::default() }))
    }

    /// Tells every grid cache about this client, its stores and its mounts (the design's
    /// announcements; `POST /ays/client/..`, `/ays/stor/..`, `/ays/mount/..`). Failures are
    /// logged, never fatal: a grid cache that is down learns at the next reload.
    pub fn announce(
        &self,
        grids: &[HttpTarget],
        client_id: &str,
        platform: &str,
        stores: &[(String, StorAnnounce)],
        mounts: &[(String, serde_json::Value)],
    ) {
        for g in grids {
            let mut posts: Vec<(String, serde_json::Value)> = Vec::new();
            posts.push((
                proto::url::cache_client(&g.url, client_id),
                serde_json::json!({ "platform": platform }),
            ));
            for (name, s) in stores {
                let body = serde_json::to_value(s).unwrap_or_default();
                posts.push((proto::url::cache_stor(&g.url, name), body));
            }
            for (name, m) in mounts {
                posts.push((proto::url::cache_mount(&g.url, client_id, name), m.clone()));
            }
            let mut ok = 0;
            for (url, body) in &posts {
                match net::post_json(&self.http, g, url, body) {
                    Ok(s) if (200..300).contains(&s) => ok += 1,
                    Ok(s) => tracing::warn!("announce to grid cache {g:?}: {} answered HTTP {s}", proto::redact_url(url)),
                    Err(e) => {
                        tracing::warn!("announce to grid cache {g:?}: {e}");
                        break;
                    }
                }
            }
            if ok == posts.len() {
                tracing::info!(
                    "announced client {client_id:?} ({platform}), {} store(s), {} mount(s) to grid cache {g:?}",
                    stores.len(),
                    mounts.len()
                );
            }
        }
    }
}

/// An open blob or scratch copy, by the core's handle number (shared, so a read needs no
/// `dup` and does not hold the table's lock).
enum OpenFile {
    Blob(Arc<File>),
    Scratch(Arc<File>),
}

impl OpenFile {
    fn file(&self) -> &Arc<File> {
        match self {
            OpenFile::Blob(f) | OpenFile::Scratch(f) => f,
        }
    }
}

/// Reads up to `len` bytes at `offset` (fewer only at the end of the file), into a buffer that
/// is not zeroed first.
fn read_at_most(f: &File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    use std::os::unix::io::AsRawFd;
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    while buf.len() < len {
        let want = len - buf.len();
        let at = offset + buf.len() as u64;
        // SAFETY: pread(2) writes at most `want` bytes into the spare capacity of `buf`, which
        // has room for them; the length is raised only by what it reports written.
        let n = unsafe {
            libc::pread(f.as_raw_fd(), buf.as_mut_ptr().add(buf.len()).cast(), want, at as libc::off_t)
        };
        match n {
            0 => break,
            n if n > 0 => unsafe { buf.set_len(buf.len() + n as usize) },
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(buf)
}

struct Driver {
    core: AysCore,
    servers: Arc<MountServers>,
    sink: Box<dyn Sink>,
    timer_sleeps_until: Option<Instant>,
    stopping: bool,
}

struct Shared {
    driver: Mutex<Driver>,
    wake: Condvar,
    client: Arc<Client>,
    handles: Mutex<HashMap<u64, OpenFile>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Driver> {
        self.driver.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn handles(&self) -> MutexGuard<'_, HashMap<u64, OpenFile>> {
        self.handles.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One running aysfs mount (without its FUSE session, which the front owns).
pub struct AysMount {
    shared: Arc<Shared>,
    timer: Option<JoinHandle<()>>,
}

impl AysMount {
    /// Starts the mount's core (the tree starts loading at once) and its timer thread.
    pub fn start(client: Arc<Client>, spec: MountSpec, servers: MountServers, sink: Box<dyn Sink>) -> Result<AysMount, String> {
        let core = AysCore::new(spec, Instant::now(), SystemTime::now())?;
        let driver = Driver { core, servers: Arc::new(servers), sink, timer_sleeps_until: None, stopping: false };
        let shared = Arc::new(Shared { driver: Mutex::new(driver), wake: Condvar::new(), client, handles: Mutex::new(HashMap::new()) });
        drain(&shared, &mut shared.lock());
        let timer_shared = shared.clone();
        let timer = std::thread::Builder::new()
            .name("ays-timer".into())
            .spawn(move || timer_thread(&timer_shared))
            .map_err(|e| format!("timer thread: {e}"))?;
        Ok(AysMount { shared, timer: Some(timer) })
    }

    pub fn request(&self, id: RequestId, ctx: Ctx, op: Op) {
        let mut d = self.shared.lock();
        d.core.handle_request(Instant::now(), SystemTime::now(), id, ctx, op);
        drain(&self.shared, &mut d);
    }

    /// A changed configuration of this mount (same mount point).
    pub fn reconfigure(&self, spec: MountSpec, servers: MountServers) -> Result<(), String> {
        let mut d = self.shared.lock();
        if *d.core.spec() == spec && format!("{:?}", d.servers) == format!("{servers:?}") && creds_equal(&d.servers, &servers) {
            return Ok(());
        }
        d.servers = Arc::new(servers);
        d.core.reconfigure(Instant::now(), SystemTime::now(), spec)?;
        drain(&self.shared, &mut d);
        Ok(())
    }

    /// The blob cache file behind open handle `fh` (a file opened for reading, not a scratch
    /// copy being written), for the kernel to read from directly (FUSE passthrough).
    pub fn blob_file(&self, fh: u64) -> Option<Arc<File>> {
        match self.shared.handles().get(&fh) {
            Some(OpenFile::Blob(f)) => Some(f.clone()),
            _ => None,
        }
    }

    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.timer.take() {
            let _ = t.join();
        }
        self.shared.handles().clear();
    }
}

impl Drop for AysMount {
    fn drop(&mut self) {
        self.stop();
    }
}

fn creds_equal(a: &MountServers, b: &MountServers) -> bool {
    let r = |x: &Option<RedisTarget>| x.as_ref().map(|t| t.password.clone());
    let h = |x: &HttpTarget| (x.login.clone(), x.password.clone());
    r(&a.local) == r(&b.local)
        && r(&a.debug) == r(&b.debug)
        && a.grids.iter().map(h).eq(b.grids.iter().map(h))
        && a.store.as_ref().map(h) == b.store.as_ref().map(h)
}

fn timer_thread(shared: &Arc<Shared>) {
    let mut d = shared.lock();
    loop {
        if d.stopping {
            return;
        }
        let now = Instant::now();
        match d.core.poll_timeout() {
            Some(at) if at <= now => {
                d.core.handle_timeout(now, SystemTime::now());
                drain(shared, &mut d);
            }
            next => {
                let until = next.unwrap_or(now + Duration::from_secs(3600));
                d.timer_sleeps_until = Some(until);
                let wait = until.saturating_duration_since(now);
                d = shared.wake.wait_timeout(d, wait).map(|(g, _)| g).unwrap_or_else(|e| e.into_inner().0);
                d.timer_sleeps_until = None;
            }
        }
    }
}

/// Performs every effect the core has.
fn drain(shared: &Arc<Shared>, d: &mut Driver) {
    while let Some(effect) = d.core.poll_effect() {
        match effect {
            AysEffect::Reply { id, result } => d.sink.reply(id, result),
            AysEffect::Kernel(n) => d.sink.notice(n),
            AysEffect::Log { level, message } => match level {
                LogLevel::Error => tracing::error!("{message}"),
                LogLevel::Warn => tracing::warn!("{message}"),
                LogLevel::Info => tracing::info!("{message}"),
                LogLevel::Debug => tracing::debug!("{message}"),
            },
            AysEffect::Io { io, request } => spawn_io(shared, d.servers.clone(), io, request),
        }
    }
    if let (Some(next), Some(sleeping)) = (d.core.poll_timeout(), d.timer_sleeps_until) {
        if next < sleeping {
            shared.wake.notify_all();
        }
    }
}

fn spawn_io(shared: &Arc<Shared>, servers: Arc<MountServers>, io: IoId, request: AysIo) {
    let shared = shared.clone();
    smol::unblock(move || {
        let result = execute(&shared, &servers, request);
        let mut d = shared.lock();
        d.core.handle_completion(Instant::now(), SystemTime::now(), io, result);
        drain(&shared, &mut d);
    })
    .detach();
}

fn execute(shared: &Shared, servers: &MountServers, request: AysIo) -> AysResult {
    let client = &shared.client;
    match request {
        AysIo::Redis { server, cmds, into_blob } => {
            let target = match server {
                RedisServer::Local => servers.local.as_ref(),
                RedisServer::Debug => servers.debug.as_ref(),
            };
            let Some(t) = target else { return Err("not configured".into()) };
            client.redis.run(t, &cmds, into_blob, &client.blobs).map(AysReply::Redis)
        }
        AysIo::Http { server, route, into_blob } => {
            let (t, grid) = match server {
                HttpServer::Grid(i) => (servers.grids.get(i), true),
                HttpServer::Store => (servers.store.as_ref(), false),
            };
            let Some(t) = t else { return Err("not configured".into()) };
            net::run_http(&client.http, t, &route, grid, into_blob, &client.blobs)
                .map(|a| AysReply::Http { status: a.status, body: a.body, stored: a.stored })
        }
        AysIo::Blob(op) => blob_op(shared, op),
    }
}

fn blob_op(shared: &Shared, op: BlobOp) -> AysResult {
    let blobs = &shared.client.blobs;
    let e = |e: std::io::Error| format!("blob cache {}: {e}", blobs.dir().display());
    match op {
        BlobOp::Open { handle, md5 } => match blobs.open_blob(md5).map_err(e)? {
            Some((f, len)) => {
                shared.handles().insert(handle, OpenFile::Blob(Arc::new(f)));
                Ok(AysReply::Present(Some(len)))
            }
            None => Ok(AysReply::Present(None)),
        },
        BlobOp::Has { md5 } => Ok(AysReply::Present(blobs.has(md5))),
        BlobOp::Read { handle, offset, len } => {
            let f = match shared.handles().get(&handle) {
                Some(f) => f.file().clone(),
                None => return Err(format!("handle {handle} is not open")),
            };
            let buf = read_at_most(&f, offset, len as usize).map_err(e)?;
            Ok(AysReply::Data(Bytes::from(buf)))
        }
        BlobOp::Close { handle } => {
            shared.handles().remove(&handle);
            Ok(AysReply::Done)
        }
        BlobOp::Scratch { handle, from } => {
            let f = blobs.scratch(from).map_err(e)?;
            shared.handles().insert(handle, OpenFile::Scratch(Arc::new(f)));
            Ok(AysReply::Done)
        }
        BlobOp::Write { handle, offset, data } => {
            let f = scratch_of(shared, handle)?;
            f.write_all_at(&data, offset).map_err(e)?;
            Ok(AysReply::Written(data.len() as u32))
        }
        BlobOp::Truncate { handle, size } => {
            let f = scratch_of(shared, handle)?;
            f.set_len(size).map_err(e)?;
            Ok(AysReply::Done)
        }
        BlobOp::Commit { handle } => {
            let f = scratch_of(shared, handle)?;
            let (md5, len) = blobs.commit_scratch(&f).map_err(e)?;
            Ok(AysReply::Stored { md5, len })
        }
    }
}

fn scratch_of(shared: &Shared, handle: u64) -> Result<Arc<File>, String> {
    match shared.handles().get(&handle) {
        Some(OpenFile::Scratch(f)) => Ok(f.clone()),
        _ => Err(format!("handle {handle} has no scratch copy")),
    }
}
