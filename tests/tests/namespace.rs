//! Names: lookup, create, mkdir, mknod, unlink, rmdir, symlink, link, rename.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use truckeefs_tests::*;

fn lstat(p: &Path) -> fs::Metadata {
    fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
}

fn nlink(p: &Path) -> u64 {
    lstat(p).nlink()
}

// ---------------------------------------------------------------- lookup/create

#[test]
fn lookup_of_missing_name_is_enoent() {
    let m = Mount::new();
    assert_errno(
        fs::symlink_metadata(m.path("missing")),
        libc::ENOENT,
        "lstat",
    );
    assert_errno(File::open(m.path("missing")), libc::ENOENT, "open");
    mkdir(&m.path("d"), 0o755).unwrap();
    assert_errno(
        fs::symlink_metadata(m.path("d/missing")),
        libc::ENOENT,
        "lstat in subdir",
    );
}

#[test]
fn create_with_o_excl_on_existing_name_is_eexist() {
    let m = Mount::new();
    let p = m.path("f");
    fs::write(&p, b"keep").unwrap();
    assert_errno(
        OpenOptions::new().write(true).create_new(true).open(&p),
        libc::EEXIST,
        "O_CREAT|O_EXCL on file",
    );
    assert_eq!(fs::read(&p).unwrap(), b"keep", "existing file untouched");
    mkdir(&m.path("d"), 0o755).unwrap();
    assert_errno(
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(m.path("d")),
        libc::EEXIST,
        "O_CREAT|O_EXCL on dir",
    );
    // O_CREAT without O_EXCL opens the existing file.
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&p)
        .unwrap();
    drop(f);
    assert_eq!(fs::read(&p).unwrap(), b"keep");
}

#[test]
fn create_in_missing_parent_is_enoent() {
    let m = Mount::new();
    assert_errno(File::create(m.path("nodir/f")), libc::ENOENT, "create");
    assert_errno(mkdir(&m.path("nodir/d"), 0o755), libc::ENOENT, "mkdir");
    assert_errno(
        symlink_bytes(b"x", &m.path("nodir/l")),
        libc::ENOENT,
        "symlink",
    );
    assert_errno(
        mknod(&m.path("nodir/p"), libc::S_IFIFO | 0o644, 0),
        libc::ENOENT,
        "mknod",
    );
}

#[test]
fn file_used_as_directory_is_enotdir() {
    let m = Mount::new();
    let f = m.path("f");
    fs::write(&f, b"x").unwrap();
    assert_errno(
        fs::symlink_metadata(m.path("f/x")),
        libc::ENOTDIR,
        "lstat f/x",
    );
    assert_errno(File::create(m.path("f/x")), libc::ENOTDIR, "create f/x");
    assert_errno(mkdir(&m.path("f/d"), 0o755), libc::ENOTDIR, "mkdir f/d");
    assert_errno(fs::read_dir(&f), libc::ENOTDIR, "opendir on file");
}

#[test]
fn name_of_255_bytes_works_and_256_bytes_is_enametoolong() {
    let m = Mount::new();
    let n255 = "a".repeat(255);
    let n256 = "b".repeat(256);
    let p = m.path(&n255);
    fs::write(&p, b"long").unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"long");
    assert_eq!(names(&m.dir), vec![n255.clone()]);
    let d255 = m.path("c".repeat(255));
    mkdir(&d255, 0o755).unwrap();
    rename(&p, &d255.join("d".repeat(255))).unwrap();

    assert_errno(
        File::create(m.path(&n256)),
        libc::ENAMETOOLONG,
        "create 256",
    );
    assert_errno(
        mkdir(&m.path(&n256), 0o755),
        libc::ENAMETOOLONG,
        "mkdir 256",
    );
    assert_errno(
        fs::symlink_metadata(m.path(&n256)),
        libc::ENAMETOOLONG,
        "lookup 256",
    );
    assert_errno(
        symlink_bytes(b"t", &m.path(&n256)),
        libc::ENAMETOOLONG,
        "symlink 256",
    );
    assert_errno(
        rename(&d255, &m.path(&n256)),
        libc::ENAMETOOLONG,
        "rename to 256",
    );
    // Multi-byte UTF-8: 255 bytes is the limit, not 255 characters.
    let e255 = "é".repeat(127) + "x"; // 2*127+1 = 255 bytes
    fs::write(m.path(&e255), b"").unwrap();
    let e256 = "é".repeat(128); // 256 bytes
    assert_errno(
        File::create(m.path(&e256)),
        libc::ENAMETOOLONG,
        "create 256-byte utf-8 name",
    );
}

