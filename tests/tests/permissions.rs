//! Permission checks under `default_permissions`, ownership of new files,
//! sticky and setgid directories, access(2). Non-root operations run in the
//! helper process with uid/gid 65534 (nobody) or 65533. These mounts use
//! `-o allow_other` so that users other than the mounter (root) are let in.

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use truckeefs_tests::*;

const NOBODY: u32 = 65534;
const OTHER: u32 = 65533;

fn lstat(p: &Path) -> fs::Metadata {
    fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
}

/// Other users only get into a FUSE mount with `allow_other`; the
/// permission checks themselves come from `default_permissions` (always on).
fn mount() -> Mount {
    Mount::new_with_args(&["-o", "allow_other"])
}

/// A world-writable directory (mode 0777, no sticky bit).
fn shared_dir(m: &Mount) -> PathBuf {
    let d = m.path("shared");
    mkdir(&d, 0o755).unwrap();
    chmod(&d, 0o777).unwrap();
    d
}

fn root_file(m: &Mount, name: &str, mode: u32) -> PathBuf {
    let p = m.path(name);
    fs::write(&p, b"secret").unwrap();
    chmod(&p, mode).unwrap();
    p
}

#[test]
fn nonroot_open_of_root_0600_file_is_eacces() {
    let m = mount();
    chmod(&m.dir, 0o755).unwrap();
    let p = root_file(&m, "f", 0o600);
    let u = as_user(NOBODY, NOBODY);
    assert_eq!(
        u.errno(&["stat", ps(&p)]),
        0,
        "nobody can see the file (mounted with allow_other)"
    );
    assert_eq!(u.errno(&["open", ps(&p), "r"]), libc::EACCES, "read open");
    assert_eq!(u.errno(&["open", ps(&p), "w"]), libc::EACCES, "write open");
    assert_eq!(u.errno(&["open", ps(&p), "rw"]), libc::EACCES, "rw open");
    // Root is not restricted.
    assert_eq!(fs::read(&p).unwrap(), b"secret");
}

#[test]
fn nonroot_can_read_a_0644_file_but_not_write_it() {
    let m = mount();
    chmod(&m.dir, 0o755).unwrap();
    let p = root_file(&m, "f", 0o644);
    let u = as_user(NOBODY, NOBODY);
    assert_eq!(u.errno(&["open", ps(&p), "r"]), 0, "read open");
    assert_eq!(u.errno(&["open", ps(&p), "w"]), libc::EACCES, "write open");
    // Group bits apply to a member of the file's group.
    chown(&p, 0, NOBODY).unwrap();
    chmod(&p, 0o420).unwrap();
    assert_eq!(u.errno(&["open", ps(&p), "w"]), 0, "group write");
    assert_eq!(
        u.errno(&["open", ps(&p), "r"]),
        libc::EACCES,
        "group has no read bit"
    );
}

#[test]
fn nonroot_cannot_create_or_delete_in_a_root_owned_0755_directory() {
    let m = mount();
    chmod(&m.dir, 0o755).unwrap();
    let d = m.path("d");
    mkdir(&d, 0o755).unwrap();
    chmod(&d, 0o755).unwrap();
    fs::write(d.join("existing"), b"").unwrap();
    let u = as_user(NOBODY, NOBODY);
    assert_eq!(
        u.errno(&["create", ps(&d.join("new")), "644"]),
        libc::EACCES,
        "create"
    );
    assert_eq!(
        u.errno(&["mkdir", ps(&d.join("sub")), "755"]),
        libc::EACCES,
        "mkdir"
    );
    assert_eq!(
        u.errno(&["unlink", ps(&d.join("existing"))]),
        libc::EACCES,
        "unlink"
    );
    assert_eq!(
        u.errno(&["rename", ps(&d.join("existing")), ps(&d.join("x"))]),
        libc::EACCES,
        "rename"
    );
    assert!(lstat(&d.join("existing")).is_file());
}

