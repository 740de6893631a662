//! fcntl POSIX record locks and flock between two processes. The second
//! process is the `truckeefs-test-helper` binary.

use std::fs::{self, File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use truckeefs_tests::*;

fn rw(p: &Path) -> File {
    OpenOptions::new().read(true).write(true).open(p).unwrap()
}

fn lockfile(m: &Mount) -> std::path::PathBuf {
    let p = m.path("lockfile");
    fs::write(&p, vec![0u8; 4096]).unwrap();
    p
}

#[test]
fn posix_write_lock_conflict_is_eagain_and_getlk_reports_the_holder_pid() {
    let m = Mount::new();
    let p = lockfile(&m);
    let holder = as_root().hold(&["hold-lock", ps(&p), "0", "100", "w"]);
    assert_eq!(holder.reply.errno, 0, "holder could not take F_WRLCK");

    let f = rw(&p);
    assert_errno(
        setlk(f.as_raw_fd(), libc::F_WRLCK, 50, 10),
        libc::EAGAIN,
        "F_WRLCK inside held range",
    );
    assert_errno(
        setlk(f.as_raw_fd(), libc::F_RDLCK, 99, 1),
        libc::EAGAIN,
        "F_RDLCK on last held byte",
    );
    assert_errno(
        setlk(f.as_raw_fd(), libc::F_WRLCK, 0, 0),
        libc::EAGAIN,
        "whole-file lock overlaps",
    );

    let fl = getlk(f.as_raw_fd(), libc::F_WRLCK, 10, 5).unwrap();
    assert_eq!(
        fl.l_type as i32,
        libc::F_WRLCK,
        "F_GETLK reports a write lock"
    );
    assert_eq!(
        fl.l_pid as u32,
        holder.pid(),
        "F_GETLK reports the holder's pid"
    );
    assert_eq!(
        (fl.l_start, fl.l_len),
        (0, 100),
        "F_GETLK reports the held range"
    );
    holder.release();
}

#[test]
fn posix_locks_on_non_overlapping_ranges_both_succeed() {
    let m = Mount::new();
    let p = lockfile(&m);
    let holder = as_root().hold(&["hold-lock", ps(&p), "0", "100", "w"]);
    assert_eq!(holder.reply.errno, 0);
    let f = rw(&p);
    setlk(f.as_raw_fd(), libc::F_WRLCK, 100, 100)
        .expect("adjacent range [100,200) must be lockable");
    let fl = getlk(f.as_raw_fd(), libc::F_WRLCK, 200, 1000).unwrap();
    assert_eq!(
        fl.l_type as i32,
        libc::F_UNLCK,
        "no conflict beyond both ranges"
    );

    // And the other direction: the helper sees our lock.
    let r = as_root().run(&["try-lock", ps(&p), "150", "10", "r"]);
    assert_eq!(r.errno, libc::EAGAIN, "helper F_SETLK on our range");
    let r = as_root().run(&["getlk", ps(&p), "150", "10", "w"]);
    assert_eq!(r.errno, 0);
    assert_eq!(r.fields[0], "wrlck");
    assert_eq!(
        r.fields[1],
        std::process::id().to_string(),
        "helper's F_GETLK reports our pid"
    );
    let r = as_root().run(&["try-lock", ps(&p), "200", "10", "w"]);
    assert_eq!(r.errno, 0, "helper lock past both ranges");
    holder.release();
}

#[test]
fn posix_lock_is_released_when_the_holder_closes() {
    let m = Mount::new();
    let p = lockfile(&m);
    let holder = as_root().hold(&["hold-lock", ps(&p), "0", "0", "w"]);
    assert_eq!(holder.reply.errno, 0);
    let f = rw(&p);
    assert_errno(
        setlk(f.as_raw_fd(), libc::F_WRLCK, 0, 1),
        libc::EAGAIN,
        "while held",
    );
    holder.release();
    setlk(f.as_raw_fd(), libc::F_WRLCK, 0, 0)
        .expect("lock must be free after the holder closed its fd");
    let r = as_root().run(&["try-lock", ps(&p), "0", "1", "w"]);
    assert_eq!(r.errno, libc::EAGAIN, "now we hold it");
}

#[test]
fn posix_read_locks_are_shared_but_exclude_write_locks() {
    let m = Mount::new();
    let p = lockfile(&m);
    let holder = as_root().hold(&["hold-lock", ps(&p), "0", "0", "r"]);
    assert_eq!(holder.reply.errno, 0);
    let f = rw(&p);
    setlk(f.as_raw_fd(), libc::F_RDLCK, 0, 4096).expect("second read lock");
    // Upgrading our read lock to a write lock conflicts with the holder's read lock.
    assert_errno(
        setlk(f.as_raw_fd(), libc::F_WRLCK, 0, 10),
        libc::EAGAIN,
        "write lock vs other's read lock",
    );
    let fl = getlk(f.as_raw_fd(), libc::F_WRLCK, 0, 10).unwrap();
    assert_eq!(fl.l_type as i32, libc::F_RDLCK);
    assert_eq!(fl.l_pid as u32, holder.pid());
    holder.release();
    setlk(f.as_raw_fd(), libc::F_WRLCK, 0, 10).expect("upgrade after holder left");
}

#[test]
fn posix_unlock_of_a_subrange_frees_only_that_subrange() {
    let m = Mount::new();
    let p = lockfile(&m);
    let f = rw(&p);
    setlk(f.as_raw_fd(), libc::F_WRLCK, 0, 300).unwrap();
    setlk(f.as_raw_fd(), libc::F_UNLCK, 100, 100).unwrap();
    assert_eq!(
        as_root().errno(&["try-lock", ps(&p), "120", "10", "w"]),
        0,
        "unlocked middle"
    );
    assert_eq!(
        as_root().errno(&["try-lock", ps(&p), "50", "10", "w"]),
        libc::EAGAIN,
        "still-locked head"
    );
    assert_eq!(
        as_root().errno(&["try-lock", ps(&p), "250", "10", "w"]),
        libc::EAGAIN,
        "still-locked tail"
    );
}

#[test]
fn flock_exclusive_conflict_is_ewouldblock() {
    let m = Mount::new();
    let p = lockfile(&m);
    let holder = as_root().hold(&["hold-flock", ps(&p), "ex"]);
    assert_eq!(holder.reply.errno, 0, "holder LOCK_EX");
    let f = rw(&p);
    assert_errno(
        flock(&f, libc::LOCK_EX | libc::LOCK_NB),
        libc::EWOULDBLOCK,
        "LOCK_EX|LOCK_NB vs LOCK_EX",
    );
    assert_errno(
        flock(&f, libc::LOCK_SH | libc::LOCK_NB),
        libc::EWOULDBLOCK,
        "LOCK_SH|LOCK_NB vs LOCK_EX",
    );
    holder.release();
    flock(&f, libc::LOCK_EX | libc::LOCK_NB).expect("free after the holder closed");
    assert_eq!(
        as_root().errno(&["try-flock", ps(&p), "sh"]),
        libc::EWOULDBLOCK,
        "helper vs our LOCK_EX"
    );
    flock(&f, libc::LOCK_UN).unwrap();
    assert_eq!(
        as_root().errno(&["try-flock", ps(&p), "ex"]),
        0,
        "after LOCK_UN"
    );
}

#[test]
fn flock_shared_locks_coexist() {
    let m = Mount::new();
    let p = lockfile(&m);
    let holder = as_root().hold(&["hold-flock", ps(&p), "sh"]);
    assert_eq!(holder.reply.errno, 0);
    let f = rw(&p);
    flock(&f, libc::LOCK_SH | libc::LOCK_NB).expect("two shared flocks");
    assert_errno(
        flock(&f, libc::LOCK_EX | libc::LOCK_NB),
        libc::EWOULDBLOCK,
        "upgrade blocked by other LOCK_SH",
    );
    holder.release();
    flock(&f, libc::LOCK_EX | libc::LOCK_NB).expect("upgrade after release");
}
