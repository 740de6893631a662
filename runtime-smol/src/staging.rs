//! The per-mount staging area and its journal: executes the core's [`StagingRequest`]s.
//!
//! Layout, all in one directory:
//! - `<ino>.data`: the staged contents of a file (dirty data not yet in the object store);
//! - `<ino>.seal`: the journal record of the last `Seal`, a small JSON object
//!   `{"v":1,"ino":..,"size":..,"mtime":[sec,nsec],"ctime":[sec,nsec]}`;
//! - `.tmp-*`: files being written; they never count, and `Scan` removes them.
//!
//! The record is replaced atomically (temp file, fsync, rename, fsync of the directory), so after
//! a crash a `.seal` file is either the last complete record or the one before it.
//!
//! Called from a thread pool: different inodes concurrently, and reads and writes of one inode
//! concurrently (positional I/O on a shared descriptor needs no lock).

use crate::objects::{io_error, read_full_at, sync_dir, ObjectDir};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use truckeefs_core::{
    Ino, IoError, IoErrorKind, IoReply, IoResult, ObjectId, SealRecord, StagedEntry, StagingRequest, Timespec,
};

/// Where the staging area copies a file's committed contents from (`StagingRequest::Init`).
pub trait ObjectSource {
    /// The object's bytes from the start. A missing object is `NotFound` (the core reads the
    /// file's row again on it, when several hosts share it).
    fn open_object(&self, id: &ObjectId) -> Result<ObjectReader<'_>, IoError>;
}

/// An object's bytes: a local file (copied with `copy_file_range`, never through user space),
/// with how to name it in errors, or a stream (whose errors name the object themselves).
pub enum ObjectReader<'a> {
    File { file: File, shown: String },
    Stream(Box<PushBytes<'a>>),
}

/// A stream of an object's bytes: called with a length, it hands the first that many bytes (or
/// all of a shorter object), in order, to the sink, until the sink returns false.
pub type PushBytes<'a> = dyn FnOnce(u64, &mut dyn FnMut(&[u8]) -> bool) -> Result<(), IoError> + 'a;

impl ObjectSource for ObjectDir {
    fn open_object(&self, id: &ObjectId) -> Result<ObjectReader<'_>, IoError> {
        let shown = format!("object {} in {}", id.fingerprint(), self.dir().display());
        let file = File::open(self.path_of(id)?).map_err(|e| io_error(&e, &shown))?;
        Ok(ObjectReader::File { file, shown })
    }
}

/// Open descriptors kept for reuse. Enough for the files being written at once; a miss costs one
/// `open(2)`.
const MAX_OPEN_FILES: usize = 256;
/// Sequential writes start the disk's writeback of each stretch this long as they pass its end,
/// so that the seal's `fdatasync` finds little left to write (256 MiB written then sealed: the
/// seal's sync fell from about 0.1 s to a few ms).
const WRITEBACK_STRETCH: u64 = 8 << 20;
/// The journal record format this build writes and reads.
const SEAL_VERSION: u32 = 1;
const TMP_PREFIX: &str = ".tmp-";

/// With the process id, makes temporary names unique.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The staging area of one mount.
pub struct Staging {
    dir: PathBuf,
    /// Open read-write descriptors by inode. Invariant (kept under this lock): a cached descriptor
    /// is the file now at `data_path(ino)`, because renames and removals of data files and cache
    /// insertions all happen with the lock held.
    files: Mutex<HashMap<Ino, Arc<File>>>,
    /// `staging_size`: at most this many bytes of staged data (0: no bound but the disk).
    limit: u64,
    /// The disk space each staged file takes.
    used: Mutex<HashMap<Ino, u64>>,
}

/// The journal record as stored.
#[derive(Serialize, Deserialize)]
struct SealFile {
    v: u32,
    ino: Ino,
    size: u64,
    mtime: (i64, u32),
    ctime: (i64, u32),
}

