//! Helpers for the aysfs tests: a `truckeefs ays serve` process on a free loopback port, a
//! `redis-server` started for one test, `truckeefs ays publish`, and a raw HTTP/1.1 client
//! (raw so that tests can send exactly the path they mean: `..`, `%2e%2e` and the like, which
//! real clients normalize away).

use crate::{log_tail, truckeefs_bin, wait_timeout};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long a server may take to print "listening on ...".
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `truckeefs ays serve`. Dropping it stops it (SIGTERM, then SIGKILL).
pub struct AysServer {
    child: Option<Child>,
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// Its `--data-dir` when it uses the embedded store.
    pub data_dir: Option<PathBuf>,
    /// stderr of the server (its log).
    pub log: PathBuf,
    _tmp: tempfile::TempDir,
}

impl AysServer {
    /// Starts a server with an embedded store in a fresh directory and these extra arguments.
    pub fn start(extra: &[&str]) -> AysServer {
        AysServer::start_env(extra, &[])
    }

    /// Starts a server; `--data-dir` (fresh) is added unless `extra` names `--data-dir` or
    /// `--redis`.
    pub fn start_env(extra: &[&str], env: &[(&str, &str)]) -> AysServer {
        let tmp = tempfile::Builder::new().prefix("ays-server-").tempdir().expect("tempdir");
        let log = tmp.path().join("server.log");
        let mut args: Vec<String> = vec!["ays".into(), "serve".into(), "-v".into(), "--listen".into(), "127.0.0.1:0".into()];
        let mut data_dir = None;
        if !extra.iter().any(|a| *a == "--data-dir" || *a == "--redis") {
            let d = tmp.path().join("data");
            args.push("--data-dir".into());
            args.push(d.display().to_string());
            data_dir = Some(d);
        }
        if let Some(i) = extra.iter().position(|a| *a == "--data-dir") {
            data_dir = extra.get(i + 1).map(PathBuf::from);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut cmd = Command::new(truckeefs_bin());
        cmd.args(&args)
            .env("RUST_LOG", "debug")
            .env("NO_COLOR", "1")
            .env_remove("TRUCKEEFS_AYS_PASSWD")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&log).expect("log file"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn truckeefs ays serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep reading so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("ays serve did not start; log:\n{}", log_tail(&log, 40));
            }
        };
        let addr = line.strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected first line {line:?}")).to_string();
        AysServer { child: Some(child), addr, data_dir, log, _tmp: tmp }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The base URL `S` of its store routes.
    pub fn stor_url(&self) -> String {
        format!("http://{}/stor", self.addr)
    }

    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// Sends `sig` and waits for the exit (at most 10 s).
    pub fn stop_with(mut self, sig: i32) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, sig) };
        match wait_timeout(&mut child, Duration::from_secs(10)) {
            Some(s) => s,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("ays serve did not stop on signal {sig}; log:\n{}", log_tail(&self.log, 40));
            }
        }
    }

    /// A request to this server.
    pub fn req(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpReply {
        http(&self.addr, method, path, headers, body)
    }

    pub fn get(&self, path: &str) -> HttpReply {
        self.req("GET", path, &[], b"")
    }
}

impl Drop for AysServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            if wait_timeout(&mut child, Duration::from_secs(5)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    /// Names in lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// One HTTP/1.1 request on a new connection (`Connection: close`), `path` sent as given.
pub fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpReply {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    let has_framing =
        headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding"));
    if !has_framing && (!body.is_empty() || method == "PUT" || method == "POST") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (and close) before reading a refused body.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_reply(&raw, method == "HEAD").unwrap_or_else(|| panic!("malformed answer to {method} {path}: {:?}", String::from_utf8_lossy(&raw)))
}

/// Parses an answer read to EOF.
pub fn parse_reply(raw: &[u8], head_only: bool) -> Option<HttpReply> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if head_only {
        body.clear();
    } else if let Some(n) = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse::<usize>().ok()) {
        body.truncate(n);
    }
    Some(HttpReply { status, headers, body })
}

/// `Authorization: Basic ...` for `login:passwd`.
pub fn basic_auth(login: &str, passwd: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{login}:{passwd}").into_bytes();
    let mut out = String::from("Basic ");
    for c in input.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Percent-encodes one URL segment (all but `A-Z a-z 0-9 - . _ ~`).
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The md5 of a file, with coreutils' `md5sum`.
pub fn md5_of(path: &Path) -> String {
    let out = Command::new("md5sum").arg(path).output().expect("md5sum");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().expect("md5sum output").to_string()
}

/// Runs `truckeefs ays publish` with these arguments (and env).
pub fn publish(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(truckeefs_bin());
    cmd.arg("ays").arg("publish").args(args).env("NO_COLOR", "1").env_remove("TRUCKEEFS_AYS_SECRET");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("spawn truckeefs ays publish")
}

/// Publishes `dir` into store `stor` and panics unless it worked; returns stdout.
pub fn publish_ok(stor: &str, ays_id: &str, domain: &str, dir: &Path) -> String {
    let out = publish(&["--stor", stor, "--ays-id", ays_id, "--domain", domain, &dir.display().to_string()], &[]);
    assert!(
        out.status.success(),
        "publish failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `f` every 20 ms until it is true, at most `timeout`.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A `redis-server` on a free loopback port, without persistence, stopped on drop.
pub struct RedisServer {
    child: Child,
    pub port: u16,
    /// Its working directory (`--dir`), kept for a restart.
    tmp: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one. Panics with what to install when `redis-server` is missing.
    pub fn start() -> RedisServer {
        assert!(
            Command::new("redis-server").arg("--version").output().is_ok(),
            "redis-server is not installed: run scripts/install-deps.sh (apt-get install redis-server)"
        );
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
            let tmp = tempfile::Builder::new().prefix("ays-redis-").tempdir().expect("tempdir");
            if let Some(child) = spawn_redis(port, tmp.path()) {
                return RedisServer { child, port, tmp };
            }
        }
        panic!("could not start redis-server on a free port");
    }

    /// Kills the server and starts a new one, empty, on the same port after `down` (as a Redis
    /// without persistence does when it restarts: every key and subscription is gone).
    pub fn restart_empty(&mut self, down: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down);
        for _ in 0..50 {
            if let Some(child) = spawn_redis(self.port, self.tmp.path()) {
                self.child = child;
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("could not start redis-server again on port {}", self.port);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Runs `redis-cli` against it; returns its raw stdout without the final newline.
    pub fn cli(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new("redis-cli").args(["-p", &self.port.to_string()]).args(args).output().expect("redis-cli");
        let mut v = out.stdout;
        if v.last() == Some(&b'\n') {
            v.pop();
        }
        v
    }

    pub fn cli_text(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.cli(args)).into_owned()
    }
}

/// Starts `redis-server` on `port` (no persistence); `None` if it did not come up (the port
/// was taken).
fn spawn_redis(port: u16, dir: &Path) -> Option<Child> {
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn redis-server");
    let up = eventually(Duration::from_secs(5), || {
        if let Ok(Some(_)) = child.try_wait() {
            return true; // exited: the port was taken
        }
        redis_ping(port)
    });
    if up && matches!(child.try_wait(), Ok(None)) {
        return Some(child);
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn redis_ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
