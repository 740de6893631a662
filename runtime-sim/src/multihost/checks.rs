//! Whole-cluster checks: sync points (every host sees every name and size once every change
//! reached it) and the liveness phase.

use super::locks::WAIT_BOUND;
use super::names::DIRS;
use super::{Act, Mh, R, NAMES};
use std::time::Duration;
use truckeefs_core::{Ino, IoRequest, MetaRequest};

impl Mh {
    /// Run until every published change is delivered and applied (no host has a commit in
    /// flight), within a bound. Returns whether that was reached.
    pub(super) fn quiesce(&mut self, limit: Duration) -> R<bool> {
        let end = self.c.now + limit;
        loop {
            let commits = self
                .c
                .hosts
                .iter()
                .any(|h| h.w.in_flight().any(|r| matches!(r, IoRequest::Meta(MetaRequest::Commit(_)))));
            let down = (0..self.c.hosts.len()).any(|h| !self.c.is_up(h));
            if self.c.all_heard() && !commits && !down {
                return Ok(true);
            }
            if self.c.now > end {
                return Ok(false);
            }
            self.c.advance(Duration::from_millis(5))?;
        }
    }

    /// After every change reached every host: each host sees every name as it is, and every
    /// file's size as of its last acknowledged version or later.
    pub(super) fn sync_check(&mut self) -> R<()> {
        if !self.quiesce(Duration::from_secs(30))? {
            return Ok(());
        }
        let previous = self.last_sync;
        self.last_sync = self.c.now;
        self.c.trace.note(self.c.now.as_micros() as u64, "sync point: every change delivered".into());
        self.resolve_contests()?;
        self.check_names(previous, false)
    }

    /// Every host looks up every name of the root and the directory names that changed since
    /// `since`, and lists the root and every directory where something changed (which checks
    /// every name); with `read` (the liveness phase), it also looks up every name in every
    /// directory and reads every file whole.
    fn check_names(&mut self, since: Duration, read: bool) -> R<()> {
        let changed = |n: &super::files::NameM| read || n.history.last().is_some_and(|(_, until)| *until >= since);
        let mut acts: Vec<Act> = Vec::new();
        for name in 0..NAMES.len() {
            if read {
                acts.push(Act::ReadFile { dir: None, name });
            }
            acts.push(Act::Stat { dir: None, name });
        }
        for d in 0..DIRS.len() {
            if changed(&self.dnames[d]) {
                acts.push(Act::StatDir { d });
            }
            let Some(dir) = self.dnames[d].current else { continue };
            let mut list = changed(&self.dnames[d]);
            for name in 0..NAMES.len() {
                let e = self.entry(dir, name);
                if read && e.current.is_some() {
                    acts.push(Act::ReadFile { dir: Some(d), name });
                }
                // (At a sync point, names in directories are checked by the listing alone: it
                // names every inode exactly; their sizes by the random phase's lookups.)
                if read && e.existed_since(since) {
                    acts.push(Act::Stat { dir: Some(d), name });
                }
                list |= changed(e);
            }
            // (A directory where nothing changed was listed exactly at an earlier one.)
            if list {
                acts.push(Act::List { dir: Some(d) });
            }
        }
        acts.push(Act::List { dir: None });
        for act in acts {
            let up = self.up_hosts();
            self.run_batch(up.into_iter().map(|h| (h, act.clone())).collect())?;
        }
        Ok(())
    }

