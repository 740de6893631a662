//! The read-only tree of one aysfs mount, built from the listings of `md:$ays_id` (see
//! [`crate::ays::value`]): inode numbers, lookup, readdir and attributes.
//!
//! Directories are mode 0755, files 0644 (0755 with the `x` flag), everything is owned by
//! root:root and carries the mount time. The root is inode 1. Installing a new tree (a reload
//! with another `ays.id`) gives every node below the root a fresh inode number and keeps the old
//! nodes, so inodes the kernel still holds stay answerable and reads in flight are unaffected.

use crate::ays::value::{child_path, FileMeta, Listings};
use crate::op::DirEntry;
use crate::types::{Attr, FileKind, Ino, Timespec, ROOT_INO};
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

/// The block size reported for aysfs files.
pub const AYS_BLKSIZE: u32 = 128 * 1024;
/// The most entries one readdir answer carries (the kernel asks again for the rest).
const READDIR_MAX: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeKind {
    Dir {
        children: BTreeMap<String, Ino>,
        /// The directory's listing was malformed in the layer it came from: EIO.
        broken: Option<String>,
    },
    File {
        /// The parsed metadata value, or why it could not be parsed (opening gives EIO).
        meta: Result<FileMeta, String>,
        /// The content comes from the debug overlay (`debug:paths:$mount`).
        debug: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub parent: Ino,
    /// The path under the mount point (`/` for the root, `/a/b.py`): what `debug_filter`
    /// matches and what `debug:paths:$mount` is keyed by.
    pub path: String,
    pub kind: NodeKind,
}

/// The tree of one mount.
#[derive(Clone, Debug)]
pub struct Tree {
    nodes: HashMap<Ino, Node>,
    next_ino: Ino,
    time: Timespec,
    /// Debug files written through this mount: the time of their last write (their mtime and
    /// ctime; every other node carries the mount time).
    written: HashMap<Ino, Timespec>,
}

impl Tree {
    /// A tree with an empty root, before any metadata was loaded. `time`: the mount time.
    pub fn new(time: Timespec) -> Tree {
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT_INO,
            Node { parent: ROOT_INO, path: "/".into(), kind: NodeKind::Dir { children: BTreeMap::new(), broken: None } },
        );
        Tree { nodes, next_ino: ROOT_INO + 1, time, written: HashMap::new() }
    }

    /// Replaces what the root holds with `listings`, whose key `root` is the directory mounted
    /// (paths below it become paths under the mount point). Every new node gets a fresh inode.
    /// Returns the names the root had or has now (for the kernel to forget).
    pub fn install(&mut self, listings: &Listings, root: &str) -> Vec<String> {
        let mut touched: Vec<String> = match &self.nodes[&ROOT_INO].kind {
            NodeKind::Dir { children, .. } => children.keys().cloned().collect(),
            NodeKind::File { .. } => Vec::new(),
        };
        let (children, broken) = self.build_dir(listings, root, "/", ROOT_INO);
        touched.extend(children.keys().cloned());
        touched.sort();
        touched.dedup();
        if let Some(n) = self.nodes.get_mut(&ROOT_INO) {
            n.kind = NodeKind::Dir { children, broken };
        }
        touched
    }

    fn build_dir(
        &mut self,
        listings: &Listings,
        ays_path: &str,
        mount_path: &str,
        ino: Ino,
    ) -> (BTreeMap<String, Ino>, Option<String>) {
        let Some(l) = listings.get(ays_path) else {
            return (BTreeMap::new(), Some(format!("directory {ays_path:?} is missing from the metadata")));
        };
        let mut children = BTreeMap::new();
        for (name, value) in &l.files {
            let child = self.alloc();
            let meta = FileMeta::parse(value).map_err(|e| format!("{}: {e}", child_path(mount_path, name)));
            self.nodes.insert(
                child,
                Node { parent: ino, path: child_path(mount_path, name), kind: NodeKind::File { meta, debug: false } },
            );
            children.insert(name.clone(), child);
        }
        for name in &l.dirs {
            // A directory wins over a file of the same name.
            let child = self.alloc();
            let sub_ays = child_path(ays_path, name);
            let sub_mount = child_path(mount_path, name);
            let (sub, broken) = self.build_dir(listings, &sub_ays, &sub_mount, child);
            self.nodes.insert(
                child,
                Node { parent: ino, path: sub_mount, kind: NodeKind::Dir { children: sub, broken } },
            );
            children.insert(name.clone(), child);
        }
        (children, l.broken.clone())
    }

    fn alloc(&mut self) -> Ino {
        let i = self.next_ino;
        self.next_ino += 1;
        i
    }

    pub fn get(&self, ino: Ino) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    /// The child `name` of directory `parent`.
    pub fn lookup(&self, parent: Ino, name: &[u8]) -> Result<Ino, i32> {
        let node = self.nodes.get(&parent).ok_or(libc::ENOENT)?;
        match &node.kind {
            NodeKind::Dir { broken: Some(_), .. } => Err(libc::EIO),
            NodeKind::Dir { children, .. } => {
                let name = std::str::from_utf8(name).map_err(|_| libc::ENOENT)?;
                children.get(name).copied().ok_or(libc::ENOENT)
            }
            NodeKind::File { .. } => Err(libc::ENOTDIR),
        }
    }

    /// The node at `path` under the mount point (`/`, `/a/b`).
    pub fn by_path(&self, path: &str) -> Option<Ino> {
        let mut ino = ROOT_INO;
        for name in path.split('/').filter(|s| !s.is_empty()) {
            ino = self.lookup(ino, name.as_bytes()).ok()?;
        }
        Some(ino)
    }

    pub fn attr(&self, ino: Ino) -> Option<Attr> {
        let node = self.nodes.get(&ino)?;
        let t = self.written.get(&ino).copied().unwrap_or(self.time);
        let (kind, perm, size, nlink) = match &node.kind {
            NodeKind::Dir { children, .. } => {
                let subdirs = children
                    .values()
                    .filter(|c| matches!(self.nodes.get(c).map(|n| &n.kind), Some(NodeKind::Dir { .. })))
                    .count();
                (FileKind::Directory, 0o755, 4096, 2 + subdirs as u32)
            }
            NodeKind::File { meta: Ok(m), .. } => (FileKind::Regular, m.perm(), m.size, 1),
            NodeKind::File { meta: Err(_), .. } => (FileKind::Regular, 0o644, 0, 1),
        };
        Some(Attr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: t,
            mtime: t,
            ctime: t,
            kind,
            perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: AYS_BLKSIZE,
        })
    }

    /// Entries of directory `ino` after `offset` (0 = from the start): `.`, `..`, then the
    /// children by name. With `plus`, children carry their attributes.
    pub fn readdir(&self, ino: Ino, offset: u64, plus: bool) -> Result<Vec<DirEntry>, i32> {
        let node = self.nodes.get(&ino).ok_or(libc::ENOENT)?;
        let children = match &node.kind {
            NodeKind::Dir { broken: Some(_), .. } => return Err(libc::EIO),
            NodeKind::Dir { children, .. } => children,
            NodeKind::File { .. } => return Err(libc::ENOTDIR),
        };
        let mut out = Vec::new();
        let dots = [(ino, "."), (node.parent, "..")];
        let all = dots.iter().map(|(i, n)| (*i, *n, false)).chain(children.iter().map(|(n, i)| (*i, n.as_str(), true)));
        for (idx, (child, name, real)) in all.enumerate() {
            let off = idx as u64 + 1;
            if off <= offset {
                continue;
            }
            if out.len() >= READDIR_MAX {
                break;
            }
            let kind = match self.nodes.get(&child).map(|n| &n.kind) {
                Some(NodeKind::File { .. }) => FileKind::Regular,
                _ => FileKind::Directory,
            };
            let attr = if plus && real { self.attr(child) } else { None };
            out.push(DirEntry { ino: child, offset: off, kind, name: name.as_bytes().to_vec(), attr });
        }
        Ok(out)
    }

    /// Adds a file to directory `parent` (a debug file created by a writer). `Err(errno)` if
    /// `parent` is not a usable directory or the name is taken.
    pub fn add_file(&mut self, parent: Ino, name: &str, meta: FileMeta, debug: bool) -> Result<Ino, i32> {
        let parent_path = match self.nodes.get(&parent).map(|n| (&n.kind, n.path.clone())) {
            Some((NodeKind::Dir { broken: None, children }, p)) => {
                if children.contains_key(name) {
                    return Err(libc::EEXIST);
                }
                p
            }
            Some((NodeKind::Dir { .. }, _)) => return Err(libc::EIO),
            Some(_) => return Err(libc::ENOTDIR),
            None => return Err(libc::ENOENT),
        };
        let ino = self.alloc();
        self.nodes.insert(
            ino,
            Node { parent, path: child_path(&parent_path, name), kind: NodeKind::File { meta: Ok(meta), debug } },
        );
        if let Some(Node { kind: NodeKind::Dir { children, .. }, .. }) = self.nodes.get_mut(&parent) {
            children.insert(name.to_string(), ino);
        }
        Ok(ino)
    }

    /// Sets a file's content (a debug write, or a debug path found at open).
    pub fn set_file(&mut self, ino: Ino, meta: FileMeta, debug: bool) {
        if let Some(Node { kind: k @ NodeKind::File { .. }, .. }) = self.nodes.get_mut(&ino) {
            *k = NodeKind::File { meta: Ok(meta), debug };
        }
    }

    /// A debug file was written at `t`.
    pub fn set_written(&mut self, ino: Ino, t: Timespec) {
        if self.nodes.contains_key(&ino) {
            self.written.insert(ino, t);
        }
    }

    /// Every file below the root with a usable value: (inode, path, metadata).
    pub fn files(&self) -> Vec<(Ino, String, FileMeta)> {
        let mut out = Vec::new();
        let mut stack = vec![ROOT_INO];
        while let Some(d) = stack.pop() {
            if let Some(Node { kind: NodeKind::Dir { children, .. }, .. }) = self.nodes.get(&d) {
                for c in children.values() {
                    match self.nodes.get(c) {
                        Some(Node { kind: NodeKind::Dir { .. }, .. }) => stack.push(*c),
                        Some(Node { kind: NodeKind::File { meta: Ok(m), .. }, path, .. }) => out.push((*c, path.clone(), *m)),
                        _ => {}
                    }
                }
            }
        }
        out
    }

    /// The files a walk of the tree reads after file `ino`, in order: the rest of its
    /// directory's files by name, then those of the directories after it in a walk's order
    /// (a directory's subdirectories by name before its next sibling), looking into at most
    /// `max_dirs` directories besides its own. Nothing for an inode that is not a file.
    pub fn files_after(&self, ino: Ino, max_dirs: usize) -> FilesAfter<'_> {
        let (dir, after) = match self.nodes.get(&ino) {
            Some(n @ Node { kind: NodeKind::File { .. }, .. }) => (Some(n.parent), Some(name_of(n))),
            _ => (None, None),
        };
        FilesAfter { tree: self, dir, after, dirs_left: max_dirs }
    }

    /// The subdirectories of `dir` by name, after `after` if given.
    fn subdirs_after<'a>(&'a self, dir: Ino, after: Option<&'a str>) -> impl Iterator<Item = Ino> + 'a {
        let children = match self.nodes.get(&dir) {
            Some(Node { kind: NodeKind::Dir { children, .. }, .. }) => Some(children),
            _ => None,
        };
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        children
            .into_iter()
            .flat_map(move |c| c.range::<str, _>((lower, Bound::Unbounded)))
            .map(|(_, i)| *i)
            .filter(|i| matches!(self.nodes.get(i), Some(Node { kind: NodeKind::Dir { .. }, .. })))
    }

    /// The directory a walk enters after `dir`'s files: its first subdirectory, else the next
    /// sibling of it or of its nearest ancestor that has one; `None` at the end of the tree.
    fn next_dir(&self, dir: Ino) -> Option<Ino> {
        if let Some(sub) = self.subdirs_after(dir, None).next() {
            return Some(sub);
        }
        let mut cur = dir;
        while cur != ROOT_INO {
            let node = self.nodes.get(&cur)?;
            if let Some(next) = self.subdirs_after(node.parent, Some(name_of(node))).next() {
                return Some(next);
            }
            cur = node.parent;
        }
        None
    }

    /// Files and bytes below the root (for statfs).
    pub fn usage(&self) -> (u64, u64) {
        let files = self.files();
        (files.len() as u64, files.iter().map(|f| f.2.size).sum())
    }
}

