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

/// Before `txn` is executed: every inode whose last name it takes is listed as held by `me`
/// (`held`: what this host's driver listed already; `Txn::unnamed`).
pub fn hold(redis: &mut MemRedis, me: HostId, held: &mut BTreeSet<Ino>, txn: &Txn) {
    for ino in txn.unnamed() {
        if held.insert(ino) {
            redis.hold_orphan(me, ino);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::HEARTBEAT_TTL;
    use truckeefs_core::testkit::file_row as row;
    use truckeefs_core::{IoReply, LockRequest};

    fn commit(ops: Vec<TxnOp>) -> Txn {
        Txn { ops, durable: false }
    }

    // Once reproduced by `--seed 604247 --steps 800 --hosts 3`: a host unlinked a file another
    // host had open, reaped it (held elsewhere: unlisted), then committed its upload with no
    // links; that commit listed it again, and once the other host died nobody collected it.
    #[test]
    fn an_upload_committed_after_the_reap_does_not_list_the_file_again() {
        let mut r = MemRedis::new();
        let t0 = Duration::from_secs(10);
        r.renew(1, t0);
        r.renew(2, t0);
        let mut held = BTreeSet::new();
        assert_eq!(r.execute(2, t0, &LockRequest::Open { ino: 7 }), Ok(IoReply::Done));
        let unlink = TxnOp::DeleteDentry { parent: 1, name: b"f".to_vec(), ino: 7 };
        hold(&mut r, 1, &mut held, &commit(vec![unlink, TxnOp::UpdateInode { row: row(7, 0), expect_version: 1 }]));
        assert_eq!(r.orphan_sets().get(&1), Some(&[7].into()), "the unlink lists it");
        // Host 1's last close: host 2 holds it (sim.rs drops it from `held` on this answer).
        assert_eq!(r.execute(1, t0, &LockRequest::Reap { ino: 7 }), Ok(IoReply::Held(true)));
        held.remove(&7);
        hold(&mut r, 1, &mut held, &commit(vec![TxnOp::UpdateInode { row: row(7, 0), expect_version: 2 }]));
        assert!(!r.orphan_sets().contains_key(&1), "the upload's commit lists it again");
        // Host 2 dies: host 1's collection may delete the file.
        let later = t0 + HEARTBEAT_TTL;
        r.renew(1, later);
        let mut rows = vec![row(7, 0)];
        spare(&mut r, 1, later, &mut rows);
        assert_eq!(rows.iter().map(|r| r.ino).collect::<Vec<_>>(), vec![7]);
    }
}
