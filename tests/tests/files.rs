//! File data: read/write, O_APPEND, holes, large writes, fsync, fallocate,
//! copy_file_range, unlink while open.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::time::Duration;
use truckeefs_tests::*;

const MIB: usize = 1 << 20;

#[test]
fn write_then_read_back_small_file() {
    let m = Mount::new();
    let p = m.path("f");
    fs::write(&p, b"hello, world\n").unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"hello, world\n");
    assert_eq!(fs::metadata(&p).unwrap().size(), 13);
    // Empty file.
    File::create(m.path("empty")).unwrap();
    assert_eq!(fs::read(m.path("empty")).unwrap(), b"");
}

#[test]
fn reads_at_and_past_eof_are_short_or_empty() {
    let m = Mount::new();
    let p = m.path("f");
    fs::write(&p, b"0123456789").unwrap();
    let f = File::open(&p).unwrap();
    let mut buf = [0u8; 100];
    assert_eq!(f.read_at(&mut buf, 6).unwrap(), 4, "short read at the tail");
    assert_eq!(&buf[..4], b"6789");
    assert_eq!(f.read_at(&mut buf, 10).unwrap(), 0, "read at EOF");
    assert_eq!(f.read_at(&mut buf, 1000).unwrap(), 0, "read past EOF");
}

#[test]
fn overwrite_in_the_middle_keeps_the_rest() {
    let m = Mount::new();
    let p = m.path("f");
    let mut data = pseudo_random_bytes(3, 300_000);
    fs::write(&p, &data).unwrap();
    let f = OpenOptions::new().write(true).open(&p).unwrap();
    let patch = vec![0xEEu8; 70_000];
    f.write_all_at(&patch, 100_001).unwrap();
    drop(f);
    data[100_001..170_001].copy_from_slice(&patch);
    assert_bytes_eq(&fs::read(&p).unwrap(), &data, "after overwrite");
    assert_eq!(fs::metadata(&p).unwrap().size(), 300_000);
}

#[test]
fn open_with_o_trunc_empties_the_file() {
    let m = Mount::new();
    let p = m.path("f");
    fs::write(&p, vec![1u8; 50_000]).unwrap();
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    assert_eq!(fs::metadata(&p).unwrap().size(), 0);
    f.write_all(b"abc").unwrap();
    drop(f);
    assert_eq!(fs::read(&p).unwrap(), b"abc");
}

#[test]
fn o_append_from_two_fds_writes_each_at_the_end() {
    let m = Mount::new();
    let p = m.path("log");
    fs::write(&p, b"start:").unwrap();
    let mut a = OpenOptions::new().append(true).open(&p).unwrap();
    let mut b = OpenOptions::new().append(true).open(&p).unwrap();
    a.write_all(&[b'A'; 100]).unwrap();
    b.write_all(&[b'B'; 50]).unwrap();
    a.write_all(&[b'C'; 10]).unwrap();
    b.write_all(&[b'D'; 5]).unwrap();
    // pwrite-style positioning is ignored for O_APPEND on Linux.
    a.seek(SeekFrom::Start(0)).unwrap();
    a.write_all(b"E").unwrap();
    drop((a, b));
    let mut want = b"start:".to_vec();
    want.extend([b'A'; 100]);
    want.extend([b'B'; 50]);
    want.extend([b'C'; 10]);
    want.extend([b'D'; 5]);
    want.push(b'E');
    assert_bytes_eq(&fs::read(&p).unwrap(), &want, "appended data");
}

#[test]
fn pwrite_past_eof_leaves_a_zero_filled_hole() {
    let m = Mount::new();
    let p = m.path("sparse");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    f.write_all_at(b"head", 0).unwrap();
    let far = 3 * MIB as u64 + 12345;
    f.write_all_at(b"tail", far).unwrap();
    assert_eq!(fstat(&f).unwrap().st_size as u64, far + 4);
    drop(f);
    let got = fs::read(&p).unwrap();
    assert_eq!(got.len() as u64, far + 4);
    assert_eq!(&got[..4], b"head");
    assert_eq!(&got[far as usize..], b"tail");
    assert!(
        got[4..far as usize].iter().all(|&b| b == 0),
        "hole must read as zeros"
    );
}

