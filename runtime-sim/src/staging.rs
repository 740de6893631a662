//! The simulator's staging area and journal, with crash semantics.
//!
//! Each staged file has its `current` bytes (what reads and uploads see) and the journal record
//! of its last seal; separately, the `durable` state: the bytes and record as of the last `Seal`,
//! and the log of changes since. A crash keeps the durable state plus, as the seed's
//! [`CrashMode`] says, none, a random first part, or all of the logged changes (power loss keeps
//! only what was sealed; a crash of the process alone keeps every completed write).
//!
//! Requests behave like the real staging area (`runtime-smol/src/staging.rs`): a write,
//! truncate, allocate or seal of a missing file creates it, a read of a missing file is
//! `NotFound`, `Init` replaces the copy and drops its record, `Unseal` drops the record of an
//! existing copy only, `Remove` drops both.

use crate::objects::MemObjects;
use std::collections::BTreeMap;
use truckeefs_core::{Ino, IoError, IoErrorKind, IoReply, IoResult, SealRecord, StagedEntry, StagingRequest};

/// One change to a staged file since its last seal, replayed (or not) by a crash.
#[derive(Clone, Debug)]
enum LogOp {
    /// `Init`: the whole file replaced (and its record dropped).
    Replace(Vec<u8>),
    Write(u64, bytes::Bytes),
    Resize(u64),
    Extend(u64),
}

#[derive(Clone, Debug, Default)]
struct Staged {
    data: Vec<u8>,
    record: Option<SealRecord>,
    /// The state as of the last seal.
    durable: Option<(Vec<u8>, Option<SealRecord>)>,
    /// Changes since the last seal, in order.
    log: Vec<LogOp>,
}

/// What a crash keeps of the writes made since the last seal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// Power loss: only what was sealed (made durable) survives.
    SealedOnly,
    /// Some first part of the unsealed changes survives (each file its own).
    RandomPrefix,
    /// A crash of the process only: every completed write survives, the records are the last
    /// seals'.
    Everything,
    /// Power loss with data written back in any order: a first part of the unsealed changes
    /// survives, the metadata ones (replace, resize, extend) in order, but any of its data writes
    /// may be lost.
    Reordered,
}

#[derive(Clone, Debug, Default)]
pub struct MemStaging {
    files: BTreeMap<Ino, Staged>,
    pub seals: u64,
}

impl MemStaging {
    pub fn new() -> MemStaging {
        MemStaging::default()
    }

