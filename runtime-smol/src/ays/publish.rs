//! `truckeefs ays publish`: uploads a directory tree into a store (`docs/ays-protocol.md`,
//! store routes): every distinct blob (`HEAD` first, skipped when the store has it, else `PUT`),
//! then the whole metadata hash (`PUT S/md/{ays_id}`), so a tree is visible only once all its
//! blobs are in the store.
//!
//! Only regular files and directories can be published: a symbolic link, a device, a FIFO or a
//! socket stops the publish with an error naming its path, before anything is uploaded (the
//! metadata format cannot represent them, and leaving them out silently would publish a tree
//! that differs from the source). Names must be UTF-8 (they are JSON keys). A file with any
//! execute bit is published as `"<md5>,<size>,x"` (mode 0755).

use super::proto::{self, DirFiles, Tree};
use isahc::auth::{Authentication, Credentials};
use isahc::config::{Configurable, RedirectPolicy};
use isahc::{Body, HttpClient};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// What to publish where.
#[derive(Clone)]
pub struct PublishConfig {
    /// The store's base URL `S` (a cache server's store is `http://host:port/stor`).
    pub stor: String,
    pub login: String,
    pub secret: String,
    pub ays_id: String,
    /// The dedupe domain; empty (or `_`) for the default domain.
    pub domain: String,
    pub dir: PathBuf,
    /// Blobs uploaded at once.
    pub parallel: usize,
}

impl std::fmt::Debug for PublishConfig {
    // Never prints the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishConfig")
            .field("stor", &proto::redact_url(&self.stor))
            .field("login", &self.login)
            .field("ays_id", &self.ays_id)
            .field("domain", &self.domain)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// What a publish did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishSummary {
    pub files: u64,
    pub dirs: u64,
    /// Sum of all file sizes.
    pub bytes: u64,
    pub blobs_uploaded: u64,
    pub bytes_uploaded: u64,
    /// Blobs the store already had, and duplicates within the tree.
    pub blobs_skipped: u64,
    pub bytes_skipped: u64,
}

/// One distinct blob of the tree: where to read it.
struct Blob {
    md5: String,
    size: u64,
    path: PathBuf,
}

/// Walks `dir` (no network): the metadata tree and the distinct blobs.
fn scan(root: &Path) -> Result<(Tree, Vec<Blob>, PublishSummary), String> {
    let meta = fs::metadata(root).map_err(|e| format!("{}: {e}", root.display()))?;
    if !meta.is_dir() {
        return Err(format!("{}: not a directory", root.display()));
    }
    let mut tree = Tree::new();
    let mut blobs: BTreeMap<String, Blob> = BTreeMap::new();
    let mut summary = PublishSummary::default();
    // Depth-first with an explicit stack: (directory on disk, its path in the tree).
    let mut stack = vec![(root.to_path_buf(), "/".to_string())];
    while let Some((dir, tree_path)) = stack.pop() {
        summary.dirs += 1;
        let mut files = DirFiles::new();
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let shown = path.display();
            let name = entry
                .file_name()
                .into_string()
                .map_err(|_| format!("{shown}: the name is not UTF-8; aysfs names must be"))?;
            proto::validate_name(&name).map_err(|e| format!("{shown}: {e}"))?;
            let m = fs::symlink_metadata(&path).map_err(|e| format!("{shown}: {e}"))?;
            let ft = m.file_type();
            if ft.is_dir() {
                stack.push((path.clone(), proto::child_path(&tree_path, &name)));
            } else if ft.is_file() {
                if m.len() > proto::BLOB_SIZE_MAX {
                    return Err(format!("{shown}: larger than 1 GiB, the largest blob a store accepts"));
                }
                let f = File::open(&path).map_err(|e| format!("{shown}: {e}"))?;
                let (md5, size) = proto::md5_hex_of_reader(f).map_err(|e| format!("{shown}: {e}"))?;
                let executable = m.permissions().mode() & 0o111 != 0;
                files.insert(name, proto::FileEntry { md5: md5.clone(), size, executable }.value());
                summary.files += 1;
                summary.bytes += size;
                if blobs.contains_key(&md5) {
                    summary.blobs_skipped += 1;
                    summary.bytes_skipped += size;
                } else {
                    blobs.insert(md5.clone(), Blob { md5, size, path });
                }
            } else if ft.is_symlink() {
                return Err(format!(
                    "{shown}: a symbolic link; an aysfs tree holds only files and directories (replace it with a copy or remove it)"
                ));
            } else {
                return Err(format!(
                    "{shown}: a special file (device, FIFO or socket); an aysfs tree holds only files and directories"
                ));
            }
        }
        tree.insert(tree_path, files);
    }
    Ok((tree, blobs.into_values().collect(), summary))
}