#[test]
fn names_are_arbitrary_bytes_except_slash_and_nul() {
    let m = Mount::new();
    let weird: Vec<u8> = vec![b'\xff', b'\x01', b' ', b'\n', b'*', b'\\', b'.', b'\xc3'];
    let p = m.dir.join(os_bytes(weird.clone()));
    fs::write(&p, b"w").unwrap();
    let listed = list_raw(&m.dir).unwrap();
    assert!(
        listed.iter().any(|e| e.name == weird),
        "raw name not listed: {listed:?}"
    );
    assert_eq!(fs::read(&p).unwrap(), b"w");
    // Case-sensitive.
    fs::write(m.path("Case"), b"1").unwrap();
    fs::write(m.path("case"), b"2").unwrap();
    assert_eq!(fs::read(m.path("Case")).unwrap(), b"1");
    assert_eq!(fs::read(m.path("case")).unwrap(), b"2");
}

// ---------------------------------------------------------------- mkdir

#[test]
fn mkdir_mode_is_masked_by_umask_and_parent_nlink_increments() {
    let m = Mount::new();
    let root_nlink = nlink(&m.dir);
    let d = m.path("d");
    mkdir(&d, 0o777).unwrap();
    let umask = current_umask();
    assert_eq!(
        lstat(&d).mode() & 0o7777,
        0o777 & !umask,
        "mode & ~umask (umask {umask:o})"
    );
    assert_eq!(
        nlink(&m.dir),
        root_nlink + 1,
        "parent nlink +1 for the new subdir"
    );
    mkdir(&d.join("a"), 0o755).unwrap();
    mkdir(&d.join("b"), 0o755).unwrap();
    assert_eq!(nlink(&d), 4, "2 + two subdirs");
    File::create(d.join("file")).unwrap();
    assert_eq!(nlink(&d), 4, "files do not count");
    assert_eq!(nlink(&m.dir), root_nlink + 1);
}

#[test]
fn mkdir_and_create_apply_an_explicit_umask() {
    let m = Mount::new();
    let h = as_root().umask(0o027);
    assert_eq!(h.errno(&["mkdir", ps(&m.path("d")), "777"]), 0);
    assert_eq!(lstat(&m.path("d")).mode() & 0o7777, 0o750);
    assert_eq!(h.errno(&["create", ps(&m.path("f")), "666"]), 0);
    assert_eq!(lstat(&m.path("f")).mode() & 0o7777, 0o640);
    let h = as_root().umask(0);
    assert_eq!(h.errno(&["mkdir", ps(&m.path("e")), "1777"]), 0);
    assert_eq!(
        lstat(&m.path("e")).mode() & 0o7777,
        0o1777,
        "sticky bit kept by mkdir"
    );
}

#[test]
fn mkdir_on_existing_name_is_eexist() {
    let m = Mount::new();
    mkdir(&m.path("d"), 0o755).unwrap();
    fs::write(m.path("f"), b"").unwrap();
    assert_errno(
        mkdir(&m.path("d"), 0o755),
        libc::EEXIST,
        "mkdir existing dir",
    );
    assert_errno(
        mkdir(&m.path("f"), 0o755),
        libc::EEXIST,
        "mkdir existing file",
    );
}

// ---------------------------------------------------------------- mknod

#[test]
fn mknod_fifo_creates_a_fifo() {
    let m = Mount::new();
    let p = m.path("fifo");
    mknod(&p, libc::S_IFIFO | 0o640, 0).unwrap();
    let md = lstat(&p);
    assert!(md.file_type().is_fifo(), "mode {:o}", md.mode());
    assert_eq!(md.mode() & 0o777, 0o640 & !current_umask());
    assert_eq!(md.size(), 0);
    assert_eq!(md.nlink(), 1);
}

