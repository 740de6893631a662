//! `backend_storage_strategy: MIRROR`: the Tahoe directories under the rootcap follow the tree,
//! so `tahoe ls` and `tahoe get` on the rootcap show the names and bytes the mount shows —
//! through mkdir, writes, hard links, renames (of files and of whole directories), exchange,
//! unlink and rmdir — and a mount repairs a Tahoe tree that went astray while it was away.
//! Real servers: the harness's Tahoe-LAFS grid, and MariaDB or the embedded SQLite.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use truckeefs_tests::mariadb::MariaDb;
use truckeefs_tests::tahoe_grid::{tahoe_bin, TahoeGrid};
use truckeefs_tests::*;

/// A mount configuration: MIRROR on a fresh rootcap, with MariaDB metadata or the embedded store.
fn config(dir: &Path, rootcap: &str, mariadb: bool) -> String {
    let grid = TahoeGrid::shared();
    let mut yaml = format!("rootcap: {rootcap}\ntahoe_url: {}\nbackend_storage_strategy: MIRROR\n", grid.url);
    if mariadb {
        let db = MariaDb::shared();
        yaml.push_str(&format!(
            "sql_host: {}:{}\nsql_user: {}\nsql_pass: {}\nsql_db: {}\n",
            db.host(),
            db.port(),
            db.user(),
            db.password(),
            db.unique_db_name("mirror")
        ));
    }
    let path = dir.join("env.yaml");
    fs::write(&path, yaml).unwrap();
    path.to_str().unwrap().to_string()
}

