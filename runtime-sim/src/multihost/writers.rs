//! The model of concurrent writers: two hosts writing one file at once (each opens, writes,
//! closes). Versions are whole files: a host that changed a file through a handle works on its
//! own version (the version it saw when it first changed it, with its writes) until that handle
//! closes, and the close commits that version; the last close commit wins.
//!
//! A *contest* begins when a host opens a file for writing while another host writes it (or
//! while the store may still take a version of an earlier writer), and ends at a sync point
//! where every writer closed and every host is quiet. Meanwhile:
//! - a host that wrote reads exactly its own version (one of the candidates the model keeps:
//!   the version it started from is any one it may have seen; a read narrows them down);
//! - any other read or size is one of the contents the store may have held: the versions
//!   possibly current when the contest began, and every state of every writer since (a writer's
//!   state may be uploaded before it closes);
//! - at the end, the store holds exactly one of the versions a close of a handle that wrote
//!   committed, and not one of an acknowledged close that another acknowledged close was sent
//!   after (that one committed later): never a mix, never an older version than both, never lost
//!   if only one host wrote. A close answered without its commit (its upload failed, or it
//!   failed) may land at any time, or never; a writer that crashed may leave any of its states
//!   (or a torn one).

use super::{Mh, R};
use std::collections::BTreeSet;
use std::time::Duration;
use truckeefs_core::Ino;

/// The contents a contest's pool may reach before no more writers join it (see `may_contest`).
const MAX_POOL: usize = 512;

/// One contest of writers (see the module documentation).
#[derive(Debug, Default)]
pub(super) struct Contest {
    /// Every content the store may have held since it began.
    pool: BTreeSet<Vec<u8>>,
    /// The closes of handles that wrote, in the order they were sent.
    closes: Vec<Close>,
    /// A writer crashed meanwhile.
    crashed: bool,
}

#[derive(Debug)]
struct Close {
    sent: Duration,
    replied: Duration,
    /// Answered after its commit (no fault reached it).
    acked: bool,
    /// The writer's host.
    host: usize,
    /// The versions it may have committed (its writer's candidates).
    contents: Vec<Vec<u8>>,
}

impl Mh {
    /// The hosts with a writer handle on `ino`.
    pub(super) fn writer_hosts(&self, ino: Ino) -> Vec<usize> {
        self.handles.values().filter(|x| x.ino == ino && x.mode == super::Mode::Writer).map(|x| x.host).collect()
    }

    /// Whether host `h` may open `ino` for writing now, given that the single-writer rule
    /// (`writable`) does not allow it: it joins or begins a contest. At most two writer handles
    /// at once, one per host; not a file whose writer crashed unsettled, nor a file without
    /// names; not a contest whose pool is large already (each writer's first write adds a
    /// version per content in the pool, so a contest that goes on for long doubled it again and
    /// again: `--hosts 4 --seed 714761 --steps 1500` took 24 GB).
    pub(super) fn may_contest(&self, h: usize, ino: Ino) -> bool {
        let Some(f) = self.files.get(&ino) else { return false };
        let writers = self.writer_hosts(ino);
        let pool_small = f.contest.as_ref().is_none_or(|c| c.pool.len() < MAX_POOL);
        f.unsettled.is_none() && f.orphan.is_none() && !writers.contains(&h) && writers.len() < 2 && pool_small
    }

    /// A writer handle is opened on `ino` beside another writer (or an earlier one whose
    /// version may still land): the contest begins, or goes on.
    pub(super) fn join_contest(&mut self, ino: Ino) {
        let now = self.c.now;
        let writing: Vec<usize> = self
            .handles
            .iter()
            .filter(|(_, x)| x.ino == ino && x.mode == super::Mode::Writer)
            .map(|(k, _)| *k)
            .collect();
        let f = self.files.get_mut(&ino).expect("modelled");
        if f.contest.is_some() {
            return;
        }
        let mut contest = Contest::default();
        // (What hosts may still see: sizes lag until the next sync point.)
        let from = f.acked_before(self.last_sync).min(f.acked_before(now)).min(f.acked);
        contest.pool.extend(f.versions[from..].iter().cloned());
        let latest = f.latest().to_vec();
        if writing.is_empty() && f.acked + 1 < f.versions.len() {
            // The last writer closed without its commit (its upload failed): its version lands
            // when the retry commits, at any time.
            let host = f.last_writer.unwrap_or(usize::MAX);
            contest.closes.push(Close { sent: now, replied: now, acked: false, host, contents: vec![latest.clone()] });
        }
        f.contest = Some(contest);
        self.contests += 1;
        // A writer already writing (alone until now) has exactly the latest version.
        for k in writing {
            let x = self.handles.get_mut(&k).expect("listed");
            if x.wrote {
                x.own = vec![latest.clone()];
            }
        }
    }

