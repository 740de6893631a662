//! The Redis stand-in shared by the simulated hosts: heartbeat keys with an expiry, the lock
//! table answering `LockRequest`s exactly like `runtime-smol`'s `LockService::execute` (its Lua
//! `ACQUIRE` script over the hash `<prefix>locks:<ino>`), and the publish/subscribe channel of
//! committed changes.
//!
//! What is reproduced from `runtime-smol/src/coord.rs`:
//! - a host is live while its heartbeat key exists: `SET host:<id> 1 PX 5000`, renewed every
//!   second (the renewals are driven by [`crate::hosts`]); a crashed host stops renewing, so its
//!   key, and with it its locks, expire 5 s after its last renewal;
//! - `Acquire`/`Query` look at every other host's entry of the inode's hash: a dead host's entry
//!   is deleted on the way (`HDEL`), a live host's locks are checked in order and the first
//!   conflicting one is returned as the table stores it (end `-1` for "to the end of the file",
//!   read back as `i64::MAX`); `Acquire` without a conflict stores `held` (deletes the entry when
//!   `held` is empty), `Query` changes nothing;
//! - `Publish` stores (or deletes) this host's entry without looking at anyone else's;
//! - a published message reaches every *other* subscribed host (the subscriber drops its own
//!   host's messages); a host that is down is not subscribed and misses it;
//! - the orphan sets `orphans:<id>` (files a host keeps open after their last name went):
//!   `SADD`/`SREM` by their host, read whole by `LockService::orphans` (every set, split by
//!   whether its host's heartbeat lives; its own counts as live), `DEL` of dead hosts' sets;
//! - the open listings (`Config::shared_opens`): `opens:<id>` (a host's open files) and
//!   `openers:<ino>` (a file's hosts), changed by the `OPEN` and `REAP` scripts and the `Close`
//!   pipeline exactly as coord.rs changes them, and the marks `reaping:<ino>` (with their
//!   expiry) of files being deleted. A dead host's open set counts as its orphan set does; here
//!   the two sets of one host are read as one (coord.rs reads and deletes them one by one: a
//!   set goes once nothing it lists is left, which comes to the same).
//!
//! Hash fields are kept in a `BTreeMap` by host id (Redis keeps insertion order; either is one
//! fixed order, and this one does not depend on history the trace does not show).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use truckeefs_core::{Ino, IoError, IoErrorKind, IoReply, IoResult, LockRange, LockRequest};

/// How long a file stays marked as being deleted (`REAPING_TTL` of coord.rs).
pub const REAPING_TTL: Duration = Duration::from_secs(60);
/// A host whose heartbeat key is older than this is dead (`HEARTBEAT_TTL` of coord.rs).
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(5);
/// How often a live host renews its heartbeat key (`HEARTBEAT_EVERY` of coord.rs).
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// A host's id in Redis: a new one for every start of the mount process (coord.rs `host_id`
/// draws a random part at every start).
pub type HostId = u64;

#[derive(Clone, Debug, Default)]
pub struct MemRedis {
    /// `host:<id>` keys: when each expires.
    heartbeats: BTreeMap<HostId, Duration>,
    /// `locks:<ino>` hashes: host id -> that host's locks, as the table stores them.
    locks: BTreeMap<Ino, BTreeMap<HostId, Vec<StoredLock>>>,
    /// `orphans:<id>` sets (Redis deletes a set with its last member).
    orphans: BTreeMap<HostId, BTreeSet<Ino>>,
    /// `opens:<id>` sets.
    opens: BTreeMap<HostId, BTreeSet<Ino>>,
    /// `openers:<ino>` sets.
    openers: BTreeMap<Ino, BTreeSet<HostId>>,
    /// `reaping:<ino>` keys: when each expires.
    reaping: BTreeMap<Ino, Duration>,
    /// `unlinked:<ino>` keys.
    unlinked: BTreeSet<Ino>,
    /// Lock scripts run (statistics).
    pub scripts: u64,
}

