//! [`AysCore`]: the pure state machine of one aysfs mount.
//!
//! Inputs: kernel requests ([`AysCore::handle_request`]), I/O completions
//! ([`AysCore::handle_completion`]) and timeouts ([`AysCore::handle_timeout`]); time and wall
//! time are arguments. Outputs: [`AysEffect`]s drained with [`AysCore::poll_effect`].
//!
//! - The tree is loaded whole when the mount starts (and again after a reload that changes what
//!   it shows) through the chain: the local cache (`HGETALL md:$ays_id`), each grid cache (a walk
//!   of `GET /md/...` one directory at a time), the store (`GET S/md/{ays_id}`). Requests wait
//!   until the first tree is in; a later reload keeps serving the old tree until the new one is.
//! - Opening a file makes sure its blob is in the runtime's blob cache (fetched through the
//!   chain, verified by md5, written back into the faster layers that missed it), then reads are
//!   answered from the cache. A blob that no layer has intact fails the open with EIO and a log
//!   line naming every layer and what it answered.
//! - The debug overlay: see [`crate::ays::overlay`]. Every other change gives EROFS.

use crate::ays::chain::{Attempt, Fetch, Goods, Layer, LayerNames, Layers};
use crate::ays::expiry::{self, blob_atime_key, MD_ATIME_KEY};
use crate::ays::overlay::Overlay;
use crate::ays::tree::{NodeKind, Tree};
use crate::ays::value::{
    child_path, listings_from_fields, parse_md_answer, parse_tree_json, tree_json, FileMeta, Listings, Md5,
    EMPTY_MD5,
};
use crate::ays::{
    Arg, AysEffect, AysIo, AysReply, AysResult, BlobOp, HttpServer, LogLevel, RedisCmd, RedisServer, RedisValue,
    Route,
};
use crate::op::{KernelNotice, Op, Reply, StatFs};
use crate::types::{Ctx, Ino, IoId, RequestId, Timespec, ROOT_INO};
use bytes::Bytes;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime};

/// The grid caches are asked to fetch what they miss from the store and keep it.
const FETCH_MODE: u8 = 1;
/// After a failed first tree load, requests fail at once for this long before a new try.
const TREE_RETRY: Duration = Duration::from_secs(5);

/// Everything the core needs to know about one mount (from the client configuration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountSpec {
    /// The mount's name: in the grid routes and the debug key names.
    pub name: String,
    pub client_id: String,
    pub ays_id: String,
    /// The directory of the tree shown at the mount point (`remote`; `/` for all of it).
    pub root: String,
    /// `dedupe_domain`.
    pub domain: String,
    pub layers: Layers,
    pub names: LayerNames,
    /// Hours since the last fetch after which the local cache drops a blob (0 = never).
    pub local_expiration_hours: u64,
    /// `debug_filter` when the mount has a `debug` Redis.
    pub debug_filters: Option<Vec<String>>,
    pub prefetch: bool,
    /// Blobs fetched at once by the prefetch.
    pub prefetch_parallel: usize,
    /// Directories asked for at once while walking a grid cache's tree.
    pub walk_parallel: usize,
    /// Read-ahead: opening a file fetches the blobs of the files a walk reads after it (the rest
    /// of its directory in name order, the order of `readdir`, then the next directories: see
    /// [`Tree::files_after`]), at most this many files (0: no read-ahead) ...
    pub readahead_files: usize,
    /// ... and this many bytes (the file that reaches them included, so at least one) ...
    pub readahead_bytes: u64,
    /// ... with this many fetches at once.
    pub readahead_parallel: usize,
}

impl MountSpec {
    /// Whether `other` shows a different tree (the tree must be loaded again).
    fn tree_differs(&self, other: &MountSpec) -> bool {
        self.ays_id != other.ays_id
            || self.root != other.root
            || self.layers != other.layers
            || self.client_id != other.client_id
            || self.name != other.name
    }
}

/// What an in-flight I/O is for.
#[derive(Debug)]
enum IoFor {
    /// Nothing waits for it (write-backs, atime records, deletions, close).
    Ignore(&'static str),
    TreeLocal { gen: u64 },
    TreeGrid { gen: u64, walk: u64, dir: String },
    TreeStore { gen: u64 },
    DebugPaths { gen: u64 },
    BlobLayer { md5: Md5, layer: Layer },
    /// A blob opened under `fh` (`second`: after a fetch).
    OpenBlob { fh: u64, second: bool },
    /// `HGET debug:paths:$mount path` before opening.
    DebugPathAtOpen { fh: u64 },
    /// The scratch copy of a write handle.
    Scratch { fh: u64 },
    Read { id: RequestId },
    Write { id: RequestId, fh: u64, end: u64 },
    Truncate { id: RequestId, fh: u64, size: u64 },
    Commit { fh: u64, seq: u64 },
    /// `at`: the write time published in `debug:times` (and shown as the file's mtime).
    Publish { fh: u64, seq: u64, md5: Md5, len: u64, at: Timespec },
    PrefetchHas { md5: Md5, size: u64, debug: bool },
    AheadHas { md5: Md5, size: u64, path: String },
    SweepScan,
}

/// What to do once a write handle's data is published (or failed to be).
#[derive(Debug, Clone, Copy)]
enum AfterCommit {
    Reply(RequestId),
    Release(RequestId),
}

#[derive(Debug)]
struct Handle {
    ino: Ino,
    path: String,
    /// The blob this handle reads (`EMPTY_MD5` for empty), or the last published content.
    md5: Md5,
    size: u64,
    executable: bool,
    write: Option<WriteState>,
    /// The request waiting for this handle to be opened.
    opening: Option<Opening>,
}

#[derive(Debug)]
struct Opening {
    id: RequestId,
    /// Reply `Created` with this inode's attributes instead of `Opened`.
    created: bool,
}

#[derive(Debug, Default)]
struct WriteState {
    /// Bumped by every change; `published` is the last one published.
    seq: u64,
    published: u64,
    /// Requests waiting for a commit in flight (so two flushes do not publish twice).
    committing: Option<u64>,
    waiting: Vec<AfterCommit>,
}

/// A tree being loaded.
#[derive(Debug)]
struct TreeLoad {
    gen: u64,
    fetch: Fetch,
    walk: Option<Walk>,
}

/// A walk of a grid cache's tree, one directory at a time.
#[derive(Debug)]
struct Walk {
    id: u64,
    grid: usize,
    queue: VecDeque<String>,
    in_flight: usize,
    got: Listings,
}

#[derive(Debug, Clone, Copy)]
enum Waiter {
    Open { fh: u64 },
    Prefetch { size: u64 },
    Ahead,
}

#[derive(Debug)]
struct BlobFetch {
    fetch: Fetch,
    size: u64,
    path: String,
    waiters: Vec<Waiter>,
}

#[derive(Debug)]
struct Prefetch {
    gen: u64,
    queue: Vec<(Md5, u64, bool)>,
    in_flight: usize,
    total_files: u64,
    total_bytes: u64,
    done_files: u64,
    done_bytes: u64,
    failed: u64,
    last_decile: u64,
}

/// Read-ahead of the files after the one opened last (see [`MountSpec::readahead_files`]).
#[derive(Debug, Default)]
struct Readahead {
    /// Blobs to make sure of next, in order; replaced by each open.
    queue: VecDeque<(Md5, u64, String)>,
    in_flight: usize,
    /// Blobs read ahead already (found in the blob cache or fetched), so a reader going through
    /// a directory does not have them checked again; bounded by [`AHEAD_SEEN_MAX`].
    seen: HashSet<Md5>,
}

/// Forget the blobs read ahead past this many (they are then merely checked again).
const AHEAD_SEEN_MAX: usize = 65_536;
/// Directories after a file's own that its read-ahead window may reach into (a walk goes on
/// into the next directory; a tree of many empty directories must not make an open slow).
const AHEAD_DIRS_MAX: usize = 16;

#[derive(Debug)]
enum TreeState {
    /// Nothing loaded yet; requests wait.
    Loading,
    Ready,
    /// The first load failed at this time; requests fail until a retry.
    Failed(Instant),
}

/// The state machine of one aysfs mount.
pub struct AysCore {
    spec: MountSpec,
    overlay: Option<Overlay>,
    tree: Tree,
    state: TreeState,
    /// Where the tree came from (named in log lines about malformed values).
    tree_source: Option<Layer>,
    gen: u64,
    load: Option<TreeLoad>,
    next_walk: u64,
    parked: Vec<(RequestId, Ctx, Op, SystemTime)>,
    effects: VecDeque<AysEffect>,
    next_io: u64,
    ios: HashMap<IoId, IoFor>,
    fetches: HashMap<Md5, BlobFetch>,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    prefetch: Option<Prefetch>,
    ahead: Readahead,
    sweep_at: Option<Instant>,
    /// The last wall time seen, in epoch seconds (for atime records and log entries).
    wall: i64,
    /// The same, whole (for the times of debug writes).
    wall_ts: Timespec,
    /// The last time seen.
    now: Instant,
}

fn epoch(wall: SystemTime) -> i64 {
    Timespec::from_system(wall).sec
}

fn is_writable(flags: i32) -> bool {
    flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0
}

impl AysCore {
    /// A mount that starts loading its tree at once. `Err`: a `debug_filter` is not a regex.
    pub fn new(spec: MountSpec, now: Instant, wall: SystemTime) -> Result<AysCore, String> {
        let overlay = match &spec.debug_filters {
            Some(f) => Some(Overlay::new(&spec.name, f)?),
            None => None,
        };
        let mut core = AysCore {
            overlay,
            tree: Tree::new(Timespec::from_system(wall)),
            state: TreeState::Loading,
            tree_source: None,
            gen: 0,
            load: None,
            next_walk: 0,
            parked: Vec::new(),
            effects: VecDeque::new(),
            next_io: 1,
            ios: HashMap::new(),
            fetches: HashMap::new(),
            handles: HashMap::new(),
            next_fh: 1,
            prefetch: None,
            ahead: Readahead::default(),
            sweep_at: None,
            wall: epoch(wall),
            wall_ts: Timespec::from_system(wall),
            now,
            spec,
        };
        core.start_load(now);
        if core.spec.layers.local && core.spec.local_expiration_hours > 0 {
            core.sweep_at = Some(now);
        }
        Ok(core)
    }

