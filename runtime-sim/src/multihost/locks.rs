//! The model of record locks across hosts: who holds what, what was let go of lately (or held
//! by a crashed host whose heartbeat lives on), and which answers that explains.

use super::{Act, Handle, Mh, Running, R};
use crate::redis::HostId;
use std::time::Duration;
use truckeefs_core::{Ino, LockRange, Reply};

/// Record locks are taken on bytes 0..16; slot 16 stands for "16 to the end of the file".
pub(super) const SLOTS: usize = 17;
/// A slot without a lock (`F_RDLCK` is 0).
pub(super) const NONE: i32 = -1;
/// How long a released lock may still be seen by another host (its `Publish` in flight, up to a
/// slow metadata latency).
pub(super) const RELEASE_LINGER: Duration = Duration::from_secs(1);

/// A lock owner's locks on one file: per slot, the type and when it was granted.
#[derive(Clone)]
pub(super) struct OwnerLocks {
    pub(super) host: usize,
    pub(super) redis_id: HostId,
    pub(super) ino: Ino,
    pub(super) slots: [(i32, Duration); SLOTS],
}

/// Locks let go of (or of a crashed host) that other hosts may still see until `until`.
pub(super) struct Lingering {
    pub(super) ino: Ino,
    pub(super) host: usize,
    /// The holder's id in Redis (a restarted host has a new one: its old locks are another's).
    pub(super) redis_id: HostId,
    pub(super) slots: [i32; SLOTS],
    pub(super) until: Duration,
}

/// How long an F_SETLKW may stay asleep after every conflicting lock went (and no lock let
/// go of lately, nor of a crashed host, could still be in the table): the core polls every
/// 200 ms; slow lock requests and time jumps (up to 3.5 s) make up the rest.
pub(super) const WAIT_BOUND: Duration = Duration::from_secs(15);

/// An F_SETLKW asleep: its request, and the last time a conflicting lock explained the wait.
pub(super) struct Waiter {
    pub(super) r: Running,
    pub(super) blocked_at: Duration,
}

impl Waiter {
    pub(super) fn handle(&self) -> usize {
        match self.r.act {
            Act::SetLkW { h, .. } => h,
            _ => unreachable!("a waiter is an F_SETLKW"),
        }
    }

    fn lock(&self) -> LockRange {
        match self.r.act {
            Act::SetLkW { lock, .. } => lock,
            _ => unreachable!("a waiter is an F_SETLKW"),
        }
    }
}

pub(super) fn slots_of(l: &LockRange) -> std::ops::RangeInclusive<usize> {
    let start = l.start.min(16) as usize;
    let end = if l.end >= 16 { 16 } else { l.end as usize };
    start..=end
}

pub(super) fn conflicts(a: i32, b: i32) -> bool {
    a != NONE && b != NONE && a != libc::F_UNLCK && b != libc::F_UNLCK && (a == libc::F_WRLCK || b == libc::F_WRLCK)
}

impl Mh {
    pub(super) fn forfeited(&self, l: &OwnerLocks, slot: usize) -> bool {
        self.c.lapsed_between(l.redis_id, l.slots[slot].1, self.c.now)
    }

    /// A granted lock must conflict with no lock another owner holds (unless the holder's
    /// lease lapsed meanwhile, so that other hosts rightly stopped counting it).
    pub(super) fn check_grant(&self, x: &Handle, lock: &LockRange) -> Result<(), String> {
        if lock.typ == libc::F_UNLCK {
            return Ok(());
        }
        for (o, l) in &self.locks {
            if *o == x.owner || l.ino != x.ino {
                continue;
            }
            for s in slots_of(lock) {
                let going = self.releasing.iter().any(|(ro, r)| ro == o && slots_of(r).contains(&s));
                if conflicts(l.slots[s].0, lock.typ) && (l.host == x.host || !self.forfeited(l, s)) && !going {
                    return Err(format!(
                        "granted {lock:?}, but owner {o} on host {} holds a conflicting lock on byte {s} (granted at {:?})",
                        l.host, l.slots[s].1
                    ));
                }
            }
        }
        Ok(())
    }

    /// An EAGAIN (or a lock reported by F_GETLK) is explained by another owner's conflicting
    /// lock held now, let go of lately, or of a crashed host whose heartbeat had not expired.
    pub(super) fn conflict_explained(&self, x: &Handle, lock: &LockRange, issued: Duration) -> bool {
        let held = self
            .locks
            .iter()
            .any(|(o, l)| *o != x.owner && l.ino == x.ino && slots_of(lock).any(|s| conflicts(l.slots[s].0, lock.typ)));
        let lingering = self.lingering.iter().any(|g| {
            g.ino == x.ino
                && g.until > issued
                && g.redis_id != self.c.hosts[x.host].w.host_id
                && slots_of(lock).any(|s| conflicts(g.slots[s], lock.typ))
        });
        held || lingering
    }

    /// A conflicting lock F_GETLK must report: held by another owner since before the request
    /// was sent (and not forfeited by a lapsed lease).
    pub(super) fn must_report(&self, x: &Handle, lock: &LockRange, issued: Duration) -> Option<u64> {
        if lock.typ == libc::F_UNLCK {
            return None;
        }
        self.locks
            .iter()
            .find(|(o, l)| {
                **o != x.owner
                    && l.ino == x.ino
                    && slots_of(lock).any(|s| {
                        conflicts(l.slots[s].0, lock.typ)
                            && l.slots[s].1 < issued
                            && (l.host == x.host || !self.forfeited(l, s))
                    })
            })
            .map(|(o, _)| *o)
    }