    /// Faults off: every handle closed, every upload done, every message delivered; then every
    /// host reads every file byte for byte as its last version, and sees every name as it is.
    pub(super) fn liveness(&mut self) -> R<()> {
        for h in &mut self.c.hosts {
            h.w.faults.enabled = false;
            h.lease_lost_until = None;
        }
        self.c.delay_chance = 0.0;
        // Hosts that are down come back.
        for _ in 0..100 {
            if self.up_hosts().len() == self.c.hosts.len() {
                break;
            }
            self.c.advance(Duration::from_millis(100))?;
        }
        // Every handle not asleep in F_SETLKW closes (and lets go of its locks); then every
        // sleeping F_SETLKW must be granted, and its handle closes too.
        // (A request granted meanwhile holds a lock another may wait for: its handle closes
        // then.)
        let mut end = self.c.now + WAIT_BOUND;
        loop {
            let keys: Vec<usize> = self.handles.keys().copied().collect();
            for k in keys {
                if self.waiters.iter().any(|w| w.handle() == k) || !self.handles.contains_key(&k) {
                    continue;
                }
                let host = self.handles[&k].host;
                self.run_batch(vec![(host, Act::Close { h: k })])?;
            }
            if self.waiters.is_empty() {
                break;
            }
            if self.poll_waiters()? {
                end = self.c.now + WAIT_BOUND;
            }
            self.check_waiters()?;
            if self.c.now > end {
                let asleep: Vec<String> = self.waiters.iter().map(|w| w.r.act_name()).collect();
                return Err(format!("liveness: F_SETLKW never granted once every other handle closed: {asleep:?}"));
            }
            self.c.advance(Duration::from_millis(50))?;
        }
        let keys: Vec<usize> = self.handles.keys().copied().collect();
        for k in keys {
            let host = self.handles[&k].host;
            self.run_batch(vec![(host, Act::Close { h: k })])?;
        }
        // Everything uploaded and heard of everywhere.
        let mut quiet = false;
        for _ in 0..600 {
            self.settle_files();
            self.resolve_contests()?;
            let files_quiet = self.files.values().all(|f| f.unsettled.is_none() && f.contest.is_none());
            let collected = self.dead_orphan_sets().is_empty();
            if files_quiet && collected && (0..self.c.hosts.len()).all(|h| self.host_quiet(h)) && self.c.all_heard() {
                quiet = true;
                break;
            }
            self.c.advance(Duration::from_secs(1))?;
        }
        if !quiet {
            let unsettled: Vec<Ino> = self.files.values().filter(|f| f.unsettled.is_some()).map(|f| f.ino).collect();
            let status: Vec<_> = self.c.hosts.iter().map(|h| (h.w.core.status(), h.w.pending_io())).collect();
            return Err(format!(
                "liveness: not quiet after 600 s without faults: unsettled files {unsettled:?}, hosts {status:?}, \
                 dead hosts' orphan sets {:?} ({:?})",
                self.dead_orphan_sets(),
                self.c.redis.orphan_sets()
            ));
        }
        // Every write is uploaded, acknowledged or not (a close that failed leaves it to a retry).
        for f in self.files.values() {
            let stored = self.stored(f.ino).unwrap_or_default();
            if stored != f.latest() {
                return Err(format!(
                    "liveness: the store holds {} bytes of file {}, not its last version ({} bytes)",
                    stored.len(),
                    f.ino,
                    f.latest().len()
                ));
            }
        }
        let now = self.c.now;
        for f in self.files.values_mut() {
            f.acked = f.versions.len() - 1;
            f.acks.push((now, f.acked));
        }
        self.last_sync = now;
        // Every host reads every file whole, and sees every name.
        self.check_names(Duration::ZERO, true)?;
        // Unmount everywhere: nothing staged may be left.
        for h in 0..self.c.hosts.len() {
            self.c.with(h, |w| w.shutdown())?;
        }
        for _ in 0..600 {
            if self.c.hosts.iter().all(|h| h.w.core.is_idle()) {
                break;
            }
            self.c.advance(Duration::from_secs(1))?;
        }
        for (h, host) in self.c.hosts.iter().enumerate() {
            if !host.w.core.is_idle() {
                return Err(format!("liveness: host {h} not idle after shutdown: {:?}", host.w.core.status()));
            }
            if !host.w.staging.is_empty() {
                return Err(format!(
                    "liveness: staged copies left on host {h} after shutdown: inodes {:?}",
                    host.w.staging.inos()
                ));
            }
        }
        self.check_orphans_gone()
    }
}
