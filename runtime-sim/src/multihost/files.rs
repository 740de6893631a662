//! The model of files and names: every version of a file, when each was acknowledged, and
//! what a host may read or see of it.

use super::names::DIRS;
use super::{Mh, NAMES};
use std::time::Duration;
use truckeefs_core::{Ino, ROOT_INO};

/// One file of the model.
pub(super) struct FileM {
    pub(super) ino: Ino,
    /// Every content the file had, in order: one per acknowledged write (the empty file first).
    pub(super) versions: Vec<Vec<u8>>,
    /// The last version a close or fsync acknowledged (it is in the shared store).
    pub(super) acked: usize,
    /// When each acknowledgement came: (time, version).
    pub(super) acks: Vec<(Duration, usize)>,
    /// The host writing it, if it is open for writing.
    pub(super) writer: Option<usize>,
    /// The host that wrote it last (its uploads may still be running).
    pub(super) last_writer: Option<usize>,
    /// Its writer crashed with unacknowledged writes: until it settles, the contents are any
    /// version since the acknowledged one (or a newer one's bytes under an older one's size).
    pub(super) unsettled: Option<usize>,
    /// Its last name went while its host had it open: it lives on there.
    pub(super) orphan: Option<super::orphans::Orphan>,
    /// Several hosts write it at once (`writers`); then `versions` stands still until the
    /// contest ends, and `writer` is the first of the writers only.
    pub(super) contest: Option<super::writers::Contest>,
}

impl FileM {
    pub(super) fn latest(&self) -> &[u8] {
        self.versions.last().expect("a file has at least its empty version")
    }

    /// The last version acknowledged before `t` (strictly).
    pub(super) fn acked_before(&self, t: Duration) -> usize {
        self.acks.iter().rev().find(|(at, _)| *at < t).map_or(0, |(_, v)| *v)
    }

    /// The contents allowed after a crash of its writer, from version `from` on.
    pub(super) fn allowed_after_crash(&self, from: usize, data: &[u8]) -> bool {
        let vs = &self.versions[from..];
        if vs.iter().any(|v| v == data) {
            return true;
        }
        // A seal record written while a later write landed: a newer version's bytes under an
        // older version's size.
        vs.iter().enumerate().any(|(i, old)| {
            old.len() == data.len() && vs[i + 1..].iter().any(|new| zero_extended(new, old.len()) == data)
        })
    }
}

pub(super) fn zero_extended(v: &[u8], len: usize) -> Vec<u8> {
    let mut out = v[..v.len().min(len)].to_vec();
    out.resize(len, 0);
    out
}

/// One name of the model: its file now, and what it named before (and until when).
#[derive(Default)]
pub(super) struct NameM {
    pub(super) current: Option<Ino>,
    pub(super) history: Vec<(Option<Ino>, Duration)>,
}

impl NameM {
    /// What a host may see: the current value, or one that changed after the last sync (a host
    /// may not have heard of the change yet).
    pub(super) fn allows(&self, v: Option<Ino>, since: Duration) -> bool {
        self.current == v || self.history.iter().any(|(old, until)| *old == v && *until >= since)
    }

    /// Whether it named something at some time since `since` (or now).
    pub(super) fn existed_since(&self, since: Duration) -> bool {
        self.current.is_some() || self.history.iter().any(|(v, until)| v.is_some() && *until >= since)
    }

    pub(super) fn set(&mut self, v: Option<Ino>, now: Duration) {
        let old = std::mem::replace(&mut self.current, v);
        self.history.push((old, now));
    }
}

impl Mh {
    /// Whether `ino` is a file without names kept open.
    pub(super) fn is_orphan(&self, ino: Ino) -> bool {
        self.files.get(&ino).is_some_and(|f| f.orphan.is_some())
    }

    /// Whether a file may get a new writer: nobody writes it, the store holds its latest
    /// version, and its last writer has nothing left to upload.
    pub(super) fn writable(&self, ino: Ino) -> bool {
        let Some(f) = self.files.get(&ino) else {
            return false;
        };
        if f.writer.is_some() || f.unsettled.is_some() || f.contest.is_some() || !self.writer_hosts(ino).is_empty() {
            return false;
        }
        if let Some(h) = f.last_writer {
            if !self.c.is_up(h) || !self.host_quiet(h) {
                return false;
            }
        }
        self.stored(ino).is_some_and(|d| d == f.latest())
    }

    /// Host `h` has nothing dirty, nothing being uploaded, no I/O in flight.
    pub(super) fn host_quiet(&self, h: usize) -> bool {
        let w = &self.c.hosts[h].w;
        let s = w.core.status();
        s.dirty_files == 0 && s.uploads_in_flight == 0 && w.pending_io() == 0
    }

    /// The contents of `ino` in the shared stores.
    pub(super) fn stored(&self, ino: Ino) -> Option<Vec<u8>> {
        let row = self.c.meta.inode(ino)?;
        let data = match &row.object {
            Some(o) => self.c.objects.get(o)?.to_vec(),
            None => Vec::new(),
        };
        Some(zero_extended(&data, row.size as usize))
    }

