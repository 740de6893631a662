//! The model of the name space across hosts: file names in the root and in directories
//! (`d0`, `d1`, in the root only), made, removed and renamed on any host, and files with
//! several names (links).
//!
//! Names are keyed by (directory inode, name), so a directory that is renamed keeps its names,
//! and a host that looks a path up resolves it one name at a time, as the kernel does: each
//! lookup may return any value its name had since the last sync point (a host may not have
//! heard of a change yet), never one it never had. An action whose directory lookup returns an
//! older directory than the model's (renamed away, removed, replaced) stops there: what a host
//! does in a directory it has not yet heard is gone is not checked (no model of it). Every
//! change of a name is checked when it is answered, against the model at that time: a rename,
//! link or removal succeeds only where the model says it can (never a state that never
//! existed: a rmdir of a directory with names, a rename of a name that does not exist), and an
//! error (ENOENT, EEXIST, ENOTEMPTY) needs a value the name (or the directory's names) had
//! since the last sync point. Changes of directories (mkdir, rmdir, rename of a directory) run
//! alone in their step; changes of file names run beside other actions on other names and
//! other files.

use super::files::NameM;
use super::{Act, Mh, Running, NAMES, R};
use std::time::Duration;
use truckeefs_core::{Ino, Op, Reply, ROOT_INO};

/// Directory names (in the root only).
pub(super) const DIRS: [&str; 2] = ["d0", "d1"];

/// A file's path: its directory's name (`None`: the root), its name.
pub(super) type PathM = (Option<usize>, usize);

static NO_NAME: NameM = NameM { current: None, history: Vec::new() };

/// The directory names an action looks up first: (slot of `Running::parents`, name).
pub(super) fn dirs_of(act: &Act) -> Vec<(usize, usize)> {
    match act {
        Act::Create { dir, .. }
        | Act::Unlink { dir, .. }
        | Act::Open { dir, .. }
        | Act::ReadFile { dir, .. }
        | Act::Stat { dir, .. }
        | Act::List { dir } => dir.iter().map(|d| (0, *d)).collect(),
        Act::Rename { from, to } | Act::Link { from, to } => {
            from.0.iter().map(|d| (0, *d)).chain(to.0.iter().map(|d| (1, *d))).collect()
        }
        _ => Vec::new(),
    }
}

impl Mh {
    pub(super) fn entry(&self, parent: Ino, name: usize) -> &NameM {
        self.names.get(&(parent, name)).unwrap_or(&NO_NAME)
    }

    pub(super) fn entry_mut(&mut self, parent: Ino, name: usize) -> &mut NameM {
        self.names.entry((parent, name)).or_default()
    }

    /// The file a path names now in the model.
    pub(super) fn model_file(&self, p: PathM) -> Option<Ino> {
        let parent = match p.0 {
            None => ROOT_INO,
            Some(d) => self.dnames[d].current?,
        };
        self.entry(parent, p.1).current
    }

    /// Whether `ino` has a name now.
    pub(super) fn has_name(&self, ino: Ino) -> bool {
        self.names.values().any(|n| n.current == Some(ino))
    }

    /// A file whose name may not be taken away: unsettled, or written by several hosts at once.
    /// (One open on other hosts may: they keep it, see `orphans`.)
    pub(super) fn busy(&self, ino: Ino) -> bool {
        self.files.get(&ino).is_some_and(|f| f.unsettled.is_some() || f.contest.is_some())
    }

    fn dir_entries(&self, dir: Ino) -> impl Iterator<Item = &NameM> {
        self.names.range((dir, 0)..=(dir, usize::MAX)).map(|(_, n)| n)
    }

    fn dir_empty(&self, dir: Ino) -> bool {
        self.dir_entries(dir).all(|n| n.current.is_none())
    }

    /// Whether directory name `d` named, since `since`, a directory that had a name in it
    /// since then (an ENOTEMPTY a host may answer from what it saw).
    fn had_entries_since(&self, d: usize, since: Duration) -> bool {
        let m = &self.dnames[d];
        let dirs = m.current.into_iter().chain(m.history.iter().filter(|(_, u)| *u >= since).filter_map(|(v, _)| *v));
        dirs.into_iter().any(|dir| self.dir_entries(dir).any(|n| n.existed_since(since)))
    }

