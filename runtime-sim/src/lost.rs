//! Requests whose transaction was applied and answered with a failure (its answer lost,
//! `Fault::Lost`): which request a lost transaction was, and what the change it made looks like
//! to the checks.

use truckeefs_core::{Ino, Op, Reply, Txn, TxnOp};

/// What `op` did if `txn` is its transaction (applied, its answer lost): the request and the
/// answer the model takes it as (`Faults::decide` loses the answers of namespace and xattr
/// changes); a create counts as the mknod of a regular file, as the kernel holds no handle of
/// it. A link's answer is its transaction's row of the inode: the names, the link count and the
/// owner as the answer would have had them, but the size and times as stored, without data not
/// uploaded yet (`Harness::checked` checks only the former).
pub fn made_by(op: &Op, txn: &Txn) -> Option<(Op, Reply)> {
    let deletes = |p: Ino, n: &[u8]| {
        txn.ops.iter().any(|t| matches!(t, TxnOp::DeleteDentry { parent, name, .. } if *parent == p && name == n))
    };
    let inserted = |p: Ino, n: &[u8]| {
        txn.ops.iter().find_map(|t| match t {
            TxnOp::InsertDentry(d) if d.parent == p && d.name == n => Some(d.ino),
            _ => None,
        })
    };
    // The attributes of an inode the transaction makes.
    let made = |ino: Ino| {
        txn.ops.iter().find_map(|t| match t {
            TxnOp::InsertInode(r) if r.ino == ino => Some(r.attr()),
            _ => None,
        })
    };
    let empty = |made: bool| made.then(|| (op.clone(), Reply::Empty));
    match op {
        Op::Unlink { parent, name } | Op::RmDir { parent, name } => empty(deletes(*parent, name)),
        Op::Rename { parent, name, newparent, newname, .. } => {
            empty(deletes(*parent, name) && inserted(*newparent, newname).is_some())
        }
        Op::SetXattr { ino, name, .. } => {
            empty(txn.ops.iter().any(|t| matches!(t, TxnOp::SetXattr { ino: i, name: n, .. } if i == ino && n == name)))
        }
        Op::RemoveXattr { ino, name } => {
            empty(txn.ops.iter().any(|t| matches!(t, TxnOp::RemoveXattr { ino: i, name: n } if i == ino && n == name)))
        }
        Op::MkNod { parent, name, .. } | Op::MkDir { parent, name, .. } | Op::Symlink { parent, name, .. } => {
            Some((op.clone(), Reply::Entry(made(inserted(*parent, name)?)?)))
        }
        Op::Link { ino, newparent, newname } => {
            let row = txn.ops.iter().find_map(|t| match t {
                TxnOp::UpdateInode { row, .. } if row.ino == *ino => Some(row.attr()),
                _ => None,
            })?;
            (inserted(*newparent, newname)? == *ino).then(|| (op.clone(), Reply::Entry(row)))
        }
        Op::Create { parent, name, mode, umask, .. } => {
            let mknod = Op::MkNod { parent: *parent, name: name.clone(), mode: *mode, umask: *umask, rdev: 0 };
            Some((mknod, Reply::Entry(made(inserted(*parent, name)?)?)))
        }
        _ => None,
    }
}
