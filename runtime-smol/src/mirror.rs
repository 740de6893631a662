//! MIRROR (`backend_storage_strategy: MIRROR`): the Tahoe directories under the rootcap follow
//! the tree, so that `tahoe ls` and `tahoe get` on the rootcap show the names and bytes the mount
//! shows, and the grid alone holds a usable copy of the files.
//!
//! The metadata store stays the truth; the Tahoe tree follows it, a little behind:
//! - After each committed transaction the driver asks the [`Planner`] for the Tahoe changes it
//!   implies ([`MirrorOp`]: make a directory, link a file's cap under a name, unlink a name, move
//!   a link — Tahoe's relink, so a renamed directory keeps its subtree). Paths are computed at
//!   commit time, so the queue replays the commits in order.
//! - One thread ([`Mirror`]) performs them in that order. While the gateway is unreachable it
//!   waits and retries (the order matters); a change the gateway refuses is logged, counted and
//!   skipped.
//! - At every mount the thread first walks the whole tree and repairs the differences (what a
//!   crash, a refused change or another host's race left behind), then works through the queue.
//!
//! What Tahoe cannot hold is left out of the Tahoe tree: symlinks, device nodes, FIFOs, sockets
//! and names that are not UTF-8. Empty files are linked as the empty literal cap (`URI:LIT:`).
//! Several hosts each mirror their own changes.

use crate::backends::MetaStore;
use crate::tahoe::{DirPath, Replace, TahoeClient};
use crate::tahoe_json::NodeKind;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use truckeefs_core::{
    FileKind, Ino, IoError, IoErrorKind, IoReply, IoResult, MetaRequest, ObjectId, Txn, TxnOp, ROOT_INO,
};

/// The cap of the empty file (a literal cap holds its bytes, here none).
const EMPTY_FILE: &str = "URI:LIT:";

/// One change to the Tahoe tree. Directories are paths below the rootcap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum MirrorOp {
    Mkdir { dir: Vec<String>, name: String },
    /// Link a file's cap (`None`: the empty file), replacing what is there.
    Link { dir: Vec<String>, name: String, cap: Option<ObjectId> },
    Unlink { dir: Vec<String>, name: String },
    Relink { from: Vec<String>, from_name: String, to: Vec<String>, to_name: String },
}

/// Turns committed transactions into [`MirrorOp`]s. Lives in the driver, which gives it the
/// metadata store for the paths it does not know yet.
#[derive(Default)]
pub(crate) struct Planner {
    /// Where each known directory is: `(parent, name)`.
    dirs: HashMap<Ino, (Ino, Vec<u8>)>,
    /// The contents last linked for a file, so that an update that does not change them (a
    /// chmod, a link count) costs nothing.
    linked: HashMap<Ino, Option<ObjectId>>,
}

/// Bounds the planner's memory; past it, it forgets and looks up again.
const PLANNER_MAX: usize = 100_000;

impl Planner {
    /// Another host changed the tree: directories may have moved.
    pub(crate) fn forget_dirs(&mut self) {
        self.dirs.clear();
    }