    /// The inodes an action acts on (one action per file in a step).
    pub(super) fn act_inos(&self, act: &Act) -> Vec<Ino> {
        match act {
            Act::Create { dir, name } | Act::Unlink { dir, name } | Act::Open { dir, name, .. } => {
                self.model_file((*dir, *name)).into_iter().collect()
            }
            Act::ReadFile { dir, name } | Act::Stat { dir, name } => self.model_file((*dir, *name)).into_iter().collect(),
            Act::Rename { from, to } | Act::Link { from, to } => {
                self.model_file(*from).into_iter().chain(self.model_file(*to)).collect()
            }
            Act::Write { h, .. }
            | Act::Fsync { h }
            | Act::Close { h }
            | Act::ReadHandle { h }
            | Act::SetLk { h, .. }
            | Act::SetLkW { h, .. }
            | Act::GetLk { h, .. } => vec![self.handles[h].ino],
            Act::List { .. } | Act::Mkdir { .. } | Act::Rmdir { .. } | Act::RenameDir { .. } | Act::StatDir { .. } => {
                Vec::new()
            }
        }
    }

    /// The root (85%) or a directory name, which may name nothing.
    pub(super) fn pick_dir(&mut self) -> Option<usize> {
        if self.rng.chance(0.15) {
            Some(self.rng.below(DIRS.len() as u64) as usize)
        } else {
            None
        }
    }

    /// A change of directories: mkdir, rmdir (empty or not), rename onto the other name.
    pub(super) fn pick_dir_change(&mut self) -> Act {
        let d = self.rng.below(DIRS.len() as u64) as usize;
        let other = (d + 1) % DIRS.len();
        if self.dnames[d].current.is_none() {
            return if self.rng.chance(0.8) { Act::Mkdir { d } } else { Act::RenameDir { from: d, to: other } };
        }
        match self.rng.below(10) {
            0 => Act::Mkdir { d },
            1..=4 => Act::Rmdir { d },
            _ => Act::RenameDir { from: d, to: other },
        }
    }

    /// A rename of a file's name (onto an absent name or another file's), or a link.
    pub(super) fn pick_rename_or_link(&mut self, link: bool, free_names: &[usize]) -> Option<Act> {
        if free_names.is_empty() {
            return None;
        }
        let from = (self.pick_dir(), *self.rng.pick(free_names));
        let to = (self.pick_dir(), *self.rng.pick(free_names));
        if from == to {
            return None;
        }
        let Some(x) = self.model_file(from) else {
            // Now and then, of a name that does not exist (ENOENT).
            return (!link && self.rng.chance(0.1)).then_some(Act::Rename { from, to });
        };
        if link {
            return self.model_file(to).is_none().then_some(Act::Link { from, to });
        }
        if self.model_file(to).is_some_and(|y| y != x && self.busy(y)) {
            return None;
        }
        Some(Act::Rename { from, to })
    }

    /// The answer to the lookup of a directory name of an action's path.
    pub(super) fn on_dir_lookup(&mut self, r: &mut Running, reply: Result<Reply, i32>) -> R<Option<Op>> {
        let (slot, d) = r.resolving.take().expect("resolving");
        let seen = match reply {
            Ok(Reply::Entry(a)) => Some(a.ino),
            Err(libc::ENOENT) => None,
            Err(e) if self.io_error_ok(r, e) => return Ok(None),
            other => return Err(self.unexpected(r, format!("lookup of {}: {other:?}", DIRS[d]))),
        };
        if !self.dnames[d].allows(seen, self.last_sync) {
            let m = &self.dnames[d];
            return Err(self.unexpected(
                r,
                format!(
                    "lookup of {} found {seen:?}; it is {:?} (and was, since the last sync: {:?})",
                    DIRS[d], m.current, m.history
                ),
            ));
        }
        let Some(ino) = seen else { return Ok(None) };
        r.dir_refs.push(ino);
        if self.dnames[d].current != Some(ino) {
            // A directory this host has not heard is gone: nothing more to check.
            return Ok(None);
        }
        r.parents[slot] = ino;
        for (s, _) in r.resolve.iter().filter(|(_, e)| *e == d) {
            r.parents[*s] = ino;
        }
        r.resolve.retain(|(_, e)| *e != d);
        if !r.resolve.is_empty() {
            let next = r.resolve.remove(0);
            r.resolving = Some(next);
            return Ok(Some(Op::Lookup { parent: ROOT_INO, name: DIRS[next.1].as_bytes().to_vec() }));
        }
        let act = r.act.clone();
        Ok(Some(self.first_op(r.host, &act, r.parents)))
    }