/// The name of a node (the last part of its path).
fn name_of(node: &Node) -> &str {
    node.path.rsplit('/').next().unwrap_or_default()
}

/// See [`Tree::files_after`].
pub struct FilesAfter<'a> {
    tree: &'a Tree,
    /// The directory whose files come next (`None`: the walk is over).
    dir: Option<Ino>,
    /// The name of the last file given from `dir` (`None`: none yet).
    after: Option<&'a str>,
    dirs_left: usize,
}

impl<'a> Iterator for FilesAfter<'a> {
    type Item = (Ino, &'a Node);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let dir = self.dir?;
            if let Some(Node { kind: NodeKind::Dir { children, .. }, .. }) = self.tree.nodes.get(&dir) {
                let lower = self.after.map_or(Bound::Unbounded, Bound::Excluded);
                for (name, ino) in children.range::<str, _>((lower, Bound::Unbounded)) {
                    if let Some(n @ Node { kind: NodeKind::File { .. }, .. }) = self.tree.nodes.get(ino) {
                        self.after = Some(name.as_str());
                        return Some((*ino, n));
                    }
                }
            }
            // This directory's files are done.
            if self.dirs_left == 0 {
                self.dir = None;
                return None;
            }
            self.dirs_left -= 1;
            self.dir = self.tree.next_dir(dir);
            self.after = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ays::value::listings_from_fields;

    const A: &str = "39fcbe8882373fe8296a7121f7f5b860";

    fn sample() -> Listings {
        let root = format!(r#"{{"tool": "{A},300000,x", "readme": "{A},12", "bad": "nope"}}"#);
        let sub = format!(r#"{{"x.py": "{A},5"}}"#);
        let fields: Vec<(&str, &[u8])> = vec![("/", root.as_bytes()), ("/lib", sub.as_bytes()), ("/empty", b"{}")];
        listings_from_fields(fields, "/").0.unwrap()
    }

    #[test]
    fn lookup_attr_readdir() {
        let mut t = Tree::new(Timespec { sec: 100, nsec: 0 });
        t.install(&sample(), "/");
        let tool = t.lookup(ROOT_INO, b"tool").unwrap();
        let a = t.attr(tool).unwrap();
        assert_eq!((a.size, a.perm, a.uid, a.gid, a.kind), (300000, 0o755, 0, 0, FileKind::Regular));
        assert_eq!(a.mtime.sec, 100);
        let readme = t.attr(t.lookup(ROOT_INO, b"readme").unwrap()).unwrap();
        assert_eq!((readme.size, readme.perm), (12, 0o644));
        let lib = t.lookup(ROOT_INO, b"lib").unwrap();
        let la = t.attr(lib).unwrap();
        assert_eq!((la.kind, la.perm), (FileKind::Directory, 0o755));
        assert_eq!(t.attr(ROOT_INO).unwrap().nlink, 4);
        let x = t.lookup(lib, b"x.py").unwrap();
        assert_eq!(t.get(x).unwrap().path, "/lib/x.py");
        assert_eq!(t.by_path("/lib/x.py"), Some(x));
        assert_eq!(t.lookup(ROOT_INO, b"nope"), Err(libc::ENOENT));
        assert_eq!(t.lookup(x, b"y"), Err(libc::ENOTDIR));
        let bad = t.lookup(ROOT_INO, b"bad").unwrap();
        assert!(matches!(t.get(bad).unwrap().kind, NodeKind::File { meta: Err(_), .. }));
        let names: Vec<String> =
            t.readdir(ROOT_INO, 0, false).unwrap().iter().map(|e| String::from_utf8(e.name.clone()).unwrap()).collect();
        assert_eq!(names, vec![".", "..", "bad", "empty", "lib", "readme", "tool"]);
        let rest = t.readdir(ROOT_INO, 3, true).unwrap();
        assert_eq!(rest[0].name, b"empty");
        assert!(rest.iter().all(|e| e.attr.is_some()));
        assert_eq!(t.files().len(), 3);
    }

    #[test]
    fn reinstall_gives_fresh_inodes_and_keeps_old_ones() {
        let mut t = Tree::new(Timespec::default());
        t.install(&sample(), "/");
        let old = t.lookup(ROOT_INO, b"tool").unwrap();
        let touched = t.install(&sample(), "/lib");
        assert!(touched.contains(&"tool".to_string()) && touched.contains(&"x.py".to_string()));
        assert!(t.lookup(ROOT_INO, b"tool").is_err());
        let x = t.lookup(ROOT_INO, b"x.py").unwrap();
        assert_eq!(t.get(x).unwrap().path, "/x.py");
        assert!(t.attr(old).is_some());
    }

    #[test]
    fn debug_files() {
        let mut t = Tree::new(Timespec::default());
        t.install(&sample(), "/");
        let lib = t.lookup(ROOT_INO, b"lib").unwrap();
        let m = FileMeta { md5: crate::ays::value::EMPTY_MD5, size: 0, executable: false };
        let n = t.add_file(lib, "new.py", m, true).unwrap();
        assert_eq!(t.get(n).unwrap().path, "/lib/new.py");
        assert_eq!(t.add_file(lib, "new.py", m, true), Err(libc::EEXIST));
        t.set_file(n, FileMeta { size: 7, ..m }, true);
        assert_eq!(t.attr(n).unwrap().size, 7);
    }

    #[test]
    fn files_after_a_file_follow_a_walk_into_the_next_directories() {
        let v = format!("{A},1");
        let dir = |names: &[&str]| format!("{{{}}}", names.iter().map(|n| format!("\"{n}\": \"{v}\"")).collect::<Vec<_>>().join(", "));
        let (root, a, ab, b, c) = (dir(&["f", "z"]), dir(&["a1", "a2"]), dir(&["x"]), dir(&[]), dir(&["c1"]));
        let fields: Vec<(&str, &[u8])> = vec![
            ("/", root.as_bytes()),
            ("/a", a.as_bytes()),
            ("/a/b", ab.as_bytes()),
            ("/b", b.as_bytes()),
            ("/c", c.as_bytes()),
        ];
        let mut t = Tree::new(Timespec { sec: 1, nsec: 0 });
        t.install(&listings_from_fields(fields, "/").0.unwrap(), "/");
        let paths = |ino: Ino, dirs: usize| t.files_after(ino, dirs).map(|(_, n)| n.path.clone()).collect::<Vec<_>>();
        let a1 = t.by_path("/a/a1").unwrap();
        // The rest of /a, then /a/b (a subdirectory first), then /b (empty) and /c.
        assert_eq!(paths(a1, 8), ["/a/a2", "/a/b/x", "/c/c1"]);
        // At most one directory besides its own.
        assert_eq!(paths(a1, 1), ["/a/a2", "/a/b/x"]);
        assert_eq!(paths(a1, 0), ["/a/a2"]);
        // From the root's files into /a; from the last file of the tree, nothing.
        assert_eq!(paths(t.by_path("/z").unwrap(), 1), ["/a/a1", "/a/a2"]);
        assert!(paths(t.by_path("/c/c1").unwrap(), 8).is_empty());
        // Not a file: nothing.
        assert!(paths(t.by_path("/a").unwrap(), 8).is_empty());
    }
}