impl Staging {
    /// Opens the staging area, creating its directory (private to the user) if needed.
    pub fn open(dir: &Path) -> io::Result<Staging> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
        let mut used = HashMap::new();
        for entry in fs::read_dir(dir).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))? {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name();
            let ino = name.to_str().and_then(|n| n.strip_suffix(".data")).and_then(|n| n.parse::<Ino>().ok());
            if let (Some(ino), Ok(meta)) = (ino, entry.metadata()) {
                used.insert(ino, meta.blocks() * 512);
            }
        }
        Ok(Staging { dir: dir.to_path_buf(), files: Mutex::new(HashMap::new()), limit: 0, used: Mutex::new(used) })
    }

    /// Bounds the staged data (`staging_size`; 0: no bound but the disk).
    pub fn with_limit(mut self, limit: u64) -> Staging {
        self.limit = limit;
        self
    }

    /// Bytes of disk the staged files take, and the bound.
    pub fn usage(&self) -> (u64, u64) {
        (self.used.lock().unwrap_or_else(|e| e.into_inner()).values().sum(), self.limit)
    }

    /// Refuses (NoSpace) a change that would grow `ino`'s staged data by `grow` bytes past the
    /// bound.
    fn check_room(&self, ino: Ino, grow: u64) -> Result<(), IoError> {
        if self.limit == 0 || grow == 0 {
            return Ok(());
        }
        let (used, _) = self.usage();
        if used.saturating_add(grow) > self.limit {
            return Err(IoError::new(
                IoErrorKind::NoSpace,
                format!(
                    "{}: the staging area holds {used} bytes waiting to upload; staging_size is {}",
                    self.data_path(ino).display(),
                    self.limit
                ),
            ));
        }
        Ok(())
    }

    /// Records the space `ino`'s staged file takes now.
    fn account(&self, ino: Ino, file: &File) {
        if let Ok(meta) = file.metadata() {
            self.used.lock().unwrap_or_else(|e| e.into_inner()).insert(ino, meta.blocks() * 512);
        }
    }

    /// The staged contents of `ino` (which may not exist).
    pub fn data_path(&self, ino: Ino) -> PathBuf {
        self.dir.join(format!("{ino}.data"))
    }

    fn seal_path(&self, ino: Ino) -> PathBuf {
        self.dir.join(format!("{ino}.seal"))
    }

    fn tmp_path(&self, what: &str) -> PathBuf {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("{TMP_PREFIX}{}-{n}.{what}", std::process::id()))
    }

    /// Executes one request; see the documentation of [`StagingRequest`] for each reply.
    pub fn execute(&self, req: &StagingRequest, objects: &dyn ObjectSource) -> IoResult {
        match req {
            StagingRequest::Scan => self.scan().map(IoReply::Staged),
            StagingRequest::Init { ino, from, size } => {
                self.check_room(*ino, if from.is_some() { *size } else { 0 })?;
                let source = match from {
                    Some(id) => Some(objects.open_object(id)?),
                    None => None,
                };
                self.init(*ino, source, *size)?;
                if let Ok(file) = self.file(*ino, false) {
                    self.account(*ino, &file);
                }
                Ok(IoReply::Done)
            }
            StagingRequest::Write { ino, offset, data } => {
                let len = u32::try_from(data.len()).map_err(|_| {
                    IoError::new(
                        IoErrorKind::Other,
                        format!("{}: write of {} bytes is too large", self.data_path(*ino).display(), data.len()),
                    )
                })?;
                let file = self.file(*ino, true)?;
                if self.limit != 0 {
                    let old_len = file.metadata().map_err(|e| self.data_error(&e, *ino))?.len();
                    let end = offset.saturating_add(u64::from(len));
                    self.check_room(*ino, end.saturating_sub(old_len.max(*offset)))?;
                }
                file.write_all_at(data, *offset).map_err(|e| self.data_error(&e, *ino))?;
                start_writeback(&file, *offset, u64::from(len));
                self.account(*ino, &file);
                Ok(IoReply::Written(len))
            }
            StagingRequest::Read { ino, offset, len } => {
                let file = self.file(*ino, false)?;
                read_full_at(&file, *offset, *len).map(IoReply::Data).map_err(|e| self.data_error(&e, *ino))
            }
            StagingRequest::Truncate { ino, size } => {
                let file = self.file(*ino, true)?;
                file.set_len(*size).map_err(|e| self.data_error(&e, *ino))?;
                self.account(*ino, &file);
                Ok(IoReply::Done)
            }
            StagingRequest::Allocate { ino, offset, len } => {
                let file = self.file(*ino, true)?;
                self.check_room(*ino, *len)?;
                allocate(&file, *offset, *len).map_err(|e| self.data_error(&e, *ino))?;
                self.account(*ino, &file);
                Ok(IoReply::Done)
            }
            StagingRequest::Seal { ino, record } => self.seal(*ino, record).map(|()| IoReply::Done),
            StagingRequest::Unseal { ino } => self.unseal(*ino).map(|()| IoReply::Done),
            StagingRequest::Remove { ino } => self.remove(*ino).map(|()| IoReply::Done),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Ino, Arc<File>>> {
        // A panic while holding the lock cannot leave the map half-changed (each change is one
        // map call), so a poisoned lock is still a valid cache.
        self.files.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The read-write descriptor of `<ino>.data`, creating the file if `create`; a missing file is
    /// `NotFound` otherwise.
    fn file(&self, ino: Ino, create: bool) -> Result<Arc<File>, IoError> {
        let mut files = self.lock();
        if let Some(f) = files.get(&ino) {
            return Ok(f.clone());
        }
        // Opened under the lock, so an Init or Remove cannot replace the file between the open
        // and the cache insertion.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .mode(0o600)
            .open(self.data_path(ino))
            .map_err(|e| self.data_error(&e, ino))?;
        let file = Arc::new(file);
        if files.len() >= MAX_OPEN_FILES {
            // Any victim will do: a descriptor still in use elsewhere stays open through its Arc.
            if let Some(victim) = files.keys().next().copied() {
                files.remove(&victim);
            }
        }
        files.insert(ino, file.clone());
        Ok(file)
    }

    fn data_error(&self, e: &io::Error, ino: Ino) -> IoError {
        io_error(e, &self.data_path(ino).display().to_string())
    }

    /// Lists every staged file. Tolerates anything it finds: unrelated files are ignored, a bad
    /// journal record counts as no record, leftovers of interrupted operations are removed.
    fn scan(&self) -> Result<Vec<StagedEntry>, IoError> {
        let dir_error = |e: io::Error| io_error(&e, &self.dir.display().to_string());
        let mut data = BTreeSet::new();
        let mut seals = BTreeSet::new();
        for entry in fs::read_dir(&self.dir).map_err(dir_error)? {
            let entry = entry.map_err(dir_error)?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(TMP_PREFIX) {
                // A copy or record being written when the process died; the scan runs at start,
                // before any request of this mount.
                if let Err(e) = fs::remove_file(entry.path()) {
                    tracing::warn!("cannot remove leftover temporary file {}: {e}", entry.path().display());
                }
            } else if let Some(ino) = parse_name(name, ".data") {
                data.insert(ino);
            } else if let Some(ino) = parse_name(name, ".seal") {
                seals.insert(ino);
            }
        }
        // A record without data is what a Remove interrupted between its two deletions leaves.
        for ino in seals.difference(&data) {
            let path = self.seal_path(*ino);
            tracing::debug!("removing journal record {} without staged data", path.display());
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!("cannot remove journal record {} without staged data: {e}", path.display());
            }
        }
        let mut out = Vec::with_capacity(data.len());
        for ino in data {
            let path = self.data_path(ino);
            let data_len = match fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error(&e, &path.display().to_string())),
            };
            let sealed = if seals.contains(&ino) { self.read_seal(ino) } else { None };
            out.push(StagedEntry { ino, sealed, data_len });
        }
        Ok(out)
    }

    /// The journal record of `ino`, or `None` (with a warning) if it is unreadable or invalid.
    fn read_seal(&self, ino: Ino) -> Option<SealRecord> {
        let path = self.seal_path(ino);
        let mut text = Vec::new();
        // Records are tiny; a huge file is not one of ours, so do not read it all.
        let read = File::open(&path).and_then(|f| f.take(64 * 1024).read_to_end(&mut text));
        if let Err(e) = read {
            tracing::warn!("cannot read journal record {}: {e}; treating the staged file as unsealed", path.display());
            return None;
        }
        match parse_seal(&text, ino) {
            Ok(record) => Some(record),
            Err(why) => {
                tracing::warn!("bad journal record {}: {why}; treating the staged file as unsealed", path.display());
                None
            }
        }
    }

    /// Replaces the staged copy of `ino` with the first `size` bytes of `source` (none: an empty
    /// copy), zero-extended to `size`.
    fn init(&self, ino: Ino, source: Option<ObjectReader<'_>>, size: u64) -> Result<(), IoError> {
        let tmp = self.tmp_path("data");
        let result = self.init_via(ino, source, size, &tmp);
        if result.is_err() {
            let _ = fs::remove_file(&tmp); // best effort; Scan removes leftovers
        }
        result
    }

    fn init_via(&self, ino: Ino, source: Option<ObjectReader<'_>>, size: u64, tmp: &Path) -> Result<(), IoError> {
        let shown_tmp = tmp.display().to_string();
        let mut out = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(tmp)
            .map_err(|e| io_error(&e, &shown_tmp))?;
        match source {
            // Take<File> to File still uses copy_file_range on Linux.
            Some(ObjectReader::File { file, shown }) => {
                io::copy(&mut file.take(size), &mut out).map_err(|e| {
                    // Name whichever side failed: ENOSPC is ours, EIO is most likely the object's.
                    if e.raw_os_error() == Some(libc::ENOSPC) {
                        io_error(&e, &shown_tmp)
                    } else {
                        io_error(&e, &shown)
                    }
                })?;
            }
            Some(ObjectReader::Stream(push)) => {
                let mut written = Ok(());
                let pushed = push(size, &mut |piece| {
                    written = out.write_all(piece);
                    written.is_ok()
                });
                // The copy's own failure first: the stream ended because of it.
                written.map_err(|e| io_error(&e, &shown_tmp))?;
                pushed?;
            }
            None => {}
        }
        // Zero-extends a short object (a sparse tail costs no space) and sizes a fresh file.
        out.set_len(size).map_err(|e| io_error(&e, &shown_tmp))?;

        // No fsync: until the next Seal this copy only repeats what the object store holds.
        let mut files = self.lock();
        // The old record describes the old copy; drop it first, so a crash can never pair it with
        // the new data.
        remove_if_exists(&self.seal_path(ino))?;
        fs::rename(tmp, self.data_path(ino)).map_err(|e| self.data_error(&e, ino))?;
        files.insert(ino, Arc::new(out));
        if files.len() > MAX_OPEN_FILES {
            if let Some(victim) = files.keys().find(|k| **k != ino).copied() {
                files.remove(&victim);
            }
        }
        Ok(())
    }

    fn seal(&self, ino: Ino, record: &SealRecord) -> Result<(), IoError> {
        let file = self.file(ino, true)?;
        file.sync_data().map_err(|e| self.data_error(&e, ino))?;
        let text = serde_json::to_vec(&SealFile {
            v: SEAL_VERSION,
            ino,
            size: record.size,
            mtime: (record.mtime.sec, record.mtime.nsec),
            ctime: (record.ctime.sec, record.ctime.nsec),
        })
        // Serializing a struct of integers to a Vec cannot fail.
        .expect("a seal record always serializes");
        let tmp = self.tmp_path("seal");
        let shown_tmp = tmp.display().to_string();
        let write = || -> io::Result<()> {
            let f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            f.write_all_at(&text, 0)?;
            f.sync_data()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(io_error(&e, &shown_tmp));
        }
        let seal_path = self.seal_path(ino);
        if let Err(e) = fs::rename(&tmp, &seal_path) {
            let _ = fs::remove_file(&tmp);
            return Err(io_error(&e, &seal_path.display().to_string()));
        }
        // Makes the rename durable, and with it the data file's own entry (same directory).
        sync_dir(&self.dir).map_err(|e| io_error(&e, &self.dir.display().to_string()))
    }

    /// Drops the journal record and makes that durable before the data may change again.
    fn unseal(&self, ino: Ino) -> Result<(), IoError> {
        remove_if_exists(&self.seal_path(ino))?;
        let dir = File::open(&self.dir).map_err(|e| io_error(&e, &self.dir.display().to_string()))?;
        dir.sync_all().map_err(|e| io_error(&e, &self.dir.display().to_string()))
    }

    fn remove(&self, ino: Ino) -> Result<(), IoError> {
        let mut files = self.lock();
        files.remove(&ino);
        self.used.lock().unwrap_or_else(|e| e.into_inner()).remove(&ino);
        // Data first: a crash in between leaves a record without data, which Scan discards,
        // never data that looks unsealed.
        remove_if_exists(&self.data_path(ino))?;
        remove_if_exists(&self.seal_path(ino))
    }
}

