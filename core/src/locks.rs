//! POSIX record locks (`fcntl` F_GETLK / F_SETLK / F_SETLKW) for one host.
//!
//! Ranges are inclusive (`start..=end`), as the kernel hands them over. A lock owner is the
//! kernel's `lock_owner` (one per open file description table / process). Locks of one owner
//! never conflict with each other; a new lock of an owner replaces its old locks on the overlap.

use crate::op::LockRange;
use crate::types::Ino;
use std::collections::HashMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PosixLock {
    pub owner: u64,
    pub pid: u32,
    pub start: u64,
    pub end: u64,
    /// `F_RDLCK` or `F_WRLCK`.
    pub typ: i32,
}

impl PosixLock {
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start <= end && start <= self.end
    }
}

/// Every record lock held on this host, by inode.
#[derive(Default, Debug)]
pub struct LockTable {
    by_ino: HashMap<Ino, Vec<PosixLock>>,
}

impl LockTable {
    /// The first lock of another owner that conflicts with `want`, if any.
    pub fn conflict(&self, ino: Ino, owner: u64, want: &LockRange) -> Option<PosixLock> {
        let locks = self.by_ino.get(&ino)?;
        locks
            .iter()
            .find(|l| {
                l.owner != owner
                    && l.overlaps(want.start, want.end)
                    && (l.typ == libc::F_WRLCK || want.typ == libc::F_WRLCK)
            })
            .copied()
    }

    /// Set (or, with `F_UNLCK`, clear) `owner`'s lock on the range. The caller has checked for
    /// conflicts. Returns whether anything was released (so waiters should retry).
    pub fn set(&mut self, ino: Ino, owner: u64, want: &LockRange) -> bool {
        let locks = self.by_ino.entry(ino).or_default();
        let mut kept = Vec::with_capacity(locks.len() + 2);
        let mut released = false;
        for l in locks.drain(..) {
            if l.owner != owner || !l.overlaps(want.start, want.end) {
                kept.push(l);
                continue;
            }
            released = true;
            // Keep the parts of the old lock outside the new range.
            if l.start < want.start {
                kept.push(PosixLock { end: want.start - 1, ..l });
            }
            if l.end > want.end {
                kept.push(PosixLock { start: want.end + 1, ..l });
            }
        }
        if want.typ != libc::F_UNLCK {
            kept.push(PosixLock { owner, pid: want.pid, start: want.start, end: want.end, typ: want.typ });
            // Merge adjacent or overlapping locks of the same owner and type.
            kept.sort_by_key(|l| (l.owner, l.typ, l.start));
            let mut merged: Vec<PosixLock> = Vec::with_capacity(kept.len());
            for l in kept {
                match merged.last_mut() {
                    Some(m)
                        if m.owner == l.owner
                            && m.typ == l.typ
                            && (m.end == u64::MAX || l.start <= m.end + 1) =>
                    {
                        m.end = m.end.max(l.end);
                    }
                    _ => merged.push(l),
                }
            }
            kept = merged;
        }
        if kept.is_empty() {
            self.by_ino.remove(&ino);
        } else {
            *locks = kept;
        }
        released
    }

    /// Drop every lock `owner` holds on `ino` (close of the owner's last descriptor).
    pub fn release_owner(&mut self, ino: Ino, owner: u64) -> bool {
        let Some(locks) = self.by_ino.get_mut(&ino) else { return false };
        let before = locks.len();
        locks.retain(|l| l.owner != owner);
        let released = locks.len() != before;
        if locks.is_empty() {
            self.by_ino.remove(&ino);
        }
        released
    }

    /// Every lock held on `ino`, of every owner: this host's locks as other hosts see them.
    pub fn held(&self, ino: Ino) -> Vec<LockRange> {
        self.by_ino
            .get(&ino)
            .map(|ls| ls.iter().map(|l| LockRange { start: l.start, end: l.end, typ: l.typ, pid: l.pid }).collect())
            .unwrap_or_default()
    }

    /// What `held` would return after `set(ino, owner, want)`.
    pub fn held_after(&self, ino: Ino, owner: u64, want: &LockRange) -> Vec<LockRange> {
        let mut t = LockTable::default();
        if let Some(ls) = self.by_ino.get(&ino) {
            t.by_ino.insert(ino, ls.clone());
        }
        t.set(ino, owner, want);
        t.held(ino)
    }

    pub fn is_locked(&self, ino: Ino) -> bool {
        self.by_ino.contains_key(&ino)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: u64, end: u64, typ: i32) -> LockRange {
        LockRange { start, end, typ, pid: 7 }
    }

    #[test]
    fn write_lock_conflicts_with_other_owner_only() {
        let mut t = LockTable::default();
        t.set(1, 10, &range(0, 99, libc::F_WRLCK));
        assert!(t.conflict(1, 10, &range(0, 9, libc::F_WRLCK)).is_none());
        assert_eq!(t.conflict(1, 11, &range(50, 60, libc::F_RDLCK)).map(|l| l.owner), Some(10));
        assert!(t.conflict(1, 11, &range(100, 200, libc::F_WRLCK)).is_none());
    }

    #[test]
    fn read_locks_share() {
        let mut t = LockTable::default();
        t.set(1, 10, &range(0, u64::MAX, libc::F_RDLCK));
        assert!(t.conflict(1, 11, &range(0, 5, libc::F_RDLCK)).is_none());
        assert!(t.conflict(1, 11, &range(0, 5, libc::F_WRLCK)).is_some());
    }

    #[test]
    fn unlock_in_the_middle_splits() {
        let mut t = LockTable::default();
        t.set(1, 10, &range(0, 99, libc::F_WRLCK));
        assert!(t.set(1, 10, &range(40, 59, libc::F_UNLCK)));
        assert!(t.conflict(1, 11, &range(40, 59, libc::F_WRLCK)).is_none());
        assert!(t.conflict(1, 11, &range(39, 39, libc::F_WRLCK)).is_some());
        assert!(t.conflict(1, 11, &range(60, 60, libc::F_WRLCK)).is_some());
    }

    #[test]
    fn release_owner_frees_everything() {
        let mut t = LockTable::default();
        t.set(1, 10, &range(0, 9, libc::F_WRLCK));
        t.set(1, 10, &range(20, 29, libc::F_RDLCK));
        assert!(t.release_owner(1, 10));
        assert!(!t.is_locked(1));
    }
}