#[test]
fn nonroot_cannot_traverse_a_0700_directory() {
    let m = mount();
    chmod(&m.dir, 0o755).unwrap();
    let d = m.path("private");
    mkdir(&d, 0o700).unwrap();
    chmod(&d, 0o700).unwrap();
    fs::write(d.join("f"), b"x").unwrap();
    chmod(&d.join("f"), 0o644).unwrap();
    let u = as_user(NOBODY, NOBODY);
    assert_eq!(
        u.errno(&["stat", ps(&d.join("f"))]),
        libc::EACCES,
        "lookup through 0700 dir"
    );
    assert_eq!(
        u.errno(&["open", ps(&d.join("f")), "r"]),
        libc::EACCES,
        "open through 0700 dir"
    );
    // Search-only (0711) allows lookup of a known name.
    chmod(&d, 0o711).unwrap();
    assert_eq!(
        u.errno(&["open", ps(&d.join("f")), "r"]),
        0,
        "open through 0711 dir"
    );
}

#[test]
fn access_reports_permissions_for_root_and_nonroot() {
    let m = mount();
    chmod(&m.dir, 0o755).unwrap();
    let secret = root_file(&m, "secret", 0o600);
    let public = root_file(&m, "public", 0o644);
    let exe = root_file(&m, "exe", 0o744);
    // Root: read/write always, execute only if some x bit is set.
    access(&secret, libc::F_OK).unwrap();
    access(&secret, libc::R_OK | libc::W_OK).unwrap();
    assert_errno(
        access(&public, libc::X_OK),
        libc::EACCES,
        "root X_OK without any x bit",
    );
    access(&exe, libc::X_OK).unwrap();
    assert_errno(
        access(&m.path("missing"), libc::F_OK),
        libc::ENOENT,
        "F_OK on missing",
    );

    let u = as_user(NOBODY, NOBODY);
    assert_eq!(u.errno(&["access", ps(&secret), "f"]), 0, "F_OK as nobody");
    assert_eq!(
        u.errno(&["access", ps(&secret), "r"]),
        libc::EACCES,
        "R_OK on 0600 as nobody"
    );
    assert_eq!(
        u.errno(&["access", ps(&public), "r"]),
        0,
        "R_OK on 0644 as nobody"
    );
    assert_eq!(
        u.errno(&["access", ps(&public), "w"]),
        libc::EACCES,
        "W_OK on 0644 as nobody"
    );
    assert_eq!(
        u.errno(&["access", ps(&exe), "x"]),
        libc::EACCES,
        "X_OK on 0744 as nobody"
    );
    assert_eq!(
        u.errno(&["access", ps(&m.path("missing")), "f"]),
        libc::ENOENT,
        "missing as nobody"
    );
}

#[test]
fn sticky_directory_forbids_deleting_or_renaming_another_users_file() {
    let m = mount();
    chmod(&m.dir, 0o755).unwrap();
    let d = m.path("tmp");
    mkdir(&d, 0o755).unwrap();
    chmod(&d, 0o1777).unwrap();
    let owner = as_user(NOBODY, NOBODY);
    let other = as_user(OTHER, OTHER);
    let f = d.join("nobodys");
    assert_eq!(owner.errno(&["create", ps(&f), "666"]), 0);
    chmod(&f, 0o666).unwrap();
    assert_eq!(
        other.errno(&["unlink", ps(&f)]),
        libc::EPERM,
        "non-owner unlink in sticky dir"
    );
    assert_eq!(
        other.errno(&["rename", ps(&f), ps(&d.join("stolen"))]),
        libc::EPERM,
        "non-owner rename in sticky dir"
    );
    assert_eq!(
        other.errno(&["create", ps(&d.join("others")), "644"]),
        0,
        "others may still create"
    );
    assert!(lstat(&f).is_file(), "file survived");
    // Its owner (and root) may remove it.
    assert_eq!(owner.errno(&["unlink", ps(&f)]), 0, "owner unlink");
    unlink(&d.join("others")).unwrap();
    // Without the sticky bit the other user may delete.
    chmod(&d, 0o777).unwrap();
    assert_eq!(owner.errno(&["create", ps(&f), "644"]), 0);
    assert_eq!(
        other.errno(&["unlink", ps(&f)]),
        0,
        "unlink in non-sticky 0777 dir"
    );
}