    /// A file whose writer crashed settles once that host is back and quiet: the store must
    /// hold one of the contents allowed after the crash, which becomes the acknowledged version.
    pub(super) fn settle_files(&mut self) {
        let inos: Vec<Ino> =
            self.files.iter().filter(|(_, f)| f.unsettled.is_some() && f.contest.is_none()).map(|(i, _)| *i).collect();
        for ino in inos {
            let h = self.files[&ino].unsettled.expect("filtered");
            if !self.c.is_up(h) || !self.host_quiet(h) {
                continue;
            }
            let Some(data) = self.stored(ino) else {
                continue;
            };
            let now = self.c.now;
            let f = self.files.get_mut(&ino).expect("listed");
            // Checked where it is read (`check_content`); here it only becomes the one version.
            if f.allowed_after_crash(f.acked, &data) {
                f.versions.push(data);
                f.acked = f.versions.len() - 1;
                f.acks.push((now, f.acked));
                f.unsettled = None;
            }
        }
    }

    /// Whether the name named a file at some time since `since` (or now).
    pub(super) fn existed_since(&self, parent: Ino, name: usize, since: Duration) -> bool {
        self.entry(parent, name).existed_since(since)
    }

    /// A close or fsync of the writer acknowledged the latest version.
    pub(super) fn ack(&mut self, ino: Ino, now: Duration) {
        let f = self.files.get_mut(&ino).expect("open");
        if f.contest.is_some() {
            return;
        }
        f.acked = f.versions.len() - 1;
        f.acks.push((now, f.acked));
    }

    /// The lowest version a read on `host`, opening `ino` now, may return.
    pub(super) fn read_lower_bound(&self, host: usize, ino: Ino) -> usize {
        let f = &self.files[&ino];
        if f.writer == Some(host) {
            return f.versions.len() - 1;
        }
        if f.unsettled.is_some() {
            return f.acked;
        }
        // Close-to-open: every close acknowledged before this open.
        f.acked_before(self.c.now)
    }

    pub(super) fn check_content(&self, host: usize, ino: Ino, lower: usize, data: &[u8]) -> Result<(), String> {
        let f = &self.files[&ino];
        if f.contest.is_some() {
            return self.check_contested(host, ino, data).map(drop);
        }
        if f.writer == Some(host) {
            if data != f.latest() {
                return Err(format!(
                    "the writer's host reads {} bytes, not its latest version ({} bytes)",
                    data.len(),
                    f.latest().len()
                ));
            }
            return Ok(());
        }
        if f.unsettled.is_some() && f.allowed_after_crash(lower.min(f.acked), data) {
            return Ok(());
        }
        if f.versions[lower..].iter().any(|v| v == data) {
            return Ok(());
        }
        let older = f.versions[..lower].iter().rposition(|v| v == data);
        Err(format!(
            "read {} bytes that are none of versions {lower}..={} (acked {}, latest {} bytes){}",
            data.len(),
            f.versions.len() - 1,
            f.acked,
            f.latest().len(),
            older.map(|i| format!("; they are the older version {i}")).unwrap_or_default()
        ))
    }

    /// A listing of the root or a directory: every name as a lookup may see it (exactly,
    /// right after a sync); directory names only in the root.
    pub(super) fn check_listing(&self, parent: Ino, entries: &[truckeefs_core::DirEntry]) -> Result<(), String> {
        let mut seen: Vec<Option<Ino>> = vec![None; NAMES.len()];
        let mut dseen: Vec<Option<Ino>> = vec![None; DIRS.len()];
        for e in entries.iter().filter(|e| e.name != b"." && e.name != b"..") {
            let slot = match NAMES.iter().position(|n| n.as_bytes() == e.name.as_slice()) {
                Some(n) => &mut seen[n],
                None => match DIRS.iter().position(|n| n.as_bytes() == e.name.as_slice()) {
                    Some(d) if parent == ROOT_INO => &mut dseen[d],
                    _ => {
                        return Err(format!(
                            "listed {:?}, which no client created there",
                            String::from_utf8_lossy(&e.name)
                        ))
                    }
                },
            };
            if slot.replace(e.ino).is_some() {
                return Err(format!("{} listed twice", String::from_utf8_lossy(&e.name)));
            }
        }
        for (n, v) in seen.into_iter().enumerate() {
            let m = self.entry(parent, n);
            if !m.allows(v, self.last_sync) {
                return Err(format!(
                    "{} listed as {v:?}; it is {:?} (since before the last sync)",
                    NAMES[n], m.current
                ));
            }
        }
        for (d, v) in dseen.into_iter().enumerate().filter(|_| parent == ROOT_INO) {
            if !self.dnames[d].allows(v, self.last_sync) {
                return Err(format!(
                    "{} listed as {v:?}; it is {:?} (since before the last sync)",
                    DIRS[d], self.dnames[d].current
                ));
            }
        }
        Ok(())
    }

    pub(super) fn check_size(&self, host: usize, ino: Ino, size: u64) -> Result<(), String> {
        let f = &self.files[&ino];
        if f.contest.is_some() {
            return self.check_contested_size(host, ino, size);
        }
        let lower = if f.writer == Some(host) {
            f.versions.len() - 1
        } else if f.unsettled.is_some() {
            f.acked_before(self.last_sync).min(f.acked)
        } else {
            f.acked_before(self.last_sync)
        };
        let ok = f.versions[lower..].iter().any(|v| v.len() as u64 == size)
            || (f.unsettled.is_some() && f.versions[f.acked..].iter().any(|v| v.len() as u64 == size));
        if !ok {
            let sizes: Vec<usize> = f.versions[lower..].iter().map(Vec::len).collect();
            return Err(format!("size {size}, not one of versions {lower}.. (sizes {sizes:?})"));
        }
        Ok(())
    }
}