/// The orphan sets as one host reads them (coord.rs `Orphans`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Orphans {
    /// Held by live hosts: not to be deleted.
    pub held: BTreeSet<Ino>,
    /// The sets of dead hosts and what they list.
    pub dead_sets: Vec<(HostId, Vec<Ino>)>,
}

impl Orphans {
    /// coord.rs `Orphans::done_sets`: the dead hosts' sets of which nothing is left among
    /// `orphans` (the store's files without names).
    pub fn done_sets(&self, orphans: &BTreeSet<Ino>) -> Vec<HostId> {
        self.dead_sets
            .iter()
            .filter(|(_, members)| !members.iter().any(|i| orphans.contains(i)))
            .map(|(host, _)| *host)
            .collect()
    }
}

/// One lock as the JSON of the table holds it: `[start, end or -1, 1 if a write lock, pid]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct StoredLock {
    start: i64,
    end: i64,
    write: bool,
    pid: u32,
}

/// coord.rs `end_of`: "to the end of the file" is -1 in the table.
fn end_of(end: u64) -> i64 {
    if end >= i64::MAX as u64 {
        -1
    } else {
        end as i64
    }
}

impl StoredLock {
    fn from_range(l: &LockRange) -> StoredLock {
        // cjson reads the start back as a double; every start the kernel hands over fits.
        StoredLock {
            start: l.start.min(i64::MAX as u64) as i64,
            end: end_of(l.end),
            write: l.typ == libc::F_WRLCK,
            pid: l.pid,
        }
    }

    /// coord.rs `decode_lock`.
    fn to_range(self) -> LockRange {
        LockRange {
            start: self.start.max(0) as u64,
            end: if self.end < 0 { i64::MAX as u64 } else { self.end as u64 },
            typ: if self.write { libc::F_WRLCK } else { libc::F_RDLCK },
            pid: self.pid,
        }
    }
}

impl MemRedis {
    pub fn new() -> MemRedis {
        MemRedis::default()
    }

    /// `SET host:<id> 1 PX 5000`.
    pub fn renew(&mut self, host: HostId, now: Duration) {
        self.heartbeats.insert(host, now + HEARTBEAT_TTL);
    }

    /// `DEL host:<id>` (an unmount says goodbye).
    pub fn goodbye(&mut self, host: HostId) {
        self.heartbeats.remove(&host);
    }

    /// Whether `host`'s heartbeat key exists at `now`.
    pub fn is_live(&self, host: HostId, now: Duration) -> bool {
        self.heartbeats.get(&host).is_some_and(|&expires| expires > now)
    }

    /// When `host`'s heartbeat key expires (or expired).
    pub fn expiry(&self, host: HostId) -> Option<Duration> {
        self.heartbeats.get(&host).copied()
    }

    /// `SADD orphans:<host> <ino>`.
    pub fn hold_orphan(&mut self, host: HostId, ino: Ino) {
        self.orphans.entry(host).or_default().insert(ino);
    }

    /// `SREM orphans:<host> <ino>`.
    pub fn drop_orphan(&mut self, host: HostId, ino: Ino) {
        if let Some(set) = self.orphans.get_mut(&host) {
            set.remove(&ino);
            if set.is_empty() {
                self.orphans.remove(&host);
            }
        }
    }

    /// coord.rs `LockService::orphans` of host `me` at `now`: what live hosts hold, and the
    /// dead hosts' sets with their members (orphan and open sets).
    pub fn orphans(&self, me: HostId, now: Duration) -> Orphans {
        let mut out = Orphans::default();
        for (host, set) in self.orphan_sets() {
            if host == me || self.is_live(host, now) {
                out.held.extend(set);
            } else {
                out.dead_sets.push((host, set.iter().copied().collect()));
            }
        }
        out
    }

    /// `DEL orphans:<id> opens:<id>...`.
    pub fn forget_sets(&mut self, hosts: &[HostId]) {
        for h in hosts {
            self.orphans.remove(h);
            self.opens.remove(h);
        }
    }

