//! readdir: listing contents, entry types, large directories and stability
//! of a directory stream while entries are added and removed.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use truckeefs_tests::*;

fn names_of(entries: &[RawEntry]) -> Vec<String> {
    let mut v: Vec<String> = entries.iter().map(|e| e.name_str()).collect();
    v.sort();
    v
}

/// Panics if any name occurs twice.
fn count_once(seen: &[String]) -> HashMap<String, usize> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for n in seen {
        *counts.entry(n.clone()).or_default() += 1;
    }
    let dups: Vec<_> = counts
        .iter()
        .filter(|(_, &c)| c > 1)
        .map(|(n, c)| format!("{n} x{c}"))
        .collect();
    assert!(dups.is_empty(), "entries returned more than once: {dups:?}");
    counts
}

fn create_n(dir: &Path, prefix: &str, range: std::ops::Range<usize>) {
    for i in range {
        File::create(dir.join(format!("{prefix}{i:05}"))).unwrap();
    }
}

#[test]
fn readdir_lists_dot_dotdot_and_every_entry_with_its_type() {
    let m = Mount::new();
    let d = m.path("d");
    mkdir(&d, 0o755).unwrap();
    fs::write(d.join("file"), b"x").unwrap();
    mkdir(&d.join("dir"), 0o755).unwrap();
    symlink_bytes(b"file", &d.join("link")).unwrap();
    mknod(&d.join("fifo"), libc::S_IFIFO | 0o644, 0).unwrap();
    mknod(&d.join("sock"), libc::S_IFSOCK | 0o644, 0).unwrap();
    mknod(&d.join("chr"), libc::S_IFCHR | 0o644, makedev(1, 3)).unwrap();
    mknod(&d.join("blk"), libc::S_IFBLK | 0o644, makedev(7, 0)).unwrap();

    let entries = list_raw(&d).unwrap();
    assert_eq!(
        names_of(&entries),
        vec![".", "..", "blk", "chr", "dir", "fifo", "file", "link", "sock"],
        "listing"
    );
    let want_type: HashMap<&str, u8> = [
        (".", libc::DT_DIR),
        ("..", libc::DT_DIR),
        ("file", libc::DT_REG),
        ("dir", libc::DT_DIR),
        ("link", libc::DT_LNK),
        ("fifo", libc::DT_FIFO),
        ("sock", libc::DT_SOCK),
        ("chr", libc::DT_CHR),
        ("blk", libc::DT_BLK),
    ]
    .into_iter()
    .collect();
    for e in &entries {
        let n = e.name_str();
        assert_eq!(e.d_type, want_type[n.as_str()], "d_type of {n}");
        if n != ".." {
            let st = fs::symlink_metadata(d.join(&n)).unwrap();
            assert_eq!(e.ino, st.ino(), "d_ino of {n} matches st_ino");
        }
    }
}

#[test]
fn readdir_of_an_empty_directory_has_only_dot_and_dotdot() {
    let m = Mount::new();
    let d = m.path("empty");
    mkdir(&d, 0o755).unwrap();
    assert_eq!(names_of(&list_raw(&d).unwrap()), vec![".", ".."]);
    assert_eq!(
        names_of(&list_raw(&m.dir).unwrap()),
        vec![".", "..", "empty"],
        "root listing"
    );
}

#[test]
fn readdir_reflects_unlink_rename_and_rmdir() {
    let m = Mount::new();
    fs::write(m.path("a"), b"").unwrap();
    fs::write(m.path("b"), b"").unwrap();
    mkdir(&m.path("c"), 0o755).unwrap();
    unlink(&m.path("a")).unwrap();
    rename(&m.path("b"), &m.path("B")).unwrap();
    rmdir(&m.path("c")).unwrap();
    assert_eq!(names(&m.dir), vec!["B".to_string()]);
}

#[test]
fn readdir_of_a_large_directory_returns_each_entry_exactly_once() {
    let m = Mount::new();
    let d = m.path("big");
    mkdir(&d, 0o755).unwrap();
    create_n(&d, "entry-with-a-longish-name-", 0..1500);
    let entries = list_raw(&d).unwrap();
    let seen: Vec<String> = entries.iter().map(|e| e.name_str()).collect();
    let counts = count_once(&seen);
    assert_eq!(counts.len(), 1502, "1500 entries plus . and ..");
    for i in 0..1500 {
        assert!(
            counts.contains_key(&format!("entry-with-a-longish-name-{i:05}")),
            "missing {i}"
        );
    }
}

