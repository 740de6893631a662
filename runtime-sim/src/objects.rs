//! The simulator's object store: immutable objects in memory, named by fresh ids.
//!
//! Like the local object directory of the real runtime: `PutStaged` copies the staged file as it
//! is at the moment the request runs, a read past the end is short, deleting a missing object is
//! not an error. The store survives crashes of the mount.

use crate::staging::MemStaging;
use bytes::Bytes;
use std::collections::BTreeMap;
use truckeefs_core::{IoError, IoErrorKind, IoReply, IoResult, ObjectId, Space, StoreRequest};

#[derive(Clone, Debug)]
pub struct MemObjects {
    objects: BTreeMap<String, Bytes>,
    next: u64,
    salt: u64,
    pub total_bytes: u64,
    pub puts: u64,
    pub deletes: u64,
}

impl MemObjects {
    pub fn new(salt: u64) -> MemObjects {
        MemObjects { objects: BTreeMap::new(), next: 1, salt, total_bytes: 1 << 40, puts: 0, deletes: 0 }
    }

    /// A fresh id: 32 lowercase hex digits, never reused.
    fn fresh_id(&mut self) -> ObjectId {
        let n = self.next;
        self.next += 1;
        ObjectId(format!("{:016x}{:016x}", self.salt, n))
    }

    pub fn put(&mut self, data: Bytes) -> ObjectId {
        let id = self.fresh_id();
        self.objects.insert(id.0.clone(), data);
        self.puts += 1;
        id
    }

    pub fn get(&self, id: &ObjectId) -> Option<&Bytes> {
        self.objects.get(&id.0)
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    pub fn ids(&self) -> impl Iterator<Item = &String> {
        self.objects.keys()
    }

    fn used(&self) -> u64 {
        self.objects.values().map(|b| b.len() as u64).sum()
    }

    pub fn execute(&mut self, req: &StoreRequest, staging: &MemStaging) -> IoResult {
        match req {
            StoreRequest::PutStaged { ino } => match staging.data(*ino) {
                Some(data) => Ok(IoReply::Object(self.put(Bytes::copy_from_slice(data)))),
                None => Err(IoError::new(IoErrorKind::NotFound, format!("staging: no staged file for inode {ino}"))),
            },
            StoreRequest::Read { object, offset, len } => match self.objects.get(&object.0) {
                Some(data) => {
                    let start = (*offset).min(data.len() as u64) as usize;
                    let end = (start as u64 + *len as u64).min(data.len() as u64) as usize;
                    Ok(IoReply::Data(data.slice(start..end)))
                }
                None => Err(IoError::new(IoErrorKind::NotFound, format!("object {} not found", object.fingerprint()))),
            },
            StoreRequest::Share { object, .. } => match self.objects.get(&object.0) {
                // A second object with the same bytes, as the local object directory does.
                Some(data) => {
                    let data = data.clone();
                    Ok(IoReply::Object(self.put(data)))
                }
                None => Err(IoError::new(IoErrorKind::NotFound, format!("object {} not found", object.fingerprint()))),
            },
            StoreRequest::Delete { object, .. } => {
                if self.objects.remove(&object.0).is_some() {
                    self.deletes += 1;
                }
                Ok(IoReply::Done)
            }
            StoreRequest::Space => {
                let free = self.total_bytes.saturating_sub(self.used());
                Ok(IoReply::Space(Space { total_bytes: self.total_bytes, free_bytes: free, avail_bytes: free }))
            }
        }
    }
}