    /// Every host's orphan set and open set, as one set per host (the liveness checks).
    pub fn orphan_sets(&self) -> BTreeMap<HostId, BTreeSet<Ino>> {
        let mut sets = self.orphans.clone();
        for (host, set) in &self.opens {
            sets.entry(*host).or_default().extend(set);
        }
        sets
    }

    /// `SREM opens:<me> <ino>`, `SREM openers:<ino> <me>` (Redis deletes emptied sets).
    fn unlist(&mut self, me: HostId, ino: Ino) {
        if let Some(set) = self.opens.get_mut(&me) {
            set.remove(&ino);
            if set.is_empty() {
                self.opens.remove(&me);
            }
        }
        if let Some(set) = self.openers.get_mut(&ino) {
            set.remove(&me);
            if set.is_empty() {
                self.openers.remove(&ino);
            }
        }
    }

    /// coord.rs `OPEN`: whether `ino` got listed as open by `me` (not while being deleted).
    fn list_open(&mut self, me: HostId, now: Duration, ino: Ino) -> bool {
        if self.reaping.get(&ino).is_some_and(|&expires| expires > now) {
            return false;
        }
        self.opens.entry(me).or_default().insert(ino);
        self.openers.entry(ino).or_default().insert(me);
        true
    }

    /// coord.rs `REAP` with `close`: whether another live host holds `ino` open (or it was
    /// not unlinked while held).
    fn close(&mut self, me: HostId, now: Duration, ino: Ino) -> bool {
        let held = self.holders_live(me, now, ino);
        self.drop_orphan(me, ino);
        held || !self.unlinked.contains(&ino)
    }

    /// coord.rs `LockService::relist_opens`: `host`'s heartbeat is renewed after a lapse, and it
    /// lists its open files again in its open set (the others may have forgotten it).
    pub fn relist_opens(&mut self, host: HostId) {
        let listed: BTreeSet<Ino> =
            self.openers.iter().filter(|(_, hosts)| hosts.contains(&host)).map(|(ino, _)| *ino).collect();
        if !listed.is_empty() {
            self.opens.entry(host).or_default().extend(listed);
        }
    }

    /// Whether a live host (`me` counts as live) lists `ino` open (`openers:<ino>`): the
    /// per-file listing outlives a host's lapse, when its open set may have been forgotten.
    pub fn held_open(&self, me: HostId, now: Duration, ino: Ino) -> bool {
        self.openers.get(&ino).is_some_and(|hosts| hosts.iter().any(|h| *h == me || self.is_live(*h, now)))
    }

    /// `me` leaves `ino`'s hosts; whether a live host is left among them.
    fn holders_live(&mut self, me: HostId, now: Duration, ino: Ino) -> bool {
        self.unlist(me, ino);
        self.openers.get(&ino).is_some_and(|hosts| hosts.iter().any(|h| self.is_live(*h, now)))
    }

    /// coord.rs `REAP`: whether another live host holds `ino` open.
    fn reap(&mut self, me: HostId, now: Duration, ino: Ino) -> bool {
        let held = self.holders_live(me, now, ino);
        if held {
            self.drop_orphan(me, ino);
            self.unlinked.insert(ino);
        } else {
            self.reaping.insert(ino, now + REAPING_TTL);
            self.unlinked.remove(&ino);
            self.openers.remove(&ino);
        }
        held
    }

    /// The locks the table holds for `host` on `ino` (what other hosts are checked against).
    pub fn held(&self, ino: Ino, host: HostId) -> Vec<LockRange> {
        self.locks
            .get(&ino)
            .and_then(|h| h.get(&host))
            .map(|ls| ls.iter().map(|l| l.to_range()).collect())
            .unwrap_or_default()
    }

