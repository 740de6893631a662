//! Self-tests (README.md, Self-tests): `truckeefs check` against the harness's MariaDB, Tahoe
//! grid and Redis, its one-line failures for each broken service, and the `test_*` keys at
//! mount. No output may contain a secret.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use truckeefs_tests::ays::RedisServer;
use truckeefs_tests::mariadb::MariaDb;
use truckeefs_tests::tahoe_grid::TahoeGrid;
use truckeefs_tests::*;

/// A configuration file naming the harness's services, with private data and cache
/// directories and a fresh rootcap and database.
struct Production {
    dir: tempfile::TempDir,
    config: PathBuf,
    rootcap: String,
    password: String,
}

impl Production {
    fn new(extra: &str) -> Production {
        let db = MariaDb::shared();
        let grid = TahoeGrid::shared();
        let dir = tempfile::Builder::new().prefix("truckeefs-selftest-").tempdir().unwrap();
        let rootcap = grid.mkdir();
        let config = dir.path().join("env.yaml");
        let yaml = format!(
            "rootcap: {rootcap}\ntahoe_url: {url}\nsql_host: {host}:{port}\nsql_user: {user}\nsql_pass: {pass}\n\
             sql_db: {name}\ndata_dir: {data}\ncache_dir: {cache}\nnet_timeout: 10\n{extra}",
            url = grid.url,
            host = db.host(),
            port = db.port(),
            user = db.user(),
            pass = db.password(),
            name = db.unique_db_name("selftest"),
            data = dir.path().join("data").display(),
            cache = dir.path().join("cache").display(),
        );
        fs::write(&config, yaml).unwrap();
        Production { config, rootcap, password: db.password().to_string(), dir }
    }

    /// `truckeefs check -c CONFIG ARGS`.
    fn check(&self, args: &[&str]) -> (Output, String) {
        let out = Command::new(truckeefs_bin())
            .arg("check")
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run truckeefs check");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        self.assert_no_secret(&text);
        eprintln!("--- truckeefs check {args:?}:\n{text}");
        (out, text)
    }

    fn assert_no_secret(&self, text: &str) {
        assert!(!text.contains(&self.rootcap), "the rootcap appears in:\n{text}");
        assert!(!text.contains(&self.password), "the SQL password appears in:\n{text}");
        // Nor any other cap (a hint may name the form, `URI:DIR2:...`).
        let cap = text.match_indices("URI:DIR2:").any(|(i, m)| {
            text[i + m.len()..].chars().next().is_some_and(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c))
        });
        assert!(!cap, "a cap appears in:\n{text}");
    }

    /// The names linked in the rootcap directory.
    fn rootcap_names(&self) -> Vec<String> {
        let (status, body) = TahoeGrid::shared()
            .http("GET", &format!("/uri/{}?t=json", self.rootcap.replace(':', "%3A")), b"")
            .expect("list the rootcap");
        assert_eq!(status, 200, "list the rootcap: {}", String::from_utf8_lossy(&body));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        v[1]["children"].as_object().map(|c| c.keys().cloned().collect()).unwrap_or_default()
    }
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn failed_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.starts_with("FAILED")).collect()
}

/// Exactly one check failed, in `suite`, and its line says each of `words`.
fn assert_one_failure(out: &Output, text: &str, suite: &str, words: &[&str]) {
    assert!(!out.status.success(), "check passed:\n{text}");
    let failed = failed_lines(text);
    assert_eq!(failed.len(), 1, "one failure expected:\n{text}");
    let line = failed[0];
    assert!(line.split_whitespace().nth(1) == Some(suite), "not a {suite} failure: {line}");
    for w in words {
        assert!(line.contains(w), "{w:?} missing from: {line}");
    }
    assert!(text.contains("skipped functionality not run"), "functionality must not run:\n{text}");
}