    /// The model's locks on `ino`, for failure messages.
    pub(super) fn locks_of(&self, ino: Ino) -> String {
        let show = |slots: &[i32]| {
            slots
                .iter()
                .map(|t| match *t {
                    libc::F_RDLCK => 'r',
                    libc::F_WRLCK => 'w',
                    _ => '.',
                })
                .collect::<String>()
        };
        let mut out = String::new();
        for (o, l) in self.locks.iter().filter(|(_, l)| l.ino == ino) {
            out.push_str(&format!("owner {o} host {}: {} ", l.host, show(&l.slots.map(|s| s.0))));
        }
        for g in self.lingering.iter().filter(|g| g.ino == ino) {
            out.push_str(&format!("lingering host {} until {:?}: {} ", g.host, g.until, show(&g.slots)));
        }
        out
    }

    pub(super) fn set_lock(&mut self, x: &Handle, lock: &LockRange, now: Duration) {
        let redis_id = self.c.hosts[x.host].w.host_id;
        let entry = self.locks.entry(x.owner).or_insert(OwnerLocks {
            host: x.host,
            redis_id,
            ino: x.ino,
            slots: [(NONE, Duration::ZERO); SLOTS],
        });
        let mut released = [NONE; SLOTS];
        for s in slots_of(lock) {
            if lock.typ == libc::F_UNLCK {
                released[s] = entry.slots[s].0;
                entry.slots[s] = (NONE, Duration::ZERO);
            } else {
                if entry.slots[s].0 == libc::F_WRLCK && lock.typ == libc::F_RDLCK {
                    released[s] = libc::F_WRLCK;
                }
                entry.slots[s] = (lock.typ, now);
            }
        }
        if entry.slots.iter().all(|s| s.0 == NONE) {
            self.locks.remove(&x.owner);
        }
        if released.iter().any(|t| *t != NONE) {
            self.lingering.push(Lingering {
                ino: x.ino,
                host: x.host,
                redis_id: self.c.hosts[x.host].w.host_id,
                slots: released,
                until: now + RELEASE_LINGER,
            });
        }
    }

    pub(super) fn release_owner(&mut self, owner: u64, now: Duration) {
        if let Some(l) = self.locks.remove(&owner) {
            self.lingering.push(Lingering {
                ino: l.ino,
                host: l.host,
                redis_id: l.redis_id,
                slots: l.slots.map(|s| s.0),
                until: now + RELEASE_LINGER,
            });
        }
        self.lingering.retain(|g| g.until + Duration::from_secs(60) > now);
    }
}

impl Mh {
    /// The answer to an F_SETLKW: a grant must conflict with no lock another owner holds now
    /// (across hosts); it never answers EAGAIN; ENOLCK only after a fault (the lock service
    /// failed).
    pub(super) fn waiter_answered(&mut self, r: &Running, h: usize, lock: &LockRange, reply: Result<Reply, i32>) -> R<()> {
        let x = self.handles[&h].clone();
        match reply {
            Ok(Reply::Empty) => {
                self.check_grant(&x, lock).map_err(|e| self.unexpected(r, format!("F_SETLKW {e}")))?;
                self.set_lock(&x, lock, self.c.now);
                Ok(())
            }
            Err(libc::ENOLCK) if self.fault_seen(r) => Ok(()),
            Err(e) if self.handle_error_ok(r, h, e) => Ok(()),
            other => Err(self.unexpected(r, format!("{other:?}"))),
        }
    }

    /// Take the answers of sleeping F_SETLKW requests. Whether there was one.
    pub(super) fn poll_waiters(&mut self) -> R<bool> {
        let mut any = false;
        let mut i = 0;
        while i < self.waiters.len() {
            let (host, id) = (self.waiters[i].r.host, self.waiters[i].r.id);
            let Some(reply) = self.c.take_reply(host, id) else {
                i += 1;
                continue;
            };
            any = true;
            let w = self.waiters.remove(i);
            self.c.trace.note(
                self.c.now.as_micros() as u64,
                format!("host {host}: {} (asleep since {:?}) -> {reply:?}", w.r.act_name(), w.r.issued),
            );
            let (h, lock) = (w.handle(), w.lock());
            self.waiter_answered(&w.r, h, &lock, reply)?;
        }
        Ok(any)
    }

    /// No F_SETLKW sleeps on for long once nothing explains the wait: no other owner holds a
    /// conflicting lock (on any host), none let go of one lately, and no crashed host's
    /// heartbeat keeps one in the table.
    pub(super) fn check_waiters(&mut self) -> R<()> {
        let now = self.c.now;
        for i in 0..self.waiters.len() {
            let (h, lock) = (self.waiters[i].handle(), self.waiters[i].lock());
            let x = self.handles[&h].clone();
            if self.conflict_explained(&x, &lock, now) {
                self.waiters[i].blocked_at = now;
                continue;
            }
            if now > self.waiters[i].blocked_at + WAIT_BOUND {
                let w = &self.waiters[i];
                return Err(self.unexpected(
                    &w.r,
                    format!(
                        "F_SETLKW asleep since {:?}, {:?} after the last conflicting lock went: {}",
                        w.r.issued,
                        now - w.blocked_at,
                        self.locks_of(x.ino)
                    ),
                ));
            }
        }
        Ok(())
    }
}