    /// `LockService::execute` of the host `me` at `now`.
    pub fn execute(&mut self, me: HostId, now: Duration, req: &LockRequest) -> IoResult {
        match req {
            LockRequest::Publish { ino, held } => {
                self.store(*ino, me, held);
                Ok(IoReply::Done)
            }
            LockRequest::Acquire { ino, want, held } => {
                let found = self.conflict(*ino, me, now, want);
                if found.is_none() {
                    self.store(*ino, me, held);
                }
                Ok(IoReply::LockConflict(found))
            }
            LockRequest::Query { ino, want } => Ok(IoReply::LockConflict(self.conflict(*ino, me, now, want))),
            LockRequest::Open { ino } => {
                self.scripts += 1;
                if self.list_open(me, now, *ino) {
                    Ok(IoReply::Done)
                } else {
                    Err(IoError::new(IoErrorKind::NotFound, format!("inode {ino} is being deleted by another host")))
                }
            }
            LockRequest::Close { ino } => {
                self.scripts += 1;
                Ok(IoReply::Held(self.close(me, now, *ino)))
            }
            LockRequest::Reap { ino } => {
                self.scripts += 1;
                Ok(IoReply::Held(self.reap(me, now, *ino)))
            }
        }
    }

    /// `HSET locks:<ino> <me> <json>`, or `HDEL` when nothing is held.
    fn store(&mut self, ino: Ino, me: HostId, held: &[LockRange]) {
        if held.is_empty() {
            if let Some(h) = self.locks.get_mut(&ino) {
                h.remove(&me);
                if h.is_empty() {
                    self.locks.remove(&ino);
                }
            }
        } else {
            self.locks.entry(ino).or_default().insert(me, held.iter().map(StoredLock::from_range).collect());
        }
    }