    /// A write through handle `k` of a contested file answered: its writer's candidates (all the
    /// versions it may have started from, at its first write) take the write.
    pub(super) fn contested_write(&mut self, k: usize, offset: u64, data: &[u8]) {
        let x = &self.handles[&k];
        let ino = x.ino;
        let pool = &self.files[&ino].contest.as_ref().expect("contested").pool;
        let bases: Vec<Vec<u8>> = if x.wrote { x.own.clone() } else { pool.iter().cloned().collect() };
        let mut next = BTreeSet::new();
        for mut v in bases {
            let end = offset as usize + data.len();
            if v.len() < end {
                v.resize(end, 0);
            }
            v[offset as usize..end].copy_from_slice(data);
            next.insert(v);
        }
        let contest = self.files.get_mut(&ino).expect("modelled").contest.as_mut().expect("contested");
        contest.pool.extend(next.iter().cloned());
        let x = self.handles.get_mut(&k).expect("open");
        x.own = next.into_iter().collect();
        x.wrote = true;
    }

    /// The close (flush) of writer handle `k` of a contested file was answered.
    pub(super) fn contested_close(&mut self, k: usize, sent: Duration, acked: bool) {
        let x = &self.handles[&k];
        if !x.wrote {
            return;
        }
        let close = Close { sent, replied: self.c.now, acked, host: x.host, contents: x.own.clone() };
        if let Some(c) = self.files.get_mut(&x.ino).and_then(|f| f.contest.as_mut()) {
            c.closes.push(close);
        }
    }

    /// A host with a writer handle on a contested file crashed.
    pub(super) fn contest_crashed(&mut self, ino: Ino) {
        if let Some(c) = self.files.get_mut(&ino).and_then(|f| f.contest.as_mut()) {
            c.crashed = true;
        }
    }

    /// Host `h` crashed: a close of it answered without its commit (the upload failed) may
    /// never land (its staged copy may be lost), like a writer that crashed with its handle.
    pub(super) fn closes_crashed(&mut self, h: usize) {
        for f in self.files.values_mut() {
            if let Some(c) = f.contest.as_mut() {
                if c.closes.iter().any(|x| x.host == h && !x.acked) {
                    c.crashed = true;
                }
            }
        }
    }

    /// What a read of a contested file on `host` may return: its own version if it wrote, else
    /// any content the store may have held. `Ok(Some(k))`: the read matched writer handle
    /// `k`'s candidates (to be narrowed to it).
    pub(super) fn check_contested(&self, host: usize, ino: Ino, data: &[u8]) -> Result<Option<usize>, String> {
        let contest = self.files[&ino].contest.as_ref().expect("contested");
        let own = self.handles.iter().find(|(_, x)| x.ino == ino && x.host == host && x.wrote);
        if let Some((k, x)) = own {
            if x.own.iter().any(|v| v == data) {
                return Ok(Some(*k));
            }
            return Err(format!(
                "a host writing a contested file reads {} bytes, none of its own {} possible versions (sizes {:?}){}",
                data.len(),
                x.own.len(),
                x.own.iter().map(Vec::len).collect::<Vec<_>>(),
                if contest.pool.contains(data) { "; the store held them" } else { "" }
            ));
        }
        if contest.pool.contains(data) {
            return Ok(None);
        }
        Err(format!("read {} bytes of a contested file, none of the {} contents the store may have held", data.len(), contest.pool.len()))
    }

    /// Whether `ino` is contested.
    pub(super) fn is_contested(&self, ino: Ino) -> bool {
        self.files.get(&ino).is_some_and(|f| f.contest.is_some())
    }