/// Read part of a directory through libc readdir, delete and add entries,
/// then read on: every entry that existed throughout is returned exactly
/// once, nothing is returned twice.
#[test]
fn readdir_while_entries_are_added_and_removed_returns_stable_entries_exactly_once() {
    let m = Mount::new();
    let d = m.path("churn");
    mkdir(&d, 0o755).unwrap();
    // Interleave stable and doomed entries so that both the already-read
    // and the not-yet-read parts of the stream change.
    let n = 2400;
    for i in 0..n {
        let prefix = if i % 2 == 0 {
            "keep-entry-"
        } else {
            "gone-entry-"
        };
        File::create(d.join(format!("{prefix}{i:05}"))).unwrap();
    }
    let mut dir = Dir::open(&d).unwrap();
    let mut seen = Vec::new();
    while seen.len() < (n + 2) / 2 {
        let e = dir.read().expect("directory ended early").unwrap();
        seen.push(e.name_str());
    }
    for i in (1..n).step_by(2) {
        unlink(&d.join(format!("gone-entry-{i:05}"))).unwrap();
    }
    for i in 0..n / 2 {
        File::create(d.join(format!("added-entry-{i:05}"))).unwrap();
    }
    while let Some(e) = dir.read() {
        seen.push(e.unwrap().name_str());
    }
    let counts = count_once(&seen);
    let missing: Vec<String> = (0..n)
        .step_by(2)
        .map(|i| format!("keep-entry-{i:05}"))
        .filter(|k| !counts.contains_key(k))
        .collect();
    assert!(
        missing.is_empty(),
        "{} stable entries skipped, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(counts.contains_key(".") && counts.contains_key(".."));
    for name in counts.keys() {
        assert!(
            name == "."
                || name == ".."
                || name.starts_with("keep-")
                || name.starts_with("gone-")
                || name.starts_with("added-"),
            "unexpected name {name:?}"
        );
    }

    // After rewinddir the stream shows exactly the current contents.
    dir.rewind();
    let mut now = Vec::new();
    while let Some(e) = dir.read() {
        now.push(e.unwrap().name_str());
    }
    count_once(&now);
    let now: BTreeSet<String> = now.into_iter().collect();
    let mut want: BTreeSet<String> = (0..n)
        .step_by(2)
        .map(|i| format!("keep-entry-{i:05}"))
        .collect();
    want.extend((0..n / 2).map(|i| format!("added-entry-{i:05}")));
    want.insert(".".into());
    want.insert("..".into());
    assert_eq!(now.len(), want.len(), "entry count after rewinddir");
    assert!(now == want, "contents after rewinddir differ");
}

/// Same property with raw getdents64 and a tiny buffer, so that the kernel
/// has to come back to the filesystem many times around the modifications.
#[test]
fn getdents_with_small_buffer_while_entries_change_skips_and_repeats_nothing() {
    let m = Mount::new();
    let d = m.path("churn");
    mkdir(&d, 0o755).unwrap();
    let n = 600;
    for i in 0..n {
        let prefix = if i % 3 == 0 { "gone-" } else { "keep-" };
        File::create(d.join(format!("{prefix}{i:05}"))).unwrap();
    }
    let dirf = File::open(&d).unwrap();
    let fd = dirf.as_raw_fd();
    let mut seen = Vec::new();
    let mut round = 0;
    loop {
        let batch = getdents64(fd, 512).unwrap();
        if batch.is_empty() {
            break;
        }
        seen.extend(batch.iter().map(|e| e.name_str()));
        round += 1;
        // Change the directory between every few calls.
        if round % 3 == 0 {
            let k = round / 3;
            let victim = d.join(format!("gone-{:05}", (k * 3 * 7) % n / 3 * 3));
            let _ = unlink(&victim);
            File::create(d.join(format!("new-{k:05}"))).unwrap();
        }
        assert!(round < 10_000, "getdents never reached the end");
    }
    let counts = count_once(&seen);
    let missing: Vec<String> = (0..n)
        .filter(|i| i % 3 != 0)
        .map(|i| format!("keep-{i:05}"))
        .filter(|k| !counts.contains_key(k))
        .collect();
    assert!(
        missing.is_empty(),
        "{} stable entries skipped, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

#[test]
fn rewinddir_sees_entries_added_after_opendir() {
    let m = Mount::new();
    let d = m.path("d");
    mkdir(&d, 0o755).unwrap();
    fs::write(d.join("first"), b"").unwrap();
    let mut dir = Dir::open(&d).unwrap();
    let mut before = Vec::new();
    while let Some(e) = dir.read() {
        before.push(e.unwrap().name_str());
    }
    before.sort();
    assert_eq!(before, vec![".", "..", "first"]);
    fs::write(d.join("second"), b"").unwrap();
    dir.rewind();
    let mut after = Vec::new();
    while let Some(e) = dir.read() {
        after.push(e.unwrap().name_str());
    }
    after.sort();
    assert_eq!(after, vec![".", "..", "first", "second"]);
}

#[test]
fn dotdot_of_a_subdirectory_is_its_parent() {
    let m = Mount::new();
    mkdir(&m.path("a"), 0o755).unwrap();
    mkdir(&m.path("a/b"), 0o755).unwrap();
    let a = fs::symlink_metadata(m.path("a")).unwrap().ino();
    let b = fs::symlink_metadata(m.path("a/b")).unwrap().ino();
    let entries = list_raw(&m.path("a/b")).unwrap();
    let dot = entries.iter().find(|e| e.name == b".").expect(". listed");
    let dotdot = entries.iter().find(|e| e.name == b"..").expect(".. listed");
    assert_eq!(dot.ino, b, "'.' entry inode");
    assert_eq!(dotdot.ino, a, "'..' entry inode");
    assert_eq!(
        fs::symlink_metadata(m.path("a/b/..")).unwrap().ino(),
        a,
        "lookup of .."
    );
}