#[test]
fn mknod_socket_creates_a_socket() {
    let m = Mount::new();
    let p = m.path("sock");
    mknod(&p, libc::S_IFSOCK | 0o600, 0).unwrap();
    let md = lstat(&p);
    assert!(md.file_type().is_socket(), "mode {:o}", md.mode());
    assert_eq!(md.mode() & 0o777, 0o600);
}

#[test]
fn mknod_char_device_preserves_rdev() {
    let m = Mount::new();
    let p = m.path("null");
    let dev = makedev(1, 3);
    mknod(&p, libc::S_IFCHR | 0o666, dev).unwrap();
    let md = lstat(&p);
    assert!(md.file_type().is_char_device(), "mode {:o}", md.mode());
    assert_eq!(md.rdev(), dev, "rdev");
    let big = makedev(4000, 300_000);
    mknod(&m.path("big"), libc::S_IFCHR | 0o600, big).unwrap();
    assert_eq!(lstat(&m.path("big")).rdev(), big, "large major/minor");
}

#[test]
fn mknod_block_device_preserves_rdev() {
    let m = Mount::new();
    let p = m.path("blk");
    let dev = makedev(8, 17);
    mknod(&p, libc::S_IFBLK | 0o660, dev).unwrap();
    let md = lstat(&p);
    assert!(md.file_type().is_block_device(), "mode {:o}", md.mode());
    assert_eq!(md.rdev(), dev, "rdev");
}

#[test]
fn mknod_on_existing_name_is_eexist() {
    let m = Mount::new();
    fs::write(m.path("f"), b"").unwrap();
    assert_errno(
        mknod(&m.path("f"), libc::S_IFIFO | 0o644, 0),
        libc::EEXIST,
        "mknod existing",
    );
}

// ---------------------------------------------------------------- unlink/rmdir

#[test]
fn unlink_removes_the_name() {
    let m = Mount::new();
    let p = m.path("f");
    fs::write(&p, b"x").unwrap();
    unlink(&p).unwrap();
    assert_errno(fs::symlink_metadata(&p), libc::ENOENT, "lstat after unlink");
    assert!(names(&m.dir).is_empty());
    assert_errno(unlink(&p), libc::ENOENT, "unlink again");
}

#[test]
fn unlink_of_directory_is_eisdir() {
    let m = Mount::new();
    mkdir(&m.path("d"), 0o755).unwrap();
    assert_errno(unlink(&m.path("d")), libc::EISDIR, "unlink dir");
    assert!(lstat(&m.path("d")).is_dir(), "dir still there");
}

#[test]
fn rmdir_of_nonempty_directory_is_enotempty() {
    let m = Mount::new();
    let d = m.path("d");
    mkdir(&d, 0o755).unwrap();
    fs::write(d.join("f"), b"").unwrap();
    assert_errno(rmdir(&d), libc::ENOTEMPTY, "rmdir with file");
    unlink(&d.join("f")).unwrap();
    mkdir(&d.join("sub"), 0o755).unwrap();
    assert_errno(rmdir(&d), libc::ENOTEMPTY, "rmdir with subdir");
    rmdir(&d.join("sub")).unwrap();
    rmdir(&d).unwrap();
    assert_errno(fs::symlink_metadata(&d), libc::ENOENT, "gone");
}

#[test]
fn rmdir_of_file_is_enotdir() {
    let m = Mount::new();
    fs::write(m.path("f"), b"").unwrap();
    assert_errno(rmdir(&m.path("f")), libc::ENOTDIR, "rmdir file");
    symlink_bytes(b"d", &m.path("l")).unwrap();
    mkdir(&m.path("d"), 0o755).unwrap();
    assert_errno(rmdir(&m.path("l")), libc::ENOTDIR, "rmdir symlink to dir");
}

#[test]
fn rmdir_of_dot_is_einval() {
    let m = Mount::new();
    let d = m.path("d");
    mkdir(&d, 0o755).unwrap();
    assert_errno(rmdir(&d.join(".")), libc::EINVAL, "rmdir d/.");
    assert!(lstat(&d).is_dir());
}

#[test]
fn rmdir_of_empty_directory_decrements_parent_nlink() {
    let m = Mount::new();
    let p = m.path("p");
    mkdir(&p, 0o755).unwrap();
    mkdir(&p.join("c"), 0o755).unwrap();
    assert_eq!(nlink(&p), 3);
    rmdir(&p.join("c")).unwrap();
    assert_eq!(nlink(&p), 2);
    assert!(names(&p).is_empty());
}

