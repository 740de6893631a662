//! Faults drawn from the seed at named points.
//!
//! Each seed gets a [`FaultProfile`] (about a third of the seeds run without faults); each I/O is
//! then offered to [`Faults::decide`], which draws from its own stream, so whether an I/O fails
//! depends only on the seed and the order of the I/O.

use crate::rng::Rng;
use truckeefs_core::{IoError, IoErrorKind, IoRequest, MetaRequest, StagingRequest, StoreRequest, Txn, TxnOp};

/// Per-seed fault probabilities (per I/O, or per step for crashes).
#[derive(Clone, Debug, Default)]
pub struct FaultProfile {
    /// A `Store::PutStaged` (an upload) fails.
    pub put_fail: f64,
    /// A `Store::Read` fails.
    pub store_read_fail: f64,
    /// A `Staging::Write` fails with no space left.
    pub staging_nospace: f64,
    /// A metadata `Commit` fails without applying anything.
    pub commit_fail: f64,
    /// A `Commit` is applied and its answer lost: it fails (a MySQL `COMMIT` whose answer the
    /// store could not settle). Durable commits of one inode row (an upload's, an fsync's), and
    /// the transactions of namespace and xattr changes (see `changes_names`).
    pub commit_lost: f64,
    /// A metadata `LoadInode` or `LoadDir` fails.
    pub load_fail: f64,
    /// A staging `Seal` or `Init` fails.
    pub staging_fail: f64,
    /// Any non-metadata I/O takes 100x longer.
    pub slow: f64,
    /// Between two steps, the mount crashes and restarts.
    pub crash: f64,
}

impl FaultProfile {
    pub fn none() -> FaultProfile {
        FaultProfile::default()
    }

    /// The profile of a seed: a third without faults, the rest with a random mix.
    pub fn draw(rng: &mut Rng) -> FaultProfile {
        if rng.chance(0.33) {
            return FaultProfile::none();
        }
        let mut level = || [0.0, 0.0, 0.005, 0.02, 0.08][rng.below(5) as usize];
        let (put_fail, store_read_fail, staging_nospace, commit) = (level(), level(), level(), level());
        FaultProfile {
            put_fail,
            store_read_fail,
            staging_nospace,
            commit_fail: commit / 4.0,
            // (From the same draw: the other seeds' profiles stay as they were.)
            commit_lost: commit / 2.0,
            load_fail: level() / 2.0,
            staging_fail: level() / 2.0,
            slow: level(),
            crash: [0.0, 0.0, 0.003, 0.01, 0.03][rng.below(5) as usize],
        }
    }

    pub fn is_none(&self) -> bool {
        self.put_fail == 0.0
            && self.store_read_fail == 0.0
            && self.staging_nospace == 0.0
            && self.commit_fail == 0.0
            && self.commit_lost == 0.0
            && self.load_fail == 0.0
            && self.staging_fail == 0.0
            && self.slow == 0.0
            && self.crash == 0.0
    }
}

/// What happens to one I/O.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The I/O is not performed and completes with this error.
    Fail(IoErrorKind),
    /// The I/O is performed, and completes with this error (its answer was lost).
    Lost(IoErrorKind),
    /// The I/O is performed, 100 times slower than usual.
    Slow,
}

impl Fault {
    pub fn error(&self, what: &str) -> Option<IoError> {
        match self {
            Fault::Fail(kind) => Some(IoError::new(*kind, format!("injected fault: {what}"))),
            Fault::Lost(kind) => Some(IoError::new(*kind, format!("injected fault: {what} applied, its answer lost"))),
            Fault::Slow => None,
        }
    }
}

/// A durable transaction changing one inode row: an upload's commit, or an fsync's.
fn one_row_durably(txn: &Txn) -> bool {
    txn.durable && matches!(txn.ops[..], [TxnOp::UpdateInode { .. }])
}

/// A transaction of a namespace or xattr change: a create's, mkdir's, mknod's, symlink's,
/// link's, unlink's, rmdir's, rename's, setxattr's or removexattr's. The checks learn from the
/// lost transaction itself which request it answered (`lost::made_by`).
fn changes_names(txn: &Txn) -> bool {
    !txn.durable
        && txn.ops.iter().any(|op| {
            matches!(
                op,
                TxnOp::InsertInode(_)
                    | TxnOp::InsertDentry(_)
                    | TxnOp::DeleteDentry { .. }
                    | TxnOp::SetXattr { .. }
                    | TxnOp::RemoveXattr { .. }
            )
        })
}

pub struct Faults {
    pub profile: FaultProfile,
    rng: Rng,
    /// Off during the liveness phase.
    pub enabled: bool,
    /// Failures injected so far (slow I/O not counted).
    pub injected: u64,
}

impl Faults {
    pub fn new(profile: FaultProfile, rng: Rng) -> Faults {
        Faults { profile, rng, enabled: true, injected: 0 }
    }

    /// The fault for one I/O, if any.
    pub fn decide(&mut self, req: &IoRequest) -> Option<Fault> {
        if !self.enabled {
            return None;
        }
        let p = &self.profile;
        let fail = match req {
            IoRequest::Store(StoreRequest::PutStaged { .. }) => (p.put_fail, IoErrorKind::Other),
            IoRequest::Store(StoreRequest::Read { .. }) => (p.store_read_fail, IoErrorKind::Other),
            IoRequest::Staging(StagingRequest::Write { .. }) => (p.staging_nospace, IoErrorKind::NoSpace),
            IoRequest::Meta(MetaRequest::Commit(_)) => (p.commit_fail, IoErrorKind::Other),
            IoRequest::Meta(MetaRequest::LoadInode { .. } | MetaRequest::LoadDir { .. }) => (p.load_fail, IoErrorKind::Other),
            IoRequest::Staging(StagingRequest::Seal { .. } | StagingRequest::Init { .. }) => {
                (p.staging_fail, IoErrorKind::Other)
            }
            _ => (0.0, IoErrorKind::Other),
        };
        if fail.0 > 0.0 && self.rng.chance(fail.0) {
            self.injected += 1;
            return Some(Fault::Fail(fail.1));
        }
        if let IoRequest::Meta(MetaRequest::Commit(txn)) = req {
            if p.commit_lost > 0.0 && (one_row_durably(txn) || changes_names(txn)) && self.rng.chance(p.commit_lost) {
                self.injected += 1;
                return Some(Fault::Lost(IoErrorKind::Other));
            }
        }
        // (Nor the listings of open files, which run in the metadata stream.)
        if !req.in_meta_stream() && p.slow > 0.0 && self.rng.chance(p.slow) {
            return Some(Fault::Slow);
        }
        None
    }

    /// Whether the mount crashes before the next step.
    pub fn crash_now(&mut self) -> bool {
        self.enabled && self.profile.crash > 0.0 && self.rng.chance(self.profile.crash)
    }
}
