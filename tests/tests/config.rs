//! `truckeefs config` end to end: the effective configuration from a file, the environment and
//! flags, its errors, and secrets kept out of its output and out of `ps`.

use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use truckeefs_tests::truckeefs_bin;

/// A directory write cap of the right form (no grid has it).
const CAP: &str = "URI:DIR2:ovjtm4jmq2ghvsxz5sd7bqumya:ylltpw6vsn3yenq2kjdfpxzv3ezmg6w6wy3ud4fv3nbwhmkq3bja";

/// `truckeefs ARGS` with only `HOME` and `env` in its environment, so the caller's does not leak
/// into what is checked.
fn truckeefs(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(truckeefs_bin());
    cmd.args(args).env_clear().env("HOME", "/home/cfgtest").envs(env.iter().copied()).stdin(Stdio::null());
    cmd
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    truckeefs(args, env).output().expect("run truckeefs")
}

/// The value and source columns of `key`'s row in `truckeefs config` output.
fn row(out: &str, key: &str) -> String {
    let line = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some(key))
        .unwrap_or_else(|| panic!("no row for {key} in:\n{out}"));
    line.split_whitespace().skip(1).collect::<Vec<_>>().join(" ")
}

#[test]
fn config_prints_file_env_and_flags_with_their_sources() {
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("sql.pass");
    fs::write(&pass, "pw-in-a-file\n").unwrap();
    let file = dir.path().join("env.yaml");
    fs::write(
        &file,
        format!(
            "sql_host: \"db.example:3307\"\ncache_ttl: inf\ncache_size: 1k\nsql_pass_file: {}\nrootcap: {CAP}\n",
            pass.display()
        ),
    )
    .unwrap();
    let f = file.display().to_string();
    let out = run(
        &["config", "-c", &f, "--cache-size", "3k", "--test-functionality", "yes", "--backend-storage-strategy", "mirror"],
        &[("TRUCKEEFS_CACHE_SIZE", "2MiB"), ("redis_host", "[::1]:6390"), ("TRUCKEEFS_NET_TIMEOUT", "2.5")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(row(&stdout, "cache_size"), "3000 flag --cache-size");
    assert_eq!(row(&stdout, "cache_ttl"), format!("inf file {f}"));
    assert_eq!(row(&stdout, "sql_host"), format!("db.example file {f}"));
    assert_eq!(row(&stdout, "sql_port"), format!("3307 port in sql_host (file {f})"));
    assert_eq!(row(&stdout, "redis_host"), "::1 env redis_host");
    assert_eq!(row(&stdout, "redis_port"), "6390 port in redis_host (env redis_host)");
    assert_eq!(row(&stdout, "net_timeout"), "2.5 env TRUCKEEFS_NET_TIMEOUT");
    assert_eq!(row(&stdout, "test_functionality"), "true flag --test-functionality");
    assert_eq!(row(&stdout, "backend_storage_strategy"), "MIRROR flag --backend-storage-strategy");
    assert_eq!(row(&stdout, "data_dir"), "/home/cfgtest/.local/share/truckeefs default");
    let sql_pass = row(&stdout, "sql_pass");
    assert!(sql_pass.starts_with("secret#"), "{sql_pass}");
    assert!(sql_pass.ends_with(&format!("file {} (sql_pass_file from file {f})", pass.display())), "{sql_pass}");
    assert!(row(&stdout, "rootcap").starts_with("secret#"));
    assert!(!stdout.contains("pw-in-a-file") && !stdout.contains(&CAP[10..]), "{stdout}");
    // Every key has a row, under a header.
    // A header and one row per key of fuse-front/src/config.rs `KEYS` (33).
    assert_eq!(stdout.lines().count(), 1 + 33, "{stdout}");
}

#[test]
fn a_bad_value_is_one_line_naming_key_and_source() {
    let out = run(&["config", "--sql-port", "0"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("truckeefs: sql_port from flag --sql-port: \"0\" is not a port"), "{stderr}");

    let out = run(&["config"], &[("TRUCKEEFS_CACHE_TTL", "forever")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.starts_with("truckeefs: cache_ttl from env TRUCKEEFS_CACHE_TTL: "), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.json");
    fs::write(&file, r#"{"sql_host": "db", "sql_hots": "db"}"#).unwrap();
    let out = run(&["config", "-c", &file.display().to_string()], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with(&format!("truckeefs: sql_hots from file {}: unknown key", file.display())), "{stderr}");

    // A malformed rootcap is refused without being printed.
    let bad = format!("{CAP}x");
    let out = run(&["config", "--rootcap", &bad], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.starts_with("truckeefs: rootcap from flag --rootcap: "), "{stderr}");
    assert!(!stderr.contains(&bad[10..]), "{stderr}");
}

/// Opens the FIFO at `path` for writing once a reader has opened it, failing if `child` exits
/// first or nothing opens it within 20 s.
fn open_fifo_writer(path: &Path, child: &mut std::process::Child) -> fs::File {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Non-blocking: ENXIO while no process has the FIFO open for reading.
        match fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(path) {
            Ok(f) => return f,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {}
            Err(e) => panic!("open {}: {e}", path.display()),
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child.stderr.take().map(|mut s| s.read_to_string(&mut err));
            panic!("truckeefs exited ({status}) before reading its configuration: {err}");
        }
        assert!(Instant::now() < deadline, "truckeefs never opened its configuration file");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Nor in `/proc/PID/environ` (`ps e`, for its own user and root) of a running mount: the
/// re-execution carries a secret flag's value in the environment, and the mount overwrites it
/// there once read (removing the variable leaves the block `/proc` shows as it was).
#[test]
fn secret_flags_are_not_in_the_environment_of_a_running_mount() {
    let (data, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let m = truckeefs_tests::Mount::with_dirs_args(data.path(), cache.path(), &["--auth-token=hunter2hunter2"]);
    let environ = fs::read(format!("/proc/{}/environ", m.pid())).unwrap();
    let environ = String::from_utf8_lossy(&environ).replace('\0', "\n");
    assert!(environ.contains("TRUCKEEFS_FLAG_AUTH_TOKEN=**************"), "the flag went another way: {environ}");
    assert!(!environ.contains("hunter2"), "{environ}");
    let cmdline = fs::read(format!("/proc/{}/cmdline", m.pid())).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains("hunter2"));
    m.unmount_ok();
}

/// A secret flag must not be visible in `/proc/PID/cmdline` (which `ps` shows to every user) while
/// the process runs. The configuration file is a FIFO, so the process waits in its open until
/// the test writes it, and the test reads the command line of the process at exactly that point:
/// after the re-execution that moves the flag to the environment, which happens before the file
/// is read.
#[test]
fn secret_flags_are_not_in_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("config.fifo");
    let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let f = fifo.display().to_string();
    let mut child = truckeefs(&["config", "-c", &f, "--rootcap", CAP, "--sql-pass=hunter2hunter2", "--sql-db", "fs"], &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut writer = open_fifo_writer(&fifo, &mut child);
    let cmdline = fs::read(format!("/proc/{}/cmdline", child.id())).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(cmdline.contains("config") && cmdline.contains("--sql-db fs"), "not the process expected: {cmdline}");
    assert!(!cmdline.contains(CAP) && !cmdline.contains("--rootcap"), "{cmdline}");
    assert!(!cmdline.contains("hunter2") && !cmdline.contains("--sql-pass"), "{cmdline}");
    writer.write_all(b"sql_user: u\n").unwrap();
    drop(writer);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{out:?}");
    assert!(row(&stdout, "rootcap").ends_with(" flag --rootcap"), "{stdout}");
    assert!(row(&stdout, "sql_pass").ends_with(" flag --sql-pass"), "{stdout}");
    assert_eq!(row(&stdout, "sql_user"), format!("u file {f}"));
    let all = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(!all.contains(&CAP[10..]) && !all.contains("hunter2"), "{all}");
}