    /// The Tahoe changes a committed transaction implies, in the order to perform them.
    pub(crate) fn plan(&mut self, meta: &mut MetaStore, txn: &Txn) -> Vec<MirrorOp> {
        if self.dirs.len() > PLANNER_MAX {
            self.dirs.clear();
        }
        if self.linked.len() > PLANNER_MAX {
            self.linked.clear();
        }
        let mut rows = HashMap::new();
        let mut deletes = Vec::new();
        let mut inserts = Vec::new();
        for op in &txn.ops {
            match op {
                TxnOp::InsertInode(row) | TxnOp::UpdateInode { row, .. } => {
                    rows.insert(row.ino, row);
                }
                TxnOp::DeleteInode { ino } => {
                    self.linked.remove(ino);
                    self.dirs.remove(ino);
                }
                TxnOp::DeleteDentry { parent, name, ino } => deletes.push((*parent, name.as_slice(), *ino)),
                TxnOp::InsertDentry(d) => inserts.push((d.parent, d.name.as_slice(), d.ino)),
                TxnOp::SetXattr { .. } | TxnOp::RemoveXattr { .. } => {}
            }
        }
        // Bring the known directories up to date first: the paths below are the committed ones.
        for (parent, name, ino) in &deletes {
            if self.dirs.get(ino).is_some_and(|(p, n)| p == parent && n == name) {
                self.dirs.remove(ino);
            }
        }
        for (parent, name, ino) in &inserts {
            if rows.get(ino).is_some_and(|r| r.kind == FileKind::Directory) {
                self.dirs.insert(*ino, (*parent, name.to_vec()));
            }
        }
        let moved: Vec<((Ino, &[u8]), (Ino, &[u8]), Ino)> = deletes
            .iter()
            .filter_map(|&(p, n, ino)| {
                let &(tp, tn, _) = inserts.iter().find(|(_, _, i)| *i == ino)?;
                Some(((p, n), (tp, tn), ino))
            })
            .collect();
        let is_moved = |ino: Ino| moved.iter().any(|(_, _, i)| *i == ino);
        let mut ops = Vec::new();
        for &(parent, name, ino) in &deletes {
            if is_moved(ino) {
                continue;
            }
            if let (Some(dir), Some(name)) = (self.dir_path(meta, parent), utf8(name)) {
                ops.push(MirrorOp::Unlink { dir, name });
            }
        }
        // Moves: one relink each; several at once (RENAME_EXCHANGE) go through a temporary
        // name in the target directory, so none lands on a name another still holds.
        let mut second = Vec::new();
        for &((fp, fname), (tp, tname), ino) in &moved {
            let from = self.dir_path(meta, fp).zip(utf8(fname));
            let to = self.dir_path(meta, tp).zip(utf8(tname));
            match (from, to) {
                (Some((from, from_name)), Some((to, to_name))) if moved.len() == 1 => {
                    ops.push(MirrorOp::Relink { from, from_name, to, to_name })
                }
                (Some((from, from_name)), Some((to, to_name))) => {
                    let tmp = format!(".truckeefs-move-{ino}");
                    ops.push(MirrorOp::Relink { from, from_name, to: to.clone(), to_name: tmp.clone() });
                    second.push(MirrorOp::Relink { from: to.clone(), from_name: tmp, to, to_name });
                }
                (Some((dir, name)), None) => ops.push(MirrorOp::Unlink { dir, name }),
                (None, Some((dir, name))) => {
                    if let Some(op) = self.insert(&rows, ino, dir, name) {
                        ops.push(op);
                    }
                }
                (None, None) => {}
            }
        }
        ops.extend(second);
        for &(parent, name, ino) in &inserts {
            if is_moved(ino) {
                continue;
            }
            if let (Some(dir), Some(name)) = (self.dir_path(meta, parent), utf8(name)) {
                if let Some(op) = self.insert(&rows, ino, dir, name) {
                    ops.push(op);
                }
            }
        }
        // New contents of a file (an upload's commit, a truncation to nothing): under each name.
        for row in rows.values() {
            if row.kind != FileKind::Regular
                || row.nlink == 0
                || inserts.iter().any(|(_, _, i)| *i == row.ino)
                || self.linked.get(&row.ino) == Some(&row.object)
            {
                continue;
            }
            let names = match meta.names(row.ino) {
                Ok(names) => names,
                Err(e) => {
                    tracing::warn!(ino = row.ino, error = %e, "mirror: cannot find the names of a file");
                    continue;
                }
            };
            for (parent, name) in names {
                if let (Some(dir), Some(name)) = (self.dir_path(meta, parent), utf8(&name)) {
                    ops.push(MirrorOp::Link { dir, name, cap: row.object.clone() });
                }
            }
            self.linked.insert(row.ino, row.object.clone());
        }
        ops
    }

    /// The op for a new name of `ino`, if Tahoe can hold what it is.
    fn insert(
        &mut self,
        rows: &HashMap<Ino, &truckeefs_core::InodeRow>,
        ino: Ino,
        dir: Vec<String>,
        name: String,
    ) -> Option<MirrorOp> {
        let row = rows.get(&ino)?;
        match row.kind {
            FileKind::Directory => Some(MirrorOp::Mkdir { dir, name }),
            FileKind::Regular => {
                self.linked.insert(ino, row.object.clone());
                Some(MirrorOp::Link { dir, name, cap: row.object.clone() })
            }
            _ => None,
        }
    }

    /// The path of directory `ino` below the root, or `None` if it has no name (removed) or a
    /// part that is not UTF-8.
    fn dir_path(&mut self, meta: &mut MetaStore, mut ino: Ino) -> Option<Vec<String>> {
        let mut parts = Vec::new();
        while ino != ROOT_INO {
            if parts.len() > 4096 {
                tracing::warn!(ino, "mirror: a directory deeper than 4096 levels (or a cycle)");
                return None;
            }
            let (parent, name) = match self.dirs.get(&ino) {
                Some(entry) => entry.clone(),
                None => match meta.names(ino) {
                    Ok(names) => {
                        let entry = names.into_iter().next()?;
                        self.dirs.insert(ino, entry.clone());
                        entry
                    }
                    Err(e) => {
                        tracing::warn!(ino, error = %e, "mirror: cannot find where a directory is");
                        return None;
                    }
                },
            };
            parts.push(utf8(&name)?);
            ino = parent;
        }
        parts.reverse();
        Some(parts)
    }
}