// ---------------------------------------------------------------- symlinks

#[test]
fn symlink_target_is_preserved_byte_exact() {
    let m = Mount::new();
    let mut target: Vec<u8> = b"../some dir/\xff\xfe weird\x01name/".to_vec();
    target.extend(std::iter::repeat_n(b'x', 300));
    let l = m.path("l");
    symlink_bytes(&target, &l).unwrap();
    let md = lstat(&l);
    assert!(md.file_type().is_symlink());
    assert_eq!(md.size(), target.len() as u64, "lstat size = target length");
    assert_eq!(readlink_bytes(&l).unwrap(), target);

    // The longest target Linux accepts (PATH_MAX - 1).
    let long: Vec<u8> = (0..4095).map(|i| b'a' + (i % 26) as u8).collect();
    let l2 = m.path("long");
    symlink_bytes(&long, &l2).unwrap();
    assert_eq!(lstat(&l2).size(), 4095);
    assert_eq!(readlink_bytes(&l2).unwrap(), long);

    assert_errno(
        readlink_bytes(&m.dir),
        libc::EINVAL,
        "readlink of a directory",
    );
}

#[test]
fn symlink_is_followed_and_dangling_symlink_is_enoent() {
    let m = Mount::new();
    mkdir(&m.path("d"), 0o755).unwrap();
    fs::write(m.path("d/f"), b"target data").unwrap();
    symlink_bytes(b"d/f", &m.path("rel")).unwrap();
    let abs = m.path("d/f");
    symlink_bytes(abs.as_os_str().as_encoded_bytes(), &m.path("abs")).unwrap();
    symlink_bytes(b"d", &m.path("dirlink")).unwrap();
    assert_eq!(fs::read(m.path("rel")).unwrap(), b"target data");
    assert_eq!(fs::read(m.path("abs")).unwrap(), b"target data");
    assert_eq!(fs::read(m.path("dirlink/f")).unwrap(), b"target data");
    assert_eq!(
        fs::metadata(m.path("rel")).unwrap().ino(),
        lstat(&m.path("d/f")).ino()
    );
    symlink_bytes(b"nowhere", &m.path("dangling")).unwrap();
    assert_errno(
        fs::metadata(m.path("dangling")),
        libc::ENOENT,
        "stat dangling",
    );
    assert!(lstat(&m.path("dangling")).file_type().is_symlink());
    assert_errno(
        symlink_bytes(b"x", &m.path("rel")),
        libc::EEXIST,
        "symlink over existing",
    );
    unlink(&m.path("rel")).unwrap();
    assert_eq!(
        fs::read(m.path("d/f")).unwrap(),
        b"target data",
        "unlinking a symlink keeps its target"
    );
}

// ---------------------------------------------------------------- hard links

#[test]
fn hard_link_shares_inode_nlink_and_contents() {
    let m = Mount::new();
    let a = m.path("a");
    fs::write(&a, b"shared").unwrap();
    mkdir(&m.path("d"), 0o755).unwrap();
    let b = m.path("d/b");
    link(&a, &b).unwrap();
    let (ma, mb) = (lstat(&a), lstat(&b));
    assert_eq!(ma.ino(), mb.ino(), "same inode");
    assert_eq!(ma.nlink(), 2, "nlink via a");
    assert_eq!(mb.nlink(), 2, "nlink via b");
    // Writes through one name are visible through the other.
    let mut f = OpenOptions::new().append(true).open(&b).unwrap();
    f.write_all(b" contents").unwrap();
    drop(f);
    assert_eq!(fs::read(&a).unwrap(), b"shared contents");
    chmod(&a, 0o600).unwrap();
    assert_eq!(lstat(&b).mode() & 0o777, 0o600, "mode shared");
    link(&b, &m.path("c")).unwrap();
    assert_eq!(nlink(&a), 3);
}

#[test]
fn unlinking_one_hard_link_keeps_the_other() {
    let m = Mount::new();
    let a = m.path("a");
    let b = m.path("b");
    fs::write(&a, b"data").unwrap();
    link(&a, &b).unwrap();
    unlink(&a).unwrap();
    assert_errno(fs::symlink_metadata(&a), libc::ENOENT, "a gone");
    assert_eq!(fs::read(&b).unwrap(), b"data");
    assert_eq!(nlink(&b), 1);
    assert_eq!(names(&m.dir), vec!["b".to_string()]);
}

