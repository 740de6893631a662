//! Functionality: the operations of the Python release's tests (create, write, read, delete,
//! directories, move, copy, negative cases), through the mount, in a private hidden directory
//! of its root that is removed at the end, whatever happened.

use super::{Report, Suite};
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::Path;

const S: Suite = Suite::Functionality;
/// Bytes written and read back: more than one page, not a multiple of one.
const DATA_LEN: usize = 70_000;

/// Runs the tests under `root`, the mount's root directory. With `fresh_only`, only when the
/// root is empty (a new filesystem); otherwise they are skipped, with a line saying why.
pub fn run(root: &Path, fresh_only: bool, r: &mut Report) {
    let empty = match fs::read_dir(root) {
        Err(e) => return r.failed(S, format!("list the root {}: {e}", root.display())),
        Ok(mut entries) => entries.next().is_none(),
    };
    if fresh_only && !empty {
        return r.skip(S, "not run: the filesystem is not empty (they run at mount only on a fresh one; 'truckeefs check' runs them on any)");
    }
    if read_only(root) {
        return r.skip(S, "not run: the mount is read-only");
    }
    let dir = root.join(super::scratch_name());
    let shown = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let made = make_dir(&dir)
        .map(|()| format!("mkdir of a private directory {shown} (mode 0700)"))
        .map_err(|e| format!("mkdir of a private directory {shown}: {e}"));
    if !r.check(S, made) {
        return;
    }
    let _ = steps(&dir, r);
    // Whatever failed above: leave nothing behind.
    let removed = match fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(format!("cannot remove {shown}: {e}; remove it by hand")),
        _ => match fs::symlink_metadata(&dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok("nothing left behind: the private directory is gone".into()),
            Err(e) => Err(format!("stat of the removed {shown}: {e}")),
            Ok(_) => Err(format!("{shown} is still there after its removal")),
        },
    };
    r.check(S, removed);
}

fn make_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new().mode(0o700).create(dir)
}

fn read_only(root: &Path) -> bool {
    let Ok(path) = std::ffi::CString::new(root.as_os_str().as_encoded_bytes()) else { return false };
    // SAFETY: statvfs is plain data; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
    rc == 0 && st.f_flag & libc::ST_RDONLY != 0
}

