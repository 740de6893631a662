//! The model of files kept open after their last name went (orphans): a host that unlinks a
//! file it has open keeps it, readable and writable through its handles, and lists it in its
//! orphan set; the file goes when its last handle there closes. Another host starting up must
//! spare it (the set of a live host), and when its host dies, a live host collects it once the
//! dead host's heartbeat expired: by the end of the liveness phase neither its row nor its
//! object may be left.

use super::{Mh, R};
use crate::redis::HostId;
use std::time::Duration;
use truckeefs_core::{Ino, ObjectId};

/// A file without names held open by `host`.
#[derive(Clone, Debug)]
pub(super) struct Orphan {
    pub(super) host: usize,
    /// The host's id in Redis when it unlinked the file (its set).
    pub(super) redis_id: HostId,
    /// When the unlink was sent (the set may be read from then on).
    pub(super) since: Duration,
}

/// An orphan of a host that crashed: what must be gone at the end.
pub(super) struct DeadOrphan {
    ino: Ino,
    /// The object its row named when its host died.
    object: Option<ObjectId>,
}

impl Mh {
    /// An unlink by `host` succeeded; its file stays while that host has it open.
    pub(super) fn unlinked(&mut self, host: usize, ino: Ino, issued: Duration) {
        if self.has_name(ino) {
            // It has another name (a link).
            return;
        }
        if !self.handles.values().any(|x| x.ino == ino && x.host == host) {
            self.files.remove(&ino);
            return;
        }
        let redis_id = self.c.hosts[host].w.host_id;
        if let Some(f) = self.files.get_mut(&ino) {
            f.orphan = Some(Orphan { host, redis_id, since: issued });
        }
    }

    /// A handle of `ino` closed: an orphan goes with its last one (its host deletes it).
    pub(super) fn maybe_orphan_closed(&mut self, ino: Ino) {
        let orphan = self.files.get(&ino).is_some_and(|f| f.orphan.is_some());
        if orphan && !self.handles.values().any(|x| x.ino == ino) {
            self.files.remove(&ino);
        }
    }

    /// Host `h` crashed: the orphans it held are a dead host's, for the others to collect.
    pub(super) fn orphans_of_crashed(&mut self, h: usize) {
        let held: Vec<Ino> =
            self.files.values().filter(|f| f.orphan.as_ref().is_some_and(|o| o.host == h)).map(|f| f.ino).collect();
        for ino in held {
            self.files.remove(&ino);
            let object = self.c.meta.inode(ino).and_then(|row| row.object.clone());
            self.dead_orphans.push(DeadOrphan { ino, object });
        }
    }

    /// Whether `ino` is an orphan whose host's heartbeat lapsed since the unlink: other hosts
    /// may have deleted it while that host still holds it (as they take a lapsed host's locks).
    pub(super) fn orphan_forfeited(&self, ino: Ino) -> bool {
        let Some(o) = self.files.get(&ino).and_then(|f| f.orphan.as_ref()) else { return false };
        self.c.lapsed_between(o.redis_id, o.since, self.c.now)
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