#[test]
fn hard_link_to_directory_is_eperm() {
    let m = Mount::new();
    mkdir(&m.path("d"), 0o755).unwrap();
    assert_errno(link(&m.path("d"), &m.path("e")), libc::EPERM, "link dir");
    assert_errno(
        fs::symlink_metadata(m.path("e")),
        libc::ENOENT,
        "no name created",
    );
}

#[test]
fn hard_link_onto_existing_name_is_eexist_and_missing_source_is_enoent() {
    let m = Mount::new();
    fs::write(m.path("a"), b"a").unwrap();
    fs::write(m.path("b"), b"b").unwrap();
    assert_errno(
        link(&m.path("a"), &m.path("b")),
        libc::EEXIST,
        "link onto existing",
    );
    assert_eq!(fs::read(m.path("b")).unwrap(), b"b");
    assert_errno(
        link(&m.path("nope"), &m.path("c")),
        libc::ENOENT,
        "link missing source",
    );
}

#[test]
fn hard_link_to_symlink_links_the_symlink_itself() {
    let m = Mount::new();
    symlink_bytes(b"target", &m.path("l")).unwrap();
    link(&m.path("l"), &m.path("l2")).unwrap();
    assert!(lstat(&m.path("l2")).file_type().is_symlink());
    assert_eq!(readlink_bytes(&m.path("l2")).unwrap(), b"target");
    assert_eq!(nlink(&m.path("l")), 2);
}

// ---------------------------------------------------------------- rename

#[test]
fn rename_replaces_an_existing_file() {
    let m = Mount::new();
    let (a, b) = (m.path("a"), m.path("b"));
    fs::write(&a, b"AAA").unwrap();
    fs::write(&b, b"B").unwrap();
    let ino_a = lstat(&a).ino();
    rename(&a, &b).unwrap();
    assert_errno(fs::symlink_metadata(&a), libc::ENOENT, "source name gone");
    assert_eq!(fs::read(&b).unwrap(), b"AAA");
    assert_eq!(
        lstat(&b).ino(),
        ino_a,
        "target name now refers to the source inode"
    );
    assert_eq!(nlink(&b), 1);
    assert_eq!(names(&m.dir), vec!["b".to_string()]);
}

#[test]
fn rename_replacing_a_file_keeps_it_readable_through_an_open_fd() {
    let m = Mount::new();
    let (a, b) = (m.path("a"), m.path("b"));
    fs::write(&a, b"new").unwrap();
    fs::write(&b, b"old contents").unwrap();
    let old = File::open(&b).unwrap();
    rename(&a, &b).unwrap();
    let mut s = String::new();
    std::io::Read::read_to_string(&mut &old, &mut s).unwrap();
    assert_eq!(s, "old contents");
    assert_eq!(
        fstat(&old).unwrap().st_nlink,
        0,
        "replaced inode has no names left"
    );
    assert_eq!(fs::read(&b).unwrap(), b"new");
}

#[test]
fn rename_directory_replaces_an_empty_directory() {
    let m = Mount::new();
    let (a, b) = (m.path("a"), m.path("b"));
    mkdir(&a, 0o755).unwrap();
    fs::write(a.join("inner"), b"i").unwrap();
    mkdir(&b, 0o755).unwrap();
    let root_nlink = nlink(&m.dir);
    rename(&a, &b).unwrap();
    assert_errno(fs::symlink_metadata(&a), libc::ENOENT, "source gone");
    assert_eq!(fs::read(b.join("inner")).unwrap(), b"i");
    assert_eq!(nlink(&m.dir), root_nlink - 1, "one subdirectory fewer");
}

#[test]
fn rename_directory_over_nonempty_directory_is_enotempty() {
    let m = Mount::new();
    let (a, b) = (m.path("a"), m.path("b"));
    mkdir(&a, 0o755).unwrap();
    mkdir(&b, 0o755).unwrap();
    fs::write(b.join("x"), b"").unwrap();
    assert_errno(rename(&a, &b), libc::ENOTEMPTY, "rename over non-empty dir");
    assert!(lstat(&a).is_dir());
    assert_eq!(names(&b), vec!["x".to_string()]);
}