fn remove_if_exists(path: &Path) -> Result<(), IoError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(&e, &path.display().to_string())),
    }
}

/// The inode of a file named `<ino><suffix>`, written the way we write it (no sign, no leading
/// zeros), so every name maps to exactly one inode and back.
fn parse_name(name: &str, suffix: &str) -> Option<Ino> {
    let digits = name.strip_suffix(suffix)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || (digits.len() > 1 && digits.starts_with('0'))
    {
        return None;
    }
    digits.parse().ok()
}

/// Parses a journal record (public for the fuzz target: it reads files on disk).
pub fn parse_seal(text: &[u8], ino: Ino) -> Result<SealRecord, String> {
    let f: SealFile = serde_json::from_slice(text).map_err(|e| e.to_string())?;
    if f.v != SEAL_VERSION {
        return Err(format!("unknown record version {}", f.v));
    }
    if f.ino != ino {
        return Err(format!("record is for inode {}", f.ino));
    }
    let time = |(sec, nsec): (i64, u32)| {
        if nsec < 1_000_000_000 {
            Ok(Timespec { sec, nsec })
        } else {
            Err(format!("bad nanoseconds {nsec}"))
        }
    };
    Ok(SealRecord { size: f.size, mtime: time(f.mtime)?, ctime: time(f.ctime)? })
}

