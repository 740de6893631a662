//! The local object store, used when no Tahoe gateway is configured: immutable files in one
//! directory, fanned out by the first two hex characters of their name (`dir/ab/abcdef...`).
//!
//! Also [`execute_store`], which executes the core's [`StoreRequest`]s against it.

use crate::staging::Staging;
use bytes::Bytes;
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use truckeefs_core::{IoError, IoErrorKind, IoReply, IoResult, ObjectId, Space, StoreRequest};

/// Temporary files of unfinished puts start with this; they never look like an object.
const TMP_PREFIX: &str = ".tmp-";
/// A temporary file untouched this long belongs to a put that died with its process.
const STALE_TMP_AGE: Duration = Duration::from_secs(3600);

/// The object directory.
pub struct ObjectDir {
    dir: PathBuf,
}

/// With the process id, makes temporary names unique among all puts of all processes.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl ObjectDir {
    /// Opens the object directory, creating it if needed, and removes temporary files left by
    /// puts that were interrupted long ago.
    pub fn open(dir: &Path) -> io::Result<ObjectDir> {
        fs::create_dir_all(dir).map_err(|e| annotate(e, dir))?;
        let objects = ObjectDir { dir: dir.to_path_buf() };
        objects.remove_stale_tmp_files();
        Ok(objects)
    }

    /// The directory this store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores a copy of the file at `src` as a new object. The object is durable on return.
    pub fn put_file(&self, src: &Path) -> Result<ObjectId, IoError> {
        let mut input = File::open(src).map_err(|e| io_error(&e, &format!("{}", src.display())))?;
        let id = new_id().map_err(|e| io_error(&e, "/dev/urandom"))?;
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.join(format!("{TMP_PREFIX}{}-{n}", std::process::id()));
        let result = self.put_via(&mut input, &tmp, &id);
        if result.is_err() {
            let _ = fs::remove_file(&tmp); // best effort; a leftover is removed at the next open
        }
        result.map(|()| id)
    }

    fn put_via(&self, input: &mut File, tmp: &Path, id: &ObjectId) -> Result<(), IoError> {
        let shown_tmp = tmp.display().to_string();
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(tmp)
            .map_err(|e| io_error(&e, &shown_tmp))?;
        // Between two Files std uses copy_file_range (or sendfile) on Linux: no user-space buffer,
        // and never the whole file in memory.
        io::copy(input, &mut out).map_err(|e| io_error(&e, &shown_tmp))?;
        out.sync_all().map_err(|e| io_error(&e, &shown_tmp))?;
        drop(out);

        let prefix_dir = self.dir.join(&id.0[..2]);
        let created = match fs::create_dir(&prefix_dir) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(io_error(&e, &prefix_dir.display().to_string())),
        };
        let dest = prefix_dir.join(&id.0);
        fs::rename(tmp, &dest).map_err(|e| self.object_error(&e, id))?;
        // The rename is durable once the directory holding the new name is synced; a new prefix
        // directory also needs its own entry in the object directory synced.
        sync_dir(&prefix_dir).map_err(|e| io_error(&e, &prefix_dir.display().to_string()))?;
        if created {
            sync_dir(&self.dir).map_err(|e| io_error(&e, &self.dir.display().to_string()))?;
        }
        Ok(())
    }

    /// A new object with the bytes of `id`, as a second name of the same file (objects never
    /// change once written): no byte is copied. Durable on return.
    pub fn share(&self, id: &ObjectId) -> Result<ObjectId, IoError> {
        let src = self.path_of(id)?;
        let new = new_id().map_err(|e| io_error(&e, "/dev/urandom"))?;
        let prefix_dir = self.dir.join(&new.0[..2]);
        let created = match fs::create_dir(&prefix_dir) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(io_error(&e, &prefix_dir.display().to_string())),
        };
        match fs::hard_link(&src, prefix_dir.join(&new.0)) {
            Ok(()) => {}
            // Too many names for one file: a copy does it too.
            Err(e) if e.raw_os_error() == Some(libc::EMLINK) => return self.put_file(&src),
            Err(e) => return Err(self.object_error(&e, id)),
        }
        sync_dir(&prefix_dir).map_err(|e| io_error(&e, &prefix_dir.display().to_string()))?;
        if created {
            sync_dir(&self.dir).map_err(|e| io_error(&e, &self.dir.display().to_string()))?;
        }
        Ok(new)
    }

    /// Reads up to `len` bytes at `offset`; shorter only at the end of the object.
    pub fn read(&self, id: &ObjectId, offset: u64, len: u32) -> IoResult {
        let path = self.path_of(id)?;
        let file = File::open(&path).map_err(|e| self.object_error(&e, id))?;
        let data = read_full_at(&file, offset, len).map_err(|e| self.object_error(&e, id))?;
        Ok(IoReply::Data(data))
    }

    /// The file holding `id`. Refuses any id that is not a plain lowercase hex name, so a bad id
    /// from the metadata store can never name a file outside the directory.
    pub fn path_of(&self, id: &ObjectId) -> Result<PathBuf, IoError> {
        let name = id.0.as_str();
        if !is_object_name(name) {
            return Err(IoError::new(
                IoErrorKind::Corrupt,
                format!(
                    "object {} is not a valid name for the object directory {}",
                    id.fingerprint(),
                    self.dir.display()
                ),
            ));
        }
        Ok(self.dir.join(&name[..2]).join(name))
    }

    /// Deletes an object; deleting a missing object is not an error.
    pub fn delete(&self, id: &ObjectId) -> Result<(), IoError> {
        let path = self.path_of(id)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.object_error(&e, id)),
        }
    }

    /// Deletes every object whose name is not in `keep`: for the embedded stores, which belong
    /// to one mount alone, at its start, when no put is under way. (A crash between an upload's
    /// put and its commit leaves an object no row names: the staged copy is uploaded again.)
    /// Returns how many objects went and their bytes. A file or directory that is not an
    /// object's is left alone, and so is an object that cannot be removed (with a warning).
    pub fn remove_unreferenced(&self, keep: &HashSet<String>) -> (u64, u64) {
        let (mut count, mut bytes) = (0, 0);
        let Ok(prefixes) = fs::read_dir(&self.dir) else { return (0, 0) };
        for prefix in prefixes.flatten() {
            let prefix_name = prefix.file_name();
            let Some(prefix_name) = prefix_name.to_str().filter(|n| n.len() == 2) else { continue };
            let Ok(entries) = fs::read_dir(prefix.path()) else { continue };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if !is_object_name(name) || !name.starts_with(prefix_name) || keep.contains(name) {
                    continue;
                }
                let Ok(meta) = entry.metadata() else { continue };
                if !meta.is_file() {
                    continue;
                }
                match fs::remove_file(entry.path()) {
                    Ok(()) => {
                        count += 1;
                        bytes += meta.len();
                    }
                    Err(e) => tracing::warn!("cannot remove an object no file refers to, {}: {e}", entry.path().display()),
                }
            }
        }
        (count, bytes)
    }

    /// Free and total space of the filesystem holding the directory.
    pub fn space(&self) -> IoResult {
        statvfs_space(&self.dir).map(IoReply::Space).map_err(|e| io_error(&e, &self.dir.display().to_string()))
    }

    /// An error about an object, naming it by fingerprint (the id may be a secret).
    fn object_error(&self, e: &io::Error, id: &ObjectId) -> IoError {
        io_error(e, &format!("object {} in {}", id.fingerprint(), self.dir.display()))
    }

    fn remove_stale_tmp_files(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else { return };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            if !entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                continue;
            }
            // Only old ones: a put of another process sharing the directory may be under way,
            // and a running copy keeps its mtime fresh.
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age > STALE_TMP_AGE);
            if old {
                if let Err(e) = fs::remove_file(entry.path()) {
                    tracing::warn!("cannot remove stale temporary file {}: {e}", entry.path().display());
                }
            }
        }
    }
}