#[test]
fn rename_file_over_directory_is_eisdir() {
    let m = Mount::new();
    fs::write(m.path("f"), b"f").unwrap();
    mkdir(&m.path("d"), 0o755).unwrap();
    assert_errno(
        rename(&m.path("f"), &m.path("d")),
        libc::EISDIR,
        "file over dir",
    );
    assert_eq!(fs::read(m.path("f")).unwrap(), b"f");
    assert!(lstat(&m.path("d")).is_dir());
}

#[test]
fn rename_directory_over_file_is_enotdir() {
    let m = Mount::new();
    fs::write(m.path("f"), b"f").unwrap();
    mkdir(&m.path("d"), 0o755).unwrap();
    assert_errno(
        rename(&m.path("d"), &m.path("f")),
        libc::ENOTDIR,
        "dir over file",
    );
    assert_eq!(fs::read(m.path("f")).unwrap(), b"f");
    assert!(lstat(&m.path("d")).is_dir());
}

#[test]
fn rename_directory_into_its_own_subdirectory_is_einval() {
    let m = Mount::new();
    mkdir(&m.path("a"), 0o755).unwrap();
    mkdir(&m.path("a/b"), 0o755).unwrap();
    assert_errno(
        rename(&m.path("a"), &m.path("a/b/c")),
        libc::EINVAL,
        "a -> a/b/c",
    );
    assert_errno(
        rename(&m.path("a"), &m.path("a/c")),
        libc::EINVAL,
        "a -> a/c",
    );
    assert!(lstat(&m.path("a/b")).is_dir());
}

#[test]
fn rename_moves_directory_between_parents_fixing_nlink_and_dotdot() {
    let m = Mount::new();
    let (p1, p2) = (m.path("p1"), m.path("p2"));
    mkdir(&p1, 0o755).unwrap();
    mkdir(&p2, 0o755).unwrap();
    mkdir(&p1.join("d"), 0o755).unwrap();
    fs::write(p1.join("d/f"), b"payload").unwrap();
    assert_eq!((nlink(&p1), nlink(&p2)), (3, 2));
    rename(&p1.join("d"), &p2.join("moved")).unwrap();
    assert_eq!(
        (nlink(&p1), nlink(&p2)),
        (2, 3),
        "parent link counts after move"
    );
    assert_eq!(fs::read(p2.join("moved/f")).unwrap(), b"payload");
    assert_eq!(
        lstat(&p2.join("moved/..")).ino(),
        lstat(&p2).ino(),
        "'..' points at the new parent"
    );
    assert!(names(&p1).is_empty());
}

#[test]
fn rename_file_between_directories() {
    let m = Mount::new();
    mkdir(&m.path("x"), 0o755).unwrap();
    mkdir(&m.path("y"), 0o755).unwrap();
    fs::write(m.path("x/f"), b"moving").unwrap();
    let ino = lstat(&m.path("x/f")).ino();
    rename(&m.path("x/f"), &m.path("y/g")).unwrap();
    assert_eq!(fs::read(m.path("y/g")).unwrap(), b"moving");
    assert_eq!(lstat(&m.path("y/g")).ino(), ino);
    assert!(names(&m.path("x")).is_empty());
}

#[test]
fn renameat2_noreplace_onto_existing_name_is_eexist() {
    let m = Mount::new();
    fs::write(m.path("a"), b"a").unwrap();
    fs::write(m.path("b"), b"b").unwrap();
    assert_errno(
        renameat2(&m.path("a"), &m.path("b"), RENAME_NOREPLACE),
        libc::EEXIST,
        "NOREPLACE",
    );
    assert_eq!(fs::read(m.path("a")).unwrap(), b"a");
    assert_eq!(fs::read(m.path("b")).unwrap(), b"b");
}

#[test]
fn renameat2_noreplace_to_a_free_name_renames() {
    let m = Mount::new();
    fs::write(m.path("a"), b"a").unwrap();
    renameat2(&m.path("a"), &m.path("c"), RENAME_NOREPLACE).unwrap();
    assert_eq!(fs::read(m.path("c")).unwrap(), b"a");
    assert_errno(
        fs::symlink_metadata(m.path("a")),
        libc::ENOENT,
        "source gone",
    );
}