#[test]
fn large_write_of_8_mib_in_1_mib_chunks_reads_back_identical() {
    let m = Mount::new();
    let p = m.path("big");
    let data = pseudo_random_bytes(8, 8 * MIB);
    let mut f = File::create(&p).unwrap();
    for chunk in data.chunks(MIB) {
        f.write_all(chunk).unwrap();
    }
    drop(f);
    assert_eq!(fs::metadata(&p).unwrap().size(), 8 * MIB as u64);
    let mut got = Vec::new();
    let mut f = File::open(&p).unwrap();
    let mut buf = vec![0u8; MIB];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert_bytes_eq(&got, &data, "8 MiB file");
    // Unaligned random-access reads agree too.
    for (off, len) in [
        (1usize, 10usize),
        (MIB - 3, 7),
        (5 * MIB + 4095, 8193),
        (8 * MIB - 1, 1),
    ] {
        let mut b = vec![0u8; len];
        f.read_exact_at(&mut b, off as u64).unwrap();
        assert_eq!(b, &data[off..off + len], "read_at {off}+{len}");
    }
}

#[test]
fn fsync_and_fdatasync_succeed_and_data_is_readable() {
    let m = Mount::new();
    let p = m.path("f");
    let mut f = File::create(&p).unwrap();
    let data = pseudo_random_bytes(9, 200_000);
    f.write_all(&data).unwrap();
    fsync(&f).unwrap();
    f.write_all(b"more").unwrap();
    fdatasync(&f).unwrap();
    f.sync_all().unwrap();
    let mut want = data.clone();
    want.extend_from_slice(b"more");
    assert_bytes_eq(&fs::read(&p).unwrap(), &want, "after fsync");
    drop(f);
    // fsync on a read-only fd and on a directory also succeed.
    fsync(&File::open(&p).unwrap()).unwrap();
    fsync(&File::open(&m.dir).unwrap()).unwrap();
}

#[test]
fn fallocate_mode_0_extends_size_with_zeros() {
    let m = Mount::new();
    let p = m.path("f");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    f.write_all_at(b"abc", 0).unwrap();
    fallocate(&f, 0, 0, 1 << 20).unwrap();
    assert_eq!(fstat(&f).unwrap().st_size, 1 << 20, "size after fallocate");
    assert_eq!(fs::metadata(&p).unwrap().size(), 1 << 20);
    let got = fs::read(&p).unwrap();
    assert_eq!(&got[..3], b"abc", "existing data kept");
    assert!(
        got[3..].iter().all(|&b| b == 0),
        "allocated range reads as zeros"
    );
    // A range entirely inside the file does not change the size.
    fallocate(&f, 0, 4096, 4096).unwrap();
    assert_eq!(fstat(&f).unwrap().st_size, 1 << 20);
    // Extending from an offset past EOF.
    fallocate(&f, 0, 2 << 20, 100).unwrap();
    assert_eq!(fstat(&f).unwrap().st_size, (2 << 20) + 100);
}

#[test]
fn copy_file_range_copies_the_right_bytes() {
    let m = Mount::new();
    let src_p = m.path("src");
    let dst_p = m.path("dst");
    let data = pseudo_random_bytes(11, MIB);
    fs::write(&src_p, &data).unwrap();
    let src = File::open(&src_p).unwrap();
    let dst = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&dst_p)
        .unwrap();
    let (src_off, dst_off, len) = (1000u64, 5000u64, 300_000usize);
    let mut copied = 0;
    while copied < len {
        let n = copy_file_range(
            &src,
            src_off + copied as u64,
            &dst,
            dst_off + copied as u64,
            len - copied,
        )
        .unwrap();
        assert!(
            n > 0,
            "copy_file_range returned 0 before the end of the source"
        );
        copied += n;
    }
    drop(dst);
    let got = fs::read(&dst_p).unwrap();
    assert_eq!(got.len(), dst_off as usize + len);
    assert!(
        got[..dst_off as usize].iter().all(|&b| b == 0),
        "gap before dst_off is zeros"
    );
    assert_bytes_eq(
        &got[dst_off as usize..],
        &data[src_off as usize..src_off as usize + len],
        "copied range",
    );
    assert_bytes_eq(&fs::read(&src_p).unwrap(), &data, "source unchanged");
    // Copying past the source's EOF copies nothing.
    let dst = OpenOptions::new().write(true).open(&dst_p).unwrap();
    assert_eq!(copy_file_range(&src, MIB as u64, &dst, 0, 100).unwrap(), 0);
}

