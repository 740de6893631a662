//! Several hosts: when this host's metadata requests may go out.
//!
//! A transaction updates a row only if the row is still at the version it names, which is the
//! version this host last knew plus the transactions of its own in flight on that row: the core
//! builds the next one on the version the last one will give the row. Sent at once, such a
//! transaction goes wrong when the one before it fails. If another host changed the row
//! meanwhile, the earlier transaction conflicts, but its version plus one may be exactly the
//! version the other host's change gave the row: the later transaction then matches it and
//! overwrites that change with a copy built on what went before. (Found by the simulator:
//! another host's link of a file was overwritten by this host's atime update, the row kept one
//! link of two, and the file was deleted at the unlink of the other name.)
//!
//! So with several hosts a transaction updating a row that a transaction of this host has in
//! flight is held until that one is answered: sent if it succeeded, failed here with
//! `Conflict` (as the store would have, had no other host chosen the same version) if it did
//! not. While one is held, every later request of the metadata stream (loads, the other
//! transactions, and the listings of open files that run in that stream) waits behind it: they
//! reach the stores in the order they were issued, which the core counts on (a load issued
//! after a transaction shows what it changed).

use crate::io::{IoRequest, MetaRequest, TxnOp};
use crate::types::{Ino, IoId};
use std::collections::{HashMap, HashSet, VecDeque};

/// What to do with a held request now.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Send it.
    Send(IoId, IoRequest),
    /// Fail it with `Conflict`: a transaction it was built on failed.
    Fail(IoId),
}

#[derive(Debug, Default)]
pub struct MetaOrder {
    /// Per row: transactions sent and not yet answered.
    in_flight: HashMap<Ino, u32>,
    /// Every request held or transaction in flight: the rows it updates, and whether it was
    /// sent.
    rows: HashMap<IoId, (Vec<Ino>, bool)>,
    /// Held back, in the order they were issued.
    held: VecDeque<(IoId, IoRequest)>,
    /// Held transactions built on one that failed.
    doomed: HashSet<IoId>,
}

/// The rows whose versions `request` (a transaction) names.
fn versioned_rows(request: &IoRequest) -> Vec<Ino> {
    let IoRequest::Meta(MetaRequest::Commit(txn)) = request else { return Vec::new() };
    let mut rows: Vec<Ino> = txn
        .ops
        .iter()
        .filter_map(|op| match op {
            TxnOp::UpdateInode { row, .. } => Some(row.ino),
            TxnOp::DeleteInode { ino } => Some(*ino),
            _ => None,
        })
        .collect();
    rows.sort_unstable();
    rows.dedup();
    rows
}

impl MetaOrder {
    /// Request `io` of the metadata stream is issued: returned if it may go now, held
    /// otherwise.
    pub fn issue(&mut self, io: IoId, request: IoRequest) -> Option<IoRequest> {
        let rows = versioned_rows(&request);
        let busy = rows.iter().any(|r| self.in_flight.contains_key(r));
        if busy || !self.held.is_empty() {
            self.rows.insert(io, (rows, false));
            self.held.push_back((io, request));
            return None;
        }
        self.send(io, rows);
        Some(request)
    }

    fn send(&mut self, io: IoId, rows: Vec<Ino>) {
        if rows.is_empty() {
            return;
        }
        for r in &rows {
            *self.in_flight.entry(*r).or_insert(0) += 1;
        }
        self.rows.insert(io, (rows, true));
    }

    /// Request `io` was answered (or failed here): if it was a transaction that `failed`,
    /// every held one that updates one of its rows fails too. (Any other request: ignored.)
    pub fn answered(&mut self, io: IoId, failed: bool) {
        let Some((rows, sent)) = self.rows.remove(&io) else { return };
        self.doomed.remove(&io);
        if sent {
            for r in &rows {
                if let Some(n) = self.in_flight.get_mut(r) {
                    *n -= 1;
                    if *n == 0 {
                        self.in_flight.remove(r);
                    }
                }
            }
        }
        if failed {
            for (held, _) in &self.held {
                if self.rows.get(held).is_some_and(|(theirs, _)| theirs.iter().any(|r| rows.contains(r))) {
                    self.doomed.insert(*held);
                }
            }
        }
    }

