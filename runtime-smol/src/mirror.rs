//! MIRROR (`backend_storage_strategy: MIRROR`): the Tahoe directories under the rootcap follow
//! the tree, so that `tahoe ls` and `tahoe get` on the rootcap show the names and bytes the mount
//! shows, and the grid alone holds a usable copy of the files.
//!
//! The metadata store stays the truth; the Tahoe tree follows it, a little behind, one directory
//! at a time:
//! - After each committed transaction the driver asks the [`Planner`] which directories it
//!   changed: the parents of every name added or removed, and the directories naming a file
//!   whose contents changed (an upload's commit).
//! - One thread ([`Mirror`]) brings each such directory in line: it reads the directory from the
//!   metadata store and from Tahoe, links what is missing or different (files by their caps,
//!   subdirectories by the caps of their Tahoe directories, all in one `set_children`) and
//!   unlinks what is gone. A renamed directory is linked by its cap under its new name, so it
//!   keeps its Tahoe subtree (Tahoe's relink, in two steps). Changes arriving while a directory
//!   waits are folded into one pass: a name created and removed in between never reaches Tahoe.
//! - While the gateway is unreachable the thread waits and tries again; a directory the gateway
//!   refuses is logged, counted and skipped.
//! - At every mount the thread first walks the whole tree the same way, which repairs whatever
//!   a crash, a refused change or another host's race left behind.
//!
//! Every link the mirror makes carries the link metadata `truckeefs`, and it removes or
//! replaces only such links: a name someone else linked into the tree (`tahoe put`, `tahoe
//! mkdir`) is left alone, even where the mount has a file of that name (which is then not
//! mirrored there; the log says so). (A name the mirror linked stays its own when someone
//! replaces it with `tahoe put`: Tahoe keeps the link's metadata.)
//!
//! What Tahoe cannot hold is left out of the Tahoe tree: symlinks, device nodes, FIFOs, sockets
//! and names that are not UTF-8. Empty files are linked as the empty literal cap (`URI:LIT:`).
//! Each host mirrors the directories its own transactions change.

use crate::backends::MetaStore;
use crate::tahoe::{DirPath, TahoeClient};
use crate::tahoe_json::NodeKind;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use truckeefs_core::{DentryRow, FileKind, Ino, IoError, IoErrorKind, LoadedInode, ObjectId, Txn, TxnOp, ROOT_INO};

/// The cap of the empty file (a literal cap holds its bytes, here none).
const EMPTY_FILE: &str = "URI:LIT:";

/// Reads the metadata store for the mirror thread (through the driver, which owns it).
pub(crate) trait MetaReader: Send {
    fn load_dir(&self, ino: Ino) -> Result<Vec<(DentryRow, LoadedInode)>, IoError>;
    /// Every entry naming `ino`, as `(parent, name)`.
    fn names(&self, ino: Ino) -> Result<Vec<(Ino, Vec<u8>)>, IoError>;
}

/// Tells, for each committed transaction, which directories the mirror must redo. Lives in the
/// driver, beside the metadata store.
#[derive(Default)]
pub(crate) struct Planner {
    /// The contents last seen for a file, so that an update that does not change them (a chmod,
    /// a link count) costs nothing.
    seen: HashMap<Ino, Option<ObjectId>>,
}

/// Bounds the planner's memory; past it, it forgets and looks names up again.
const PLANNER_MAX: usize = 100_000;