fn request(cfg: &PublishConfig, b: isahc::http::request::Builder) -> isahc::http::request::Builder {
    if cfg.login.is_empty() && cfg.secret.is_empty() {
        b
    } else {
        b.authentication(Authentication::basic()).credentials(Credentials::new(cfg.login.clone(), cfg.secret.clone()))
    }
}

/// A one-line explanation of a store's refusal, with the first line of its body.
fn refusal(what: &str, resp: &mut isahc::Response<Body>) -> String {
    let status = resp.status().as_u16();
    let mut text = String::new();
    let _ = resp.body_mut().take(1024).read_to_string(&mut text);
    let text = text.lines().next().unwrap_or("").trim().to_string();
    let hint = match status {
        401 | 403 => " (check --login and --secret)",
        413 => " (too large for the store)",
        _ => "",
    };
    if text.is_empty() {
        format!("{what}: the store answered {status}{hint}")
    } else {
        format!("{what}: the store answered {status}: {text}{hint}")
    }
}

/// Uploads one blob unless the store has it; returns true if it was uploaded.
fn upload_blob(client: &HttpClient, cfg: &PublishConfig, blob: &Blob) -> Result<bool, String> {
    let shown = blob.path.display();
    let url = proto::url::store_blob(&cfg.stor, &cfg.domain, &blob.md5);
    let head = request(cfg, isahc::Request::head(&url)).body(()).map_err(|e| format!("{shown}: bad store URL: {e}"))?;
    let mut resp = client.send(head).map_err(|e| format!("{shown}: cannot reach the store: {e}"))?;
    match resp.status().as_u16() {
        200 => return Ok(false),
        404 => {}
        _ => return Err(refusal(&format!("{shown}: HEAD"), &mut resp)),
    }
    let file = File::open(&blob.path).map_err(|e| format!("{shown}: {e}"))?;
    let body = Body::from_reader_sized(file.take(blob.size), blob.size);
    let put = request(cfg, isahc::Request::put(&url))
        .header("Content-Type", "application/octet-stream")
        .body(body)
        .map_err(|e| format!("{shown}: bad store URL: {e}"))?;
    let mut resp = client.send(put).map_err(|e| format!("{shown}: upload failed: {e}"))?;
    match resp.status().as_u16() {
        200 | 201 | 204 => Ok(true),
        400 => Err(refusal(&format!("{shown}: upload refused (did the file change while publishing?)"), &mut resp)),
        _ => Err(refusal(&format!("{shown}: upload"), &mut resp)),
    }
}

