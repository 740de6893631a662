//! Permission checks the way Linux's VFS makes them (`generic_permission`, `may_delete`,
//! `setattr_prepare`), for mounts where the kernel does not check (`default_permissions` off).
//!
//! Why a private mount checks here: with `default_permissions` the kernel must refetch a
//! directory's attributes after every change to it before the next permission check, which costs
//! one extra request per create or unlink. A mount that only its owner can use (no `allow_other`
//! or `allow_root`) has one caller identity, so the kernel's cached entries cannot let another
//! user past a check; the core checks each request instead. Shared mounts keep the kernel's checks.

use crate::op::{SetAttr, SetTime};
use crate::io::InodeRow;
use crate::types::{Ctx, FileKind};
use libc::{EACCES, EPERM};

pub const R: u32 = 4;
pub const W: u32 = 2;
pub const X: u32 = 1;

const S_ISUID: u16 = libc::S_ISUID as u16;
const S_ISGID: u16 = libc::S_ISGID as u16;
const S_ISVTX: u16 = libc::S_ISVTX as u16;

/// Who asks: the request's uid and gid plus the supplementary groups a private mount's callers
/// have (the mount owner's: FUSE requests do not carry them).
#[derive(Clone, Copy, Debug)]
pub struct Caller<'a> {
    pub uid: u32,
    pub gid: u32,
    pub groups: &'a [u32],
}

impl<'a> Caller<'a> {
    pub fn new(ctx: Ctx, groups: &'a [u32]) -> Self {
        Caller { uid: ctx.uid, gid: ctx.gid, groups }
    }

    fn is_root(&self) -> bool {
        self.uid == 0
    }

    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }

    fn owns(&self, row: &InodeRow) -> bool {
        self.is_root() || self.uid == row.uid
    }
}

/// Whether `caller` may access `row` for every bit of `mask` (`R | W | X`). Root may read and
/// write anything and search any directory, but executes only what has some execute bit.
pub fn allowed(row: &InodeRow, caller: Caller, mask: u32) -> bool {
    let mask = mask & 7;
    let perm = u32::from(row.perm);
    if caller.is_root() {
        return mask & X == 0 || row.kind == FileKind::Directory || perm & 0o111 != 0;
    }
    let bits = if caller.uid == row.uid {
        perm >> 6
    } else if caller.in_group(row.gid) {
        perm >> 3
    } else {
        perm
    } & 7;
    mask & !bits == 0
}

/// `allowed` as a result: EACCES when refused.
pub fn check(row: &InodeRow, caller: Caller, mask: u32) -> Result<(), i32> {
    if allowed(row, caller, mask) {
        Ok(())
    } else {
        Err(EACCES)
    }
}

/// May `caller` remove or replace the entry for `child` in `dir`? Needs write and search on the
/// directory, and in a sticky directory ownership of the directory or of the entry.
pub fn may_delete(dir: &InodeRow, child: &InodeRow, caller: Caller) -> Result<(), i32> {
    check(dir, caller, W | X)?;
    if dir.perm & S_ISVTX != 0 && !caller.owns(dir) && !caller.owns(child) {
        return Err(EPERM);
    }
    Ok(())
}

/// The access an `open` with `flags` needs.
pub fn open_mask(flags: i32) -> u32 {
    let mut mask = match flags & libc::O_ACCMODE {
        libc::O_RDONLY => R,
        libc::O_WRONLY => W,
        _ => R | W,
    };
    if flags & libc::O_TRUNC != 0 {
        mask |= W;
    }
    mask
}

/// Checks a setattr and returns it as it may be applied: a mode change by someone outside the
/// file's group loses the set-group-id bit, as on Linux. `has_fh`: a truncate through an open
/// file (its open already checked write access).
pub fn setattr(row: &InodeRow, caller: Caller, set: SetAttr, has_fh: bool) -> Result<SetAttr, i32> {
    let mut set = set;
    if caller.is_root() {
        return Ok(set);
    }
    let owner = caller.uid == row.uid;
    if let Some(uid) = set.uid {
        if uid != row.uid || !owner {
            return Err(EPERM);
        }
    }
    if let Some(gid) = set.gid {
        if !owner || (gid != row.gid && !caller.in_group(gid)) {
            return Err(EPERM);
        }
    }
    if let Some(mode) = set.mode {
        let perm = (mode & 0o7777) as u16;
        if owner {
            if perm & S_ISGID != 0 && !caller.in_group(set.gid.unwrap_or(row.gid)) {
                set.mode = Some(mode & !libc::S_ISGID);
            }
        } else if perm != row.perm & !(S_ISUID | S_ISGID) || perm == row.perm {
            // The one mode change a non-owner causes: the kernel dropping the set-id bits after
            // that caller wrote to the file.
            return Err(EPERM);
        }
    }
    if set.size.is_some() && !has_fh {
        check(row, caller, W)?;
    }
    if set.atime.is_some() || set.mtime.is_some() {
        let touch = set.atime == Some(SetTime::Now) && set.mtime == Some(SetTime::Now);
        if !owner {
            if !touch {
                return Err(EPERM);
            }
            check(row, caller, W)?;
        }
    }
    Ok(set)
}

