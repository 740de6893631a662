//! How the kernel reads each open aysfs file: straight from its blob cache file (FUSE
//! passthrough), through this process with the kernel's page cache, or through this process
//! without it (direct I/O).
//!
//! The kernel allows one backing file per inode at a time, and no passthrough open while the
//! inode is open in cached mode (or the reverse): an open that breaks either rule fails with
//! EIO. So every open of an inode shares the backing file registered by the first one while any
//! of them is open; an inode already open in cached mode is opened cached again; and an open
//! whose blob is not the shared backing file (the mount's tree changed under an open file) is
//! answered with direct I/O, which takes part in neither mode.

use std::collections::HashMap;

/// A backing file's identity (`st_dev`, `st_ino`).
pub type FileKey = (u64, u64);

/// What an open should be answered with.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan<'a, Id> {
    /// Register the blob file as a new backing file, then pass through.
    Register,
    /// Pass through with the inode's backing file.
    Share(&'a Id),
    /// Through this process, with the kernel's page cache.
    Cached,
    /// Through this process, direct I/O.
    Direct,
}

/// How one inode is open now.
enum InodeMode<Id> {
    Passthrough { key: FileKey, id: Id, handles: usize },
    Cached { handles: usize },
}

/// How each handle was answered: [`Plan::Direct`] handles are not counted.
#[derive(Clone, Copy)]
enum Counted {
    Passthrough,
    Cached,
}

/// The open files of one mount, by inode and by handle.
pub struct Modes<Id> {
    inodes: HashMap<u64, InodeMode<Id>>,
    handles: HashMap<u64, (u64, Counted)>,
}

impl<Id> Default for Modes<Id> {
    fn default() -> Self {
        Modes { inodes: HashMap::new(), handles: HashMap::new() }
    }
}

impl<Id> Modes<Id> {
    /// How to answer an open of `ino` whose blob file is `key` (`None`: no blob file to pass
    /// through, or passthrough is off).
    pub fn plan(&self, ino: u64, key: Option<FileKey>) -> Plan<'_, Id> {
        match (self.inodes.get(&ino), key) {
            (Some(InodeMode::Cached { .. }), _) => Plan::Cached,
            (Some(InodeMode::Passthrough { key: k, id, .. }), Some(key)) if *k == key => Plan::Share(id),
            (Some(InodeMode::Passthrough { .. }), _) => Plan::Direct,
            (None, Some(_)) => Plan::Register,
            (None, None) => Plan::Cached,
        }
    }

    /// Handle `fh` of `ino` was answered by passthrough with the backing file `key`: `id` is the
    /// registration made for it ([`Plan::Register`]), `None` if it shared the inode's.
    pub fn passed_through(&mut self, fh: u64, ino: u64, key: FileKey, id: Option<Id>) {
        match (self.inodes.get_mut(&ino), id) {
            (Some(InodeMode::Passthrough { handles, .. }), None) => *handles += 1,
            (None, Some(id)) => {
                self.inodes.insert(ino, InodeMode::Passthrough { key, id, handles: 1 });
            }
            // Not what `plan` said; keep the accounting whole rather than guess.
            _ => return,
        }
        self.handles.insert(fh, (ino, Counted::Passthrough));
    }

    /// Handle `fh` of `ino` was answered in cached mode.
    pub fn cached(&mut self, fh: u64, ino: u64) {
        match self.inodes.entry(ino).or_insert(InodeMode::Cached { handles: 0 }) {
            InodeMode::Cached { handles } => *handles += 1,
            InodeMode::Passthrough { .. } => return,
        }
        self.handles.insert(fh, (ino, Counted::Cached));
    }

    /// The kernel released handle `fh`. Returns the inode's backing registration when its last
    /// passthrough handle went (to be dropped, which unregisters it).
    pub fn released(&mut self, fh: u64) -> Option<Id> {
        let (ino, counted) = self.handles.remove(&fh)?;
        let last = match (self.inodes.get_mut(&ino)?, counted) {
            (InodeMode::Passthrough { handles, .. }, Counted::Passthrough) | (InodeMode::Cached { handles }, Counted::Cached) => {
                *handles = handles.saturating_sub(1);
                *handles == 0
            }
            _ => false,
        };
        if !last {
            return None;
        }
        match self.inodes.remove(&ino)? {
            InodeMode::Passthrough { id, .. } => Some(id),
            InodeMode::Cached { .. } => None,
        }
    }

    /// Handles open by passthrough now.
    #[cfg(test)]
    fn passed_through_handles(&self) -> usize {
        self.handles.values().filter(|(_, c)| matches!(c, Counted::Passthrough)).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: FileKey = (1, 10);
    const B: FileKey = (1, 11);

    #[test]
    fn opens_of_one_inode_share_its_backing_file_until_the_last_goes() {
        let mut m: Modes<&str> = Modes::default();
        assert_eq!(m.plan(5, Some(A)), Plan::Register);
        m.passed_through(100, 5, A, Some("id-a"));
        assert_eq!(m.plan(5, Some(A)), Plan::Share(&"id-a"));
        m.passed_through(101, 5, A, None);
        assert_eq!(m.passed_through_handles(), 2);
        // Another inode has its own.
        assert_eq!(m.plan(6, Some(B)), Plan::Register);
        assert_eq!(m.released(100), None, "one handle of inode 5 is still open");
        assert_eq!(m.released(101), Some("id-a"));
        assert_eq!(m.released(101), None, "released once");
        assert_eq!(m.plan(5, Some(B)), Plan::Register, "a new blob once the old is closed");
    }

    #[test]
    fn a_different_blob_under_an_open_inode_goes_direct() {
        let mut m: Modes<&str> = Modes::default();
        m.passed_through(100, 5, A, Some("id-a"));
        assert_eq!(m.plan(5, Some(B)), Plan::Direct);
        assert_eq!(m.plan(5, None), Plan::Direct, "no cached open beside a passthrough one");
        assert_eq!(m.released(200), None, "a direct handle is not counted");
        assert_eq!(m.released(100), Some("id-a"));
    }

    #[test]
    fn an_inode_open_in_cached_mode_stays_cached_until_closed() {
        let mut m: Modes<&str> = Modes::default();
        assert_eq!(m.plan(5, None), Plan::Cached);
        m.cached(100, 5);
        m.cached(101, 5);
        assert_eq!(m.plan(5, Some(A)), Plan::Cached);
        assert_eq!(m.released(100), None);
        assert_eq!(m.plan(5, Some(A)), Plan::Cached);
        assert_eq!(m.released(101), None);
        assert_eq!(m.plan(5, Some(A)), Plan::Register);
        assert_eq!(m.passed_through_handles(), 0);
    }
}