/// Publishes `cfg.dir` as tree `cfg.ays_id` into the store `cfg.stor`.
pub fn publish(cfg: &PublishConfig) -> Result<PublishSummary, String> {
    let mut cfg = cfg.clone();
    if cfg.domain == proto::EMPTY_DOMAIN_SEGMENT {
        cfg.domain.clear();
    }
    if !proto::is_valid_domain(&cfg.domain) {
        return Err(format!(
            "--domain {:?}: a dedupe domain is up to 64 of A-Z a-z 0-9 . _ - starting with a letter or digit (or _ for none)",
            cfg.domain
        ));
    }
    proto::validate_key("--ays-id", &cfg.ays_id).map_err(|e| e.to_string())?;
    let lower = cfg.stor.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Err(format!("--stor {}: not an http:// or https:// URL", proto::redact_url(&cfg.stor)));
    }

    let (tree, blobs, mut summary) = scan(&cfg.dir)?;
    let tree_body = serde_json::to_vec(&tree).map_err(|e| format!("cannot encode the metadata: {e}"))?;
    if tree_body.len() as u64 > proto::JSON_SIZE_MAX {
        return Err(format!("{}: the metadata of this tree is larger than 64 MiB, the most a store accepts", cfg.dir.display()));
    }
    tracing::info!(files = summary.files, dirs = summary.dirs, blobs = blobs.len(), bytes = summary.bytes, "scanned");

    let client = HttpClient::builder()
        .connect_timeout(Duration::from_secs(10))
        .low_speed_timeout(1024, Duration::from_secs(60))
        .redirect_policy(RedirectPolicy::None)
        .build()
        .map_err(|e| format!("cannot create the HTTP client: {e}"))?;

    // Blobs in parallel; the first error stops the others from starting new uploads.
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<String>> = Mutex::new(None);
    let (up_n, up_b, skip_n, skip_b) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        for _ in 0..cfg.parallel.clamp(1, 32) {
            s.spawn(|| loop {
                if failed.load(Ordering::SeqCst) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(blob) = blobs.get(i) else { return };
                match upload_blob(&client, &cfg, blob) {
                    Ok(true) => {
                        tracing::debug!(path = %blob.path.display(), md5 = %blob.md5, bytes = blob.size, "uploaded");
                        up_n.fetch_add(1, Ordering::SeqCst);
                        up_b.fetch_add(blob.size, Ordering::SeqCst);
                    }
                    Ok(false) => {
                        tracing::debug!(path = %blob.path.display(), md5 = %blob.md5, "already in the store");
                        skip_n.fetch_add(1, Ordering::SeqCst);
                        skip_b.fetch_add(blob.size, Ordering::SeqCst);
                    }
                    Err(e) => {
                        failed.store(true, Ordering::SeqCst);
                        first_error.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    summary.blobs_uploaded = up_n.into_inner();
    summary.bytes_uploaded = up_b.into_inner();
    summary.blobs_skipped += skip_n.into_inner();
    summary.bytes_skipped += skip_b.into_inner();

    let url = proto::url::store_md(&cfg.stor, &cfg.ays_id);
    let put = request(&cfg, isahc::Request::put(&url))
        .header("Content-Type", "application/json")
        .body(tree_body)
        .map_err(|e| format!("bad store URL: {e}"))?;
    let mut resp = client.send(put).map_err(|e| format!("metadata upload failed: {e}"))?;
    match resp.status().as_u16() {
        200 | 201 | 204 => Ok(summary),
        _ => Err(refusal("metadata upload", &mut resp)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn scan_builds_the_tree() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("a/b")).unwrap();
        fs::create_dir(d.path().join("empty")).unwrap();
        fs::write(d.path().join("f"), b"hello").unwrap();
        fs::write(d.path().join("a/b/same"), b"hello").unwrap();
        fs::write(d.path().join("a/tool"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(d.path().join("a/tool"), fs::Permissions::from_mode(0o755)).unwrap();
        let (tree, blobs, s) = scan(d.path()).unwrap();
        assert_eq!(tree.keys().collect::<Vec<_>>(), vec!["/", "/a", "/a/b", "/empty"]);
        assert_eq!(tree["/"]["f"], "5d41402abc4b2a76b9719d911017c592,5");
        assert!(tree["/a"]["tool"].ends_with(",x"));
        assert!(tree["/empty"].is_empty());
        assert_eq!(blobs.len(), 2);
        assert_eq!((s.files, s.dirs, s.blobs_skipped, s.bytes_skipped), (3, 4, 1, 5));
        proto::validate_tree(&tree).unwrap();
    }

    #[test]
    fn symlinks_are_refused_by_name() {
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("link")).unwrap();
        let e = scan(d.path()).err().unwrap();
        assert!(e.contains("link") && e.contains("symbolic link"), "{e}");
    }
}
