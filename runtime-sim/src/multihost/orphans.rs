//! The model of files kept open after their last name went (orphans): every host that has the
//! file open when its last name goes (on whichever host) keeps it, readable and writable
//! through its handles (`Config::shared_opens`: the hosts list their open files); the file goes
//! when its last handle on any host closes. Another host starting up must spare it (the sets
//! of live hosts), and when its holders die, a live host collects it once their heartbeats
//! expired: by the end of the liveness phase neither its row nor its object may be left.

use super::{Mh, R};
use crate::redis::HostId;
use std::time::Duration;
use truckeefs_core::{Ino, ObjectId};

/// A file without names held open by some hosts.
#[derive(Clone, Debug)]
pub(super) struct Orphan {
    /// The hosts that had it open when its last name went, with their ids in Redis then.
    pub(super) holders: Vec<(usize, HostId)>,
    /// When the unlink was sent (the sets may be read from then on).
    pub(super) since: Duration,
}

/// An orphan of a host that crashed: what must be gone at the end.
pub(super) struct DeadOrphan {
    ino: Ino,
    /// The object its row named when its host died.
    object: Option<ObjectId>,
}

impl Mh {
    /// An unlink (or a rename over it) succeeded; the file stays while a host has it open.
    pub(super) fn unlinked(&mut self, ino: Ino, issued: Duration) {
        if self.has_name(ino) {
            // It has another name (a link).
            return;
        }
        let mut hosts: Vec<usize> = self.handles.values().filter(|x| x.ino == ino).map(|x| x.host).collect();
        hosts.sort_unstable();
        hosts.dedup();
        if hosts.is_empty() {
            self.files.remove(&ino);
            return;
        }
        let holders = hosts.into_iter().map(|h| (h, self.c.hosts[h].w.host_id)).collect();
        if let Some(f) = self.files.get_mut(&ino) {
            f.orphan = Some(Orphan { holders, since: issued });
        }
    }

    /// A handle of `ino` closed: an orphan goes with its last one (its host deletes it).
    pub(super) fn maybe_orphan_closed(&mut self, ino: Ino) {
        let orphan = self.files.get(&ino).is_some_and(|f| f.orphan.is_some());
        if orphan && !self.handles.values().any(|x| x.ino == ino) {
            self.files.remove(&ino);
        }
    }

    /// Host `h` crashed: the orphans it held alone are a dead host's, for the others to
    /// collect; those other hosts hold too live on there.
    pub(super) fn orphans_of_crashed(&mut self, h: usize) {
        let held: Vec<Ino> = self
            .files
            .values()
            .filter(|f| f.orphan.as_ref().is_some_and(|o| o.holders.iter().any(|(x, _)| *x == h)))
            .map(|f| f.ino)
            .collect();
        for ino in held {
            if self.handles.values().any(|x| x.ino == ino && x.host != h) {
                if let Some(o) = self.files.get_mut(&ino).and_then(|f| f.orphan.as_mut()) {
                    o.holders.retain(|(x, _)| *x != h);
                }
                continue;
            }
            self.files.remove(&ino);
            let object = self.c.meta.inode(ino).and_then(|row| row.object.clone());
            self.dead_orphans.push(DeadOrphan { ino, object });
        }
    }

    /// Whether `ino` is an orphan one of whose holders' heartbeat lapsed since the unlink:
    /// other hosts may have deleted it while that host still holds it (as they take a lapsed
    /// host's locks).
    pub(super) fn orphan_forfeited(&self, ino: Ino) -> bool {
        let Some(o) = self.files.get(&ino).and_then(|f| f.orphan.as_ref()) else { return false };
        o.holders.iter().any(|(_, id)| self.c.lapsed_between(*id, o.since, self.c.now))
    }

    /// The orphan sets of processes that died (their heartbeat may not have expired yet): the
    /// liveness phase waits until the live hosts collected them.
    pub(super) fn dead_orphan_sets(&self) -> Vec<HostId> {
        let running: Vec<HostId> =
            (0..self.c.hosts.len()).filter(|h| self.c.is_up(*h)).map(|h| self.c.hosts[h].w.host_id).collect();
        self.c.redis.orphan_sets().keys().copied().filter(|h| !running.contains(h)).collect()
    }

    /// The end of the liveness phase: no file without names is left in the store, and no
    /// object of a dead host's orphan.
    pub(super) fn check_orphans_gone(&self) -> R<()> {
        for d in &self.dead_orphans {
            if self.c.meta.inode(d.ino).is_some() {
                return Err(format!("liveness: the row of inode {}, an orphan of a host that died, is left", d.ino));
            }
            if let Some(o) = d.object.as_ref().filter(|o| self.c.objects.get(o).is_some()) {
                return Err(format!(
                    "liveness: the object {} of inode {}, an orphan of a host that died, is left",
                    o.fingerprint(),
                    d.ino
                ));
            }
        }
        let left = self.c.meta.orphans();
        if !left.is_empty() {
            return Err(format!("liveness: files without names left in the store: inodes {left:?}"));
        }
        Ok(())
    }
}