/// Starts writing out the stretch of `WRITEBACK_STRETCH` bytes that a write of `len` bytes at
/// `offset` finished (its end passed the stretch's end), without waiting for it. Only a hint: it
/// promises nothing, and the seal's `fdatasync` still makes the data durable.
fn start_writeback(file: &File, offset: u64, len: u64) {
    let end = offset.saturating_add(len);
    if len == 0 || end / WRITEBACK_STRETCH == offset / WRITEBACK_STRETCH {
        return;
    }
    let stretch_end = end / WRITEBACK_STRETCH * WRITEBACK_STRETCH;
    let Ok(from) = libc::off64_t::try_from(stretch_end - WRITEBACK_STRETCH) else { return };
    #[cfg(target_os = "linux")]
    // SAFETY: plain system call on a descriptor we own, with a range that fits off64_t; its
    // failure changes nothing.
    unsafe {
        libc::sync_file_range(
            std::os::fd::AsRawFd::as_raw_fd(file),
            from,
            WRITEBACK_STRETCH as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Makes sure `offset..offset+len` is allocated, extending the file if needed.
fn allocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(()); // fallocate refuses an empty range; there is nothing to do
    }
    let end = offset
        .checked_add(len)
        .filter(|end| *end <= i64::MAX as u64)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EFBIG))?;
    #[cfg(target_os = "linux")]
    loop {
        // SAFETY: plain system call on a descriptor we own; offset and len fit off_t (checked above).
        let r = unsafe {
            libc::fallocate(std::os::fd::AsRawFd::as_raw_fd(file), 0, offset as libc::off_t, len as libc::off_t)
        };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EOPNOTSUPP) => break,
            _ => return Err(e),
        }
    }
    // No fallocate here (or not on this filesystem): at least make the file long enough.
    if file.metadata()?.len() < end {
        file.set_len(end)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use truckeefs_core::ObjectId;

    struct Fixture {
        _tmp: tempfile::TempDir,
        objects: ObjectDir,
        staging: Staging,
    }

    impl Fixture {
        fn new() -> Fixture {
            let tmp = tempfile::tempdir().unwrap();
            let objects = ObjectDir::open(&tmp.path().join("objects")).unwrap();
            let staging = Staging::open(&tmp.path().join("staging")).unwrap();
            Fixture { _tmp: tmp, objects, staging }
        }

        fn run(&self, req: StagingRequest) -> IoResult {
            self.staging.execute(&req, &self.objects)
        }

        fn read(&self, ino: Ino, offset: u64, len: u32) -> Vec<u8> {
            match self.run(StagingRequest::Read { ino, offset, len }).unwrap() {
                IoReply::Data(d) => d.to_vec(),
                other => panic!("unexpected reply {other:?}"),
            }
        }

        fn write(&self, ino: Ino, offset: u64, data: &[u8]) {
            let reply = self.run(StagingRequest::Write { ino, offset, data: Bytes::copy_from_slice(data) });
            assert_eq!(reply, Ok(IoReply::Written(data.len() as u32)));
        }

        fn scan(&self) -> Vec<StagedEntry> {
            match self.run(StagingRequest::Scan).unwrap() {
                IoReply::Staged(s) => s,
                other => panic!("unexpected reply {other:?}"),
            }
        }

        fn object(&self, contents: &[u8]) -> ObjectId {
            let src = self.staging.dir.join("..").join("object-src");
            fs::write(&src, contents).unwrap();
            self.objects.put_file(&src).unwrap()
        }
    }

    fn record(size: u64) -> SealRecord {
        SealRecord {
            size,
            mtime: Timespec { sec: -5, nsec: 7 },
            ctime: Timespec { sec: 1_700_000_000, nsec: 999_999_999 },
        }
    }

    #[test]
    fn write_read_truncate() {
        let fx = Fixture::new();
        assert_eq!(
            fx.run(StagingRequest::Read { ino: 3, offset: 0, len: 10 }).unwrap_err().kind,
            IoErrorKind::NotFound
        );
        fx.write(3, 5, b"hello");
        assert_eq!(fx.read(3, 0, 100), b"\0\0\0\0\0hello");
        assert_eq!(fx.read(3, 6, 2), b"el");
        assert_eq!(fx.read(3, 100, 2), b"");
        assert_eq!(fx.run(StagingRequest::Truncate { ino: 3, size: 7 }), Ok(IoReply::Done));
        assert_eq!(fx.read(3, 0, 100), b"\0\0\0\0\0he");
        assert_eq!(fx.run(StagingRequest::Truncate { ino: 3, size: 9 }), Ok(IoReply::Done));
        assert_eq!(fx.read(3, 0, 100), b"\0\0\0\0\0he\0\0");
        // Truncate of a file never staged creates it (a new file, ftruncate'd before any write).
        assert_eq!(fx.run(StagingRequest::Truncate { ino: 4, size: 3 }), Ok(IoReply::Done));
        assert_eq!(fx.read(4, 0, 100), b"\0\0\0");
        assert_eq!(fs::read(fx.staging.data_path(3)).unwrap(), b"\0\0\0\0\0he\0\0");
    }

    #[test]
    fn writes_past_a_writeback_stretch_land_whole() {
        let fx = Fixture::new();
        let stretch = WRITEBACK_STRETCH as usize;
        // Sequential writes of 3 MiB, each third or so crossing a stretch's end.
        let data: Vec<u8> = (0..3 * stretch).map(|i| (i * 7 % 251) as u8).collect();
        for (i, piece) in data.chunks(3 << 20).enumerate() {
            fx.write(5, (i * (3 << 20)) as u64, piece);
        }
        assert_eq!(fs::read(fx.staging.data_path(5)).unwrap(), data);
        // Ranges at the end of the offsets the hint can name change nothing and fail nothing.
        let file = fx.staging.file(5, false).unwrap();
        start_writeback(&file, u64::MAX - 10, 20);
        start_writeback(&file, i64::MAX as u64 - 1, 2);
        start_writeback(&file, 0, 0);
        assert_eq!(fs::read(fx.staging.data_path(5)).unwrap(), data);
    }

    #[test]
    fn init_from_object_copies_prefix_and_zero_extends() {
        let fx = Fixture::new();
        let contents: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        let id = fx.object(&contents);
        // Shorter than the object: only the prefix.
        fx.run(StagingRequest::Init { ino: 7, from: Some(id.clone()), size: 1000 }).unwrap();
        assert_eq!(fs::read(fx.staging.data_path(7)).unwrap(), contents[..1000]);
        // Longer than the object: zero-extended.
        fx.run(StagingRequest::Init { ino: 7, from: Some(id.clone()), size: 250_000 }).unwrap();
        let got = fs::read(fx.staging.data_path(7)).unwrap();
        assert_eq!(got.len(), 250_000);
        assert_eq!(got[..200_000], contents[..]);
        assert!(got[200_000..].iter().all(|b| *b == 0));
        // Reads see the new copy even though the old one was cached.
        assert_eq!(fx.read(7, 199_999, 2), [contents[199_999], 0]);
        // From nothing.
        fx.write(8, 0, b"old contents");
        fx.run(StagingRequest::Init { ino: 8, from: None, size: 4 }).unwrap();
        assert_eq!(fx.read(8, 0, 100), b"\0\0\0\0");
        fx.run(StagingRequest::Init { ino: 9, from: None, size: 0 }).unwrap();
        assert_eq!(fx.read(9, 0, 100), b"");
        // Missing object, bad object id.
        fx.objects.delete(&id).unwrap();
        let err = fx.run(StagingRequest::Init { ino: 7, from: Some(id.clone()), size: 10 }).unwrap_err();
        assert_eq!(err.kind, IoErrorKind::NotFound);
        assert!(err.message.contains(&id.fingerprint()) && !err.message.contains(&id.0), "{}", err.message);
        let bad = ObjectId("../x".into());
        assert_eq!(
            fx.run(StagingRequest::Init { ino: 7, from: Some(bad), size: 1 }).unwrap_err().kind,
            IoErrorKind::Corrupt
        );
        // A failed Init leaves the earlier copy alone, and no temp file.
        assert_eq!(fx.read(7, 0, 3), contents[..3]);
        assert!(fs::read_dir(&fx.staging.dir).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(TMP_PREFIX)));
    }

    /// An object source that streams `pieces`, then fails with `fail` if given.
    struct Pieces {
        pieces: Vec<Vec<u8>>,
        fail: Option<IoError>,
    }

    impl ObjectSource for Pieces {
        fn open_object(&self, _: &ObjectId) -> Result<ObjectReader<'_>, IoError> {
            let push = move |size: u64, sink: &mut dyn FnMut(&[u8]) -> bool| {
                let mut left = size as usize;
                for p in &self.pieces {
                    let n = p.len().min(left);
                    if n == 0 || !sink(&p[..n]) {
                        break;
                    }
                    left -= n;
                }
                self.fail.clone().map_or(Ok(()), Err)
            };
            Ok(ObjectReader::Stream(Box::new(push)))
        }
    }

    #[test]
    fn init_from_a_stream_takes_what_it_asked_for_and_keeps_the_old_copy_on_failure() {
        let fx = Fixture::new();
        let id = ObjectId("any".into());
        let init = |src: &Pieces, size| fx.staging.execute(&StagingRequest::Init { ino: 3, from: Some(id.clone()), size }, src);
        let src = Pieces { pieces: vec![b"hello ".to_vec(), b"world".to_vec()], fail: None };
        assert_eq!(init(&src, 11), Ok(IoReply::Done));
        assert_eq!(fx.read(3, 0, 100), b"hello world");
        assert_eq!(init(&src, 8), Ok(IoReply::Done));
        assert_eq!(fx.read(3, 0, 100), b"hello wo");
        assert_eq!(init(&src, 13), Ok(IoReply::Done));
        assert_eq!(fx.read(3, 0, 100), b"hello world\0\0");
        // Fails after a piece: the error as the stream gave it, the copy before untouched.
        let broken = Pieces { pieces: vec![b"HELLO".to_vec()], fail: Some(IoError::new(IoErrorKind::Timeout, "stalled")) };
        assert_eq!(init(&broken, 11).unwrap_err().kind, IoErrorKind::Timeout);
        assert_eq!(fx.read(3, 0, 100), b"hello world\0\0");
        assert!(fs::read_dir(&fx.staging.dir).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().starts_with(TMP_PREFIX)));
    }

    #[test]
    fn init_drops_the_old_record() {
        let fx = Fixture::new();
        fx.write(2, 0, b"abc");
        fx.run(StagingRequest::Seal { ino: 2, record: record(3) }).unwrap();
        fx.run(StagingRequest::Init { ino: 2, from: None, size: 1 }).unwrap();
        assert_eq!(fx.scan(), vec![StagedEntry { ino: 2, sealed: None, data_len: 1 }]);
    }

    #[test]
    fn allocate_extends_and_keeps_data() {
        let fx = Fixture::new();
        fx.write(5, 0, b"abc");
        fx.run(StagingRequest::Allocate { ino: 5, offset: 1, len: 1 }).unwrap();
        assert_eq!(fx.read(5, 0, 100), b"abc");
        fx.run(StagingRequest::Allocate { ino: 5, offset: 2, len: 8190 }).unwrap();
        let got = fx.read(5, 0, 10_000);
        assert_eq!(got.len(), 8192);
        assert_eq!(&got[..3], b"abc");
        assert!(fs::metadata(fx.staging.data_path(5)).unwrap().len() == 8192);
        fx.run(StagingRequest::Allocate { ino: 5, offset: 0, len: 0 }).unwrap();
        let err = fx.run(StagingRequest::Allocate { ino: 5, offset: u64::MAX, len: 2 }).unwrap_err();
        assert_eq!(err.kind, IoErrorKind::Other);
        assert!(err.message.contains("5.data"), "{}", err.message);
    }

    #[test]
    fn seal_scan_remove() {
        let fx = Fixture::new();
        assert_eq!(fx.scan(), vec![]);
        fx.write(10, 0, b"0123456789");
        fx.run(StagingRequest::Seal { ino: 10, record: record(10) }).unwrap();
        fx.write(11, 0, b"xy");
        fx.run(StagingRequest::Seal { ino: 11, record: record(1) }).unwrap();
        fx.run(StagingRequest::Seal { ino: 11, record: record(2) }).unwrap(); // replaces
        let text = fs::read_to_string(fx.staging.dir.join("11.seal")).unwrap();
        assert_eq!(text, r#"{"v":1,"ino":11,"size":2,"mtime":[-5,7],"ctime":[1700000000,999999999]}"#);
        assert_eq!(
            fx.scan(),
            vec![
                StagedEntry { ino: 10, sealed: Some(record(10)), data_len: 10 },
                StagedEntry { ino: 11, sealed: Some(record(2)), data_len: 2 },
            ]
        );
        assert_eq!(fx.run(StagingRequest::Remove { ino: 10 }), Ok(IoReply::Done));
        assert_eq!(fx.run(StagingRequest::Remove { ino: 10 }), Ok(IoReply::Done)); // missing is fine
        assert_eq!(
            fx.run(StagingRequest::Read { ino: 10, offset: 0, len: 1 }).unwrap_err().kind,
            IoErrorKind::NotFound
        );
        assert!(!fx.staging.dir.join("10.seal").exists());
        assert_eq!(fx.scan(), vec![StagedEntry { ino: 11, sealed: Some(record(2)), data_len: 2 }]);
        // Sealing a file never written creates it empty.
        fx.run(StagingRequest::Seal { ino: 12, record: record(0) }).unwrap();
        assert_eq!(fx.scan().len(), 2);
    }

    #[test]
    fn scan_after_crash() {
        let fx = Fixture::new();
        let dir = &fx.staging.dir;
        // Data written but never sealed.
        fs::write(dir.join("20.data"), b"unsealed").unwrap();
        // Corrupt records of every kind.
        let bad_records: [&[u8]; 7] = [
            b"{\"v\":1,\"ino\":21,\"si",
            b"",
            b"\xff\xfe garbage",
            br#"{"v":2,"ino":22,"size":1,"mtime":[0,0],"ctime":[0,0]}"#,
            br#"{"v":1,"ino":999,"size":1,"mtime":[0,0],"ctime":[0,0]}"#,
            br#"{"v":1,"ino":24,"size":1,"mtime":[0,1000000000],"ctime":[0,0]}"#,
            br#"{"v":1,"ino":25,"size":-1,"mtime":[0,0],"ctime":[0,0]}"#,
        ];
        for (i, text) in bad_records.iter().enumerate() {
            let ino = 21 + i as u64;
            fs::write(dir.join(format!("{ino}.data")), b"d").unwrap();
            fs::write(dir.join(format!("{ino}.seal")), text).unwrap();
        }
        // An unreadable record: a directory where the file should be.
        fs::write(dir.join("30.data"), b"d").unwrap();
        fs::create_dir(dir.join("30.seal")).unwrap();
        // A good record with unknown extra fields still counts.
        fs::write(dir.join("31.data"), b"dd").unwrap();
        fs::write(dir.join("31.seal"), br#"{"v":1,"ino":31,"size":2,"mtime":[1,2],"ctime":[3,4],"extra":true}"#)
            .unwrap();
        // Leftovers and unrelated files.
        fs::write(dir.join("40.seal"), br#"{"v":1,"ino":40,"size":1,"mtime":[0,0],"ctime":[0,0]}"#).unwrap();
        fs::write(dir.join(".tmp-1-1.data"), b"partial").unwrap();
        for name in
            ["notes.txt", "007.data", "+8.data", ".data", "x.data", "99999999999999999999999.data", "5.data.bak"]
        {
            fs::write(dir.join(name), b"?").unwrap();
        }
        fs::create_dir(dir.join("subdir")).unwrap();

        let entries = fx.scan();
        let mut want: Vec<StagedEntry> = vec![StagedEntry { ino: 20, sealed: None, data_len: 8 }];
        want.extend((21..28).map(|ino| StagedEntry { ino, sealed: None, data_len: 1 }));
        want.push(StagedEntry { ino: 30, sealed: None, data_len: 1 });
        let t = |sec, nsec| Timespec { sec, nsec };
        want.push(StagedEntry {
            ino: 31,
            sealed: Some(SealRecord { size: 2, mtime: t(1, 2), ctime: t(3, 4) }),
            data_len: 2,
        });
        assert_eq!(entries, want);
        assert!(!dir.join("40.seal").exists(), "record without data is dropped");
        assert!(!dir.join(".tmp-1-1.data").exists(), "temporary leftovers are removed");
        assert!(dir.join("notes.txt").exists() && dir.join("007.data").exists(), "unrelated files stay");
    }

    #[test]
    fn errors_name_the_file() {
        let fx = Fixture::new();
        let err = fx.run(StagingRequest::Read { ino: 77, offset: 0, len: 1 }).unwrap_err();
        assert!(err.message.contains("77.data"), "{}", err.message);
    }

    #[test]
    fn many_open_files_are_bounded() {
        let fx = Fixture::new();
        for ino in 0..(MAX_OPEN_FILES as u64 * 2) {
            fx.write(ino, 0, &ino.to_le_bytes());
        }
        assert!(fx.staging.lock().len() <= MAX_OPEN_FILES);
        for ino in 0..(MAX_OPEN_FILES as u64 * 2) {
            assert_eq!(fx.read(ino, 0, 8), ino.to_le_bytes());
        }
    }

    #[test]
    fn concurrent_writers_and_readers() {
        let fx = Fixture::new();
        let block = 128 * 1024;
        std::thread::scope(|s| {
            for t in 0..8u64 {
                let fx = &fx;
                s.spawn(move || {
                    // Two threads per inode, each writing its own half.
                    let ino = t / 2;
                    let half = t % 2;
                    let data = vec![t as u8 + 1; block];
                    for i in 0..32u64 {
                        let offset = (i * 2 + half) * block as u64;
                        fx.write(ino, offset, &data);
                        assert_eq!(fx.read(ino, offset, block as u32), data);
                    }
                });
            }
        });
        for ino in 0..4u64 {
            let got = fs::read(fx.staging.data_path(ino)).unwrap();
            assert_eq!(got.len(), 64 * block);
            for (i, chunk) in got.chunks(block).enumerate() {
                let want = (ino * 2 + (i as u64 % 2)) as u8 + 1;
                assert!(chunk.iter().all(|b| *b == want), "ino {ino} block {i}");
            }
        }
    }

    #[test]
    fn staging_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Staging>();
    }

    #[test]
    fn staging_size_bounds_the_staged_data() {
        let mut fx = Fixture::new();
        fx.staging = Staging::open(&fx._tmp.path().join("staging")).unwrap().with_limit(10_000);
        let write = |fx: &Fixture, ino: Ino, offset: u64, n: usize| {
            fx.run(StagingRequest::Write { ino, offset, data: Bytes::from(vec![7u8; n]) })
        };
        assert_eq!(write(&fx, 3, 0, 8000), Ok(IoReply::Written(8000)));
        let (used, limit) = fx.staging.usage();
        assert!((8000..=10_000).contains(&used) && limit == 10_000, "{used}");
        // Growing past the bound: ENOSPC (NoSpace), naming the key; nothing written.
        let e = write(&fx, 4, 0, 4000).unwrap_err();
        assert_eq!(e.kind, IoErrorKind::NoSpace);
        assert!(e.message.contains("staging_size is 10000"), "{e}");
        assert_eq!(write(&fx, 3, 8000, 4000).unwrap_err().kind, IoErrorKind::NoSpace);
        // Rewriting what is there needs no room.
        assert_eq!(write(&fx, 3, 100, 4000), Ok(IoReply::Written(4000)));
        // Once a file is uploaded and removed, its room is free again.
        fx.run(StagingRequest::Remove { ino: 3 }).unwrap();
        assert_eq!(fx.staging.usage().0, 0);
        assert_eq!(write(&fx, 4, 0, 4000), Ok(IoReply::Written(4000)));
        // A reopened staging area counts what it holds.
        let again = Staging::open(&fx._tmp.path().join("staging")).unwrap();
        assert_eq!(again.usage().0, fx.staging.usage().0);
    }
}
