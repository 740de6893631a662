//! What the driver of several hosts does about files kept open after their last name went
//! (`runtime-smol/src/driver.rs`: `hold_orphans`, `drop_orphans`, `spare_live_hosts_orphans`),
//! on the Redis stand-in: a host lists such a file in its set before the transaction that takes
//! its last name is executed, and unlists it once a transaction deleting it committed; the
//! answer to `ListOrphans` leaves out what a live host lists, and a dead host's set goes once
//! none of its files is left. The periodic collection of dead hosts' orphans is driven by
//! [`crate::hosts`].

use crate::redis::{HostId, MemRedis};
use std::collections::BTreeSet;
use std::time::Duration;
use truckeefs_core::{InodeRow, Ino, Txn, TxnOp};

/// Before `txn` is executed: every inode it leaves without names is listed as held by `me`
/// (`held`: what this host's driver listed already).
/// (Not a row the same transaction deletes.)
pub fn hold(redis: &mut MemRedis, me: HostId, held: &mut BTreeSet<Ino>, txn: &Txn) {
    let deleted = |ino: Ino| txn.ops.iter().any(|op| matches!(op, TxnOp::DeleteInode { ino: i } if *i == ino));
    for op in &txn.ops {
        if let TxnOp::UpdateInode { row, .. } = op {
            if row.nlink == 0 && !deleted(row.ino) && held.insert(row.ino) {
                redis.hold_orphan(me, row.ino);
            }
        }
    }
}

/// After `txn` committed: the inodes it deleted that `me` listed are unlisted.
pub fn release(redis: &mut MemRedis, me: HostId, held: &mut BTreeSet<Ino>, txn: &Txn) {
    for op in &txn.ops {
        if let TxnOp::DeleteInode { ino } = op {
            if held.remove(ino) {
                redis.drop_orphan(me, *ino);
            }
        }
    }
}

/// The answer to `ListOrphans` of host `me` at `now`: none that a live host holds; the dead
/// hosts' sets of which nothing is left are forgotten.
pub fn spare(redis: &mut MemRedis, me: HostId, now: Duration, rows: &mut Vec<InodeRow>) {
    let o = redis.orphans(me, now);
    let left: BTreeSet<Ino> = rows.iter().map(|r| r.ino).collect();
    rows.retain(|r| !o.held.contains(&r.ino) && !redis.held_open(me, now, r.ino));
    redis.forget_sets(&o.done_sets(&left));
}