#[test]
fn setgid_directory_new_file_inherits_gid_and_subdir_inherits_setgid() {
    let m = mount();
    chmod(&m.dir, 0o755).unwrap();
    let d = m.path("proj");
    mkdir(&d, 0o755).unwrap();
    chown(&d, 0, 4242).unwrap();
    chmod(&d, 0o2777).unwrap();
    assert_eq!(lstat(&d).mode() & 0o7777, 0o2777);

    // Created by root (egid 0): group comes from the directory.
    let f = d.join("f");
    File::create(&f).unwrap();
    assert_eq!(lstat(&f).gid(), 4242, "file gid from setgid dir");
    let sub = d.join("sub");
    mkdir(&sub, 0o755).unwrap();
    let md = lstat(&sub);
    assert_eq!(md.gid(), 4242, "subdir gid from setgid dir");
    assert_ne!(
        md.mode() & libc::S_ISGID,
        0,
        "subdir inherits the setgid bit (mode {:o})",
        md.mode()
    );

    // Created by another user who is not in group 4242.
    let u = as_user(NOBODY, NOBODY);
    let g = d.join("g");
    assert_eq!(u.errno(&["create", ps(&g), "644"]), 0);
    let md = lstat(&g);
    assert_eq!(
        (md.uid(), md.gid()),
        (NOBODY, 4242),
        "owner from creator, group from dir"
    );
    let sub2 = d.join("sub2");
    assert_eq!(u.errno(&["mkdir", ps(&sub2), "755"]), 0);
    let md = lstat(&sub2);
    assert_eq!(md.gid(), 4242);
    assert_ne!(
        md.mode() & libc::S_ISGID,
        0,
        "subdir by nobody inherits setgid"
    );

    // Without setgid, the creator's gid is used.
    let plain = m.path("plain");
    mkdir(&plain, 0o755).unwrap();
    chown(&plain, 0, 4242).unwrap();
    chmod(&plain, 0o777).unwrap();
    File::create(plain.join("f")).unwrap();
    assert_eq!(lstat(&plain.join("f")).gid(), unsafe { libc::getegid() });
}

#[test]
fn creator_uid_and_gid_are_recorded() {
    let m = mount();
    chmod(&m.dir, 0o755).unwrap();
    let d = shared_dir(&m);
    let u = as_user(NOBODY, NOBODY);
    let f = d.join("file");
    let sub = d.join("dir");
    let l = d.join("link");
    assert_eq!(u.errno(&["create", ps(&f), "644"]), 0);
    assert_eq!(u.errno(&["mkdir", ps(&sub), "755"]), 0);
    assert_eq!(u.errno(&["symlink", "file", ps(&l)]), 0);
    for p in [&f, &sub, &l] {
        let md = lstat(p);
        assert_eq!(
            (md.uid(), md.gid()),
            (NOBODY, NOBODY),
            "owner of {}",
            p.display()
        );
    }
    let r = as_user(OTHER, 100).run(&["stat", ps(&f)]);
    assert_eq!(
        r.fields[0..2],
        [NOBODY.to_string(), NOBODY.to_string()],
        "seen by another user"
    );
    // A different gid than uid.
    let g = d.join("mixed");
    assert_eq!(as_user(OTHER, 4321).errno(&["create", ps(&g), "600"]), 0);
    let md = lstat(&g);
    assert_eq!((md.uid(), md.gid()), (OTHER, 4321));
}

#[test]
fn only_the_owner_may_chmod_and_only_root_may_chown() {
    let m = mount();
    chmod(&m.dir, 0o755).unwrap();
    let d = shared_dir(&m);
    let mine = d.join("mine");
    let u = as_user(NOBODY, NOBODY);
    assert_eq!(u.errno(&["create", ps(&mine), "644"]), 0);
    assert_eq!(u.errno(&["chmod", ps(&mine), "600"]), 0, "owner chmod");
    assert_eq!(lstat(&mine).mode() & 0o7777, 0o600);
    assert_eq!(
        as_user(OTHER, OTHER).errno(&["chmod", ps(&mine), "666"]),
        libc::EPERM,
        "non-owner chmod"
    );
    assert_eq!(
        u.errno(&["chown", ps(&mine), &OTHER.to_string(), "-1"]),
        libc::EPERM,
        "non-root chown to another uid"
    );
    let theirs = root_file(&m, "rootfile", 0o666);
    assert_eq!(
        u.errno(&["chmod", ps(&theirs), "777"]),
        libc::EPERM,
        "chmod of root's file"
    );
    assert_eq!(lstat(&theirs).mode() & 0o7777, 0o666);
}