fn status_field(m: &Mount, key: &str) -> String {
    let s = String::from_utf8(getxattr_buf(&m.dir, "user.truckeefs.status", 65536).expect("status attribute")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no {key:?} in status:\n{s}"))
        .to_string()
}

/// Waits until every file is uploaded and the mirror has performed every change.
fn wait_mirrored(m: &Mount) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = String::from_utf8(getxattr_buf(&m.dir, "user.truckeefs.status", 65536).unwrap()).unwrap();
        let field = |k: &str| s.lines().find_map(|l| l.strip_prefix(&format!("{k}: "))).unwrap_or("").to_string();
        if field("files waiting to upload") == "0"
            && field("uploads in flight") == "0"
            && field("tahoe tree (MIRROR)").starts_with("0 directories waiting")
        {
            return;
        }
        assert!(Instant::now() < deadline, "the Tahoe tree did not catch up within 120 s:\n{s}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs the `tahoe` command line against the harness's gateway.
fn tahoe(args: &[&str]) -> Vec<u8> {
    let grid = TahoeGrid::shared();
    let out = Command::new(tahoe_bin()).arg("-d").arg(&grid.gateway_dir).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "tahoe {} failed: {}",
        args.first().unwrap_or(&""),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// What a tree holds: path -> `None` for a directory, the bytes for a file.
type Tree = BTreeMap<String, Option<Vec<u8>>>;

/// The mount's tree, leaving out what Tahoe cannot hold (symlinks and special files).
fn mount_tree(root: &Path) -> Tree {
    fn walk(dir: &Path, prefix: &str, out: &mut Tree) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let path = format!("{prefix}{name}");
            let t = e.file_type().unwrap();
            if t.is_dir() {
                out.insert(path.clone(), None);
                walk(&e.path(), &format!("{path}/"), out);
            } else if t.is_file() {
                out.insert(path, Some(fs::read(e.path()).unwrap()));
            }
        }
    }
    let mut out = Tree::new();
    walk(root, "", &mut out);
    out
}

/// The Tahoe tree under `rootcap`, as `tahoe ls -F` and `tahoe get` show it.
fn tahoe_tree(rootcap: &str) -> Tree {
    fn walk(at: &str, prefix: &str, out: &mut Tree) {
        let listing = String::from_utf8(tahoe(&["ls", "-F", at])).unwrap();
        for line in listing.lines().filter(|l| !l.is_empty()) {
            if let Some(dir) = line.strip_suffix('/') {
                let path = format!("{prefix}{dir}");
                out.insert(path.clone(), None);
                walk(&format!("{at}/{dir}"), &format!("{path}/"), out);
            } else {
                let bytes = tahoe(&["get", &format!("{at}/{line}"), "-"]);
                out.insert(format!("{prefix}{line}"), Some(bytes));
            }
        }
    }
    let mut out = Tree::new();
    walk(rootcap, "", &mut out);
    out
}

fn assert_same_tree(mount: &Tree, tahoe: &Tree) {
    let names = |t: &Tree| t.iter().map(|(k, v)| format!("{k}{}", if v.is_none() { "/" } else { "" })).collect::<Vec<_>>();
    assert_eq!(names(tahoe), names(mount), "names: tahoe ls (left) against the mount (right)");
    for (path, bytes) in mount {
        if let Some(bytes) = bytes {
            assert_bytes_eq(tahoe[path].as_deref().unwrap(), bytes, &format!("tahoe get {path}"));
        }
    }
}

/// Builds a tree through every kind of change the mirror follows.
fn make_changes(m: &Mount) {
    fs::create_dir_all(m.path("a/b")).unwrap();
    fs::write(m.path("a/b/f1"), pseudo_random_bytes(1, 300_000)).unwrap();
    fs::write(m.path("a/empty"), b"").unwrap();
    fs::write(m.path("top.txt"), b"at the top\n").unwrap();
    fs::write(m.path("x"), b"x before the exchange").unwrap();
    fs::write(m.path("a/y"), b"y before the exchange").unwrap();
    std::os::unix::fs::symlink("a/b/f1", m.path("link-to-f1")).unwrap();
    link(&m.path("a/b/f1"), &m.path("a/hard")).unwrap();
    fs::create_dir(m.path("gone")).unwrap();
    fs::write(m.path("gone/file"), b"short-lived").unwrap();
    // Moves: a directory with its subtree, a file into it, over an existing name.
    rename(&m.path("a/b"), &m.path("a/c")).unwrap();
    rename(&m.path("top.txt"), &m.path("a/c/top2.txt")).unwrap();
    fs::write(m.path("victim"), b"replaced by a rename").unwrap();
    fs::write(m.path("mover"), b"took the victim's name").unwrap();
    rename(&m.path("mover"), &m.path("victim")).unwrap();
    renameat2(&m.path("x"), &m.path("a/y"), libc::RENAME_EXCHANGE).unwrap();
    // A directory with a subtree moved over an empty directory.
    fs::create_dir(m.path("empty-dir")).unwrap();
    fs::create_dir_all(m.path("full-dir/sub")).unwrap();
    fs::write(m.path("full-dir/sub/deep"), b"moved with its directory").unwrap();
    wait_mirrored(m);
    rename(&m.path("full-dir"), &m.path("empty-dir")).unwrap();
    // A new version, and a truncation to nothing.
    let mut f = fs::OpenOptions::new().write(true).truncate(true).open(m.path("a/c/f1")).unwrap();
    f.write_all(&pseudo_random_bytes(2, 123_457)).unwrap();
    f.sync_all().unwrap();
    drop(f);
    fs::write(m.path("a/c/top2.txt"), b"").unwrap();
    // Removals.
    unlink(&m.path("a/hard")).unwrap();
    unlink(&m.path("gone/file")).unwrap();
    rmdir(&m.path("gone")).unwrap();
}

fn mirror_follows_the_tree(mariadb: bool) {
    let grid = TahoeGrid::shared();
    let rootcap = grid.mkdir();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), &rootcap, mariadb);
    let dirs = Storage::new();
    let m = Mount::with_dirs_args(&dirs.data_dir, &dirs.cache_dir, &["-c", &cfg]);
    make_changes(&m);
    wait_mirrored(&m);
    let want = mount_tree(&m.dir);
    assert!(
        want.contains_key("a/c/f1") && want.contains_key("empty-dir/sub/deep") && !want.contains_key("gone"),
        "{:?}",
        want.keys()
    );
    assert_same_tree(&want, &tahoe_tree(&rootcap));
    assert_eq!(status_field(&m, "tahoe tree (MIRROR)").split(", ").nth(2), Some("0 refused by the gateway"));
    m.unmount_ok();

    // While no mount runs, the Tahoe tree goes astray: a file and a directory the mirror made
    // are unlinked, another of its files is overwritten (Tahoe keeps the link's metadata, so
    // the name stays the mirror's). Someone also links things of their own: a directory and a
    // file. The next mount's walk repairs what is the mirror's and leaves theirs alone.
    tahoe(&["unlink", &format!("{rootcap}/a/c/f1")]);
    tahoe(&["unlink", &format!("{rootcap}/empty-dir")]);
    let put = tmp.path().join("theirs.txt");
    fs::write(&put, b"put there by someone else").unwrap();
    tahoe(&["put", put.to_str().unwrap(), &format!("{rootcap}/a/y")]);
    tahoe(&["mkdir", &format!("{rootcap}/theirs")]);
    tahoe(&["put", put.to_str().unwrap(), &format!("{rootcap}/a/theirs.txt")]);
    let m = Mount::with_dirs_args(&dirs.data_dir, &dirs.cache_dir, &["-c", &cfg]);
    wait_mirrored(&m);
    let mut expected = want.clone();
    expected.insert("theirs".into(), None);
    expected.insert("a/theirs.txt".into(), Some(b"put there by someone else".to_vec()));
    assert_same_tree(&expected, &tahoe_tree(&rootcap));
    assert_eq!(mount_tree(&m.dir), want, "the mount after a remount");
    m.unmount_ok();
}

#[test]
fn mirror_with_mariadb_metadata() {
    mirror_follows_the_tree(true);
}

#[test]
fn mirror_with_embedded_metadata() {
    mirror_follows_the_tree(false);
}