    pub fn spec(&self) -> &MountSpec {
        &self.spec
    }

    /// Applies a changed configuration of this mount. Open files keep reading what they opened;
    /// a different tree is loaded in the background and replaces the old one when it is in.
    pub fn reconfigure(&mut self, now: Instant, wall: SystemTime, spec: MountSpec) -> Result<(), String> {
        let overlay = match &spec.debug_filters {
            Some(f) => Some(Overlay::new(&spec.name, f)?),
            None => None,
        };
        self.wall = epoch(wall);
        self.wall_ts = Timespec::from_system(wall);
        self.now = now;
        let reload = self.spec.tree_differs(&spec);
        let prefetch_now = spec.prefetch && !self.spec.prefetch;
        let sweep = spec.layers.local && spec.local_expiration_hours > 0;
        self.spec = spec;
        self.overlay = overlay;
        if !sweep {
            self.sweep_at = None;
        } else if self.sweep_at.is_none() {
            self.sweep_at = Some(now);
        }
        if reload {
            self.log(LogLevel::Info, format!("mount {}: configuration changed; loading the tree again", self.spec.name));
            self.start_load(now);
        } else if prefetch_now && matches!(self.state, TreeState::Ready) {
            self.start_prefetch();
        }
        Ok(())
    }

    pub fn poll_effect(&mut self) -> Option<AysEffect> {
        self.effects.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sweep_at
    }

    /// Whether nothing is in flight (no I/O, no parked request).
    pub fn is_idle(&self) -> bool {
        self.ios.is_empty() && self.parked.is_empty()
    }