#[test]
fn renameat2_exchange_swaps_two_files() {
    let m = Mount::new();
    fs::write(m.path("a"), b"content of a").unwrap();
    mkdir(&m.path("d"), 0o755).unwrap();
    fs::write(m.path("d/b"), b"b!").unwrap();
    let (ia, ib) = (lstat(&m.path("a")).ino(), lstat(&m.path("d/b")).ino());
    renameat2(&m.path("a"), &m.path("d/b"), RENAME_EXCHANGE).unwrap();
    assert_eq!(fs::read(m.path("a")).unwrap(), b"b!");
    assert_eq!(fs::read(m.path("d/b")).unwrap(), b"content of a");
    assert_eq!(lstat(&m.path("a")).ino(), ib);
    assert_eq!(lstat(&m.path("d/b")).ino(), ia);
}

#[test]
fn renameat2_exchange_swaps_a_file_and_a_directory() {
    let m = Mount::new();
    fs::write(m.path("f"), b"file").unwrap();
    mkdir(&m.path("d"), 0o755).unwrap();
    fs::write(m.path("d/inner"), b"inner").unwrap();
    mkdir(&m.path("p"), 0o755).unwrap();
    let root_nlink = nlink(&m.dir);
    renameat2(&m.path("f"), &m.path("d"), RENAME_EXCHANGE).unwrap();
    assert!(lstat(&m.path("f")).is_dir());
    assert_eq!(fs::read(m.path("f/inner")).unwrap(), b"inner");
    assert_eq!(fs::read(m.path("d")).unwrap(), b"file");
    assert_eq!(nlink(&m.dir), root_nlink, "same number of subdirectories");
    // Exchange across parents moves the subdirectory count with the directory.
    fs::write(m.path("p/x"), b"x").unwrap();
    renameat2(&m.path("f"), &m.path("p/x"), RENAME_EXCHANGE).unwrap();
    assert!(lstat(&m.path("p/x")).is_dir());
    assert_eq!(fs::read(m.path("p/x/inner")).unwrap(), b"inner");
    assert_eq!(fs::read(m.path("f")).unwrap(), b"x");
    assert_eq!(nlink(&m.path("p")), 3, "p gained a subdirectory");
    assert_eq!(nlink(&m.dir), root_nlink - 1, "root lost one");
    assert_eq!(lstat(&m.path("p/x/..")).ino(), lstat(&m.path("p")).ino());
    // Exchange with a missing name fails and changes nothing.
    assert_errno(
        renameat2(&m.path("f"), &m.path("p/none"), RENAME_EXCHANGE),
        libc::ENOENT,
        "exchange with missing",
    );
    assert_eq!(fs::read(m.path("f")).unwrap(), b"x");
}

#[test]
fn rename_to_the_same_name_is_a_noop() {
    let m = Mount::new();
    let p = m.path("f");
    fs::write(&p, b"same").unwrap();
    let ino = lstat(&p).ino();
    rename(&p, &p).unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"same");
    assert_eq!(lstat(&p).ino(), ino);
    mkdir(&m.path("d"), 0o755).unwrap();
    rename(&m.path("d"), &m.path("d")).unwrap();
    assert!(lstat(&m.path("d")).is_dir());
    // Two hard links of one inode: rename does nothing, both names remain.
    link(&p, &m.path("g")).unwrap();
    rename(&p, &m.path("g")).unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"same");
    assert_eq!(fs::read(m.path("g")).unwrap(), b"same");
    assert_eq!(nlink(&p), 2);
}

#[test]
fn rename_of_missing_source_is_enoent() {
    let m = Mount::new();
    assert_errno(
        rename(&m.path("nope"), &m.path("x")),
        libc::ENOENT,
        "rename missing",
    );
    fs::write(m.path("f"), b"").unwrap();
    assert_errno(
        rename(&m.path("f"), &m.path("nodir/x")),
        libc::ENOENT,
        "rename into missing dir",
    );
}

#[test]
fn rename_symlink_keeps_its_target() {
    let m = Mount::new();
    symlink_bytes(b"some/where", &m.path("l")).unwrap();
    rename(&m.path("l"), &m.path("l2")).unwrap();
    assert_eq!(readlink_bytes(&m.path("l2")).unwrap(), b"some/where");
}