fn utf8(name: &[u8]) -> Option<String> {
    String::from_utf8(name.to_vec()).ok()
}

/// Runs a metadata request for the walk at mount (through the driver, which owns the store).
pub(crate) type Query = Box<dyn Fn(MetaRequest) -> IoResult + Send>;

/// The queue of changes and what `status` shows of it.
#[derive(Default)]
struct State {
    ops: VecDeque<MirrorOp>,
    /// The op being performed (taken off the queue).
    busy: bool,
    /// The walk at mount has finished.
    walked: bool,
    stopping: bool,
    done: u64,
    refused: u64,
    last_error: Option<String>,
    last_progress: Option<Instant>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The thread that keeps the Tahoe tree in line.
pub(crate) struct Mirror {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// How long to wait before trying again while the gateway is unreachable (doubling up to the
/// maximum).
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

impl Mirror {
    pub(crate) fn start(client: Arc<TahoeClient>, rootcap: ObjectId, query: Query) -> std::io::Result<Mirror> {
        let shared = Arc::new(Shared { state: Mutex::new(State::default()), wake: Condvar::new() });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("truckeefs-mirror".into())
            .spawn(move || worker(&s, &client, &rootcap, &query))?;
        Ok(Mirror { shared, thread: Some(thread) })
    }

    pub(crate) fn push(&self, ops: Vec<MirrorOp>) {
        if ops.is_empty() {
            return;
        }
        self.shared.lock().ops.extend(ops);
        self.shared.wake.notify_all();
    }

    /// One line for `status`.
    pub(crate) fn status(&self) -> String {
        let s = self.shared.lock();
        let waiting = s.ops.len() + usize::from(s.busy);
        let mut line = if s.walked {
            format!("{waiting} change(s) waiting, {} done, {} refused by the gateway", s.done, s.refused)
        } else {
            format!("checking the whole tree; {waiting} change(s) waiting")
        };
        if let Some(e) = &s.last_error {
            line.push_str(&format!(" (last error: {e})"));
        }
        line
    }

    /// Waits until the queue is empty, or until nothing has moved for `stall`; then stops.
    pub(crate) fn finish(mut self, stall: Duration) -> Result<(), String> {
        let start = Instant::now();
        let mut s = self.shared.lock();
        let result = loop {
            if s.walked && s.ops.is_empty() && !s.busy {
                break Ok(());
            }
            let since = s.last_progress.unwrap_or(start).max(start);
            if since.elapsed() > stall {
                break Err(format!(
                    "the Tahoe tree (MIRROR) is {} change(s) behind; it is repaired at the next mount",
                    s.ops.len() + usize::from(s.busy)
                ));
            }
            s = self.shared.wake.wait_timeout(s, Duration::from_millis(200)).map(|(g, _)| g).unwrap_or_else(|e| e.into_inner().0);
        };
        drop(s);
        self.stop();
        result
    }

    fn stop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.stop();
    }
}

fn worker(shared: &Shared, client: &TahoeClient, root: &ObjectId, query: &Query) {
    let mut delay = RETRY_FIRST;
    loop {
        match walk(client, root, query, || shared.lock().stopping) {
            Ok(fixed) => {
                tracing::info!(fixed, "mirror: the Tahoe tree matches the metadata");
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "mirror: checking the tree failed; trying again");
                shared.lock().last_error = Some(e.to_string());
                if !sleep(shared, &mut delay) {
                    return;
                }
            }
        }
    }
    shared.lock().walked = true;
    shared.wake.notify_all();
    loop {
        let op = {
            let mut s = shared.lock();
            loop {
                if s.stopping {
                    return;
                }
                if let Some(op) = s.ops.pop_front() {
                    s.busy = true;
                    break op;
                }
                s = shared.wake.wait(s).unwrap_or_else(|e| e.into_inner());
            }
        };
        let mut delay = RETRY_FIRST;
        let mut refused_once = false;
        loop {
            match apply(client, root, &op) {
                Ok(()) => {
                    let mut s = shared.lock();
                    s.done += 1;
                    break;
                }
                Err(e) => {
                    shared.lock().last_error = Some(e.to_string());
                    if client.welcome().is_err() {
                        // Unreachable gateway: wait and try again, keeping the order.
                        tracing::info!(error = %e, "mirror: gateway unreachable; waiting");
                    } else if refused_once
                        || matches!(e.kind, IoErrorKind::NotFound | IoErrorKind::Conflict | IoErrorKind::Corrupt)
                    {
                        // A reachable gateway that refuses: log and go on (the walk at the
                        // next mount repairs what this leaves).
                        tracing::warn!(error = %e, "mirror: the gateway refused a change; skipped");
                        shared.lock().refused += 1;
                        break;
                    } else {
                        refused_once = true;
                    }
                    if !sleep(shared, &mut delay) {
                        return;
                    }
                }
            }
        }
        let mut s = shared.lock();
        s.busy = false;
        s.last_progress = Some(Instant::now());
        drop(s);
        shared.wake.notify_all();
    }
}