    /// The `conflict` function of the ACQUIRE script.
    fn conflict(&mut self, ino: Ino, me: HostId, now: Duration, want: &LockRange) -> Option<LockRange> {
        self.scripts += 1;
        let (start, stop) = (want.start.min(i64::MAX as u64) as i64, end_of(want.end));
        let stop = if stop < 0 { i64::MAX } else { stop };
        let write = want.typ == libc::F_WRLCK;
        let hosts: Vec<HostId> = self.locks.get(&ino)?.keys().copied().filter(|h| *h != me).collect();
        for h in hosts {
            if !self.is_live(h, now) {
                let table = self.locks.get_mut(&ino).expect("the hash was read above");
                table.remove(&h);
                if table.is_empty() {
                    self.locks.remove(&ino);
                    return None;
                }
                continue;
            }
            for l in &self.locks[&ino][&h] {
                let lstop = if l.end < 0 { i64::MAX } else { l.end };
                if l.start <= stop && start <= lstop && (l.write || write) {
                    return Some(l.to_range());
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: u64, end: u64, typ: i32) -> LockRange {
        LockRange { start, end, typ, pid: 7 }
    }

    #[test]
    fn a_dead_hosts_locks_stop_counting_when_its_heartbeat_expires() {
        let mut r = MemRedis::new();
        let t0 = Duration::from_secs(10);
        r.renew(1, t0);
        r.renew(2, t0);
        let w = range(0, 9, libc::F_WRLCK);
        let take = |held: Vec<LockRange>| LockRequest::Acquire { ino: 5, want: w, held };
        assert_eq!(r.execute(1, t0, &take(vec![w])), Ok(IoReply::LockConflict(None)));
        assert_eq!(r.execute(2, t0, &take(vec![w])), Ok(IoReply::LockConflict(Some(w))));
        // Host 1 stops renewing: still live until 5 s after its last renewal.
        let later = t0 + HEARTBEAT_TTL - Duration::from_millis(1);
        r.renew(2, later);
        assert_eq!(r.execute(2, later, &take(vec![w])), Ok(IoReply::LockConflict(Some(w))));
        let expired = t0 + HEARTBEAT_TTL;
        assert_eq!(r.execute(2, expired, &take(vec![w])), Ok(IoReply::LockConflict(None)));
        assert!(r.held(5, 1).is_empty(), "the dead host's entry is deleted by the script");
        assert_eq!(r.held(5, 2), vec![w]);
    }

    #[test]
    fn orphan_sets_split_by_whether_their_host_lives() {
        let mut r = MemRedis::new();
        let t0 = Duration::from_secs(10);
        r.renew(1, t0);
        r.renew(2, t0);
        r.hold_orphan(1, 7);
        r.hold_orphan(2, 8);
        r.hold_orphan(2, 9);
        let later = t0 + HEARTBEAT_TTL;
        r.renew(1, later);
        // Host 2's heartbeat expired; its own set always counts as live to a host.
        let o = r.orphans(1, later);
        assert_eq!(o.held, [7].into());
        assert_eq!(o.dead_sets, vec![(2, vec![8, 9])]);
        assert_eq!(r.orphans(2, later).held, [7, 8, 9].into());
        // 8 is deleted, 9 is left: the set stays until nothing it lists is left.
        assert_eq!(o.done_sets(&[9].into()), Vec::<HostId>::new());
        assert_eq!(o.done_sets(&[].into()), vec![2]);
        r.drop_orphan(1, 7);
        assert!(!r.orphan_sets().contains_key(&1), "a set goes with its last member");
        r.forget_sets(&[2]);
        assert!(r.orphan_sets().is_empty());
    }

    #[test]
    fn open_listings_keep_an_unlinked_file_until_its_last_live_holder_closes() {
        let mut r = MemRedis::new();
        let t0 = Duration::from_secs(10);
        for h in [1, 2, 3] {
            r.renew(h, t0);
        }
        let (open, close, reap) =
            (|ino| LockRequest::Open { ino }, |ino| LockRequest::Close { ino }, |ino| LockRequest::Reap { ino });
        assert_eq!(r.execute(1, t0, &open(7)), Ok(IoReply::Done));
        assert_eq!(r.execute(2, t0, &open(7)), Ok(IoReply::Done));
        // Host 3 unlinked it (its orphan listing goes to the holders): held.
        r.hold_orphan(3, 7);
        assert_eq!(r.execute(3, t0, &reap(7)), Ok(IoReply::Held(true)));
        assert!(!r.orphans.contains_key(&3));
        // Host 1 closes, not knowing: host 2 still holds it.
        assert_eq!(r.execute(1, t0, &close(7)), Ok(IoReply::Held(true)));
        // Host 2 lapses: host 1's reap would find nobody; its last close says "yours".
        let later = t0 + HEARTBEAT_TTL;
        r.renew(1, later);
        assert_eq!(r.execute(1, later, &open(7)), Ok(IoReply::Done));
        assert_eq!(r.execute(1, later, &close(7)), Ok(IoReply::Held(false)));
        // Host 1 reaps it: free, and opens are refused until the mark expires.
        assert_eq!(r.execute(1, later, &reap(7)), Ok(IoReply::Held(false)));
        assert!(r.execute(3, later, &open(7)).is_err_and(|e| e.kind == IoErrorKind::NotFound));
        assert!(!r.openers.contains_key(&7), "the reap drops the file's hosts");
        assert_eq!(r.execute(3, later + REAPING_TTL, &open(7)), Ok(IoReply::Done));
    }

    #[test]
    fn read_locks_share_and_to_the_end_of_file_is_stored_as_minus_one() {
        let mut r = MemRedis::new();
        let now = Duration::from_secs(1);
        r.renew(1, now);
        r.renew(2, now);
        let to_eof = range(4, u64::MAX, libc::F_RDLCK);
        r.execute(1, now, &LockRequest::Publish { ino: 3, held: vec![to_eof] }).unwrap();
        let read = range(100, 200, libc::F_RDLCK);
        assert_eq!(r.execute(2, now, &LockRequest::Query { ino: 3, want: read }), Ok(IoReply::LockConflict(None)));
        let write = range(100, 200, libc::F_WRLCK);
        let seen = LockRange { end: i64::MAX as u64, ..to_eof };
        assert_eq!(
            r.execute(2, now, &LockRequest::Query { ino: 3, want: write }),
            Ok(IoReply::LockConflict(Some(seen)))
        );
        // A query takes nothing.
        assert!(r.held(3, 2).is_empty());
        r.execute(1, now, &LockRequest::Publish { ino: 3, held: vec![] }).unwrap();
        assert_eq!(r.execute(2, now, &LockRequest::Query { ino: 3, want: write }), Ok(IoReply::LockConflict(None)));
    }
}