/// The access an extended attribute operation needs on the inode: the kernel decides who may
/// touch `trusted.*` and on which kinds `user.*` exists; reading or writing either then needs
/// read or write permission on the inode. `security.*` and `system.*` are not checked here.
pub fn xattr_mask(name: &[u8], write: bool) -> Option<u32> {
    if name.starts_with(b"user.") || name.starts_with(b"trusted.") {
        Some(if write { W } else { R })
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Timespec;

    fn row(kind: FileKind, perm: u16, uid: u32, gid: u32) -> InodeRow {
        InodeRow {
            ino: 2,
            kind,
            perm,
            uid,
            gid,
            nlink: 1,
            size: 0,
            atime: Timespec::default(),
            mtime: Timespec::default(),
            ctime: Timespec::default(),
            rdev: 0,
            version: 1,
            object: None,
            target: None,
        }
    }

    fn user(uid: u32, gid: u32) -> Caller<'static> {
        Caller { uid, gid, groups: &[] }
    }

    #[test]
    fn owner_group_other_bits() {
        let f = row(FileKind::Regular, 0o640, 10, 20);
        assert!(allowed(&f, user(10, 99), R | W));
        assert!(!allowed(&f, user(10, 99), X));
        assert!(allowed(&f, user(11, 20), R));
        assert!(!allowed(&f, user(11, 20), W));
        assert!(!allowed(&f, user(11, 21), R));
        assert!(allowed(&f, Caller { uid: 11, gid: 21, groups: &[5, 20] }, R));
        // The owner class decides even when the group class would allow more.
        let g = row(FileKind::Regular, 0o070, 10, 20);
        assert!(!allowed(&g, user(10, 20), R));
    }

    #[test]
    fn root_executes_only_with_some_x_bit() {
        let f = row(FileKind::Regular, 0o600, 10, 20);
        assert!(allowed(&f, user(0, 0), R | W));
        assert!(!allowed(&f, user(0, 0), X));
        assert!(allowed(&row(FileKind::Regular, 0o001, 10, 20), user(0, 0), X));
        assert!(allowed(&row(FileKind::Directory, 0o000, 10, 20), user(0, 0), X | W));
    }

    #[test]
    fn sticky_directories() {
        let dir = row(FileKind::Directory, 0o1777, 1, 1);
        let theirs = row(FileKind::Regular, 0o644, 2, 2);
        assert_eq!(may_delete(&dir, &theirs, user(3, 3)), Err(EPERM));
        assert_eq!(may_delete(&dir, &theirs, user(2, 3)), Ok(()));
        assert_eq!(may_delete(&dir, &theirs, user(1, 3)), Ok(()));
        assert_eq!(may_delete(&dir, &theirs, user(0, 0)), Ok(()));
        let closed = row(FileKind::Directory, 0o755, 1, 1);
        assert_eq!(may_delete(&closed, &theirs, user(2, 2)), Err(EACCES));
    }

    #[test]
    fn open_masks() {
        assert_eq!(open_mask(libc::O_RDONLY), R);
        assert_eq!(open_mask(libc::O_WRONLY | libc::O_APPEND), W);
        assert_eq!(open_mask(libc::O_RDWR), R | W);
        assert_eq!(open_mask(libc::O_RDONLY | libc::O_TRUNC), R | W);
    }

    #[test]
    fn setattr_rules() {
        let f = row(FileKind::Regular, 0o644, 10, 20);
        let chmod = |m| SetAttr { mode: Some(m), ..SetAttr::default() };
        assert!(setattr(&f, user(10, 20), chmod(0o600), false).is_ok());
        assert_eq!(setattr(&f, user(11, 20), chmod(0o600), false), Err(EPERM));
        // The owner outside the file's group cannot keep set-group-id.
        let s = setattr(&f, user(10, 99), chmod(0o2755), false).unwrap();
        assert_eq!(s.mode, Some(0o755));
        // A non-owner may only see the kernel drop the set-id bits after its write.
        let suid = row(FileKind::Regular, 0o4777, 10, 20);
        assert!(setattr(&suid, user(11, 21), chmod(0o777), false).is_ok());
        assert_eq!(setattr(&suid, user(11, 21), chmod(0o4777), false), Err(EPERM));
        assert_eq!(setattr(&suid, user(11, 21), chmod(0o677), false), Err(EPERM));

        let chown = |u, g| SetAttr { uid: u, gid: g, ..SetAttr::default() };
        assert_eq!(setattr(&f, user(10, 20), chown(Some(11), None), false), Err(EPERM));
        assert!(setattr(&f, user(10, 20), chown(Some(10), None), false).is_ok());
        assert!(setattr(&f, Caller { uid: 10, gid: 20, groups: &[30] }, chown(None, Some(30)), false).is_ok());
        assert_eq!(setattr(&f, user(10, 20), chown(None, Some(30)), false), Err(EPERM));
        assert_eq!(setattr(&f, user(11, 30), chown(None, Some(30)), false), Err(EPERM));
        assert!(setattr(&f, user(0, 0), chown(Some(5), Some(5)), false).is_ok());

        let size = SetAttr { size: Some(0), ..SetAttr::default() };
        assert_eq!(setattr(&f, user(11, 21), size, false), Err(EACCES));
        assert!(setattr(&f, user(11, 21), size, true).is_ok());

        let now = SetAttr { atime: Some(SetTime::Now), mtime: Some(SetTime::Now), ..SetAttr::default() };
        let at = SetAttr { mtime: Some(SetTime::At(Timespec { sec: 1, nsec: 0 })), ..SetAttr::default() };
        let open = row(FileKind::Regular, 0o666, 10, 20);
        assert!(setattr(&open, user(11, 21), now, false).is_ok());
        assert_eq!(setattr(&f, user(11, 21), now, false), Err(EACCES));
        assert_eq!(setattr(&open, user(11, 21), at, false), Err(EPERM));
        assert!(setattr(&f, user(10, 20), at, false).is_ok());
    }

    #[test]
    fn xattr_masks() {
        assert_eq!(xattr_mask(b"user.a", false), Some(R));
        assert_eq!(xattr_mask(b"trusted.a", true), Some(W));
        assert_eq!(xattr_mask(b"security.selinux", true), None);
    }
}