    /// A read on `host` (checked) showed which of its candidates the writer there has.
    pub(super) fn narrow_by_read(&mut self, host: usize, ino: Ino, data: &[u8]) {
        if !self.is_contested(ino) {
            return;
        }
        if let Ok(Some(k)) = self.check_contested(host, ino, data) {
            self.handles.get_mut(&k).expect("open").own.retain(|v| v == data);
        }
    }

    /// A size of a contested file seen on `host`.
    pub(super) fn check_contested_size(&self, host: usize, ino: Ino, size: u64) -> Result<(), String> {
        let contest = self.files[&ino].contest.as_ref().expect("contested");
        let own = self.handles.values().find(|x| x.ino == ino && x.host == host && x.wrote);
        let ok = match own {
            Some(x) => x.own.iter().any(|v| v.len() as u64 == size),
            None => contest.pool.iter().any(|v| v.len() as u64 == size),
        };
        if !ok {
            let sizes = |vs: &mut dyn Iterator<Item = &Vec<u8>>| vs.map(Vec::len).collect::<BTreeSet<_>>();
            return Err(format!(
                "size {size} of a contested file, not one of the sizes it may have: {}",
                match own {
                    Some(x) => format!("its writer here has {:?}", sizes(&mut x.own.iter())),
                    None => format!("the store may have held {:?}", sizes(&mut contest.pool.iter())),
                }
            ));
        }
        Ok(())
    }

    /// At a sync point (or the liveness phase): every contest whose writers all closed, with
    /// every host quiet, ends. The store must hold one of the versions the last closes committed
    /// (see the module documentation), which becomes the file's acknowledged version.
    pub(super) fn resolve_contests(&mut self) -> R<()> {
        let quiet = (0..self.c.hosts.len()).all(|h| self.c.is_up(h) && self.host_quiet(h));
        if !quiet {
            return Ok(());
        }
        let contested: Vec<Ino> = self.files.iter().filter(|(_, f)| f.contest.is_some()).map(|(i, _)| *i).collect();
        let now = self.c.now;
        for ino in contested {
            // (A file without names keeps its contest: its host may hold a version it never
            // uploads, and reads it until it closes the file.)
            if !self.writer_hosts(ino).is_empty() || self.is_orphan(ino) {
                continue;
            }
            let Some(stored) = self.stored(ino) else { continue };
            let f = self.files.get_mut(&ino).expect("listed");
            let contest = f.contest.take().expect("listed");
            // An acknowledged close committed before its answer; one sent after that answer
            // and acknowledged committed later. (One that failed may land later, or never.)
            let last = |c: &Close| !(c.acked && contest.closes.iter().any(|d| d.acked && d.sent > c.replied));
            let winners: Vec<&Close> = contest.closes.iter().filter(|c| last(c)).collect();
            let ok = if contest.closes.is_empty() {
                contest.pool.contains(&stored)
            } else {
                winners.iter().any(|c| c.contents.contains(&stored))
            };
            let torn = || {
                contest.pool.iter().any(|old| {
                    old.len() == stored.len()
                        && contest.pool.iter().any(|new| super::files::zero_extended(new, old.len()) == stored)
                })
            };
            if !ok && !(contest.crashed && (contest.pool.contains(&stored) || torn())) {
                let which = contest.pool.contains(&stored);
                return Err(format!(
                    "after concurrent writers of inode {ino} closed, the store holds {} bytes: not the version of \
                     any last close ({} closes, last ones committed {:?} bytes){}",
                    stored.len(),
                    contest.closes.len(),
                    winners.iter().map(|c| c.contents.iter().map(Vec::len).collect::<Vec<_>>()).collect::<Vec<_>>(),
                    if which { "; it is an older state of a writer" } else { "; a mix no writer had" }
                ));
            }
            self.contests_resolved += 1;
            let f = self.files.get_mut(&ino).expect("listed");
            f.versions.push(stored);
            f.acked = f.versions.len() - 1;
            f.acks.push((now, f.acked));
            f.last_writer = None;
            f.writer = None;
        }
        Ok(())
    }
}
