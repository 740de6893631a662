//! Extended attributes: set/get/list/remove and their error cases.

use std::fs::{self, File};
use truckeefs_tests::*;

fn file(m: &Mount) -> std::path::PathBuf {
    let p = m.path("f");
    fs::write(&p, b"data").unwrap();
    p
}

#[test]
fn xattr_set_get_list_remove_roundtrip() {
    let m = Mount::new();
    let p = file(&m);
    assert_eq!(
        listxattr(&p).unwrap(),
        Vec::<String>::new(),
        "new file has no xattrs"
    );
    setxattr(&p, "user.alpha", b"one", 0).unwrap();
    let binary: Vec<u8> = (0..=255u8).collect();
    setxattr(&p, "user.beta", &binary, 0).unwrap();
    assert_eq!(getxattr(&p, "user.alpha").unwrap(), b"one");
    assert_eq!(
        getxattr(&p, "user.beta").unwrap(),
        binary,
        "binary value with NULs"
    );
    assert_eq!(listxattr(&p).unwrap(), vec!["user.alpha", "user.beta"]);
    removexattr(&p, "user.alpha").unwrap();
    assert_eq!(listxattr(&p).unwrap(), vec!["user.beta"]);
    assert_errno(getxattr(&p, "user.alpha"), libc::ENODATA, "get removed");
    assert_eq!(fs::read(&p).unwrap(), b"data", "file data untouched");
}

#[test]
fn xattr_set_without_flags_overwrites_and_empty_value_roundtrips() {
    let m = Mount::new();
    let p = file(&m);
    setxattr(&p, "user.k", b"long first value", 0).unwrap();
    setxattr(&p, "user.k", b"v2", 0).unwrap();
    assert_eq!(getxattr(&p, "user.k").unwrap(), b"v2");
    setxattr(&p, "user.empty", b"", 0).unwrap();
    assert_eq!(getxattr_size(&p, "user.empty").unwrap(), 0);
    assert_eq!(getxattr(&p, "user.empty").unwrap(), b"");
    assert_eq!(listxattr(&p).unwrap(), vec!["user.empty", "user.k"]);
}

#[test]
fn xattr_create_flag_on_existing_name_is_eexist() {
    let m = Mount::new();
    let p = file(&m);
    setxattr(&p, "user.k", b"orig", libc::XATTR_CREATE).unwrap();
    assert_errno(
        setxattr(&p, "user.k", b"new", libc::XATTR_CREATE),
        libc::EEXIST,
        "XATTR_CREATE on existing",
    );
    assert_eq!(getxattr(&p, "user.k").unwrap(), b"orig", "value unchanged");
}

#[test]
fn xattr_replace_flag_on_missing_name_is_enodata() {
    let m = Mount::new();
    let p = file(&m);
    assert_errno(
        setxattr(&p, "user.k", b"v", libc::XATTR_REPLACE),
        libc::ENODATA,
        "XATTR_REPLACE on missing",
    );
    assert_errno(getxattr(&p, "user.k"), libc::ENODATA, "nothing was created");
    setxattr(&p, "user.k", b"v1", 0).unwrap();
    setxattr(&p, "user.k", b"v2", libc::XATTR_REPLACE).unwrap();
    assert_eq!(getxattr(&p, "user.k").unwrap(), b"v2");
}

#[test]
fn getxattr_and_removexattr_of_missing_name_are_enodata() {
    let m = Mount::new();
    let p = file(&m);
    setxattr(&p, "user.other", b"x", 0).unwrap();
    assert_errno(
        getxattr_size(&p, "user.missing"),
        libc::ENODATA,
        "size query of missing",
    );
    assert_errno(
        getxattr_buf(&p, "user.missing", 100),
        libc::ENODATA,
        "get missing",
    );
    assert_errno(
        removexattr(&p, "user.missing"),
        libc::ENODATA,
        "remove missing",
    );
}