impl Planner {
    /// The directories `txn` changed.
    pub(crate) fn plan(&mut self, meta: &mut MetaStore, txn: &Txn) -> Vec<Ino> {
        if self.seen.len() > PLANNER_MAX {
            self.seen.clear();
        }
        let mut dirs = Vec::new();
        let mut named = Vec::new();
        for op in &txn.ops {
            match op {
                TxnOp::InsertDentry(d) => {
                    dirs.push(d.parent);
                    named.push(d.ino);
                }
                TxnOp::DeleteDentry { parent, .. } => dirs.push(*parent),
                TxnOp::DeleteInode { ino } => {
                    self.seen.remove(ino);
                }
                _ => {}
            }
        }
        for op in &txn.ops {
            let (TxnOp::InsertInode(row) | TxnOp::UpdateInode { row, .. }) = op else { continue };
            if row.kind != FileKind::Regular || self.seen.get(&row.ino) == Some(&row.object) {
                continue;
            }
            self.seen.insert(row.ino, row.object.clone());
            if named.contains(&row.ino) || row.nlink == 0 {
                continue; // its new name's directory is already on the list
            }
            match meta.names(row.ino) {
                Ok(names) => dirs.extend(names.into_iter().map(|(parent, _)| parent)),
                Err(e) => tracing::warn!(ino = row.ino, error = %e, "mirror: cannot find the names of a file"),
            }
        }
        dirs.sort_unstable();
        dirs.dedup();
        dirs
    }
}

/// What the thread has to do, and what `status` shows of it.
#[derive(Default)]
struct State {
    dirty: BTreeSet<Ino>,
    /// When the oldest waiting directory was marked.
    since: Option<Instant>,
    /// Directories being done now (taken off `dirty`).
    busy: usize,
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