    pub fn handle_timeout(&mut self, now: Instant, wall: SystemTime) {
        self.wall = epoch(wall);
        self.wall_ts = Timespec::from_system(wall);
        self.now = now;
        if self.sweep_at.is_some_and(|t| t <= now) {
            let hours = self.spec.local_expiration_hours;
            self.sweep_at = Some(now + Duration::from_secs(expiry::sweep_interval_secs(hours)));
            let cmds = vec![
                RedisCmd::new(["HGETALL".into(), blob_atime_key(&self.spec.domain).into()]),
                RedisCmd::new(["HGETALL".into(), MD_ATIME_KEY.into()]),
            ];
            self.redis(RedisServer::Local, cmds, None, IoFor::SweepScan);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Effects

    fn log(&mut self, level: LogLevel, message: String) {
        self.effects.push_back(AysEffect::Log { level, message });
    }

    fn reply(&mut self, id: RequestId, result: Result<Reply, i32>) {
        self.effects.push_back(AysEffect::Reply { id, result });
    }

    fn io(&mut self, request: AysIo, why: IoFor) {
        let io = IoId(self.next_io);
        self.next_io += 1;
        self.ios.insert(io, why);
        self.effects.push_back(AysEffect::Io { io, request });
    }

    fn redis(&mut self, server: RedisServer, cmds: Vec<RedisCmd>, into_blob: Option<Md5>, why: IoFor) {
        self.io(AysIo::Redis { server, cmds, into_blob }, why);
    }

    fn http(&mut self, server: HttpServer, route: Route, into_blob: Option<Md5>, why: IoFor) {
        self.io(AysIo::Http { server, route, into_blob }, why);
    }

    fn blob(&mut self, op: BlobOp, why: IoFor) {
        self.io(AysIo::Blob(op), why);
    }

    fn md_key(&self) -> String {
        format!("md:{}", self.spec.ays_id)
    }

    fn files_key(&self) -> String {
        format!("files:{}", self.spec.domain)
    }

    // -----------------------------------------------------------------------------------------
    // Loading the tree

    fn start_load(&mut self, _now: Instant) {
        self.gen += 1;
        let fetch = Fetch::new(self.spec.layers.order(false));
        self.load = Some(TreeLoad { gen: self.gen, fetch, walk: None });
        if !matches!(self.state, TreeState::Ready) {
            self.state = TreeState::Loading;
        }
        self.try_tree_layer();
    }

    fn try_tree_layer(&mut self) {
        let Some(load) = &self.load else { return };
        let gen = load.gen;
        match load.fetch.current() {
            None => self.tree_failed(),
            Some(Layer::Local) => {
                let cmds = vec![RedisCmd::new(["HGETALL".into(), self.md_key().into()])];
                self.redis(RedisServer::Local, cmds, None, IoFor::TreeLocal { gen });
            }
            Some(Layer::Grid(i)) => {
                self.next_walk += 1;
                let walk = Walk {
                    id: self.next_walk,
                    grid: i,
                    queue: VecDeque::from([self.spec.root.clone()]),
                    in_flight: 0,
                    got: Listings::new(),
                };
                if let Some(l) = self.load.as_mut() {
                    l.walk = Some(walk);
                }
                self.pump_walk();
            }
            Some(Layer::Store) => {
                let route = Route::StoreMd { ays_id: self.spec.ays_id.clone() };
                self.http(HttpServer::Store, route, None, IoFor::TreeStore { gen });
            }
            Some(Layer::Debug) => {
                // Trees never come from the debug overlay.
                self.tree_attempt(Attempt::Missing);
            }
        }
    }

    fn pump_walk(&mut self) {
        let parallel = self.spec.walk_parallel.max(1);
        let mut sends = Vec::new();
        let Some(load) = self.load.as_mut() else { return };
        let gen = load.gen;
        let Some(w) = load.walk.as_mut() else { return };
        while w.in_flight < parallel {
            let Some(dir) = w.queue.pop_front() else { break };
            w.in_flight += 1;
            sends.push((w.grid, w.id, dir));
        }
        let done = w.in_flight == 0 && w.queue.is_empty();
        for (grid, walk, dir) in sends {
            let route = Route::CacheMd {
                client: self.spec.client_id.clone(),
                mount: self.spec.name.clone(),
                dir: dir.clone(),
                fetch: FETCH_MODE,
            };
            self.http(HttpServer::Grid(grid), route, None, IoFor::TreeGrid { gen, walk, dir });
        }
        if done {
            let Some(w) = self.load.as_mut().and_then(|l| l.walk.take()) else { return };
            let layer = Layer::Grid(w.grid);
            self.tree_found(layer, w.got);
        }
    }

    fn tree_attempt(&mut self, a: Attempt) {
        if let Some(l) = self.load.as_mut() {
            l.walk = None;
            l.fetch.record(a);
        }
        self.try_tree_layer();
    }

    fn tree_failed(&mut self) {
        let Some(load) = self.load.take() else { return };
        let msg = format!(
            "mount {}: the tree {:?} is in no layer: {}",
            self.spec.name,
            self.spec.ays_id,
            load.fetch.summary(&self.spec.names)
        );
        self.log(LogLevel::Error, msg);
        match self.state {
            TreeState::Ready => {
                self.log(LogLevel::Warn, format!("mount {}: still showing the previous tree", self.spec.name));
            }
            _ => {
                self.state = TreeState::Failed(self.now);
                for (id, _, _, _) in std::mem::take(&mut self.parked) {
                    self.reply(id, Err(libc::EIO));
                }
            }
        }
    }

    fn tree_found(&mut self, layer: Layer, listings: Listings) {
        let Some(load) = self.load.as_ref() else { return };
        let gen = load.gen;
        let whole = self.spec.root == "/";
        let targets = load.fetch.write_back(layer, Goods::Tree { whole });
        for t in targets {
            match t {
                Layer::Local => {
                    let mut args: Vec<Arg> = vec!["HSET".into(), self.md_key().into()];
                    for (path, l) in &listings {
                        if l.broken.is_none() {
                            args.push(path.clone().into());
                            args.push(l.files_json().into());
                        }
                    }
                    if args.len() > 2 {
                        let cmds = vec![RedisCmd(args), self.md_touch()];
                        self.redis(RedisServer::Local, cmds, None, IoFor::Ignore("tree write-back"));
                    }
                }
                Layer::Grid(i) => {
                    let route = Route::PutStoreMd {
                        ays_id: self.spec.ays_id.clone(),
                        body: Bytes::from(tree_json(&listings).into_bytes()),
                    };
                    self.http(HttpServer::Grid(i), route, None, IoFor::Ignore("tree write-back"));
                }
                _ => {}
            }
        }
        if layer == Layer::Local {
            let cmds = vec![self.md_touch()];
            self.redis(RedisServer::Local, cmds, None, IoFor::Ignore("tree atime"));
        }
        let dirs = listings.len();
        let files: usize = listings.values().map(|l| l.files.len()).sum();
        let name = self.spec.names.name(layer).to_string();
        self.log(
            LogLevel::Info,
            format!("mount {}: tree {:?} loaded from {name}: {dirs} directories, {files} files", self.spec.name, self.spec.ays_id),
        );
        let first = !matches!(self.state, TreeState::Ready);
        let touched = self.tree.install(&listings, &self.spec.root);
        self.tree_source = Some(layer);
        if !first {
            for name in touched {
                self.effects.push_back(AysEffect::Kernel(KernelNotice::InvalEntry { parent: ROOT_INO, name: name.into_bytes() }));
            }
            self.effects.push_back(AysEffect::Kernel(KernelNotice::InvalInode { ino: ROOT_INO }));
        }
        if self.overlay.is_some() {
            let key = self.overlay.as_ref().map(Overlay::paths_key).unwrap_or_default();
            let times = self.overlay.as_ref().map(Overlay::times_key).unwrap_or_default();
            let cmds = vec![RedisCmd::new(["HGETALL".into(), key.into()]), RedisCmd::new(["HGETALL".into(), times.into()])];
            self.redis(RedisServer::Debug, cmds, None, IoFor::DebugPaths { gen });
        } else {
            self.tree_ready(gen);
        }
    }

    fn md_touch(&self) -> RedisCmd {
        RedisCmd::new(["HSET".into(), MD_ATIME_KEY.into(), self.spec.ays_id.clone().into(), self.wall.to_string().into()])
    }

    fn tree_ready(&mut self, gen: u64) {
        if self.load.as_ref().is_some_and(|l| l.gen == gen) {
            self.load = None;
        }
        self.state = TreeState::Ready;
        for (id, ctx, op, wall) in std::mem::take(&mut self.parked) {
            self.run(id, ctx, op, wall);
        }
        if self.spec.prefetch {
            self.start_prefetch();
        }
    }

    /// Shows the debug overlay's files (`pairs`: `debug:paths`, field and value in turn) with
    /// their write times (`times`: `debug:times`, likewise; a path without one shows the mount
    /// time).
    fn apply_debug_paths(&mut self, pairs: &[Vec<u8>], times: &[Vec<u8>]) {
        let Some(overlay) = self.overlay.clone() else { return };
        let mut written: HashMap<&[u8], &[u8]> = HashMap::new();
        for c in times.chunks(2) {
            if let [path, value] = c {
                written.insert(path, value);
            }
        }
        let mut applied = 0;
        for c in pairs.chunks(2) {
            let [path, value] = c else { continue };
            let (Ok(path), Ok(value)) = (std::str::from_utf8(path), std::str::from_utf8(value)) else { continue };
            if !overlay.matches(path) {
                continue;
            }
            let Ok(meta) = FileMeta::parse(value) else {
                self.log(LogLevel::Warn, format!("debug redis: {}: {path}: bad value {value:?}", overlay.paths_key()));
                continue;
            };
            let ino = match self.tree.by_path(path) {
                Some(ino) => {
                    let exec = match self.tree.get(ino).map(|n| &n.kind) {
                        Some(NodeKind::File { meta: Ok(m), .. }) => m.executable,
                        Some(NodeKind::File { .. }) => false,
                        _ => continue,
                    };
                    self.tree.set_file(ino, FileMeta { executable: exec || meta.executable, ..meta }, true);
                    ino
                }
                None => {
                    let Some((parent, name)) = crate::ays::value::split_parent(path) else { continue };
                    let Some(p) = self.tree.by_path(parent) else { continue };
                    match self.tree.add_file(p, name, meta, true) {
                        Ok(ino) => ino,
                        Err(_) => continue,
                    }
                }
            };
            applied += 1;
            if let Some(t) = written.get(path.as_bytes()) {
                match std::str::from_utf8(t).ok().and_then(Overlay::parse_time) {
                    Some(t) => self.tree.set_written(ino, t),
                    None => {
                        let shown = String::from_utf8_lossy(t);
                        let key = overlay.times_key();
                        self.log(LogLevel::Warn, format!("debug redis: {key}: {path}: bad time {shown:?}; showing the mount time"));
                    }
                }
            }
        }
        if applied > 0 {
            self.log(LogLevel::Info, format!("mount {}: {applied} file(s) shown from the debug overlay", self.spec.name));
        }
    }

    // -----------------------------------------------------------------------------------------
    // Requests

    pub fn handle_request(&mut self, now: Instant, wall: SystemTime, id: RequestId, ctx: Ctx, op: Op) {
        self.wall = epoch(wall);
        self.wall_ts = Timespec::from_system(wall);
        self.now = now;
        match &op {
            // These need handles only, never the tree.
            Op::Release { .. } | Op::Flush { .. } | Op::Fsync { .. } | Op::Read { .. } | Op::ReleaseDir { .. } | Op::FsyncDir { .. } => {
                return self.run(id, ctx, op, wall);
            }
            _ => {}
        }
        match self.state {
            TreeState::Ready => self.run(id, ctx, op, wall),
            TreeState::Loading => self.parked.push((id, ctx, op, wall)),
            TreeState::Failed(at) => {
                if self.load.is_some() {
                    self.parked.push((id, ctx, op, wall));
                } else if now.saturating_duration_since(at) >= TREE_RETRY {
                    self.parked.push((id, ctx, op, wall));
                    self.start_load(now);
                } else {
                    self.reply(id, Err(libc::EIO));
                }
            }
        }
    }

    fn run(&mut self, id: RequestId, _ctx: Ctx, op: Op, _wall: SystemTime) {
        let result = match op {
            Op::Lookup { parent, name } => self.tree.lookup(parent, &name).and_then(|ino| self.attr(ino)).map(Reply::Entry),
            Op::GetAttr { ino } => self.attr(ino).map(Reply::Attr),
            Op::SetAttr { ino, fh, set } => return self.setattr(id, ino, fh, set),
            Op::Open { ino, flags } => return self.open(id, ino, flags),
            Op::Create { parent, name, mode, flags, .. } => return self.create(id, parent, &name, mode, flags),
            Op::Read { fh, offset, size, .. } => return self.read(id, fh, offset, size),
            Op::Write { fh, offset, data, .. } => return self.write(id, fh, offset, data),
            Op::Flush { fh, .. } | Op::Fsync { fh, .. } => return self.commit(fh, AfterCommit::Reply(id)),
            Op::Release { fh, .. } => return self.commit(fh, AfterCommit::Release(id)),
            Op::OpenDir { ino, .. } => match self.tree.get(ino).map(|n| &n.kind) {
                Some(NodeKind::Dir { broken: Some(why), .. }) => {
                    let (why, from) = (why.clone(), self.tree_source.map(|l| self.spec.names.name(l).to_string()).unwrap_or_default());
                    self.log(LogLevel::Error, format!("mount {}: {why} (metadata from {from})", self.spec.name));
                    Err(libc::EIO)
                }
                Some(NodeKind::Dir { .. }) => Ok(Reply::Opened { fh: 0, keep_cache: true, stale_attrs: false }),
                Some(_) => Err(libc::ENOTDIR),
                None => Err(libc::ENOENT),
            },
            Op::ReadDir { ino, offset, plus, .. } => self.tree.readdir(ino, offset, plus).map(|mut entries| {
                for e in entries.iter_mut() {
                    if let Some(a) = e.attr.as_mut() {
                        a.size = self.open_size(e.ino).unwrap_or(a.size);
                    }
                }
                Reply::Dir(entries)
            }),
            Op::ReleaseDir { .. } | Op::FsyncDir { .. } => Ok(Reply::Empty),
            Op::StatFs => {
                let (files, bytes) = self.tree.usage();
                Ok(Reply::StatFs(StatFs {
                    blocks: bytes.div_ceil(4096),
                    bfree: 0,
                    bavail: 0,
                    files,
                    ffree: 0,
                    bsize: 4096,
                    namelen: 255,
                    frsize: 4096,
                }))
            }
            Op::GetXattr { ino, .. } => self.attr(ino).and(Err(libc::ENODATA)),
            Op::ListXattr { ino, size } => {
                self.attr(ino).map(|_| if size == 0 { Reply::XattrSize(0) } else { Reply::XattrData(Bytes::new()) })
            }
            Op::Access { ino, mask } => self.access(ino, mask),
            Op::ReadLink { .. } => Err(libc::EINVAL),
            Op::GetLk { .. } | Op::SetLk { .. } | Op::CopyFileRange { .. } => Err(libc::ENOSYS),
            Op::Fallocate { .. } => Err(libc::EOPNOTSUPP),
            Op::MkNod { .. }
            | Op::MkDir { .. }
            | Op::Unlink { .. }
            | Op::RmDir { .. }
            | Op::Symlink { .. }
            | Op::Link { .. }
            | Op::Rename { .. }
            | Op::SetXattr { .. }
            | Op::RemoveXattr { .. } => Err(libc::EROFS),
        };
        self.reply(id, result);
    }

    /// The size of a file being written (its scratch copy), if a write handle has it open.
    fn open_size(&self, ino: Ino) -> Option<u64> {
        self.handles.values().filter(|h| h.ino == ino && h.write.is_some()).map(|h| h.size).max()
    }

    fn attr(&self, ino: Ino) -> Result<crate::types::Attr, i32> {
        let mut a = self.tree.attr(ino).ok_or(libc::ENOENT)?;
        if let Some(s) = self.open_size(ino) {
            a.size = s;
            a.blocks = s.div_ceil(512);
        }
        Ok(a)
    }

    fn in_overlay(&self, path: &str) -> bool {
        self.overlay.as_ref().is_some_and(|o| o.matches(path))
    }

    fn access(&self, ino: Ino, mask: i32) -> Result<Reply, i32> {
        let node = self.tree.get(ino).ok_or(libc::ENOENT)?;
        if mask & libc::W_OK != 0 {
            let writable = match node.kind {
                NodeKind::Dir { .. } => self.overlay.is_some(),
                NodeKind::File { .. } => self.in_overlay(&node.path),
            };
            if !writable {
                return Err(libc::EROFS);
            }
        }
        Ok(Reply::Empty)
    }

    fn setattr(&mut self, id: RequestId, ino: Ino, fh: Option<u64>, set: crate::op::SetAttr) {
        let Some(node) = self.tree.get(ino) else { return self.reply(id, Err(libc::ENOENT)) };
        if set.mode.is_some() || set.uid.is_some() || set.gid.is_some() {
            return self.reply(id, Err(libc::EROFS));
        }
        let overlay = self.in_overlay(&node.path.clone());
        let times = set.atime.is_some() || set.mtime.is_some() || set.ctime.is_some();
        if let Some(size) = set.size {
            let handle = fh
                .filter(|f| self.handles.get(f).is_some_and(|h| h.ino == ino && h.write.is_some()))
                .or_else(|| self.handles.iter().find(|(_, h)| h.ino == ino && h.write.is_some()).map(|(f, _)| *f));
            let Some(fh) = handle else {
                // A path truncate with no open write handle: not supported, even in the overlay.
                return self.reply(id, Err(libc::EROFS));
            };
            self.bump(fh);
            return self.blob(BlobOp::Truncate { handle: fh, size }, IoFor::Truncate { id, fh, size });
        }
        if times && !overlay {
            return self.reply(id, Err(libc::EROFS));
        }
        // Times of overlay files are not kept (every file carries the mount time).
        let r = self.attr(ino).map(Reply::Attr);
        self.reply(id, r)
    }

    fn bump(&mut self, fh: u64) -> u64 {
        match self.handles.get_mut(&fh).and_then(|h| h.write.as_mut()) {
            Some(w) => {
                w.seq += 1;
                w.seq
            }
            None => 0,
        }
    }

    fn open(&mut self, id: RequestId, ino: Ino, flags: i32) {
        let Some(node) = self.tree.get(ino) else { return self.reply(id, Err(libc::ENOENT)) };
        let path = node.path.clone();
        let meta = match &node.kind {
            NodeKind::Dir { .. } => return self.reply(id, Ok(Reply::Opened { fh: 0, keep_cache: true, stale_attrs: false })),
            NodeKind::File { meta, .. } => meta.clone(),
        };
        let overlay = self.in_overlay(&path);
        let writable = is_writable(flags);
        if writable && !overlay {
            return self.reply(id, Err(libc::EROFS));
        }
        let meta = match meta {
            Ok(m) => m,
            Err(e) if !overlay => {
                let from = self.tree_source.map(|l| self.spec.names.name(l).to_string()).unwrap_or_default();
                self.log(LogLevel::Error, format!("mount {}: {e} (metadata from {from})", self.spec.name));
                return self.reply(id, Err(libc::EIO));
            }
            Err(_) => FileMeta { md5: EMPTY_MD5, size: 0, executable: false },
        };
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(
            fh,
            Handle {
                ino,
                path: path.clone(),
                md5: meta.md5,
                size: meta.size,
                executable: meta.executable,
                write: writable.then(WriteState::default),
                opening: Some(Opening { id, created: false }),
            },
        );
        if overlay {
            let key = self.overlay.as_ref().map(Overlay::paths_key).unwrap_or_default();
            let cmds = vec![RedisCmd::new(["HGET".into(), key.into(), path.into()])];
            self.redis(RedisServer::Debug, cmds, None, IoFor::DebugPathAtOpen { fh });
        } else {
            self.open_blob(fh);
            self.read_ahead(ino);
        }
    }

    fn create(&mut self, id: RequestId, parent: Ino, name: &[u8], mode: u32, flags: i32) {
        let Some(pnode) = self.tree.get(parent) else { return self.reply(id, Err(libc::ENOENT)) };
        let Ok(name) = std::str::from_utf8(name) else { return self.reply(id, Err(libc::EROFS)) };
        let path = child_path(&pnode.path, name);
        if !self.in_overlay(&path) {
            return self.reply(id, Err(libc::EROFS));
        }
        let ino = match self.tree.lookup(parent, name.as_bytes()) {
            Ok(_) if flags & libc::O_EXCL != 0 => return self.reply(id, Err(libc::EEXIST)),
            Ok(ino) => ino,
            Err(libc::ENOENT) => {
                let meta = FileMeta { md5: EMPTY_MD5, size: 0, executable: mode & 0o111 != 0 };
                match self.tree.add_file(parent, name, meta, true) {
                    Ok(ino) => ino,
                    Err(e) => return self.reply(id, Err(e)),
                }
            }
            Err(e) => return self.reply(id, Err(e)),
        };
        if !matches!(self.tree.get(ino).map(|n| &n.kind), Some(NodeKind::File { .. })) {
            return self.reply(id, Err(libc::EISDIR));
        }
        let fh = self.next_fh;
        self.next_fh += 1;
        let exec = mode & 0o111 != 0;
        // A created file is published on flush even if nothing is written (seq 1 > published 0).
        let write = WriteState { seq: 1, ..Default::default() };
        self.handles.insert(
            fh,
            Handle {
                ino,
                path,
                md5: EMPTY_MD5,
                size: 0,
                executable: exec,
                write: Some(write),
                opening: Some(Opening { id, created: true }),
            },
        );
        self.blob(BlobOp::Scratch { handle: fh, from: None }, IoFor::Scratch { fh });
    }

    /// Opens the handle's blob (or its scratch copy), fetching the blob first if needed.
    fn open_blob(&mut self, fh: u64) {
        let Some(h) = self.handles.get(&fh) else { return };
        let (md5, size, writable) = (h.md5, h.size, h.write.is_some());
        if md5 == EMPTY_MD5 && size == 0 {
            if writable {
                return self.blob(BlobOp::Scratch { handle: fh, from: None }, IoFor::Scratch { fh });
            }
            return self.opened(fh);
        }
        self.blob(BlobOp::Open { handle: fh, md5 }, IoFor::OpenBlob { fh, second: false });
    }

    fn opened(&mut self, fh: u64) {
        let Some(h) = self.handles.get_mut(&fh) else { return };
        let Some(o) = h.opening.take() else { return };
        let ino = h.ino;
        let overlay = self.in_overlay(&self.handles[&fh].path.clone());
        let result = if o.created {
            self.attr(ino).map(|attr| Reply::Created { attr, fh })
        } else {
            Ok(Reply::Opened { fh, keep_cache: !overlay, stale_attrs: false })
        };
        self.reply(o.id, result);
    }

    fn open_failed(&mut self, fh: u64, errno: i32) {
        if let Some(h) = self.handles.remove(&fh) {
            if let Some(o) = h.opening {
                self.reply(o.id, Err(errno));
            }
            self.blob(BlobOp::Close { handle: fh }, IoFor::Ignore("close"));
        }
    }

    fn read(&mut self, id: RequestId, fh: u64, offset: u64, size: u32) {
        let Some(h) = self.handles.get(&fh) else { return self.reply(id, Err(libc::EBADF)) };
        if offset >= h.size {
            return self.reply(id, Ok(Reply::Data(Bytes::new())));
        }
        if h.write.is_none() && h.md5 == EMPTY_MD5 {
            return self.reply(id, Ok(Reply::Data(Bytes::new())));
        }
        let len = (h.size - offset).min(size as u64) as u32;
        self.blob(BlobOp::Read { handle: fh, offset, len }, IoFor::Read { id });
    }

    fn write(&mut self, id: RequestId, fh: u64, offset: u64, data: Bytes) {
        match self.handles.get(&fh) {
            None => return self.reply(id, Err(libc::EBADF)),
            Some(h) if h.write.is_none() => return self.reply(id, Err(libc::EBADF)),
            Some(_) => {}
        }
        let end = offset.saturating_add(data.len() as u64);
        self.bump(fh);
        self.blob(BlobOp::Write { handle: fh, offset, data }, IoFor::Write { id, fh, end });
    }

    /// Flush, fsync or release: publish a write handle's changes to the debug Redis first.
    fn commit(&mut self, fh: u64, then: AfterCommit) {
        let state = match self.handles.get(&fh) {
            None => {
                let errno = if matches!(then, AfterCommit::Release(_)) || fh == 0 { 0 } else { libc::EBADF };
                return self.after_commit(fh, then, if errno == 0 { Ok(()) } else { Err(errno) });
            }
            Some(h) => h.write.as_ref().map(|w| (w.seq, w.published, w.committing)),
        };
        match state {
            None => self.after_commit(fh, then, Ok(())),
            Some((seq, published, _)) if seq == published => self.after_commit(fh, then, Ok(())),
            Some((_, _, Some(_))) => {
                if let Some(w) = self.handles.get_mut(&fh).and_then(|h| h.write.as_mut()) {
                    w.waiting.push(then);
                }
            }
            Some((seq, _, None)) => {
                if let Some(w) = self.handles.get_mut(&fh).and_then(|h| h.write.as_mut()) {
                    w.committing = Some(seq);
                    w.waiting.push(then);
                }
                self.blob(BlobOp::Commit { handle: fh }, IoFor::Commit { fh, seq });
            }
        }
    }

    fn after_commit(&mut self, fh: u64, then: AfterCommit, result: Result<(), i32>) {
        match then {
            AfterCommit::Reply(id) => self.reply(id, result.map(|_| Reply::Empty)),
            AfterCommit::Release(id) => {
                if self.handles.remove(&fh).is_some() {
                    self.blob(BlobOp::Close { handle: fh }, IoFor::Ignore("close"));
                }
                self.reply(id, Ok(Reply::Empty));
            }
        }
    }

    fn commit_done(&mut self, fh: u64, seq: u64, result: Result<(), i32>) {
        let Some(w) = self.handles.get_mut(&fh).and_then(|h| h.write.as_mut()) else { return };
        w.committing = None;
        if result.is_ok() {
            w.published = w.published.max(seq);
        }
        let waiting = std::mem::take(&mut w.waiting);
        let more = w.seq != w.published;
        for then in waiting {
            // Changes made while this commit was in flight are published by a new one.
            if more && result.is_ok() {
                self.commit(fh, then);
            } else {
                self.after_commit(fh, then, result);
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Blobs through the chain

    fn ensure_blob(&mut self, md5: Md5, size: u64, path: String, debug: bool, waiter: Waiter) {
        if let Some(f) = self.fetches.get_mut(&md5) {
            f.waiters.push(waiter);
            return;
        }
        let fetch = Fetch::new(self.spec.layers.order(debug && self.overlay.is_some()));
        self.fetches.insert(md5, BlobFetch { fetch, size, path, waiters: vec![waiter] });
        self.try_blob_layer(md5);
    }

    fn try_blob_layer(&mut self, md5: Md5) {
        let Some(f) = self.fetches.get(&md5) else { return };
        let layer = f.fetch.current();
        let why = |layer| IoFor::BlobLayer { md5, layer };
        match layer {
            None => self.blob_failed(md5),
            Some(Layer::Debug) => {
                let key = self.overlay.as_ref().map(Overlay::files_key).unwrap_or_default();
                let cmds = vec![RedisCmd::new(["HGET".into(), key.into(), md5.hex().into()])];
                self.redis(RedisServer::Debug, cmds, Some(md5), why(Layer::Debug));
            }
            Some(Layer::Local) => {
                let cmds = vec![RedisCmd::new(["HGET".into(), self.files_key().into(), md5.hex().into()])];
                self.redis(RedisServer::Local, cmds, Some(md5), why(Layer::Local));
            }
            Some(Layer::Grid(i)) => {
                let route = Route::CacheBlob { domain: self.spec.domain.clone(), md5, fetch: FETCH_MODE };
                self.http(HttpServer::Grid(i), route, Some(md5), why(Layer::Grid(i)));
            }
            Some(Layer::Store) => {
                let route = Route::StoreBlob { domain: self.spec.domain.clone(), md5 };
                self.http(HttpServer::Store, route, Some(md5), why(Layer::Store));
            }
        }
    }

    fn blob_answer(&mut self, md5: Md5, layer: Layer, result: AysResult) {
        let stored = match result {
            Ok(AysReply::Redis(values)) => match values.last() {
                Some(RedisValue::Stored { md5, len }) => Ok(Some((*md5, *len))),
                Some(RedisValue::Nil) | None => Ok(None),
                Some(other) => Err(format!("unexpected answer {other:?}")),
            },
            Ok(AysReply::Http { status: 200, stored: Some(s), .. }) => Ok(Some(s)),
            Ok(AysReply::Http { status: 404, .. }) => Ok(None),
            Ok(AysReply::Http { status, .. }) => Err(format!("HTTP status {status}")),
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(e) => Err(e),
        };
        let attempt = match stored {
            Ok(Some((actual, len))) if actual == md5 => return self.blob_found(md5, layer, len),
            Ok(Some((actual, len))) => {
                let path = self.fetches.get(&md5).map(|f| f.path.clone()).unwrap_or_default();
                let msg = format!("its copy of {len} bytes hashes to {actual}");
                let lname = self.spec.names.name(layer).to_string();
                self.log(
                    LogLevel::Warn,
                    format!("mount {}: blob {md5} ({path}): corrupt copy in {lname}: {msg}; trying the next layer", self.spec.name),
                );
                Attempt::Corrupt(msg)
            }
            Ok(None) => Attempt::Missing,
            Err(e) => Attempt::Failed(e),
        };
        if let Some(f) = self.fetches.get_mut(&md5) {
            f.fetch.record(attempt);
        }
        self.try_blob_layer(md5);
    }

    fn blob_found(&mut self, md5: Md5, layer: Layer, len: u64) {
        let Some(f) = self.fetches.remove(&md5) else { return };
        let targets = f.fetch.write_back(layer, Goods::Blob);
        let now = self.wall.to_string();
        let atime_key = blob_atime_key(&self.spec.domain);
        for t in &targets {
            match t {
                Layer::Local => {
                    let cmds = vec![
                        RedisCmd::new(["HSET".into(), self.files_key().into(), md5.hex().into(), Arg::Blob(md5)]),
                        RedisCmd::new(["HSET".into(), atime_key.clone().into(), md5.hex().into(), now.clone().into()]),
                    ];
                    self.redis(RedisServer::Local, cmds, None, IoFor::Ignore("blob write-back"));
                }
                Layer::Grid(i) => {
                    let route = Route::PutStoreBlob { domain: self.spec.domain.clone(), md5 };
                    self.http(HttpServer::Grid(*i), route, None, IoFor::Ignore("blob write-back"));
                }
                _ => {}
            }
        }
        if layer == Layer::Local {
            let cmds = vec![RedisCmd::new(["HSET".into(), atime_key.into(), md5.hex().into(), now.into()])];
            self.redis(RedisServer::Local, cmds, None, IoFor::Ignore("blob atime"));
        }
        let back: Vec<String> = targets.iter().map(|t| self.spec.names.name(*t).to_string()).collect();
        let lname = self.spec.names.name(layer).to_string();
        let msg = if back.is_empty() {
            format!("mount {}: blob {md5} ({}, {len} bytes) from {lname}", self.spec.name, f.path)
        } else {
            format!("mount {}: blob {md5} ({}, {len} bytes) from {lname}; written back into {}", self.spec.name, f.path, back.join(", "))
        };
        self.log(LogLevel::Debug, msg);
        for w in f.waiters {
            match w {
                Waiter::Open { fh } => self.blob(BlobOp::Open { handle: fh, md5 }, IoFor::OpenBlob { fh, second: true }),
                Waiter::Prefetch { size } => self.prefetch_done(size, true),
                Waiter::Ahead => self.ahead_done(),
            }
        }
    }

    fn blob_failed(&mut self, md5: Md5) {
        let Some(f) = self.fetches.remove(&md5) else { return };
        let msg = format!(
            "mount {}: blob {md5} ({}, {} bytes) is in no layer intact: {}",
            self.spec.name,
            f.path,
            f.size,
            f.fetch.summary(&self.spec.names)
        );
        self.log(LogLevel::Error, msg);
        for w in f.waiters {
            match w {
                Waiter::Open { fh } => self.open_failed(fh, libc::EIO),
                Waiter::Prefetch { size } => self.prefetch_done(size, false),
                Waiter::Ahead => self.ahead_done(),
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Read-ahead

    /// After `ino` was opened: fetch the blobs of the files after it in its directory, so a
    /// reader going through the directory finds them in the blob cache (and several blobs are
    /// received and hashed at once). The window counts every file after `ino`, fetched or not,
    /// so it slides with the reader instead of growing.
    fn read_ahead(&mut self, ino: Ino) {
        let (files_max, bytes_max) = (self.spec.readahead_files, self.spec.readahead_bytes);
        if files_max == 0 {
            return;
        }
        let mut queue = VecDeque::new();
        let (mut files, mut bytes) = (0usize, 0u64);
        for (_, n) in self.tree.files_after(ino, AHEAD_DIRS_MAX) {
            let NodeKind::File { meta: Ok(m), debug: false } = &n.kind else { continue };
            if m.md5 == EMPTY_MD5 || self.in_overlay(&n.path) {
                continue;
            }
            // The file that reaches the bytes ends the window, itself included: a large file
            // after small ones is fetched while the reader is still on them (stopping before it
            // would leave it to the file just before it, with no overlap left).
            if files >= files_max || (files > 0 && bytes >= bytes_max) {
                break;
            }
            files += 1;
            bytes = bytes.saturating_add(m.size);
            if !self.ahead.seen.contains(&m.md5) && !self.fetches.contains_key(&m.md5) {
                queue.push_back((m.md5, m.size, n.path.clone()));
            }
        }
        self.ahead.queue = queue;
        self.pump_ahead();
    }

    fn pump_ahead(&mut self) {
        while self.ahead.in_flight < self.spec.readahead_parallel.max(1) {
            let Some((md5, size, path)) = self.ahead.queue.pop_front() else { return };
            if self.fetches.contains_key(&md5) || !self.ahead.seen.insert(md5) {
                continue;
            }
            if self.ahead.seen.len() > AHEAD_SEEN_MAX {
                self.ahead.seen.clear();
            }
            self.ahead.in_flight += 1;
            self.blob(BlobOp::Has { md5 }, IoFor::AheadHas { md5, size, path });
        }
    }

    fn ahead_done(&mut self) {
        self.ahead.in_flight = self.ahead.in_flight.saturating_sub(1);
        self.pump_ahead();
    }

    // -----------------------------------------------------------------------------------------
    // Prefetch

    fn start_prefetch(&mut self) {
        let mut seen = BTreeSet::new();
        let mut queue = Vec::new();
        let mut bytes = 0;
        for (ino, _, m) in self.tree.files() {
            if m.md5 == EMPTY_MD5 || !seen.insert(m.md5) {
                continue;
            }
            let debug = matches!(self.tree.get(ino).map(|n| &n.kind), Some(NodeKind::File { debug: true, .. }));
            bytes += m.size;
            queue.push((m.md5, m.size, debug));
        }
        queue.reverse();
        let total = queue.len() as u64;
        self.log(LogLevel::Info, format!("prefetch {}: {total} blobs, {bytes} bytes", self.spec.name));
        self.prefetch = Some(Prefetch {
            gen: self.gen,
            queue,
            in_flight: 0,
            total_files: total,
            total_bytes: bytes,
            done_files: 0,
            done_bytes: 0,
            failed: 0,
            last_decile: 0,
        });
        self.pump_prefetch();
    }

    fn pump_prefetch(&mut self) {
        let parallel = self.spec.prefetch_parallel.max(1);
        loop {
            let Some(p) = self.prefetch.as_mut() else { return };
            if p.gen != self.gen && p.in_flight == 0 {
                self.prefetch = None;
                return;
            }
            if p.in_flight == 0 && p.queue.is_empty() {
                let (n, b, failed) = (p.done_files, p.done_bytes, p.failed);
                self.prefetch = None;
                let level = if failed > 0 { LogLevel::Warn } else { LogLevel::Info };
                self.log(
                    level,
                    format!("prefetch {}: done: {n} blobs, {b} bytes in the blob cache, {failed} failed", self.spec.name),
                );
                return;
            }
            if p.in_flight >= parallel || p.gen != self.gen {
                return;
            }
            let Some((md5, size, debug)) = p.queue.pop() else { return };
            p.in_flight += 1;
            self.blob(BlobOp::Has { md5 }, IoFor::PrefetchHas { md5, size, debug });
        }
    }

    fn prefetch_done(&mut self, size: u64, ok: bool) {
        let Some(p) = self.prefetch.as_mut() else { return };
        p.in_flight = p.in_flight.saturating_sub(1);
        p.done_files += 1;
        if ok {
            p.done_bytes += size;
        } else {
            p.failed += 1;
        }
        let decile = (p.done_files * 10).checked_div(p.total_files).unwrap_or(10);
        let progress = (decile > p.last_decile && p.done_files < p.total_files).then(|| {
            p.last_decile = decile;
            format!("prefetch {}: {}/{} blobs, {}/{} bytes", self.spec.name, p.done_files, p.total_files, p.done_bytes, p.total_bytes)
        });
        if let Some(m) = progress {
            self.log(LogLevel::Info, m);
        }
        self.pump_prefetch();
    }

    // -----------------------------------------------------------------------------------------
    // Completions

    pub fn handle_completion(&mut self, now: Instant, wall: SystemTime, io: IoId, result: AysResult) {
        self.wall = epoch(wall);
        self.wall_ts = Timespec::from_system(wall);
        self.now = now;
        let Some(why) = self.ios.remove(&io) else {
            debug_assert!(false, "completion of an unknown I/O {io:?}");
            return;
        };
        match why {
            IoFor::Ignore(what) => {
                if let Err(e) = result {
                    self.log(LogLevel::Debug, format!("mount {}: {what}: {e}", self.spec.name));
                }
            }
            IoFor::TreeLocal { gen } => {
                if self.load.as_ref().is_none_or(|l| l.gen != gen) {
                    return;
                }
                let attempt = match result {
                    Ok(AysReply::Redis(v)) => match v.first() {
                        Some(RedisValue::Array(a)) if a.is_empty() => Attempt::Missing,
                        Some(RedisValue::Array(a)) => {
                            let pairs = flat_bytes(a);
                            let fields: Vec<(&str, &[u8])> = pairs
                                .chunks(2)
                                .filter(|c| c.len() == 2)
                                .filter_map(|c| Some((std::str::from_utf8(&c[0]).ok()?, c[1].as_slice())))
                                .collect();
                            let (l, warnings) = listings_from_fields(fields, &self.spec.root);
                            self.warn_all(Layer::Local, warnings);
                            match l {
                                Some(l) => return self.tree_found(Layer::Local, l),
                                None => Attempt::Missing,
                            }
                        }
                        other => Attempt::Failed(format!("unexpected answer {other:?}")),
                    },
                    Ok(other) => Attempt::Failed(format!("unexpected answer {other:?}")),
                    Err(e) => Attempt::Failed(e),
                };
                self.tree_attempt(attempt);
            }
            IoFor::TreeGrid { gen, walk, dir } => self.walk_answer(gen, walk, dir, result),
            IoFor::TreeStore { gen } => {
                if self.load.as_ref().is_none_or(|l| l.gen != gen) {
                    return;
                }
                let attempt = match result {
                    Ok(AysReply::Http { status: 200, body, .. }) => match parse_tree_json(&body, &self.spec.root) {
                        Ok((Some(l), w)) => {
                            self.warn_all(Layer::Store, w);
                            return self.tree_found(Layer::Store, l);
                        }
                        Ok((None, _)) => Attempt::Missing,
                        Err(e) => Attempt::Failed(e),
                    },
                    Ok(AysReply::Http { status: 404, .. }) => Attempt::Missing,
                    Ok(AysReply::Http { status, .. }) => Attempt::Failed(format!("HTTP status {status}")),
                    Ok(other) => Attempt::Failed(format!("unexpected answer {other:?}")),
                    Err(e) => Attempt::Failed(e),
                };
                self.tree_attempt(attempt);
            }
            IoFor::DebugPaths { gen } => {
                match result {
                    Ok(AysReply::Redis(v)) => {
                        if let Some(RedisValue::Array(a)) = v.first() {
                            let pairs = flat_bytes(a);
                            let times = match v.get(1) {
                                Some(RedisValue::Array(t)) => flat_bytes(t),
                                _ => Vec::new(),
                            };
                            self.apply_debug_paths(&pairs, &times);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let n = self.spec.names.debug.clone();
                        self.log(
                            LogLevel::Warn,
                            format!("mount {}: debug redis {n}: cannot read the debug paths: {e}", self.spec.name),
                        );
                    }
                }
                self.tree_ready(gen);
            }
            IoFor::BlobLayer { md5, layer } => self.blob_answer(md5, layer, result),
            IoFor::OpenBlob { fh, second } => {
                let Some(h) = self.handles.get(&fh) else { return };
                let (md5, size, path, writable) = (h.md5, h.size, h.path.clone(), h.write.is_some());
                match result {
                    Ok(AysReply::Present(Some(len))) if len == size => {
                        if writable {
                            self.blob(BlobOp::Scratch { handle: fh, from: Some(md5) }, IoFor::Scratch { fh });
                        } else {
                            self.opened(fh);
                        }
                    }
                    Ok(AysReply::Present(Some(len))) => {
                        self.log(
                            LogLevel::Error,
                            format!("mount {}: {path}: the metadata says {size} bytes but blob {md5} has {len}", self.spec.name),
                        );
                        self.open_failed(fh, libc::EIO);
                    }
                    Ok(AysReply::Present(None)) if !second => {
                        let debug = self.in_overlay(&path)
                            && matches!(self.tree.get(self.handles[&fh].ino).map(|n| &n.kind), Some(NodeKind::File { debug: true, .. }));
                        self.ensure_blob(md5, size, path, debug, Waiter::Open { fh });
                    }
                    other => {
                        let e = match other {
                            Err(e) => e,
                            Ok(r) => format!("unexpected answer {r:?}"),
                        };
                        self.log(LogLevel::Error, format!("mount {}: {path}: blob cache: {e}", self.spec.name));
                        self.open_failed(fh, libc::EIO);
                    }
                }
            }
            IoFor::DebugPathAtOpen { fh } => {
                let Some(h) = self.handles.get_mut(&fh) else { return };
                match result {
                    Ok(AysReply::Redis(v)) => {
                        if let Some(RedisValue::Data(d)) = v.first() {
                            match std::str::from_utf8(d).ok().map(FileMeta::parse) {
                                Some(Ok(m)) => {
                                    h.md5 = m.md5;
                                    h.size = m.size;
                                    h.executable |= m.executable;
                                    let (ino, exec) = (h.ino, h.executable);
                                    self.tree.set_file(ino, FileMeta { executable: exec || m.executable, ..m }, true);
                                }
                                _ => {
                                    let path = h.path.clone();
                                    self.log(LogLevel::Warn, format!("mount {}: debug redis: bad value for {path}", self.spec.name));
                                }
                            }
                        }
                        self.open_blob(fh);
                    }
                    Ok(_) | Err(_) => {
                        let path = h.path.clone();
                        let e = match result {
                            Err(e) => e,
                            Ok(r) => format!("unexpected answer {r:?}"),
                        };
                        let n = self.spec.names.debug.clone();
                        self.log(LogLevel::Error, format!("mount {}: {path}: debug redis {n}: {e}", self.spec.name));
                        self.open_failed(fh, libc::EIO);
                    }
                }
            }
            IoFor::Scratch { fh } => match result {
                Ok(_) => self.opened(fh),
                Err(e) => {
                    let path = self.handles.get(&fh).map(|h| h.path.clone()).unwrap_or_default();
                    self.log(LogLevel::Error, format!("mount {}: {path}: scratch copy: {e}", self.spec.name));
                    self.open_failed(fh, libc::EIO);
                }
            },
            IoFor::Read { id } => match result {
                Ok(AysReply::Data(d)) => self.reply(id, Ok(Reply::Data(d))),
                other => {
                    let e = match other {
                        Err(e) => e,
                        Ok(r) => format!("unexpected answer {r:?}"),
                    };
                    self.log(LogLevel::Error, format!("mount {}: read from the blob cache: {e}", self.spec.name));
                    self.reply(id, Err(libc::EIO));
                }
            },
            IoFor::Write { id, fh, end, .. } => match result {
                Ok(AysReply::Written(n)) => {
                    if let Some(h) = self.handles.get_mut(&fh) {
                        h.size = h.size.max(end);
                    }
                    self.reply(id, Ok(Reply::Written(n)))
                }
                _ => self.reply(id, Err(libc::EIO)),
            },
            IoFor::Truncate { id, fh, size, .. } => match result {
                Ok(_) => {
                    let ino = match self.handles.get_mut(&fh) {
                        Some(h) => {
                            h.size = size;
                            h.ino
                        }
                        None => return self.reply(id, Err(libc::EBADF)),
                    };
                    let r = self.attr(ino).map(Reply::Attr);
                    self.reply(id, r);
                }
                Err(_) => self.reply(id, Err(libc::EIO)),
            },
            IoFor::Commit { fh, seq } => match result {
                Ok(AysReply::Stored { md5, len }) => {
                    let Some(h) = self.handles.get(&fh) else { return };
                    let Some(o) = self.overlay.clone() else { return self.commit_done(fh, seq, Err(libc::EROFS)) };
                    let path = h.path.clone();
                    let entry = Overlay::log_entry(self.wall, &path, md5);
                    let at = self.wall_ts;
                    let cmds = vec![
                        RedisCmd::new(["HSET".into(), o.files_key().into(), md5.hex().into(), Arg::Blob(md5)]),
                        RedisCmd::new([
                            "HSET".into(),
                            o.paths_key().into(),
                            path.clone().into(),
                            crate::ays::value::debug_path_value(md5, len, h.executable).into(),
                        ]),
                        RedisCmd::new(["HSET".into(), o.times_key().into(), path.into(), Overlay::time_value(at).into()]),
                        RedisCmd::new(["RPUSH".into(), o.log_key().into(), entry.into()]),
                    ];
                    self.redis(RedisServer::Debug, cmds, None, IoFor::Publish { fh, seq, md5, len, at });
                }
                other => {
                    let e = match other {
                        Err(e) => e,
                        Ok(r) => format!("unexpected answer {r:?}"),
                    };
                    self.log(LogLevel::Error, format!("mount {}: hashing a written file: {e}", self.spec.name));
                    self.commit_done(fh, seq, Err(libc::EIO));
                }
            },
            IoFor::Publish { fh, seq, md5, len, at } => match result {
                Ok(AysReply::Redis(_)) => {
                    if let Some(h) = self.handles.get_mut(&fh) {
                        h.md5 = md5;
                        let (ino, exec, path) = (h.ino, h.executable, h.path.clone());
                        self.tree.set_file(ino, FileMeta { md5, size: len, executable: exec }, true);
                        self.tree.set_written(ino, at);
                        self.effects.push_back(AysEffect::Kernel(KernelNotice::InvalInode { ino }));
                        let n = self.spec.names.debug.clone();
                        self.log(LogLevel::Info, format!("mount {}: debug write {path}: {md5}, {len} bytes, into debug redis {n}", self.spec.name));
                    }
                    self.commit_done(fh, seq, Ok(()));
                }
                other => {
                    let e = match other {
                        Err(e) => e,
                        Ok(r) => format!("unexpected answer {r:?}"),
                    };
                    let path = self.handles.get(&fh).map(|h| h.path.clone()).unwrap_or_default();
                    let n = self.spec.names.debug.clone();
                    self.log(LogLevel::Error, format!("mount {}: debug write {path}: debug redis {n}: {e}", self.spec.name));
                    self.commit_done(fh, seq, Err(libc::EIO));
                }
            },
            IoFor::AheadHas { md5, size, path } => match result {
                Ok(AysReply::Present(Some(_))) => self.ahead_done(),
                _ => self.ensure_blob(md5, size, path, false, Waiter::Ahead),
            },
            IoFor::PrefetchHas { md5, size, debug } => match result {
                Ok(AysReply::Present(Some(_))) => self.prefetch_done(size, true),
                _ => self.ensure_blob(md5, size, format!("prefetch of {}", self.spec.name), debug, Waiter::Prefetch { size }),
            },
            IoFor::SweepScan => {
                let Ok(AysReply::Redis(v)) = result else {
                    if let Err(e) = result {
                        self.log(LogLevel::Warn, format!("mount {}: expiry sweep of the local cache: {e}", self.spec.name));
                    }
                    return;
                };
                let hours = self.spec.local_expiration_hours;
                let blobs = match v.first() {
                    Some(RedisValue::Array(a)) => expiry::sweep(&flat_bytes(a), self.wall, hours),
                    _ => Vec::new(),
                };
                let trees = match v.get(1) {
                    Some(RedisValue::Array(a)) => expiry::sweep(&flat_bytes(a), self.wall, hours),
                    _ => Vec::new(),
                };
                let mut cmds = Vec::new();
                if !blobs.is_empty() {
                    let fields = || blobs.iter().map(|f| Arg::Bytes(Bytes::copy_from_slice(f)));
                    let files = ["HDEL".into(), self.files_key().into()].into_iter().chain(fields());
                    cmds.push(RedisCmd::new(files));
                    let at = ["HDEL".into(), blob_atime_key(&self.spec.domain).into()].into_iter().chain(fields());
                    cmds.push(RedisCmd::new(at));
                }
                for t in &trees {
                    let id = String::from_utf8_lossy(t).into_owned();
                    cmds.push(RedisCmd::new(["DEL".into(), format!("md:{id}").into()]));
                    cmds.push(RedisCmd::new(["HDEL".into(), MD_ATIME_KEY.into(), id.into()]));
                }
                if !cmds.is_empty() {
                    self.log(
                        LogLevel::Info,
                        format!(
                            "mount {}: local cache {}: {} blob(s) and {} tree(s) unused for more than {hours} hours expired",
                            self.spec.name,
                            self.spec.names.local,
                            blobs.len(),
                            trees.len()
                        ),
                    );
                    self.redis(RedisServer::Local, cmds, None, IoFor::Ignore("expiry"));
                }
            }
        }
    }

    fn walk_answer(&mut self, gen: u64, walk: u64, dir: String, result: AysResult) {
        let current = self
            .load
            .as_ref()
            .filter(|l| l.gen == gen)
            .and_then(|l| l.walk.as_ref())
            .is_some_and(|w| w.id == walk);
        if !current {
            return;
        }
        let is_root = dir == self.spec.root;
        let outcome = match result {
            Ok(AysReply::Http { status: 200, body, .. }) => match parse_md_answer(&body) {
                Ok((listing, warnings)) => {
                    let grid = self.load.as_ref().and_then(|l| l.walk.as_ref()).map_or(0, |w| w.grid);
                    self.warn_all(Layer::Grid(grid), warnings.into_iter().map(|w| format!("directory {dir:?}: {w}")).collect());
                    Ok(listing)
                }
                Err(e) => Err(Attempt::Failed(format!("directory {dir:?}: {e}"))),
            },
            Ok(AysReply::Http { status: 404, .. }) if is_root => Err(Attempt::Missing),
            Ok(AysReply::Http { status: 404, .. }) => Err(Attempt::Failed(format!("directory {dir:?} is listed but missing"))),
            Ok(AysReply::Http { status, .. }) => Err(Attempt::Failed(format!("HTTP status {status}"))),
            Ok(other) => Err(Attempt::Failed(format!("unexpected answer {other:?}"))),
            Err(e) => Err(Attempt::Failed(e)),
        };
        match outcome {
            Ok(listing) => {
                if let Some(w) = self.load.as_mut().and_then(|l| l.walk.as_mut()) {
                    w.in_flight -= 1;
                    for d in &listing.dirs {
                        w.queue.push_back(child_path(&dir, d));
                    }
                    w.got.insert(dir, listing);
                }
                self.pump_walk();
            }
            Err(a) => self.tree_attempt(a),
        }
    }

    fn warn_all(&mut self, layer: Layer, warnings: Vec<String>) {
        let n = self.spec.names.name(layer).to_string();
        for w in warnings.into_iter().take(20) {
            self.log(LogLevel::Warn, format!("mount {}: metadata from {n}: {w}", self.spec.name));
        }
    }
}

/// The byte strings of a flat Redis array (HGETALL's field, value, field, value ...).
fn flat_bytes(a: &[RedisValue]) -> Vec<Vec<u8>> {
    a.iter()
        .map(|v| match v {
            RedisValue::Data(d) => d.to_vec(),
            RedisValue::Status(s) => s.clone().into_bytes(),
            RedisValue::Int(i) => i.to_string().into_bytes(),
            _ => Vec::new(),
        })
        .collect()
}