#[test]
fn getxattr_with_too_small_buffer_is_erange() {
    let m = Mount::new();
    let p = file(&m);
    setxattr(&p, "user.k", b"0123456789", 0).unwrap();
    assert_errno(
        getxattr_buf(&p, "user.k", 5),
        libc::ERANGE,
        "getxattr buffer 5 < 10",
    );
    assert_errno(
        getxattr_buf(&p, "user.k", 9),
        libc::ERANGE,
        "getxattr buffer 9 < 10",
    );
    assert_eq!(
        getxattr_buf(&p, "user.k", 10).unwrap(),
        b"0123456789",
        "exact size works"
    );
    assert_eq!(
        getxattr_buf(&p, "user.k", 64).unwrap(),
        b"0123456789",
        "bigger buffer works"
    );
}

#[test]
fn listxattr_with_too_small_buffer_is_erange() {
    let m = Mount::new();
    let p = file(&m);
    setxattr(&p, "user.a", b"1", 0).unwrap();
    setxattr(&p, "user.bb", b"2", 0).unwrap();
    let need = "user.a\0user.bb\0".len();
    assert_eq!(listxattr_buf(&p, 0).unwrap().len(), need, "size query");
    assert_errno(
        listxattr_buf(&p, need - 1),
        libc::ERANGE,
        "listxattr one byte short",
    );
    assert_errno(listxattr_buf(&p, 3), libc::ERANGE, "listxattr tiny buffer");
    let got = listxattr_buf(&p, need).unwrap();
    assert_eq!(got.len(), need);
}

#[test]
fn getxattr_size_query_returns_value_length() {
    let m = Mount::new();
    let p = file(&m);
    let v = pseudo_random_bytes(5, 3000);
    setxattr(&p, "user.big", &v, 0).unwrap();
    assert_eq!(getxattr_size(&p, "user.big").unwrap(), 3000);
    assert_eq!(getxattr(&p, "user.big").unwrap(), v);
}

#[test]
fn xattrs_work_on_directories_and_are_per_inode() {
    let m = Mount::new();
    let d = m.path("d");
    mkdir(&d, 0o755).unwrap();
    let f = m.path("f");
    File::create(&f).unwrap();
    setxattr(&d, "user.dir", b"D", 0).unwrap();
    setxattr(&f, "user.file", b"F", 0).unwrap();
    assert_eq!(getxattr(&d, "user.dir").unwrap(), b"D");
    assert_eq!(listxattr(&d).unwrap(), vec!["user.dir"]);
    assert_eq!(listxattr(&f).unwrap(), vec!["user.file"]);
    // Hard links share xattrs.
    link(&f, &m.path("g")).unwrap();
    assert_eq!(getxattr(&m.path("g"), "user.file").unwrap(), b"F");
    // Renaming keeps them.
    rename(&d, &m.path("d2")).unwrap();
    assert_eq!(getxattr(&m.path("d2"), "user.dir").unwrap(), b"D");
}

#[test]
fn user_xattr_on_symlink_is_eperm() {
    let m = Mount::new();
    let f = file(&m);
    let l = m.path("l");
    symlink_bytes(b"f", &l).unwrap();
    assert_errno(
        lsetxattr(&l, "user.k", b"v", 0),
        libc::EPERM,
        "user.* on a symlink",
    );
    // Through the link, the target gets it.
    setxattr(&l, "user.k", b"v", 0).unwrap();
    assert_eq!(getxattr(&f, "user.k").unwrap(), b"v");
}

#[test]
fn trusted_xattr_as_root_roundtrips() {
    let m = Mount::new();
    let p = file(&m);
    setxattr(&p, "trusted.t", b"secret", 0).unwrap();
    assert_eq!(getxattr(&p, "trusted.t").unwrap(), b"secret");
    assert!(listxattr(&p).unwrap().contains(&"trusted.t".to_string()));
}