    fn mark(&self, dirs: impl IntoIterator<Item = Ino>) {
        let mut s = self.lock();
        let before = s.dirty.len();
        s.dirty.extend(dirs);
        if s.dirty.len() > before {
            s.since.get_or_insert_with(Instant::now);
            drop(s);
            self.wake.notify_all();
        }
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
/// How long a changed directory waits for more changes before it is done.
const SETTLE: Duration = Duration::from_millis(200);

impl Mirror {
    pub(crate) fn start(client: Arc<TahoeClient>, rootcap: ObjectId, meta: Box<dyn MetaReader>) -> std::io::Result<Mirror> {
        let shared = Arc::new(Shared { state: Mutex::new(State::default()), wake: Condvar::new() });
        let s = shared.clone();
        let thread = std::thread::Builder::new().name("truckeefs-mirror".into()).spawn(move || {
            let mut w = Worker { shared: &s, client: &client, meta: &*meta, caps: HashMap::new(), walking: true };
            w.caps.insert(ROOT_INO, rootcap);
            w.run();
        })?;
        Ok(Mirror { shared, thread: Some(thread) })
    }

    /// Directories changed by a committed transaction.
    pub(crate) fn mark(&self, dirs: Vec<Ino>) {
        if !dirs.is_empty() {
            self.shared.mark(dirs);
        }
    }

    /// One line for `status`.
    pub(crate) fn status(&self) -> String {
        let s = self.shared.lock();
        let waiting = s.dirty.len() + s.busy;
        let mut line = if s.walked {
            format!("{waiting} directories waiting, {} done, {} refused by the gateway", s.done, s.refused)
        } else {
            format!("checking the whole tree; {waiting} directories waiting")
        };
        if let Some(e) = &s.last_error {
            line.push_str(&format!(" (last error: {e})"));
        }
        line
    }

    /// Waits until nothing is left to do, or until nothing has moved for `stall`; then stops.
    pub(crate) fn finish(mut self, stall: Duration) -> Result<(), String> {
        let start = Instant::now();
        let mut s = self.shared.lock();
        let result = loop {
            if s.walked && s.dirty.is_empty() && s.busy == 0 {
                break Ok(());
            }
            let since = s.last_progress.unwrap_or(start).max(start);
            if since.elapsed() > stall {
                break Err(format!(
                    "the Tahoe tree (MIRROR) is {} directories behind; the next mount repairs it",
                    s.dirty.len() + s.busy
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

/// Why a directory could not be done.
enum Failure {
    /// The gateway is unreachable (or the metadata store is): try again later.
    Later(IoError),
    /// The gateway refused: skip it.
    Refused(IoError),
}

struct Worker<'a> {
    shared: &'a Shared,
    client: &'a TahoeClient,
    meta: &'a dyn MetaReader,
    /// The Tahoe directory of each directory inode, as far as known.
    caps: HashMap<Ino, ObjectId>,
    /// The walk at mount is under way (it visits every subdirectory anyway).
    walking: bool,
}

impl Worker<'_> {
    fn run(&mut self) {
        // The walk at mount: every directory, parents first.
        let mut delay = RETRY_FIRST;
        let mut stack = vec![ROOT_INO];
        while let Some(dir) = stack.pop() {
            if self.shared.lock().stopping {
                return;
            }
            match self.redo(dir) {
                Ok(children) => {
                    stack.extend(children);
                    self.shared.lock().last_progress = Some(Instant::now());
                }
                Err(f) => {
                    stack.push(dir);
                    if !self.failed(f, &mut delay) {
                        return;
                    }
                }
            }
        }
        tracing::info!(directories = self.caps.len(), "mirror: the Tahoe tree matches the metadata");
        self.walking = false;
        self.shared.lock().walked = true;
        self.shared.wake.notify_all();

        loop {
            let batch = {
                let mut s = self.shared.lock();
                loop {
                    if s.stopping {
                        return;
                    }
                    match s.since {
                        Some(since) if since.elapsed() >= SETTLE => break,
                        Some(since) => {
                            let left = SETTLE.saturating_sub(since.elapsed());
                            s = self.shared.wake.wait_timeout(s, left).map(|(g, _)| g).unwrap_or_else(|e| e.into_inner().0);
                        }
                        None => s = self.shared.wake.wait(s).unwrap_or_else(|e| e.into_inner()),
                    }
                }
                let batch = std::mem::take(&mut s.dirty);
                s.since = None;
                s.busy = batch.len();
                batch
            };
            let mut delay = RETRY_FIRST;
            for dir in batch {
                loop {
                    match self.redo(dir) {
                        Ok(_) => break,
                        Err(f) => {
                            if let Failure::Refused(_) = f {
                                self.failed(f, &mut delay);
                                break;
                            }
                            if !self.failed(f, &mut delay) {
                                return;
                            }
                        }
                    }
                }
                let mut s = self.shared.lock();
                s.busy -= 1;
                s.done += 1;
                s.last_progress = Some(Instant::now());
                drop(s);
                self.shared.wake.notify_all();
            }
        }
    }

    /// Records a failure; for one to try again, waits first. False if told to stop meanwhile.
    fn failed(&self, f: Failure, delay: &mut Duration) -> bool {
        match f {
            Failure::Refused(e) => {
                tracing::warn!(error = %e, "mirror: the gateway refused a change; skipped");
                let mut s = self.shared.lock();
                s.refused += 1;
                s.last_error = Some(e.to_string());
                true
            }
            Failure::Later(e) => {
                tracing::info!(error = %e, "mirror: waiting to try again");
                let s = self.shared.lock();
                let (mut s, _) =
                    self.shared.wake.wait_timeout_while(s, *delay, |s| !s.stopping).unwrap_or_else(|e| e.into_inner());
                s.last_error = Some(e.to_string());
                *delay = (*delay * 2).min(RETRY_MAX);
                !s.stopping
            }
        }
    }

    /// Classifies a gateway error: refused if the gateway answers at all.
    fn classify(&self, e: IoError) -> Failure {
        if matches!(e.kind, IoErrorKind::NotFound | IoErrorKind::Conflict | IoErrorKind::Corrupt)
            || self.client.welcome().is_ok()
        {
            Failure::Refused(e)
        } else {
            Failure::Later(e)
        }
    }

    /// Makes the Tahoe copy of directory `dir` match the metadata; returns its subdirectories.
    fn redo(&mut self, dir: Ino) -> Result<Vec<Ino>, Failure> {
        if dir != ROOT_INO && self.meta.names(dir).map_err(Failure::Later)?.is_empty() {
            return Ok(Vec::new()); // removed: its parent's pass unlinked it
        }
        let Some(cap) = self.cap_of(dir, 0)? else { return Ok(Vec::new()) };
        let entries = self.meta.load_dir(dir).map_err(Failure::Later)?;
        let here = DirPath::cap(&cap);
        let there = match self.client.list_at(here) {
            Ok(children) => children,
            Err(e) => return Err(self.classify(e)),
        };
        let mut want: BTreeMap<String, (FileKind, Ino, Option<ObjectId>)> = BTreeMap::new();
        for (d, inode) in entries {
            let Ok(name) = String::from_utf8(d.name) else { continue };
            if matches!(inode.row.kind, FileKind::Directory | FileKind::Regular) {
                want.insert(name, (inode.row.kind, inode.row.ino, inode.row.object));
            }
        }
        let mut links = Vec::new();
        let mut subdirs = Vec::new();
        let mut foreign = 0;
        for (name, (kind, ino, object)) in &want {
            let node = there.get(name);
            if node.is_some_and(|n| !n.mirrored) {
                foreign += 1;
                continue;
            }
            if *kind == FileKind::Regular {
                let cap = object.clone().unwrap_or_else(|| ObjectId(EMPTY_FILE.into()));
                if !node.is_some_and(|n| n.kind == NodeKind::File && n.has_cap(&cap)) {
                    links.push((name.clone(), cap));
                }
                continue;
            }
            subdirs.push(*ino);
            let linked = node.filter(|n| n.kind == NodeKind::Dir).and_then(|n| n.rw_uri.clone());
            match (linked, self.caps.get(ino)) {
                (Some(linked), Some(known)) if linked == *known => {}
                // Moved here (over whatever was there): its Tahoe directory, with its subtree.
                (_, Some(known)) => links.push((name.clone(), known.clone())),
                (Some(linked), None) => {
                    // A Tahoe directory already there: this one's from now on (its contents
                    // are checked too, they may be another directory's).
                    self.caps.insert(*ino, linked);
                    if !self.walking {
                        self.shared.mark([*ino]);
                    }
                }
                (None, None) => {
                    let made = self.client.mkdir().map_err(|e| self.classify(e))?;
                    self.caps.insert(*ino, made.clone());
                    if !self.walking {
                        self.shared.mark([*ino]);
                    }
                    links.push((name.clone(), made));
                }
            }
        }
        if !links.is_empty() {
            self.client.set_children_at(here, &links).map_err(|e| self.classify(e))?;
        }
        if foreign > 0 {
            tracing::warn!(
                directory = dir,
                names = foreign,
                "mirror: names in the Tahoe tree that the mount did not link are left alone (their files are not mirrored there)"
            );
        }
        for (name, _) in there.iter().filter(|(n, node)| node.mirrored && !want.contains_key(*n)) {
            match self.client.unlink_at(here, name) {
                Ok(_) => {}
                Err(e) if e.kind == IoErrorKind::NotFound => {}
                Err(e) => return Err(self.classify(e)),
            }
        }
        Ok(subdirs)
    }

    /// The Tahoe directory of `dir`, found through its parent's if not known; `None` if the
    /// directory is gone or its parent's Tahoe copy does not hold it yet (the parent is marked,
    /// and doing it marks this one).
    fn cap_of(&mut self, dir: Ino, depth: usize) -> Result<Option<ObjectId>, Failure> {
        if let Some(cap) = self.caps.get(&dir) {
            return Ok(Some(cap.clone()));
        }
        if depth > 4096 {
            return Err(Failure::Refused(IoError::new(IoErrorKind::Corrupt, "a directory more than 4096 levels deep")));
        }
        let names = self.meta.names(dir).map_err(Failure::Later)?;
        let Some((parent, name)) = names.into_iter().next() else { return Ok(None) };
        let Ok(name) = String::from_utf8(name) else { return Ok(None) };
        let Some(parent_cap) = self.cap_of(parent, depth + 1)? else { return Ok(None) };
        match self.client.list_at(DirPath::cap(&parent_cap)) {
            Ok(children) => match children
                .get(&name)
                .filter(|n| n.kind == NodeKind::Dir && n.mirrored)
                .and_then(|n| n.rw_uri.clone())
            {
                Some(cap) => {
                    self.caps.insert(dir, cap.clone());
                    Ok(Some(cap))
                }
                None => {
                    self.shared.mark([parent]);
                    Ok(None)
                }
            },
            Err(e) => Err(self.classify(e)),
        }
    }
}
