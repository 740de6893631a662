use super::value::tests::CAP;
use super::*;
use std::sync::atomic::{AtomicU32, Ordering};

/// A file under the temporary directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(ext: &str, content: &str) -> TempFile {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("truckeefs-config-test-{}-{n}.{ext}", std::process::id()));
        std::fs::write(&path, content).expect("write a temporary file");
        TempFile(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn shown(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn flags(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn load_with(file: Option<&TempFile>, env: &[(&str, &str)], flag_pairs: &[(&str, &str)]) -> Result<Loaded, String> {
    let env = Env::from_pairs(env.iter().copied());
    let flags = flags(flag_pairs);
    load(&Inputs { file: file.map(TempFile::path), env: &env, flags: &flags })
}

fn yaml(content: &str) -> TempFile {
    TempFile::new("yaml", content)
}

#[test]
fn defaults_are_the_seed_documents() {
    let l = load_with(None, &[("HOME", "/home/u")], &[]).unwrap();
    let s = &l.settings;
    assert_eq!(s.tahoe_url, "http://127.0.0.1:3456");
    assert_eq!((s.cache_size, s.cache_ttl), (0, Some(Duration::from_secs(14400))));
    assert_eq!(s.net_timeout, Duration::from_secs(30));
    assert!(s.cache_maintenance && s.test_compatibility && s.test_integration && !s.test_functionality);
    assert_eq!(s.backend_storage_strategy, Strategy::Flat);
    assert_eq!(s.tahoe_format, TahoeFormat::Chk);
    assert_eq!((s.sql_port, s.redis_port, s.redis_db), (3306, 6379, 0));
    assert_eq!(s.sql_engine, "mysql");
    assert_eq!(s.redis_semaphore_timeout, Duration::from_secs(1800));
    assert_eq!((s.max_connections, s.nice, s.sleep), (10, 19, Duration::from_secs(60)));
    assert_eq!(s.redis_prefix, "truckeefs:");
    assert!(!s.reset_redis);
    assert_eq!(s.upload_delay, Duration::from_secs(5));
    assert_eq!(s.data_dir, PathBuf::from("/home/u/.local/share/truckeefs"));
    assert_eq!(s.cache_dir, PathBuf::from("/home/u/.cache/truckeefs"));
    assert!(s.rootcap.is_none() && s.sql_pass.is_none() && s.auth_token.is_none() && s.mount.is_none());
    for key in KEYS {
        assert_eq!(l.source(key), &Source::Default, "{key}");
    }
    let l = load_with(None, &[("XDG_DATA_HOME", "/x/data"), ("XDG_CACHE_HOME", "/x/cache")], &[]).unwrap();
    assert_eq!(l.settings.data_dir, PathBuf::from("/x/data/truckeefs"));
    assert_eq!(l.settings.cache_dir, PathBuf::from("/x/cache/truckeefs"));
}

#[test]
fn file_then_env_then_flag() {
    let f = yaml("cache_size: 1k\nnet_timeout: 10\nsql_db: fromfile\nsql_user: fileuser\n");
    let l = load_with(Some(&f), &[("TRUCKEEFS_CACHE_SIZE", "2k"), ("TRUCKEEFS_NET_TIMEOUT", "20")], &[("cache-size", "3k")])
        .unwrap();
    assert_eq!(l.settings.cache_size, 3000);
    assert_eq!(l.source("cache_size"), &Source::Flag("cache-size".into()));
    assert_eq!(l.settings.net_timeout, Duration::from_secs(20));
    assert_eq!(l.source("net_timeout"), &Source::Env("TRUCKEEFS_NET_TIMEOUT".into()));
    assert_eq!(l.settings.sql_db.as_deref(), Some("fromfile"));
    assert_eq!(l.source("sql_db"), &Source::File(f.path().to_path_buf()));
    assert_eq!(l.source("sql_port"), &Source::Default);
    // The later of two flags wins.
    let l = load_with(None, &[], &[("cache-size", "1"), ("cache-size", "2")]).unwrap();
    assert_eq!(l.settings.cache_size, 2);
}

#[test]
fn environment_names_of_the_seed_and_ours() {
    // The Python release read `sql_host`; `TRUCKEEFS_SQL_HOST` is ours and wins.
    let l = load_with(None, &[("sql_host", "a")], &[]).unwrap();
    assert_eq!(l.settings.sql_host.as_deref(), Some("a"));
    assert_eq!(l.source("sql_host"), &Source::Env("sql_host".into()));
    let l = load_with(None, &[("sql_host", "a"), ("TRUCKEEFS_SQL_HOST", "b")], &[]).unwrap();
    assert_eq!(l.settings.sql_host.as_deref(), Some("b"));
    assert_eq!(l.source("sql_host"), &Source::Env("TRUCKEEFS_SQL_HOST".into()));
    // Unknown TRUCKEEFS_ variables belong to someone else (the test harness has several).
    assert!(load_with(None, &[("TRUCKEEFS_BIN", "/x"), ("TRUCKEEFS_SQL_HOTS", "a")], &[]).is_ok());
}

#[test]
fn json_is_accepted() {
    let f = TempFile::new(
        "json",
        &format!(r#"{{"rootcap": "{CAP}", "sql_host": "db:3307", "cache_ttl": "inf", "test_functionality": false, "cache_size": 1048576}}"#),
    );
    let s = load_with(Some(&f), &[], &[]).unwrap().settings;
    assert_eq!(s.rootcap.as_ref().map(Secret::expose), Some(CAP));
    assert_eq!((s.sql_host.as_deref(), s.sql_port), (Some("db"), 3307));
    assert_eq!(s.cache_ttl, None);
    assert!(!s.test_functionality);
    assert_eq!(s.cache_size, 1 << 20);
}

#[test]
fn the_seed_example_file_loads() {
    let f = yaml(
        r#"tahoe_url: "http://127.0.0.1:3456"
cache_dir: "/opt/truckeefs/cache"
cache_maintenance: true
cache_size: 0 #0 means unlimited
cache_ttl: 14400
net_timeout: 30
test_compatibility: true
test_functionality: false
sql_host: "localhost:3306"
sql_db: "truckeefs"
sql_user: "truckeeuser"
sql_pass: "truckeepassword"
redis_host: "localhost:6379"
sql_engine: "mysql+asyncmy"
sql_port: 3306
sql_ssl: false
redis_port: 6379
redis_db: 0
redis_semaphore_timeout: 1800
"#,
    );
    let s = load_with(Some(&f), &[], &[]).unwrap().settings;
    assert_eq!(s.cache_dir, PathBuf::from("/opt/truckeefs/cache"));
    assert_eq!(s.sql_pass.as_ref().map(Secret::expose), Some("truckeepassword"));
    assert_eq!(s.sql_engine, "mysql+asyncmy");
    assert_eq!((s.redis_host.as_deref(), s.redis_port), (Some("localhost"), 6379));
}

#[test]
fn every_value_syntax() {
    let l = load_with(
        None,
        &[],
        &[
            ("rootcap", &format!("  {CAP}\n")),
            ("tahoe-url", "https://gw.example:3456/"),
            ("auth-token", "tok123"),
            ("max-connections", "4"),
            ("net-timeout", "2.5"),
            ("backend-storage-strategy", "mirror"),
            ("tahoe-format", "mdmf"),
            ("data-dir", "/d"),
            ("cache-dir", "/c"),
            ("cache-maintenance", "off"),
            ("cache-size", "10GiB"),
            ("cache-ttl", "60"),
            ("upload-delay", "0"),
            ("sql-engine", "MariaDB+aiomysql"),
            ("sql-host", "[::1]:3310"),
            ("sql-db", "fs"),
            ("sql-user", "u"),
            ("sql-pass", "p w"),
            ("sql-ssl", "yes"),
            ("redis-host", "r"),
            ("redis-port", "6380"),
            ("redis-db", "3"),
            ("redis-prefix", "t1:"),
            ("redis-semaphore-timeout", "90"),
            ("reset-redis", "1"),
            ("test-compatibility", "no"),
            ("test-integration", "0"),
            ("test-functionality", "TRUE"),
            ("nice", "-5"),
            ("sleep", "1"),
            ("mount", "/mnt/t"),
        ],
    )
    .unwrap();
    let s = l.settings;
    assert_eq!(s.rootcap.as_ref().map(Secret::expose), Some(CAP));
    assert_eq!(s.tahoe_url, "https://gw.example:3456");
    assert_eq!(s.auth_token.as_ref().map(Secret::expose), Some("tok123"));
    assert_eq!(s.max_connections, 4);
    assert_eq!(s.net_timeout, Duration::from_millis(2500));
    assert_eq!(s.backend_storage_strategy, Strategy::Mirror);
    assert_eq!(s.tahoe_format, TahoeFormat::Mdmf);
    assert_eq!((s.data_dir.as_path(), s.cache_dir.as_path()), (Path::new("/d"), Path::new("/c")));
    assert!(!s.cache_maintenance);
    assert_eq!(s.cache_size, 10 << 30);
    assert_eq!(s.cache_ttl, Some(Duration::from_secs(60)));
    assert_eq!(s.upload_delay, Duration::ZERO);
    assert_eq!(s.sql_engine, "mariadb+aiomysql");
    assert_eq!((s.sql_host.as_deref(), s.sql_port), (Some("::1"), 3310));
    assert_eq!((s.sql_db.as_deref(), s.sql_user.as_deref()), (Some("fs"), Some("u")));
    assert_eq!(s.sql_pass.as_ref().map(Secret::expose), Some("p w"), "a password is taken as given");
    assert!(s.sql_ssl);
    assert_eq!((s.redis_host.as_deref(), s.redis_port, s.redis_db), (Some("r"), 6380, 3));
    assert_eq!(s.redis_prefix, "t1:");
    assert_eq!(s.redis_semaphore_timeout, Duration::from_secs(90));
    assert!(s.reset_redis && !s.test_compatibility && !s.test_integration && s.test_functionality);
    assert_eq!((s.nice, s.sleep), (-5, Duration::from_secs(1)));
    assert_eq!(s.mount, Some(PathBuf::from("/mnt/t")));
}

#[test]
fn a_port_in_the_host_key() {
    // Same source: the host's port overrides the port key, whatever the order.
    let f = yaml("sql_port: 3308\nsql_host: db:3307\nredis_host: r:6390\nredis_port: 6391\n");
    let l = load_with(Some(&f), &[], &[]).unwrap();
    assert_eq!((l.settings.sql_port, l.settings.redis_port), (3307, 6390));
    assert_eq!(l.source("sql_port").to_string(), format!("port in sql_host (file {})", f.shown()));
    // A port key of higher precedence overrides a lower host's port, and the other way round.
    let l = load_with(Some(&f), &[("TRUCKEEFS_SQL_PORT", "3309")], &[]).unwrap();
    assert_eq!(l.settings.sql_port, 3309);
    let l = load_with(Some(&f), &[], &[("redis-host", "r2")]).unwrap();
    assert_eq!((l.settings.redis_host.as_deref(), l.settings.redis_port), (Some("r2"), 6391));
    let l = load_with(None, &[("sql_port", "1")], &[("sql-host", "db:2")]).unwrap();
    assert_eq!(l.settings.sql_port, 2);
}

#[test]
fn errors_name_the_key_and_the_source() {
    let f = yaml("cache_size: 10 zb\n");
    let e = load_with(Some(&f), &[], &[]).unwrap_err();
    assert!(e.starts_with(&format!("cache_size from file {}: \"10 zb\" is not a size", f.shown())), "{e}");
    let e = load_with(None, &[("TRUCKEEFS_SQL_PORT", "99999")], &[]).unwrap_err();
    assert!(e.starts_with("sql_port from env TRUCKEEFS_SQL_PORT: \"99999\" is not a port"), "{e}");
    let e = load_with(None, &[("redis_port", "x")], &[]).unwrap_err();
    assert!(e.starts_with("redis_port from env redis_port: "), "{e}");
    let e = load_with(None, &[], &[("test-functionality", "maybe")]).unwrap_err();
    assert!(e.starts_with("test_functionality from flag --test-functionality: \"maybe\" is not a boolean"), "{e}");
    for (flag, value) in [
        ("backend-storage-strategy", "tree"),
        ("cache-ttl", "forever"),
        ("sql-host", "db:x"),
        ("sql-engine", "postgres"),
        ("nice", "20"),
        ("max-connections", "0"),
        ("net-timeout", "0"),
        ("redis-prefix", "a b"),
        ("tahoe-url", "ftp://gw"),
        ("upload-delay", "-1"),
        ("redis-db", "-1"),
    ] {
        let e = load_with(None, &[], &[(flag, value)]).unwrap_err();
        let key = flag.replace('-', "_");
        assert!(e.starts_with(&format!("{key} from flag --{flag}: ")), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }
    // An empty value unsets an optional key and is an error for the others.
    let e = load_with(None, &[], &[("sleep", "")]).unwrap_err();
    assert_eq!(e, "sleep from flag --sleep: empty value");
    let f = yaml("sql_host: db\n");
    let l = load_with(Some(&f), &[("TRUCKEEFS_SQL_HOST", "")], &[]).unwrap();
    assert_eq!(l.settings.sql_host, None);
    assert_eq!(l.source("sql_host"), &Source::Env("TRUCKEEFS_SQL_HOST".into()));
    let f = yaml("auth_token: ~\nmount:\n");
    let l = load_with(Some(&f), &[], &[]).unwrap();
    assert_eq!((l.settings.auth_token.as_ref(), l.settings.mount.as_ref()), (None, None));
}

#[test]
fn bad_files() {
    let missing = Path::new("/nonexistent/truckeefs.yaml");
    let env = Env::default();
    let e = load(&Inputs { file: Some(missing), env: &env, flags: &[] }).unwrap_err();
    assert!(e.starts_with("file /nonexistent/truckeefs.yaml: cannot read it"), "{e}");
    let f = yaml("sql_host: [a, b]\n");
    let e = load_with(Some(&f), &[], &[]).unwrap_err();
    assert_eq!(e, format!("sql_host from file {}: expected a string, number or boolean", f.shown()));
    let f = yaml("- a\n- b\n");
    assert!(load_with(Some(&f), &[], &[]).unwrap_err().contains("expected a mapping"));
    let f = yaml("a: b: c\n  d\n");
    let e = load_with(Some(&f), &[], &[]).unwrap_err();
    assert!(e.starts_with(&format!("file {}: not valid YAML or JSON", f.shown())) && !e.contains('\n'), "{e}");
    let f = yaml("");
    assert!(load_with(Some(&f), &[], &[]).is_ok(), "an empty file is no settings");
}

#[test]
fn unknown_keys_are_errors_with_their_source() {
    let f = yaml("sql_host: db\nsql_hots: db\n");
    let e = load_with(Some(&f), &[], &[]).unwrap_err();
    assert!(e.starts_with(&format!("sql_hots from file {}: unknown key", f.shown())), "{e}");
    let f = yaml("sql-host: db\n");
    let e = load_with(Some(&f), &[], &[]).unwrap_err();
    assert!(e.ends_with("did you mean sql_host?"), "{e}");
    let e = load_with(None, &[], &[("sql-hots", "db")]).unwrap_err();
    assert!(e.starts_with("--sql-hots from flag --sql-hots: unknown key"), "{e}");
    // Python-only keys of the seed that we do not take are unknown too, not silently ignored.
    let f = yaml("register_classes: true\n");
    assert!(load_with(Some(&f), &[], &[]).unwrap_err().contains("register_classes"));
}

#[test]
fn secrets_from_files() {
    let secret = TempFile::new("secret", "  s3cret pass \n");
    let f = yaml(&format!("sql_pass_file: {}\n", secret.shown()));
    let l = load_with(Some(&f), &[], &[]).unwrap();
    assert_eq!(l.settings.sql_pass.as_ref().map(Secret::expose), Some("s3cret pass"));
    assert_eq!(
        l.source("sql_pass").to_string(),
        format!("file {} (sql_pass_file from file {})", secret.shown(), f.shown())
    );
    // The environment's password overrides the file's, as any key.
    let l = load_with(Some(&f), &[("TRUCKEEFS_SQL_PASS", "envpw")], &[]).unwrap();
    assert_eq!(l.settings.sql_pass.as_ref().map(Secret::expose), Some("envpw"));
    let cap = TempFile::new("cap", &format!("{CAP}\n"));
    let l = load_with(None, &[("TRUCKEEFS_ROOTCAP_FILE", &cap.shown())], &[]).unwrap();
    assert_eq!(l.settings.rootcap.as_ref().map(Secret::expose), Some(CAP));
    let e = load_with(None, &[], &[("auth-token-file", "/nonexistent/token")]).unwrap_err();
    assert!(e.starts_with("auth_token_file from flag --auth-token-file: cannot read /nonexistent/token"), "{e}");
    let empty = TempFile::new("secret", "\n");
    let e = load_with(None, &[], &[("sql-pass-file", &empty.shown())]).unwrap_err();
    assert!(e.ends_with("is empty"), "{e}");
    // Both forms in one source: an error, not a guess.
    let e = load_with(None, &[("sql_pass", "a"), ("sql_pass_file", &secret.shown())], &[]).unwrap_err();
    assert!(e.contains("give one or the other") && !e.contains("s3cret"), "{e}");
}

#[test]
fn secrets_never_printed() {
    let token_file = TempFile::new("secret", "tokentokentoken\n");
    let f = yaml(&format!("rootcap: {CAP}\nsql_pass: hunter2hunter2\nauth_token_file: {}\n", token_file.shown()));
    let l = load_with(Some(&f), &[], &[]).unwrap();
    let shown = format!("{:?}\n{:?}\n{}", l.settings, l, l.render());
    for secret in [CAP, "hunter2hunter2", "tokentokentoken"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
        assert!(shown.contains(&Secret::new(secret).fingerprint()), "{shown}");
    }
    let env = format!("{:?}", Env::from_pairs([("sql_pass", "hunter2hunter2")]));
    assert!(env.contains("sql_pass") && !env.contains("hunter2"), "{env}");
    // A malformed cap is not quoted in the error, whatever its source.
    let bad = format!("{CAP}x");
    for e in [
        load_with(None, &[("rootcap", bad.as_str())], &[]).unwrap_err(),
        load_with(None, &[], &[("rootcap", bad.as_str())]).unwrap_err(),
        load_with(Some(&yaml(&format!("rootcap: {bad}\n"))), &[], &[]).unwrap_err(),
    ] {
        assert!(e.starts_with("rootcap from ") && !e.contains(&bad[10..]), "{e}");
    }
    let ro = CAP.replace("URI:DIR2:", "URI:DIR2-RO:");
    let e = load_with(None, &[], &[("rootcap", ro.as_str())]).unwrap_err();
    assert!(e.contains("read-only") && !e.contains(&ro[14..]), "{e}");
}

#[test]
fn moved_secret_flags_count_as_flags() {
    // What `hide_secret_flags` leaves behind after re-executing without `--rootcap CAP`.
    let other = CAP.replace("URI:DIR2:o", "URI:DIR2:a");
    let l = load_with(None, &[("TRUCKEEFS_ROOTCAP", other.as_str()), ("TRUCKEEFS_FLAG_ROOTCAP", CAP)], &[]).unwrap();
    assert_eq!(l.settings.rootcap.as_ref().map(Secret::expose), Some(CAP));
    assert_eq!(l.source("rootcap"), &Source::Flag("rootcap".into()));
    let e = load_with(None, &[("TRUCKEEFS_FLAG_SQL_PASS", "")], &[("sql-pass-file", "/x")]).unwrap_err();
    assert!(e.contains("give one or the other"), "{e}");
}

#[test]
fn render_lists_every_key_with_value_and_source() {
    let f = yaml("cache_ttl: inf\nsql_host: db:3307\n");
    let l = load_with(Some(&f), &[("TRUCKEEFS_CACHE_SIZE", "1mib")], &[("mount", "/mnt/x"), ("rootcap", CAP)]).unwrap();
    let out = l.render();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), KEYS.len() + 1, "{out}");
    assert!(lines[0].starts_with("KEY ") && lines[0].ends_with("SOURCE"));
    let row = |key: &str| {
        let line = lines.iter().find(|l| l.split_whitespace().next() == Some(key)).unwrap_or_else(|| panic!("{key} missing"));
        line.split_whitespace().skip(1).collect::<Vec<_>>().join(" ")
    };
    assert_eq!(row("cache_ttl"), format!("inf file {}", f.shown()));
    assert_eq!(row("cache_size"), "1048576 env TRUCKEEFS_CACHE_SIZE");
    assert_eq!(row("sql_host"), format!("db file {}", f.shown()));
    assert_eq!(row("sql_port"), format!("3307 port in sql_host (file {})", f.shown()));
    assert_eq!(row("mount"), "/mnt/x flag --mount");
    assert_eq!(row("rootcap"), format!("{} flag --rootcap", Secret::new(CAP).fingerprint()));
    assert_eq!(row("sql_pass"), "(unset) default");
    assert_eq!(row("net_timeout"), "30 default");
    assert_eq!(row("backend_storage_strategy"), "FLAT default");
}

#[test]
fn rendered_values_read_back() {
    // Every non-secret value `truckeefs config` prints is accepted as input.
    let l = load_with(None, &[], &[("cache-ttl", "1.5"), ("sql-host", "[::1]:1")]).unwrap();
    let out = l.render();
    let mut again = Vec::new();
    for line in out.lines().skip(1) {
        let mut words = line.split_whitespace();
        let (Some(key), Some(value)) = (words.next(), words.next()) else { continue };
        if SECRET_KEYS.contains(&key) || value == "(unset)" {
            continue;
        }
        again.push((key.replace('_', "-"), value.to_string()));
    }
    let again: Vec<(&str, &str)> = again.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let l2 = load_with(None, &[], &again).unwrap();
    assert_eq!(l2.settings, l.settings);
}

#[test]
fn non_utf8_environment_is_an_error() {
    use std::os::unix::ffi::OsStringExt;
    let env = Env::from_pairs([(OsString::from("sql_db"), OsString::from_vec(vec![0xff]))]);
    let e = load(&Inputs { file: None, env: &env, flags: &[] }).unwrap_err();
    assert_eq!(e, "sql_db from env sql_db: the value is not UTF-8");
}