/// A whole-file copy of a file already in the store shares its object instead of copying the
/// bytes (locally a second name of the object file; on Tahoe the same cap), and the two files
/// stay independent afterwards.
#[test]
fn whole_file_copy_shares_the_object() {
    let m = Mount::new();
    let (src_p, dst_p) = (m.path("src"), m.path("dst"));
    let data = pseudo_random_bytes(21, 3 * MIB);
    let f = File::create(&src_p).unwrap();
    (&f).write_all(&data).unwrap();
    f.sync_all().unwrap(); // in the store now
    drop(f);
    let src = File::open(&src_p).unwrap();
    let dst = OpenOptions::new().write(true).create(true).truncate(true).open(&dst_p).unwrap();
    assert_eq!(copy_file_range(&src, 0, &dst, 0, data.len()).unwrap(), data.len(), "one call copies it all");
    drop(dst);
    assert_bytes_eq(&fs::read(&dst_p).unwrap(), &data, "the copy");
    if !production_backends() {
        // Embedded store: one object file with two names, no second copy of the bytes.
        let shared = truckeefs_tests::files_under(&m.data_dir.join("objects"))
            .into_iter()
            .filter(|p| fs::metadata(p).map(|md| std::os::unix::fs::MetadataExt::nlink(&md) == 2).unwrap_or(false))
            .count();
        assert_eq!(shared, 2, "expected the object file under two names");
    }
    // Independent afterwards.
    fs::write(&dst_p, b"changed").unwrap();
    assert_bytes_eq(&fs::read(&src_p).unwrap(), &data, "source after the copy changed");
    fs::remove_file(&src_p).unwrap();
    assert_eq!(fs::read(&dst_p).unwrap(), b"changed");
}

#[test]
fn unlink_while_open_keeps_data_until_close_then_frees_it() {
    let m = Mount::new();
    let p = m.path("f");
    let usage = || disk_usage(&m.data_dir) + disk_usage(&m.cache_dir);
    let baseline = usage();
    let data = pseudo_random_bytes(12, 4 * MIB);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    f.write_all(&data).unwrap();
    fsync(&f).unwrap();
    fs::write(m.path("other"), b"other").unwrap();

    unlink(&p).unwrap();
    assert_errno(
        fs::symlink_metadata(&p),
        libc::ENOENT,
        "name gone after unlink",
    );
    assert_eq!(
        names(&m.dir),
        vec!["other".to_string()],
        "unlinked file not listed"
    );
    let st = fstat(&f).unwrap();
    assert_eq!(
        st.st_nlink, 0,
        "fstat of an unlinked open file shows nlink 0"
    );
    assert_eq!(st.st_size as usize, data.len());

    // Still readable and writable through the fd.
    let mut got = Vec::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_end(&mut got).unwrap();
    assert_bytes_eq(&got, &data, "read after unlink");
    f.write_all(b"appended after unlink").unwrap();
    f.write_all_at(b"PATCH", 10).unwrap();
    let mut b = [0u8; 5];
    f.read_exact_at(&mut b, 10).unwrap();
    assert_eq!(&b, b"PATCH");
    let mut tail = vec![0u8; 21];
    f.read_exact_at(&mut tail, data.len() as u64).unwrap();
    assert_eq!(&tail, b"appended after unlink");
    assert_eq!(fstat(&f).unwrap().st_size as usize, data.len() + 21);
    drop(f);

    assert_errno(
        fs::symlink_metadata(&p),
        libc::ENOENT,
        "still gone after close",
    );
    assert_eq!(names(&m.dir), vec!["other".to_string()]);
    let freed = poll_until(Duration::from_secs(15), || usage() <= baseline + MIB as u64);
    assert!(
        freed,
        "space of the unlinked 4 MiB file not freed after close: data+cache dirs use {} bytes, {} before the file was written",
        usage(),
        baseline
    );
}

#[test]
fn opening_a_directory_for_writing_is_eisdir() {
    let m = Mount::new();
    mkdir(&m.path("d"), 0o755).unwrap();
    assert_errno(
        OpenOptions::new().write(true).open(m.path("d")),
        libc::EISDIR,
        "open dir O_WRONLY",
    );
}

#[test]
fn many_small_files_keep_their_own_contents() {
    let m = Mount::new();
    for i in 0..200u64 {
        fs::write(
            m.path(format!("f{i}")),
            pseudo_random_bytes(i, (i as usize * 37) % 5000),
        )
        .unwrap();
    }
    for i in 0..200u64 {
        let got = fs::read(m.path(format!("f{i}"))).unwrap();
        assert_eq!(
            got,
            pseudo_random_bytes(i, (i as usize * 37) % 5000),
            "file f{i}"
        );
    }
}

#[test]
fn writes_through_one_fd_are_visible_through_another() {
    let m = Mount::new();
    let p = m.path("f");
    let w = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    let r = File::open(&p).unwrap();
    w.write_all_at(b"first", 0).unwrap();
    let mut b = [0u8; 5];
    r.read_exact_at(&mut b, 0).unwrap();
    assert_eq!(&b, b"first");
    w.write_all_at(b"SECOND", 0).unwrap();
    let mut b = [0u8; 6];
    r.read_exact_at(&mut b, 0).unwrap();
    assert_eq!(&b, b"SECOND");
}