/// Executes a [`StoreRequest`] against the local object directory.
pub fn execute_store(objects: &ObjectDir, staging: &Staging, req: &StoreRequest) -> IoResult {
    match req {
        StoreRequest::PutStaged { ino } => objects.put_file(&staging.data_path(*ino)).map(IoReply::Object),
        StoreRequest::Read { object, offset, len } => objects.read(object, *offset, *len),
        StoreRequest::Share { object, .. } => objects.share(object).map(IoReply::Object),
        StoreRequest::Delete { object, .. } => objects.delete(object).map(|()| IoReply::Done),
        StoreRequest::Space => objects.space(),
    }
}

/// A name the object directory may hold: plain lowercase hex, long enough for its prefix
/// directory.
fn is_object_name(name: &str) -> bool {
    (3..=128).contains(&name.len()) && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A fresh object name: 128 random bits as 32 hex characters, unique across restarts and hosts.
fn new_id() -> io::Result<ObjectId> {
    random_hex(16).map(ObjectId)
}

/// `bytes` random bytes from `/dev/urandom`, as twice as many hex characters.
pub(crate) fn random_hex(bytes: usize) -> io::Result<String> {
    let mut buf = vec![0u8; bytes];
    File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Reads `len` bytes at `offset`, or fewer at end of file.
pub(crate) fn read_full_at(file: &File, offset: u64, len: u32) -> io::Result<Bytes> {
    let mut buf = vec![0u8; len as usize];
    let mut done = 0;
    while done < buf.len() {
        // No file reaches past i64::MAX (off_t), and pread refuses such offsets with EINVAL.
        let Some(at) = offset.checked_add(done as u64).filter(|at| *at <= i64::MAX as u64) else { break };
        match file.read_at(&mut buf[done..], at) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    buf.truncate(done);
    Ok(Bytes::from(buf))
}

/// fsync a directory, making the creation, rename or removal of its entries durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Maps an OS error to an [`IoError`] whose message starts with `what` (a path, or an object by
/// fingerprint).
pub(crate) fn io_error(e: &io::Error, what: &str) -> IoError {
    let kind = match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => IoErrorKind::NoSpace,
        _ if e.kind() == io::ErrorKind::NotFound => IoErrorKind::NotFound,
        _ => IoErrorKind::Other,
    };
    IoError::new(kind, format!("{what}: {e}"))
}

/// Adds the path to an `io::Error` for callers that keep `io::Result`.
fn annotate(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Total, free and available bytes of the filesystem holding `dir`.
pub(crate) fn statvfs_space(dir: &Path) -> io::Result<Space> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: statvfs is plain old data, so all-zero is a valid value, and the call only writes
    // into it; c_path is a valid NUL-terminated string for the duration of the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let frsize = st.f_frsize as u64;
    Ok(Space {
        total_bytes: (st.f_blocks as u64).saturating_mul(frsize),
        free_bytes: (st.f_bfree as u64).saturating_mul(frsize),
        avail_bytes: (st.f_bavail as u64).saturating_mul(frsize),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn setup() -> (tempfile::TempDir, ObjectDir) {
        let tmp = tempfile::tempdir().unwrap();
        let objects = ObjectDir::open(&tmp.path().join("objects")).unwrap();
        (tmp, objects)
    }

    fn data(reply: IoResult) -> Vec<u8> {
        match reply.unwrap() {
            IoReply::Data(d) => d.to_vec(),
            other => panic!("unexpected reply {other:?}"),
        }
    }

    #[test]
    fn put_read_delete() {
        let (tmp, objects) = setup();
        let src = tmp.path().join("src");
        let contents: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        fs::write(&src, &contents).unwrap();
        let id = objects.put_file(&src).unwrap();
        assert_eq!(id.0.len(), 32);
        let path = objects.path_of(&id).unwrap();
        assert_eq!(path.parent().unwrap().file_name().unwrap().to_str().unwrap(), &id.0[..2]);
        assert_eq!(fs::read(&path).unwrap(), contents);
        // Changing the source later does not change the object.
        fs::write(&src, b"changed").unwrap();
        assert_eq!(data(objects.read(&id, 0, 10)), contents[..10]);
        assert_eq!(data(objects.read(&id, 299_990, 100)), contents[299_990..]);
        assert_eq!(data(objects.read(&id, 400_000, 100)), b"");
        assert_eq!(data(objects.read(&id, u64::MAX, 100)), b"");
        // No temp files remain.
        let leftovers: Vec<_> = fs::read_dir(objects.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with(TMP_PREFIX))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        objects.delete(&id).unwrap();
        objects.delete(&id).unwrap(); // missing is fine
        let err = objects.read(&id, 0, 1).unwrap_err();
        assert_eq!(err.kind, IoErrorKind::NotFound);
        assert!(err.message.contains(&id.fingerprint()) && err.message.contains("objects"), "{}", err.message);
        assert!(!err.message.contains(&id.0), "id leaked: {}", err.message);
    }

    #[test]
    fn ids_are_unique_and_empty_files_work() {
        let (tmp, objects) = setup();
        let src = tmp.path().join("empty");
        fs::write(&src, b"").unwrap();
        let ids: HashSet<ObjectId> = (0..50).map(|_| objects.put_file(&src).unwrap()).collect();
        assert_eq!(ids.len(), 50);
        for id in &ids {
            assert_eq!(data(objects.read(id, 0, 4096)), b"");
        }
    }

    #[test]
    fn put_of_missing_source_is_not_found() {
        let (tmp, objects) = setup();
        let err = objects.put_file(&tmp.path().join("nope")).unwrap_err();
        assert_eq!(err.kind, IoErrorKind::NotFound);
        assert!(err.message.contains("nope"), "{}", err.message);
    }

    #[test]
    fn bad_ids_are_refused() {
        let (_tmp, objects) = setup();
        for bad in ["", "ab", "../../etc/passwd", "ab/cd", "..", "ABCDEF", "abc def", "abc\0", "ab.cd", "/abc"] {
            let id = ObjectId(bad.to_string());
            let err = objects.path_of(&id).unwrap_err();
            assert_eq!(err.kind, IoErrorKind::Corrupt, "{bad:?}");
            assert_eq!(objects.read(&id, 0, 1).unwrap_err().kind, IoErrorKind::Corrupt);
            assert_eq!(objects.delete(&id).unwrap_err().kind, IoErrorKind::Corrupt);
            if bad.len() > 3 {
                assert!(!err.message.contains(bad), "id leaked: {}", err.message);
            }
        }
        assert!(objects.path_of(&ObjectId("abc".into())).is_ok());
    }

    #[test]
    fn space_is_reported() {
        let (_tmp, objects) = setup();
        match objects.space().unwrap() {
            IoReply::Space(s) => {
                assert!(s.total_bytes > 0);
                assert!(s.free_bytes <= s.total_bytes && s.avail_bytes <= s.free_bytes);
            }
            other => panic!("unexpected reply {other:?}"),
        }
    }

    #[test]
    fn objects_not_kept_are_removed_and_nothing_else() {
        let (tmp, objects) = setup();
        let src = tmp.path().join("src");
        fs::write(&src, b"0123456789").unwrap();
        let kept = objects.put_file(&src).unwrap();
        let shared = objects.share(&kept).unwrap();
        let gone = objects.put_file(&src).unwrap();
        // Not objects' names: a temporary file, a file and a directory of other names.
        let tmp_file = objects.dir().join(format!("{TMP_PREFIX}1-1"));
        let notes = objects.dir().join(&kept.0[..2]).join("notes.txt");
        let other_dir = objects.dir().join("xy");
        fs::write(&tmp_file, b"x").unwrap();
        fs::write(&notes, b"x").unwrap();
        fs::create_dir(&other_dir).unwrap();
        fs::write(other_dir.join("abcdef"), b"x").unwrap();
        let keep: HashSet<String> = [kept.0.clone(), shared.0.clone()].into();
        assert_eq!(objects.remove_unreferenced(&keep), (1, 10));
        assert_eq!(objects.read(&gone, 0, 1).unwrap_err().kind, IoErrorKind::NotFound);
        assert_eq!(data(objects.read(&kept, 0, 10)), b"0123456789");
        assert_eq!(data(objects.read(&shared, 0, 10)), b"0123456789");
        assert!(tmp_file.exists() && notes.exists() && other_dir.join("abcdef").exists());
        assert_eq!(objects.remove_unreferenced(&keep), (0, 0));
    }

    #[test]
    fn stale_temp_files_are_removed_on_open() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("objects");
        fs::create_dir(&dir).unwrap();
        let stale = dir.join(format!("{TMP_PREFIX}1-1"));
        let fresh = dir.join(format!("{TMP_PREFIX}1-2"));
        fs::write(&stale, b"x").unwrap();
        fs::write(&fresh, b"x").unwrap();
        let old = SystemTime::now() - Duration::from_secs(2 * 3600);
        File::options().write(true).open(&stale).unwrap().set_modified(old).unwrap();
        ObjectDir::open(&dir).unwrap();
        assert!(!stale.exists());
        assert!(fresh.exists());
    }

    #[test]
    fn execute_store_requests() {
        let tmp = tempfile::tempdir().unwrap();
        let objects = ObjectDir::open(&tmp.path().join("objects")).unwrap();
        let staging = Staging::open(&tmp.path().join("staging")).unwrap();
        let err = execute_store(&objects, &staging, &StoreRequest::PutStaged { ino: 5 }).unwrap_err();
        assert_eq!(err.kind, IoErrorKind::NotFound);
        fs::write(staging.data_path(5), b"hello world").unwrap();
        let id = match execute_store(&objects, &staging, &StoreRequest::PutStaged { ino: 5 }).unwrap() {
            IoReply::Object(id) => id,
            other => panic!("unexpected reply {other:?}"),
        };
        let read = StoreRequest::Read { object: id.clone(), offset: 6, len: 100 };
        assert_eq!(data(execute_store(&objects, &staging, &read)), b"world");
        assert!(matches!(execute_store(&objects, &staging, &StoreRequest::Space), Ok(IoReply::Space(_))));
        let delete = StoreRequest::Delete { ino: 1, object: id };
        assert_eq!(execute_store(&objects, &staging, &delete), Ok(IoReply::Done));
        assert_eq!(execute_store(&objects, &staging, &read).unwrap_err().kind, IoErrorKind::NotFound);
    }

    #[test]
    fn object_dir_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<ObjectDir>();
    }
}