#[test]
fn check_passes_against_mariadb_tahoe_and_redis_and_leaves_nothing_behind() {
    let redis = RedisServer::start();
    let p = Production::new(&format!("redis_host: 127.0.0.1:{}\nredis_prefix: \"st:\"\n", redis.port));
    let (out, text) = p.check(&[]);
    assert!(out.status.success(), "check failed:\n{text}");
    assert!(failed_lines(&text).is_empty(), "{text}");
    for want in [
        "ok      compatibility kernel",
        "ok      integration   tahoe gateway",
        "is writable",
        "ok      integration   sql server",
        "ok      integration   redis 127.0.0.1:",
        "ok      functionality rename (move)",
        "ok      functionality copy the file",
        "ok      functionality ENOTEMPTY",
        "ok      functionality nothing left behind",
        "checks passed",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    // Every check is one line with its status first.
    for line in text.lines().filter(|l| l.contains("functionality") || l.contains("integration")) {
        assert!(["ok ", "skipped ", "FAILED "].iter().any(|s| line.starts_with(s)) || line.contains(" INFO "), "{line}");
    }
    // Nothing left in the grid's directory (the deletes may trail the unmount), nor in Redis.
    let empty = poll_until(Duration::from_secs(20), || p.rootcap_names().is_empty());
    assert!(empty, "left in the rootcap: {:?}", p.rootcap_names());
    // Only the filesystem's fencing-token counter may stay (state of the filesystem, like the
    // metadata schema; deleting it under live hosts would be wrong).
    let keys = redis.cli_text(&["KEYS", "*"]);
    assert!(keys.is_empty() || keys == "st:fence", "keys left in Redis: {keys:?}");
}

#[test]
fn check_fails_with_one_line_for_a_wrong_sql_password() {
    let p = Production::new("");
    let (out, text) = p.check(&["--sql-pass", "Not-The-Password-42"]);
    assert!(!text.contains("Not-The-Password-42"), "the wrong password appears in:\n{text}");
    assert_one_failure(&out, &text, "integration", &["sql server", "access denied"]);
}

#[test]
fn check_fails_with_one_line_for_an_unreachable_gateway() {
    let p = Production::new("");
    let port = closed_port();
    let (out, text) = p.check(&["--tahoe-url", &format!("http://127.0.0.1:{port}")]);
    assert_one_failure(&out, &text, "integration", &["tahoe", &format!("127.0.0.1:{port}"), "unreachable"]);
}

#[test]
fn check_fails_with_one_line_for_a_malformed_rootcap() {
    let p = Production::new("");
    // Malformed: refused by the configuration, naming the key and not the value.
    let bad = "URI:DIR2:not-a-real-key:zzzz";
    let (out, text) = p.check(&["--rootcap", bad]);
    assert!(!out.status.success(), "{text}");
    assert!(!text.contains("not-a-real-key"), "{text}");
    assert_eq!(text.trim().lines().count(), 1, "{text}");
    assert!(text.contains("rootcap from flag --rootcap: malformed"), "{text}");
    // Well-formed but of no grid: the integration test says so.
    let mut other = p.rootcap.clone().into_bytes();
    let i = "URI:DIR2:".len() + 3;
    other[i] = if other[i] == b'a' { b'b' } else { b'a' };
    let other = String::from_utf8(other).unwrap();
    let (out, text) = p.check(&["--rootcap", &other]);
    assert!(!text.contains(&other), "{text}");
    assert_one_failure(&out, &text, "integration", &["rootcap secret#", "not in this grid"]);
}

#[test]
fn check_fails_with_one_line_when_redis_is_down() {
    let port = closed_port();
    let p = Production::new(&format!("redis_host: 127.0.0.1:{port}\n"));
    let (out, text) = p.check(&[]);
    assert_one_failure(&out, &text, "integration", &["redis", &format!("127.0.0.1:{port}"), "cannot connect"]);
}

/// `truckeefs mount -c CONFIG ARGS MOUNTPOINT` that is expected to fail: its output, and whether
/// it mounted.
fn failing_mount(p: &Production, args: &[&str]) -> RunOutcome {
    let mnt = p.dir.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let mut all: Vec<&std::ffi::OsStr> = vec![os("mount"), os("-c"), p.config.as_os_str()];
    all.extend(args.iter().map(|a| os(a)));
    all.push(mnt.as_os_str());
    let run = run_truckeefs(&all, Some(&mnt), Duration::from_secs(60));
    p.assert_no_secret(&run.output);
    eprintln!("--- truckeefs mount {args:?}:\n{}", run.output);
    run
}

#[test]
fn mount_with_test_integration_refuses_an_unreachable_gateway() {
    let p = Production::new("");
    let port = closed_port();
    let run = failing_mount(&p, &["--tahoe-url", &format!("http://127.0.0.1:{port}")]);
    assert!(!run.mounted, "mounted anyway:\n{}", run.output);
    assert!(run.status.is_some_and(|s| !s.success()), "exit status {:?}:\n{}", run.status, run.output);
    let message: Vec<&str> = run.output.lines().filter(|l| l.starts_with("truckeefs: ")).collect();
    assert_eq!(message.len(), 1, "{}", run.output);
    // Not said again as a log line (the log goes to the same stderr), nor by the HTTP client.
    assert!(!run.output.contains("ERROR") && !run.output.contains("WARN"), "{}", run.output);
    for w in ["self-test failed: integration: tahoe", &format!("127.0.0.1:{port}"), "unreachable", "test_integration false"] {
        assert!(message[0].contains(w), "{w:?} missing from {}", message[0]);
    }
    // Nothing was started: no metadata database was made.
    assert!(!p.dir.path().join("data").join("lock").exists(), "the runtime started");
}

#[test]
fn mount_with_test_integration_refuses_a_wrong_sql_password_and_a_redis_that_is_down() {
    let p = Production::new("");
    let run = failing_mount(&p, &["--sql-pass", "Not-The-Password-42"]);
    assert!(!run.mounted && run.status.is_some_and(|s| !s.success()), "{}", run.output);
    assert!(!run.output.contains("Not-The-Password-42"), "{}", run.output);
    assert!(run.output.contains("self-test failed: integration: sql server"), "{}", run.output);

    let port = closed_port();
    let run = failing_mount(&p, &["--redis-host", &format!("127.0.0.1:{port}")]);
    assert!(!run.mounted && run.status.is_some_and(|s| !s.success()), "{}", run.output);
    assert!(run.output.contains("self-test failed: integration: redis"), "{}", run.output);
}

#[test]
fn mount_without_test_integration_skips_it() {
    // An unreachable gateway is then found by the mount itself, later; the self-test must not
    // be what refuses it.
    let p = Production::new("");
    let port = closed_port();
    let run = failing_mount(&p, &["--test-integration", "false", "--tahoe-url", &format!("http://127.0.0.1:{port}")]);
    assert!(!run.output.contains("self-test failed"), "{}", run.output);
}

/// Waits until the mount's log (it runs with -v) shows the functionality tests finished.
fn wait_for_functionality(m: &Mount) -> String {
    let done = poll_until(Duration::from_secs(60), || {
        let log = fs::read_to_string(m.log_path()).unwrap_or_default();
        log.contains("nothing left behind") || log.contains("FAILED") || log.contains("skipped functionality")
    });
    let log = fs::read_to_string(m.log_path()).unwrap_or_default();
    assert!(done, "the functionality tests did not finish:\n{log}");
    log
}

#[test]
fn mount_with_test_functionality_on_a_fresh_filesystem_leaves_nothing_behind() {
    let p = Production::new("");
    let data = p.dir.path().join("data");
    let cache = p.dir.path().join("cache");
    let c = p.config.display().to_string();
    let m = Mount::with_dirs_args(&data, &cache, &["-c", &c, "--test-functionality", "true"]);
    let log = wait_for_functionality(&m);
    assert!(!log.contains("FAILED"), "{log}");
    assert!(log.contains("self-test ok      functionality ENOTEMPTY"), "{log}");
    assert!(log.contains("self-test ok      functionality nothing left behind"), "{log}");
    p.assert_no_secret(&log);
    assert_eq!(names(&m.dir), Vec::<String>::new(), "the root is not empty");
    let empty = poll_until(Duration::from_secs(20), || p.rootcap_names().is_empty());
    assert!(empty, "left in the rootcap: {:?}", p.rootcap_names());
    // The mount keeps running and works.
    let mut f = fs::File::create(m.path("after")).unwrap();
    std::io::Write::write_all(&mut f, b"x").unwrap();
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(fs::read(m.path("after")).unwrap(), b"x");
    fs::remove_file(m.path("after")).unwrap();
    m.unmount_ok();
    let empty = poll_until(Duration::from_secs(20), || p.rootcap_names().is_empty());
    assert!(empty, "left in the rootcap after a user's file: {:?}", p.rootcap_names());

    // Not fresh any more: the tests are skipped, and say so.
    let m = Mount::with_dirs_args(&data, &cache, &["-c", &c, "--test-functionality", "true"]);
    fs::write(m.path("user-file"), b"mine").unwrap();
    m.unmount_ok();
    let m = Mount::with_dirs_args(&data, &cache, &["-c", &c, "--test-functionality", "true"]);
    let log = wait_for_functionality(&m);
    assert!(log.contains("skipped functionality not run: the filesystem is not empty"), "{log}");
    assert_eq!(names(&m.dir), vec!["user-file".to_string()]);
    m.unmount_ok();
}

#[test]
fn embedded_mount_with_test_functionality_leaves_nothing_behind() {
    let m = Mount::new_with_args(&["--test-functionality", "true"]);
    let log = wait_for_functionality(&m);
    assert!(log.contains("nothing left behind") && !log.contains("FAILED"), "{log}");
    assert_eq!(names(&m.dir), Vec::<String>::new());
    m.unmount_ok();
}

#[test]
fn check_command_line_errors() {
    let out = Command::new(truckeefs_bin()).args(["check", "-o", "ro"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("mount options belong to 'truckeefs mount'"));
    let out = Command::new(truckeefs_bin()).args(["check", "/mnt"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("unexpected argument '/mnt'"));
    let help = Command::new(truckeefs_bin()).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("truckeefs check [-c FILE]"));
}