    /// The answers to changes of names (mkdir, rmdir, rename, link) and lookups of directories.
    pub(super) fn on_names_reply(&mut self, r: &mut Running, reply: Result<Reply, i32>, stage: u8) -> R<Option<Op>> {
        let now = self.c.now;
        let since = self.last_sync;
        match (r.act.clone(), stage) {
            (Act::StatDir { d }, _) => {
                let seen = match reply {
                    Ok(Reply::Entry(a)) => Some(a.ino),
                    Err(libc::ENOENT) => None,
                    Err(e) if self.io_error_ok(r, e) => return Ok(None),
                    other => return Err(self.unexpected(r, format!("{other:?}"))),
                };
                if !self.dnames[d].allows(seen, since) {
                    let current = self.dnames[d].current;
                    return Err(self.unexpected(r, format!("lookup found {seen:?}; the name is {current:?}")));
                }
                if let Some(ino) = seen {
                    r.ino = Some(ino);
                    r.lookups = 1;
                }
                Ok(None)
            }
            (Act::Mkdir { d }, _) => match reply {
                Ok(Reply::Entry(a)) => {
                    if let Some(old) = self.dnames[d].current {
                        return Err(self.unexpected(r, format!("made, but the name is directory {old}")));
                    }
                    self.dnames[d].set(Some(a.ino), now);
                    r.ino = Some(a.ino);
                    // (No lookup reference when the answer was lost.)
                    r.lookups = u64::from(!r.made);
                    Ok(None)
                }
                Err(libc::EEXIST) if self.dnames[d].existed_since(since.min(r.issued)) => Ok(None),
                Err(e) if self.io_error_ok(r, e) => Ok(None),
                other => Err(self.unexpected(r, format!("{other:?} (the name is {:?})", self.dnames[d].current))),
            },
            (Act::Rmdir { d }, _) => match reply {
                Ok(Reply::Empty) => {
                    let Some(dir) = self.dnames[d].current else {
                        return Err(self.unexpected(r, "removed a directory name that does not exist".into()));
                    };
                    if !self.dir_empty(dir) {
                        return Err(self.unexpected(r, format!("removed directory {dir}, which has names")));
                    }
                    self.dnames[d].set(None, now);
                    Ok(None)
                }
                Err(libc::ENOTEMPTY) if self.had_entries_since(d, since) => Ok(None),
                Err(libc::ENOENT) if self.dnames[d].allows(None, since) => Ok(None),
                Err(e) if self.io_error_ok(r, e) => Ok(None),
                other => Err(self.unexpected(r, format!("{other:?} (the name is {:?})", self.dnames[d].current))),
            },
            (Act::RenameDir { from, to }, _) => match reply {
                Ok(Reply::Empty) => {
                    let Some(x) = self.dnames[from].current else {
                        return Err(self.unexpected(r, "renamed a directory name that does not exist".into()));
                    };
                    if let Some(y) = self.dnames[to].current.filter(|y| !self.dir_empty(*y)) {
                        return Err(self.unexpected(r, format!("replaced directory {y}, which has names")));
                    }
                    self.dnames[from].set(None, now);
                    self.dnames[to].set(Some(x), now);
                    Ok(None)
                }
                Err(libc::ENOENT) if self.dnames[from].allows(None, since) => Ok(None),
                Err(libc::ENOTEMPTY | libc::EEXIST) if self.had_entries_since(to, since) => Ok(None),
                Err(e) if self.io_error_ok(r, e) => Ok(None),
                other => Err(self.unexpected(
                    r,
                    format!("{other:?} (the names are {:?}, {:?})", self.dnames[from].current, self.dnames[to].current),
                )),
            },
            (Act::Rename { from, to }, _) => {
                let (p1, p2) = (r.parents[0], r.parents[1]);
                match reply {
                    Ok(Reply::Empty) => {
                        let x = self.entry(p1, from.1).current;
                        let y = self.entry(p2, to.1).current;
                        // Two names of one file as this host saw them (one since changed, not
                        // heard of yet): a rename between them does nothing, as POSIX says;
                        // the store tells whether that is what happened.
                        let stored = self.c.meta.dir_entries(p1).iter().find(|(n, _)| n == NAMES[from.1].as_bytes()).map(|(_, i)| *i);
                        let (a, b) = (self.entry(p1, from.1), self.entry(p2, to.1));
                        let seen = a.current.into_iter().chain(a.history.iter().filter(|(_, u)| *u >= since).filter_map(|(v, _)| *v));
                        if stored == x && (x.is_none() || y != x) && seen.into_iter().any(|z| b.allows(Some(z), since)) {
                            return Ok(None);
                        }
                        let Some(x) = x else {
                            return Err(self.unexpected(r, "renamed a name that does not exist".into()));
                        };
                        if y != Some(x) {
                            self.entry_mut(p1, from.1).set(None, now);
                            self.entry_mut(p2, to.1).set(Some(x), now);
                            if let Some(y) = y {
                                // The replaced file lost a name (its last, unless it has links).
                                self.unlinked(y, r.issued);
                            }
                        }
                        Ok(None)
                    }
                    Err(libc::ENOENT) if self.entry(p1, from.1).allows(None, since) => Ok(None),
                    Err(e) if self.io_error_ok(r, e) => Ok(None),
                    other => Err(self.unexpected(
                        r,
                        format!(
                            "{other:?} (the names are {:?}, {:?})",
                            self.entry(p1, from.1).current,
                            self.entry(p2, to.1).current
                        ),
                    )),
                }
            }
            (Act::Link { from, to }, 0) => {
                let p1 = r.parents[0];
                let seen = match reply {
                    Ok(Reply::Entry(a)) => Some(a.ino),
                    Err(libc::ENOENT) => None,
                    Err(e) if self.io_error_ok(r, e) => return Ok(None),
                    other => return Err(self.unexpected(r, format!("{other:?}"))),
                };
                let m = self.entry(p1, from.1);
                if !m.allows(seen, since) {
                    let current = m.current;
                    return Err(self.unexpected(r, format!("lookup found {seen:?}; the name is {current:?}")));
                }
                let Some(ino) = seen else { return Ok(None) };
                r.ino = Some(ino);
                r.lookups = 1;
                if m.current != Some(ino) {
                    return Ok(None);
                }
                Ok(Some(Op::Link { ino, newparent: r.parents[1], newname: NAMES[to.1].as_bytes().to_vec() }))
            }
            (Act::Link { to, .. }, _) => {
                let p2 = r.parents[1];
                let ino = r.ino.expect("looked up");
                match reply {
                    Ok(Reply::Entry(a)) => {
                        if a.ino != ino {
                            return Err(self.unexpected(r, format!("linked inode {}, not {ino}", a.ino)));
                        }
                        if let Some(old) = self.entry(p2, to.1).current {
                            return Err(self.unexpected(r, format!("linked, but the name is file {old}")));
                        }
                        self.entry_mut(p2, to.1).set(Some(ino), now);
                        // (A link whose answer was lost gave the kernel no reference.)
                        if !r.made {
                            r.lookups += 1;
                        }
                        Ok(None)
                    }
                    Err(libc::EEXIST) if self.entry(p2, to.1).existed_since(since.min(r.issued)) => Ok(None),
                    Err(e) if self.io_error_ok(r, e) => Ok(None),
                    other => Err(self.unexpected(r, format!("{other:?} (the name is {:?})", self.entry(p2, to.1).current))),
                }
            }
            (act, stage) => Err(format!("harness: no stage {stage} of {act:?}")),
        }
    }
}