/// Sleeps `delay` (doubled for next time); false if told to stop meanwhile.
fn sleep(shared: &Shared, delay: &mut Duration) -> bool {
    let s = shared.lock();
    let (s, _) = shared.wake.wait_timeout_while(s, *delay, |s| !s.stopping).unwrap_or_else(|e| e.into_inner());
    *delay = (*delay * 2).min(RETRY_MAX);
    !s.stopping
}

fn empty_file() -> ObjectId {
    ObjectId(EMPTY_FILE.into())
}

fn apply(client: &TahoeClient, root: &ObjectId, op: &MirrorOp) -> Result<(), IoError> {
    let at = |names| DirPath { cap: root, names };
    match op {
        MirrorOp::Mkdir { dir, name } => client.mkdir_at(at(dir), name).map(drop),
        MirrorOp::Link { dir, name, cap } => {
            client.link_at(at(dir), name, cap.as_ref().unwrap_or(&empty_file()), Replace::Any)
        }
        MirrorOp::Unlink { dir, name } => match client.unlink_at(at(dir), name) {
            Err(e) if e.kind == IoErrorKind::NotFound => Ok(()),
            r => r.map(drop),
        },
        MirrorOp::Relink { from, from_name, to, to_name } => {
            client.relink_at(at(from), from_name, at(to), to_name, Replace::Any)
        }
    }
}

/// What a name should be in Tahoe.
enum Want {
    Dir(Ino),
    File(ObjectId),
}

/// Walks the metadata tree and makes the Tahoe tree match it; returns how many changes that
/// took.
fn walk(client: &TahoeClient, root: &ObjectId, query: &Query, stopping: impl Fn() -> bool) -> Result<u64, IoError> {
    let mut fixed = 0;
    let mut stack: Vec<(Ino, Vec<String>)> = vec![(ROOT_INO, Vec::new())];
    while let Some((ino, path)) = stack.pop() {
        if stopping() {
            return Ok(fixed);
        }
        let entries = match query(MetaRequest::LoadDir { ino })? {
            IoReply::Dir(entries) => entries,
            _ => return Err(IoError::new(IoErrorKind::Other, "mirror: unexpected reply to LoadDir")),
        };
        let here = DirPath { cap: root, names: &path };
        let tahoe = match client.list_at(here) {
            Ok(children) => children,
            Err(e) if e.kind == IoErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        let mut want = BTreeMap::new();
        for (d, inode) in entries {
            let Some(name) = utf8(&d.name) else { continue };
            match inode.row.kind {
                FileKind::Directory => want.insert(name, Want::Dir(inode.row.ino)),
                FileKind::Regular => want.insert(name, Want::File(inode.row.object.unwrap_or_else(empty_file))),
                _ => None,
            };
        }
        for name in tahoe.keys() {
            if !want.contains_key(name) {
                client.unlink_at(here, name)?;
                fixed += 1;
            }
        }
        for (name, w) in want {
            let there = tahoe.get(&name);
            match w {
                Want::Dir(child) => {
                    if !there.is_some_and(|n| n.kind == NodeKind::Dir) {
                        if there.is_some() {
                            client.unlink_at(here, &name)?;
                        }
                        client.mkdir_at(here, &name)?;
                        fixed += 1;
                    }
                    let mut sub = path.clone();
                    sub.push(name);
                    stack.push((child, sub));
                }
                Want::File(cap) => {
                    if !there.is_some_and(|n| n.has_cap(&cap)) {
                        client.link_at(here, &name, &cap, Replace::Any)?;
                        fixed += 1;
                    }
                }
            }
        }
    }
    Ok(fixed)
}
