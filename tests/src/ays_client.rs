//! Helpers for the aysfs client tests (`tests/ays_client.rs`): a `truckeefs ays mount -c FILE`
//! process with its configuration and log in a fresh directory, a binary-safe Redis client
//! (RESP over TCP) to seed and inspect the local cache and the debug Redis, and md5 hashing.
//!
//! The Redis and cache-server processes come from [`crate::ays`].

use crate::{is_mounted, log_tail, truckeefs_bin, wait_timeout};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A Redis reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resp {
    Nil,
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Array(Vec<Resp>),
}

impl Resp {
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Resp::Bulk(b) => Some(b),
            _ => None,
        }
    }

    pub fn text(&self) -> Option<String> {
        self.bytes().map(|b| String::from_utf8_lossy(b).into_owned())
    }

    pub fn array(&self) -> Vec<Resp> {
        match self {
            Resp::Array(a) => a.clone(),
            _ => Vec::new(),
        }
    }
}

/// Sends one command to the Redis on `127.0.0.1:port` and reads its reply. Binary-safe.
pub fn redis(port: u16, args: &[&[u8]]) -> Resp {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to redis");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        req.extend_from_slice(a);
        req.extend_from_slice(b"\r\n");
    }
    s.write_all(&req).expect("write to redis");
    let mut r = BufReader::new(s);
    read_resp(&mut r)
}

fn read_resp(r: &mut impl BufRead) -> Resp {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line).expect("read from redis");
    let text = String::from_utf8_lossy(&line[1..line.len().saturating_sub(2).max(1)]).into_owned();
    match line.first() {
        Some(b'+') => Resp::Status(text),
        Some(b'-') => Resp::Error(text),
        Some(b':') => Resp::Int(text.parse().unwrap_or_default()),
        Some(b'$') => {
            let n: i64 = text.parse().unwrap_or(-1);
            if n < 0 {
                return Resp::Nil;
            }
            let mut buf = vec![0u8; n as usize + 2];
            r.read_exact(&mut buf).expect("read bulk");
            buf.truncate(n as usize);
            Resp::Bulk(buf)
        }
        Some(b'*') => {
            let n: i64 = text.parse().unwrap_or(-1);
            if n < 0 {
                return Resp::Nil;
            }
            Resp::Array((0..n).map(|_| read_resp(r)).collect())
        }
        _ => panic!("bad redis reply {line:?}"),
    }
}

/// `HSET key field value` (binary-safe).
pub fn hset(port: u16, key: &str, field: &str, value: &[u8]) {
    let r = redis(port, &[b"HSET", key.as_bytes(), field.as_bytes(), value]);
    assert!(matches!(r, Resp::Int(_)), "HSET {key} {field}: {r:?}");
}

/// `HGET key field`.
pub fn hget(port: u16, key: &str, field: &str) -> Option<Vec<u8>> {
    redis(port, &[b"HGET", key.as_bytes(), field.as_bytes()]).bytes().map(<[u8]>::to_vec)
}

