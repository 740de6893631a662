//! A loaded directory: its entries by name and by position.
//!
//! Positions come from the metadata store's id allocator and are never reused, so a readdir
//! offset (position + [`FIRST_ENTRY_OFFSET`]) stays valid while entries are added and removed:
//! entries that exist throughout are returned exactly once.

use crate::types::{FileKind, Ino};
use std::collections::{BTreeMap, HashMap};

/// Offsets 1 and 2 are `.` and `..`; entries follow at `pos + FIRST_ENTRY_OFFSET`.
pub const FIRST_ENTRY_OFFSET: u64 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dentry {
    pub ino: Ino,
    pub kind: FileKind,
    pub pos: u64,
}

#[derive(Default, Debug, Clone)]
pub struct Dir {
    by_name: HashMap<Vec<u8>, Dentry>,
    by_pos: BTreeMap<u64, Vec<u8>>,
}

impl Dir {
    pub fn get(&self, name: &[u8]) -> Option<Dentry> {
        self.by_name.get(name).copied()
    }

    pub fn insert(&mut self, name: Vec<u8>, d: Dentry) {
        if let Some(old) = self.by_name.insert(name.clone(), d) {
            self.by_pos.remove(&old.pos);
        }
        self.by_pos.insert(d.pos, name);
    }

    pub fn remove(&mut self, name: &[u8]) -> Option<Dentry> {
        let d = self.by_name.remove(name)?;
        self.by_pos.remove(&d.pos);
        Some(d)
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Entries whose readdir offset is greater than `offset`, in position order.
    pub fn after(&self, offset: u64) -> impl Iterator<Item = (u64, &[u8], Dentry)> + '_ {
        let from = offset.saturating_sub(FIRST_ENTRY_OFFSET).saturating_add(1);
        let from = if offset < FIRST_ENTRY_OFFSET { 0 } else { from };
        self.by_pos.range(from..).map(move |(pos, name)| {
            let d = self.by_name[name.as_slice()];
            (pos + FIRST_ENTRY_OFFSET, name.as_slice(), d)
        })
    }

    pub fn inos(&self) -> impl Iterator<Item = Ino> + '_ {
        self.by_name.values().map(|d| d.ino)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(ino: Ino, pos: u64) -> Dentry {
        Dentry { ino, kind: FileKind::Regular, pos }
    }

    #[test]
    fn offsets_survive_removal_and_insertion() {
        let mut dir = Dir::default();
        for i in 0..10u64 {
            dir.insert(format!("f{i}").into_bytes(), d(100 + i, 10 + i));
        }
        let first: Vec<_> = dir.after(0).take(4).map(|(o, n, _)| (o, n.to_vec())).collect();
        let resume = first.last().unwrap().0;
        dir.remove(b"f1");
        dir.remove(b"f7");
        dir.insert(b"new".to_vec(), d(200, 50));
        let rest: Vec<Vec<u8>> = dir.after(resume).map(|(_, n, _)| n.to_vec()).collect();
        assert_eq!(rest.first().unwrap(), b"f4");
        assert!(!rest.contains(&b"f7".to_vec()));
        assert!(rest.contains(&b"new".to_vec()));
        assert!(!rest.iter().any(|n| first.iter().any(|(_, f)| f == n)));
    }

    #[test]
    fn offsets_below_first_entry_start_from_the_beginning() {
        let mut dir = Dir::default();
        // Positions start at 1 (ids start at 2 in every store), so entries follow `..` (offset 2).
        dir.insert(b"a".to_vec(), d(5, 1));
        assert_eq!(dir.after(0).count(), 1);
        assert_eq!(dir.after(2).count(), 1);
        assert_eq!(dir.after(3).count(), 0);
    }
}