/// Bytes of this run only: identical contents would converge on one Tahoe object, and two
/// hosts testing at once would then upload the same object concurrently.
fn data() -> Vec<u8> {
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
        ^ ((std::process::id() as u64) << 32);
    let mut x = seed | 1;
    (0..DATA_LEN)
        .map(|_| {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// One check: `Err(())` stops the sequence (later checks build on earlier ones).
fn step(r: &mut Report, what: &str, f: impl FnOnce() -> Result<(), String>) -> Result<(), ()> {
    let result = f().map(|()| what.to_string()).map_err(|e| format!("{what}: {e}"));
    if r.check(S, result) {
        Ok(())
    } else {
        Err(())
    }
}

fn io_err(op: &str, path: &Path, e: io::Error) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    format!("{op} {name}: {e}")
}

fn read_all(path: &Path) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    fs::File::open(path).and_then(|mut f| f.read_to_end(&mut buf)).map_err(|e| io_err("read", path, e))?;
    Ok(buf)
}

fn same(got: &[u8], want: &[u8], path: &Path) -> Result<(), String> {
    if got == want {
        return Ok(());
    }
    let at = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
    Err(format!("{}: {} bytes read, {} expected, first difference at byte {at}", path.display(), got.len(), want.len()))
}

/// `result` must fail with `errno`.
fn expect_errno<T>(result: io::Result<T>, errno: i32, name: &str) -> Result<(), String> {
    match result {
        Ok(_) => Err(format!("succeeded; expected {name}")),
        Err(e) if e.raw_os_error() == Some(errno) => Ok(()),
        Err(e) => Err(format!("failed with {e}; expected {name}")),
    }
}

fn steps(dir: &Path, r: &mut Report) -> Result<(), ()> {
    let want = data();
    let file = dir.join("file");
    let sub = dir.join("sub");
    let moved = sub.join("moved");
    let copy = dir.join("copy");

    step(r, &format!("create, write ({DATA_LEN} bytes) and fsync a file: the data reached the store"), || {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&file)
            .map_err(|e| io_err("create", &file, e))?;
        f.write_all(&want).map_err(|e| io_err("write", &file, e))?;
        f.sync_all().map_err(|e| io_err("fsync", &file, e))
    })?;
    step(r, "read it back: the same bytes", || same(&read_all(&file)?, &want, &file))?;
    step(r, "stat: a regular file of the size written", || {
        let m = fs::metadata(&file).map_err(|e| io_err("stat", &file, e))?;
        match (m.is_file(), m.len()) {
            (true, len) if len == DATA_LEN as u64 => Ok(()),
            (is_file, len) => Err(format!("regular file: {is_file}, size {len}")),
        }
    })?;
    step(r, "mkdir of a subdirectory", || make_dir(&sub).map_err(|e| io_err("mkdir", &sub, e)))?;
    step(r, "readdir: the file and the subdirectory, nothing else", || {
        let mut names: Vec<String> = fs::read_dir(dir)
            .and_then(|it| it.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned())).collect())
            .map_err(|e| io_err("readdir", dir, e))?;
        names.sort();
        if names == ["file", "sub"] {
            Ok(())
        } else {
            Err(format!("found {names:?}"))
        }
    })?;
    step(r, "rename (move) the file into the subdirectory: the old name is gone, the new one has the bytes", || {
        fs::rename(&file, &moved).map_err(|e| io_err("rename", &file, e))?;
        expect_errno(fs::metadata(&file), libc::ENOENT, "ENOENT for the old name")?;
        same(&read_all(&moved)?, &want, &moved)
    })?;
    step(r, "copy the file: the copy has the same bytes", || {
        let mut src = fs::File::open(&moved).map_err(|e| io_err("open", &moved, e))?;
        let mut dst = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&copy)
            .map_err(|e| io_err("create", &copy, e))?;
        // copy_file_range where the kernel offers it.
        io::copy(&mut src, &mut dst).map_err(|e| io_err("copy to", &copy, e))?;
        let mut got = Vec::new();
        dst.seek(SeekFrom::Start(0)).and_then(|_| dst.read_to_end(&mut got)).map_err(|e| io_err("read", &copy, e))?;
        same(&got, &want, &copy)?;
        // Changed before it is closed (and so before it is uploaded): a copy stored as it is
        // shares the original's immutable Tahoe object, and in FLAT a deleted object linked under
        // two names is left linked (runtime-smol's tahoe::execute_store), which would leave the
        // test's objects behind in the grid.
        dst.write_all_at(b"!", 0).map_err(|e| io_err("write", &copy, e))?;
        dst.sync_all().map_err(|e| io_err("fsync", &copy, e))
    })?;
    step(r, "ENOENT: open of a name that does not exist", || {
        expect_errno(fs::File::open(dir.join("missing")), libc::ENOENT, "ENOENT")
    })?;
    step(r, "EEXIST: mkdir of a name that exists, exclusive create of a file that exists", || {
        expect_errno(make_dir(&sub), libc::EEXIST, "EEXIST")?;
        expect_errno(fs::OpenOptions::new().write(true).create_new(true).open(&copy), libc::EEXIST, "EEXIST")
    })?;
    step(r, "ENOTEMPTY: rmdir of a directory that is not empty", || {
        expect_errno(fs::remove_dir(&sub), libc::ENOTEMPTY, "ENOTEMPTY")
    })?;
    step(r, "EISDIR: a directory opened for writing", || {
        expect_errno(fs::OpenOptions::new().write(true).open(&sub), libc::EISDIR, "EISDIR")
    })?;
    step(r, "ENOTDIR: a file used as a directory", || {
        expect_errno(fs::metadata(copy.join("x")), libc::ENOTDIR, "ENOTDIR")
    })?;
    step(r, "delete: unlink of the files, rmdir of the subdirectory", || {
        fs::remove_file(&moved).map_err(|e| io_err("unlink", &moved, e))?;
        fs::remove_file(&copy).map_err(|e| io_err("unlink", &copy, e))?;
        fs::remove_dir(&sub).map_err(|e| io_err("rmdir", &sub, e))?;
        expect_errno(fs::metadata(&copy), libc::ENOENT, "ENOENT after unlink")?;
        let left = fs::read_dir(dir).map_err(|e| io_err("readdir", dir, e))?.count();
        if left == 0 {
            Ok(())
        } else {
            Err(format!("{left} entries left"))
        }
    })?;
    Ok(())
}