/// The md5 of `data` in lowercase hex (coreutils' `md5sum`).
pub fn md5_hex(data: &[u8]) -> String {
    let mut child = Command::new("md5sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("md5sum");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = data.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().expect("md5sum");
    let _ = writer.join();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().expect("md5sum output").to_string()
}

/// A tree to seed: path under the root (`/a/b.txt`) -> (content, executable). Directories are
/// those of the files, plus `extra_dirs`.
pub struct Tree {
    pub files: Vec<(String, Vec<u8>, bool)>,
    pub extra_dirs: Vec<String>,
}

impl Tree {
    /// The `md:` hash fields: directory path -> JSON object of name -> "md5,size[,x]".
    pub fn md_fields(&self) -> Vec<(String, String)> {
        let mut dirs: std::collections::BTreeMap<String, serde_json::Map<String, serde_json::Value>> = Default::default();
        dirs.insert("/".into(), Default::default());
        for d in &self.extra_dirs {
            add_dirs(&mut dirs, d);
        }
        for (path, data, exec) in &self.files {
            let (dir, name) = path.rsplit_once('/').unwrap();
            let dir = if dir.is_empty() { "/".to_string() } else { dir.to_string() };
            add_dirs(&mut dirs, &dir);
            let v = format!("{},{}{}", md5_hex(data), data.len(), if *exec { ",x" } else { "" });
            dirs.get_mut(&dir).unwrap().insert(name.to_string(), serde_json::Value::String(v));
        }
        dirs.into_iter().map(|(k, v)| (k, serde_json::Value::Object(v).to_string())).collect()
    }

    /// Writes the tree into a Redis as `md:$ays_id` and `files:$domain`.
    pub fn seed_redis(&self, port: u16, ays_id: &str, domain: &str) {
        for (dir, json) in self.md_fields() {
            hset(port, &format!("md:{ays_id}"), &dir, json.as_bytes());
        }
        for (_, data, _) in &self.files {
            hset(port, &format!("files:{domain}"), &md5_hex(data), data);
        }
    }

    /// Writes the tree into a directory (to publish it).
    pub fn write_dir(&self, dir: &Path) {
        fs::create_dir_all(dir).unwrap();
        for d in &self.extra_dirs {
            fs::create_dir_all(dir.join(d.trim_start_matches('/'))).unwrap();
        }
        for (path, data, exec) in &self.files {
            let p = dir.join(path.trim_start_matches('/'));
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, data).unwrap();
            if *exec {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
    }

    /// Asserts the tree reads back byte-exact under `root`, with sizes, modes and owner.
    pub fn assert_matches(&self, root: &Path) {
        use std::os::unix::fs::MetadataExt;
        for (path, data, exec) in &self.files {
            let p = root.join(path.trim_start_matches('/'));
            let m = fs::metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert_eq!(m.len(), data.len() as u64, "size of {path}");
            assert_eq!(m.mode() & 0o7777, if *exec { 0o755 } else { 0o644 }, "mode of {path}");
            assert_eq!((m.uid(), m.gid()), (0, 0), "owner of {path}");
            let got = fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
            assert!(got == *data, "content of {path} differs ({} bytes read, {} expected)", got.len(), data.len());
        }
    }
}

fn add_dirs(dirs: &mut std::collections::BTreeMap<String, serde_json::Map<String, serde_json::Value>>, dir: &str) {
    let mut cur = String::new();
    for part in dir.split('/').filter(|s| !s.is_empty()) {
        cur.push('/');
        cur.push_str(part);
        dirs.entry(cur.clone()).or_default();
    }
}

/// Deterministic pseudo-random bytes.
pub fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A `truckeefs ays mount -c FILE` process. Its directory holds the configuration
/// (`client.toml`), the log (`client.log`), the blob cache (`cache/`) and mount points.
pub struct AysClient {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
}

impl Default for AysClient {
    fn default() -> Self {
        AysClient::new()
    }
}

impl AysClient {
    pub fn new() -> AysClient {
        AysClient { child: None, dir: tempfile::Builder::new().prefix("ays-client-").tempdir().expect("tempdir") }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn config_path(&self) -> PathBuf {
        self.path("client.toml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.path("client.log")
    }

    /// Writes the configuration; `{dir}` in it becomes this client's directory. A `[main]`
    /// without `cache_dir` gets `cache_dir = "{dir}/cache"` when the text has `[main]` first.
    pub fn write_config(&self, text: &str) {
        let text = text.replace("{dir}", &self.dir.path().display().to_string());
        // Write then rename, so the watcher never reads half a file.
        let tmp = self.path("client.toml.tmp");
        fs::write(&tmp, text).expect("write config");
        fs::rename(&tmp, self.config_path()).expect("rename config");
    }

    /// Starts the client.
    pub fn spawn(&mut self) {
        let log = fs::OpenOptions::new().create(true).append(true).open(self.log_path()).expect("log");
        let child = Command::new(truckeefs_bin())
            .args(["ays", "mount", "-v", "-c"])
            .arg(self.config_path())
            .env("RUST_LOG", "debug,fuser=info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn truckeefs ays mount");
        self.child = Some(child);
    }

    /// Starts the client and waits until every path in `mounts` is mounted.
    pub fn start(&mut self, mounts: &[&Path]) {
        self.spawn();
        for m in mounts {
            self.wait_mounted(m);
        }
    }

    pub fn wait_mounted(&mut self, path: &Path) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !is_mounted(path) {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("ays mount exited ({st}) before {} was mounted; log:\n{}", path.display(), self.log_tail());
                }
            }
            assert!(Instant::now() < deadline, "{} not mounted after 20 s; log:\n{}", path.display(), self.log_tail());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait_unmounted(&self, path: &Path) -> bool {
        crate::ays::eventually(Duration::from_secs(20), || !is_mounted(path))
    }

    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.log_path()).unwrap_or_default()).into_owned()
    }

    pub fn log_tail(&self) -> String {
        log_tail(&self.log_path(), 60)
    }

    /// Waits until the log has a line containing `needle`.
    pub fn wait_log(&self, needle: &str) -> bool {
        crate::ays::eventually(Duration::from_secs(20), || self.log_text().contains(needle))
    }

    /// Whether the process has exited (and how), without waiting.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let c = self.child.as_mut()?;
        wait_timeout(c, timeout)
    }

    /// Sends `sig` and waits for the process to end.
    pub fn signal_and_wait(&mut self, sig: i32) -> Option<ExitStatus> {
        let c = self.child.as_mut()?;
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(c.id() as i32, sig) };
        wait_timeout(c, Duration::from_secs(30))
    }

    fn cleanup_mounts(&self) {
        let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else { return };
        let root = self.dir.path().display().to_string();
        let mut points: Vec<String> =
            info.lines().filter_map(|l| l.split(' ').nth(4)).filter(|p| p.starts_with(&root)).map(str::to_string).collect();
        points.sort();
        for p in points.iter().rev() {
            let _ = Command::new("fusermount3").args(["-uz", p]).stderr(Stdio::null()).status();
        }
    }
}

impl Drop for AysClient {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if matches!(c.try_wait(), Ok(None)) {
                // SAFETY: kill(2) on our own child's pid.
                unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
                if wait_timeout(&mut c, Duration::from_secs(15)).is_none() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
        }
        self.cleanup_mounts();
    }
}

/// Runs `truckeefs ays mount -c FILE` expecting it to fail at once; returns (exit code, stderr).
pub fn mount_fails(config_text: &str) -> (Option<i32>, String) {
    let c = AysClient::new();
    c.write_config(config_text);
    let mut child = Command::new(truckeefs_bin())
        .args(["ays", "mount", "-c"])
        .arg(c.config_path())
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let st = wait_timeout(&mut child, Duration::from_secs(20));
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    if st.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    (st.and_then(|s| s.code()), err)
}