    /// The current bytes of a staged file.
    pub fn data(&self, ino: Ino) -> Option<&[u8]> {
        self.files.get(&ino).map(|s| s.data.as_slice())
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn inos(&self) -> Vec<Ino> {
        self.files.keys().copied().collect()
    }

    /// The mount died: what was sealed survives, and of the changes since, what `mode` says
    /// (`rng` picks the prefixes).
    pub fn crash(&mut self, mode: CrashMode, rng: &mut crate::rng::Rng) {
        let mut gone = Vec::new();
        for (ino, s) in self.files.iter_mut() {
            let keep = match mode {
                CrashMode::SealedOnly => 0,
                CrashMode::RandomPrefix | CrashMode::Reordered => rng.below(s.log.len() as u64 + 1) as usize,
                CrashMode::Everything => s.log.len(),
            };
            let (mut data, mut record, mut exists) = match s.durable.clone() {
                Some((d, r)) => (d, r, true),
                None => (Vec::new(), None, false),
            };
            for op in &s.log[..keep] {
                exists = true;
                if mode == CrashMode::Reordered && matches!(op, LogOp::Write(..)) && rng.chance(0.5) {
                    continue; // this data never reached the disk
                }
                match op {
                    LogOp::Replace(d) => {
                        data = d.clone();
                        record = None;
                    }
                    LogOp::Write(off, bytes) => write_at(&mut data, *off, bytes),
                    LogOp::Resize(n) => data.resize(*n as usize, 0),
                    LogOp::Extend(end) => {
                        if (data.len() as u64) < *end {
                            data.resize(*end as usize, 0);
                        }
                    }
                }
            }
            if !exists {
                gone.push(*ino);
                continue;
            }
            s.durable = Some((data.clone(), record));
            s.data = data;
            s.record = record;
            s.log.clear();
        }
        for ino in gone {
            self.files.remove(&ino);
        }
    }

    /// The staging area is lost with the host (a disk that is not durable storage).
    pub fn lose_all(&mut self) {
        self.files.clear();
    }

    fn file(&mut self, ino: Ino) -> &mut Staged {
        self.files.entry(ino).or_default()
    }

    pub fn execute(&mut self, req: &StagingRequest, objects: &MemObjects) -> IoResult {
        match req {
            StagingRequest::Scan => Ok(IoReply::Staged(
                self.files
                    .iter()
                    .map(|(ino, s)| StagedEntry { ino: *ino, sealed: s.record, data_len: s.data.len() as u64 })
                    .collect(),
            )),
            StagingRequest::Init { ino, from, size } => {
                let mut data = match from {
                    Some(id) => match objects.get(id) {
                        Some(obj) => obj[..(*size).min(obj.len() as u64) as usize].to_vec(),
                        None => {
                            return Err(IoError::new(
                                IoErrorKind::NotFound,
                                format!("object {} not found (staging init of inode {ino})", id.fingerprint()),
                            ))
                        }
                    },
                    None => Vec::new(),
                };
                data.resize(*size as usize, 0);
                // The real Init removes the old record before the new data replaces the old.
                let f = self.file(*ino);
                f.log.push(LogOp::Replace(data.clone()));
                f.data = data;
                f.record = None;
                Ok(IoReply::Done)
            }
            StagingRequest::Write { ino, offset, data } => {
                let f = self.file(*ino);
                write_at(&mut f.data, *offset, data);
                f.log.push(LogOp::Write(*offset, data.clone()));
                Ok(IoReply::Written(data.len() as u32))
            }
            StagingRequest::Read { ino, offset, len } => match self.files.get(ino) {
                Some(f) => {
                    let start = (*offset).min(f.data.len() as u64) as usize;
                    let end = (start as u64 + *len as u64).min(f.data.len() as u64) as usize;
                    Ok(IoReply::Data(bytes::Bytes::copy_from_slice(&f.data[start..end])))
                }
                None => Err(IoError::new(IoErrorKind::NotFound, format!("staging: no staged file for inode {ino}"))),
            },
            StagingRequest::Truncate { ino, size } => {
                let f = self.file(*ino);
                f.data.resize(*size as usize, 0);
                f.log.push(LogOp::Resize(*size));
                Ok(IoReply::Done)
            }
            StagingRequest::Allocate { ino, offset, len } => {
                let f = self.file(*ino);
                if *len > 0 {
                    let end = offset.checked_add(*len).filter(|e| *e <= i64::MAX as u64).ok_or_else(|| {
                        IoError::new(IoErrorKind::Other, format!("staging: allocate past the largest file ({ino})"))
                    })?;
                    if (f.data.len() as u64) < end {
                        f.data.resize(end as usize, 0);
                    }
                    f.log.push(LogOp::Extend(end));
                }
                Ok(IoReply::Done)
            }
            StagingRequest::Seal { ino, record } => {
                self.seals += 1;
                let f = self.file(*ino);
                f.record = Some(*record);
                f.durable = Some((f.data.clone(), Some(*record)));
                f.log.clear();
                Ok(IoReply::Done)
            }
            StagingRequest::Unseal { ino } => {
                // Durable at once (the real one syncs the directory); the core changes the data
                // only after this completes, so the log is empty here. Like the real one (which
                // deletes the record file if it exists), it never creates a file: an Unseal that
                // runs after a Remove of the same copy finds nothing to do.
                let Some(f) = self.files.get_mut(ino) else { return Ok(IoReply::Done) };
                f.record = None;
                if let Some((_, r)) = &mut f.durable {
                    *r = None;
                }
                Ok(IoReply::Done)
            }
            StagingRequest::Remove { ino } => {
                self.files.remove(ino);
                Ok(IoReply::Done)
            }
        }
    }
}

fn write_at(data: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let end = offset as usize + bytes.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[offset as usize..end].copy_from_slice(bytes);
}