    /// The next held request to send, or held transaction to fail (counted as answered with a
    /// failure: those built on it fail too), if any.
    pub fn release(&mut self) -> Option<Next> {
        if let Some(i) = self.held.iter().position(|(io, _)| self.doomed.contains(io)) {
            let (io, _) = self.held.remove(i).expect("found above");
            self.answered(io, true);
            return Some(Next::Fail(io));
        }
        let (io, _) = self.held.front()?;
        let rows = &self.rows.get(io).expect("every held request is tracked").0;
        if rows.iter().any(|r| self.in_flight.contains_key(r)) {
            return None;
        }
        let (io, request) = self.held.pop_front().expect("looked at above");
        let rows = self.rows.remove(&io).expect("every held request is tracked").0;
        self.send(io, rows);
        Some(Next::Send(io, request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::Txn;

    fn update(ino: Ino) -> IoRequest {
        let row = crate::testkit::file_row(ino, 1);
        IoRequest::Meta(MetaRequest::Commit(Txn { ops: vec![TxnOp::UpdateInode { row, expect_version: 1 }], durable: false }))
    }

    fn load(ino: Ino) -> IoRequest {
        IoRequest::Meta(MetaRequest::LoadInode { ino })
    }

    #[test]
    fn a_transaction_on_a_row_in_flight_waits_for_the_answer() {
        let mut o = MetaOrder::default();
        assert!(o.issue(IoId(1), update(5)).is_some());
        assert!(o.issue(IoId(2), update(6)).is_some(), "another row goes at once");
        assert!(o.issue(IoId(3), update(5)).is_none());
        assert!(o.issue(IoId(4), update(7)).is_none(), "behind a held one, whatever its rows");
        assert!(o.issue(IoId(5), load(6)).is_none(), "a load too");
        let unlist = IoRequest::Lock(crate::io::LockRequest::Close { ino: 6 });
        assert!(o.issue(IoId(6), unlist.clone()).is_none(), "and the listings of open files");
        assert_eq!(o.release(), None);
        o.answered(IoId(1), false);
        assert_eq!(o.release(), Some(Next::Send(IoId(3), update(5))));
        assert_eq!(o.release(), Some(Next::Send(IoId(4), update(7))));
        assert_eq!(o.release(), Some(Next::Send(IoId(5), load(6))));
        assert_eq!(o.release(), Some(Next::Send(IoId(6), unlist)));
        assert_eq!(o.release(), None);
        assert!(o.held.is_empty());
        for io in 2..=6 {
            o.answered(IoId(io), false);
        }
        assert!(o.in_flight.is_empty() && o.rows.is_empty());
        assert!(o.issue(IoId(7), load(5)).is_some(), "nothing held, nothing in flight: at once");
    }

    #[test]
    fn a_transaction_built_on_a_failed_one_fails() {
        let mut o = MetaOrder::default();
        assert!(o.issue(IoId(1), update(5)).is_some());
        assert!(o.issue(IoId(2), update(6)).is_some());
        assert!(o.issue(IoId(3), update(6)).is_none());
        assert!(o.issue(IoId(4), update(5)).is_none());
        assert!(o.issue(IoId(5), update(5)).is_none());
        // Row 5's first transaction fails: both held on row 5 fail (the first, then the one
        // built on it), out of turn; row 6's waits for its own.
        o.answered(IoId(1), true);
        assert_eq!(o.release(), Some(Next::Fail(IoId(4))));
        assert_eq!(o.release(), Some(Next::Fail(IoId(5))));
        assert_eq!(o.release(), None);
        o.answered(IoId(2), false);
        assert_eq!(o.release(), Some(Next::Send(IoId(3), update(6))));
        o.answered(IoId(3), false);
        assert!(o.in_flight.is_empty() && o.rows.is_empty() && o.doomed.is_empty());
    }
}
