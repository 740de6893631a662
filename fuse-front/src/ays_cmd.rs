//! `truckeefs ays serve|publish|mount`: argument parsing and the serve and publish commands (the
//! mount is `crate::ays_mount`). See `docs/ays.md`.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use truckeefs_runtime_smol::ays::publish::{self, PublishConfig};
use truckeefs_runtime_smol::ays::server::{Backend, ServeConfig, Server};

/// Environment variable that may hold `ays serve --passwd`.
pub const PASSWD_ENV: &str = "TRUCKEEFS_AYS_PASSWD";
/// Environment variable that may hold `ays publish --secret`.
pub const SECRET_ENV: &str = "TRUCKEEFS_AYS_SECRET";

pub const HELP: &str = "\
truckeefs ays - aysfs: read-only content-addressed trees (see docs/ays.md)

Usage:
  truckeefs ays serve [--listen ADDR] [--data-dir DIR | --redis URL] [--login USER --passwd PASS] [-v]
  truckeefs ays publish --stor URL [--login USER --secret SECRET] --ays-id ID --domain DOMAIN [-j N] [-v] DIR
  truckeefs ays mount -c FILE [-v]

serve: the aysfs cache server, which is also a store (its store routes are under /stor)
  --listen ADDR      address to listen on (default 127.0.0.1:8080; port 0 picks a free port);
                     prints 'listening on ADDR' on stdout once ready
  --data-dir DIR     embedded storage (default $XDG_DATA_HOME/truckeefs/ays,
                     else ~/.local/share/truckeefs/ays)
  --redis URL        keep everything in Redis instead (redis://HOST:PORT/DB)
  --login USER       require HTTP basic auth with this login...
  --passwd PASS      ...and this password (or set TRUCKEEFS_AYS_PASSWD)
  Stops cleanly on SIGTERM or Ctrl-C.

publish: upload the tree DIR into a store (blobs first, then its metadata)
  --stor URL         the store's base URL (a cache server's: http://HOST:PORT/stor)
  --login USER       basic auth login of the store...
  --secret SECRET    ...and its secret (or set TRUCKEEFS_AYS_SECRET)
  --ays-id ID        the tree's id, e.g. 'jumpscale|mongodb(10.1.888)'
  --domain DOMAIN    the dedupe domain of its blobs ('_' for none)
  -j, --parallel N   blobs uploaded at once (default 4)
  Only files and directories: a symbolic link or special file stops the publish.

mount: mount every [[mount_files]] and [[mount_config]] of the client configuration FILE

  -v, --verbose      more logging (repeat for more); RUST_LOG overrides
";

pub enum AysCommand {
    Help,
    Serve { cfg: Box<ServeConfig>, verbose: u8 },
    Publish { cfg: PublishConfig, verbose: u8 },
    Mount { config: PathBuf, verbose: u8 },
}

fn value(p: &mut lexopt::Parser, name: &str) -> Result<String, String> {
    let v = p.value().map_err(|e| e.to_string())?;
    v.into_string().map_err(|_| format!("{name}: must be UTF-8"))
}

/// Parses what follows `truckeefs ays`; `verbose` counts `-v` given before `ays`.
pub fn parse(args: Vec<OsString>, mut verbose: u8) -> Result<AysCommand, String> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let sub = loop {
        match p.next().map_err(|e| e.to_string())? {
            None => return Err("ays: missing command (serve, publish or mount)".into()),
            Some(Short('h') | Long("help")) => return Ok(AysCommand::Help),
            Some(Short('v') | Long("verbose")) => verbose = verbose.saturating_add(1),
            Some(Value(v)) => break v.to_string_lossy().into_owned(),
            Some(other) => return Err(other.unexpected().to_string()),
        }
    };
    let mut listen = None;
    let mut data_dir = None;
    let mut redis = None;
    let mut login = None;
    let mut passwd = None;
    let mut secret = None;
    let mut stor = None;
    let mut ays_id = None;
    let mut domain = None;
    let mut parallel = 4usize;
    let mut config = None;
    let mut dir = None;
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match (sub.as_str(), arg) {
            (_, Short('h') | Long("help")) => return Ok(AysCommand::Help),
            (_, Short('v') | Long("verbose")) => verbose = verbose.saturating_add(1),
            ("serve", Long("listen")) => listen = Some(value(&mut p, "--listen")?),
            ("serve", Long("data-dir")) => data_dir = Some(PathBuf::from(p.value().map_err(|e| e.to_string())?)),
            ("serve", Long("redis")) => redis = Some(value(&mut p, "--redis")?),
            ("serve" | "publish", Long("login")) => login = Some(value(&mut p, "--login")?),
            ("serve", Long("passwd")) => passwd = Some(value(&mut p, "--passwd")?),
            ("publish", Long("secret")) => secret = Some(value(&mut p, "--secret")?),
            ("publish", Long("stor")) => stor = Some(value(&mut p, "--stor")?),
            ("publish", Long("ays-id")) => ays_id = Some(value(&mut p, "--ays-id")?),
            ("publish", Long("domain")) => domain = Some(value(&mut p, "--domain")?),
            ("publish", Short('j') | Long("parallel")) => {
                let v = value(&mut p, "--parallel")?;
                parallel = v.parse().ok().filter(|n| (1..=32).contains(n)).ok_or(format!("--parallel {v}: expected 1 to 32"))?;
            }
            ("publish", Value(v)) if dir.is_none() => dir = Some(PathBuf::from(v)),
            ("mount", Short('c') | Long("config")) => config = Some(PathBuf::from(p.value().map_err(|e| e.to_string())?)),
            ("serve" | "publish" | "mount", Value(v)) => {
                return Err(format!("ays {sub}: unexpected argument '{}'", v.to_string_lossy()))
            }
            ("serve" | "publish" | "mount", other) => return Err(format!("ays {sub}: {}", other.unexpected())),
            _ => return Err(format!("ays: unknown command '{sub}' (serve, publish or mount)")),
        }
    }
    match sub.as_str() {
        "serve" => {
            if data_dir.is_some() && redis.is_some() {
                return Err("ays serve: --data-dir and --redis exclude each other".into());
            }
            let passwd = passwd.or_else(|| std::env::var(PASSWD_ENV).ok().filter(|s| !s.is_empty()));
            let auth = match (login, passwd) {
                (Some(l), Some(p)) => Some((l, p)),
                (None, None) => None,
                (Some(_), None) => return Err(format!("ays serve: --login needs --passwd (or {PASSWD_ENV})")),
                (None, Some(_)) => return Err("ays serve: --passwd needs --login".into()),
            };
            let backend = match redis {
                Some(url) => Backend::Redis(url),
                None => Backend::Embedded(data_dir.unwrap_or_else(default_data_dir)),
            };
            let mut cfg = ServeConfig::new(listen.unwrap_or_else(|| "127.0.0.1:8080".into()), backend);
            cfg.auth = auth;
            Ok(AysCommand::Serve { cfg: Box::new(cfg), verbose })
        }
        "publish" => {
            let secret = secret.or_else(|| std::env::var(SECRET_ENV).ok()).unwrap_or_default();
            let cfg = PublishConfig {
                stor: stor.ok_or("ays publish: missing --stor URL")?,
                login: login.unwrap_or_default(),
                secret,
                ays_id: ays_id.ok_or("ays publish: missing --ays-id ID")?,
                domain: domain.ok_or("ays publish: missing --domain DOMAIN ('_' for none)")?,
                dir: dir.ok_or("ays publish: missing DIR")?,
                parallel,
            };
            Ok(AysCommand::Publish { cfg, verbose })
        }
        "mount" => Ok(AysCommand::Mount { config: config.ok_or("ays mount: missing -c FILE")?, verbose }),
        _ => Err(format!("ays: unknown command '{sub}' (serve, publish or mount)")),
    }
}

fn default_data_dir() -> PathBuf {
    match std::env::var_os("XDG_DATA_HOME") {
        Some(v) if !v.is_empty() => PathBuf::from(v).join("truckeefs").join("ays"),
        _ => {
            let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
            home.join(".local/share/truckeefs/ays")
        }
    }
}

fn fail(e: String) -> ExitCode {
    tracing::error!("{e}");
    eprintln!("truckeefs: {e}");
    ExitCode::FAILURE
}

pub fn run(cmd: AysCommand) -> ExitCode {
    match cmd {
        AysCommand::Help => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        AysCommand::Serve { cfg, verbose } => {
            crate::init_logging(verbose);
            match serve(*cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        AysCommand::Publish { cfg, verbose } => {
            crate::init_logging(verbose);
            match publish::publish(&cfg) {
                Ok(s) => {
                    println!(
                        "published {:?}: {} files in {} directories, {} bytes; uploaded {} blobs ({} bytes), skipped {} ({} bytes: already in the store or duplicates)",
                        cfg.ays_id, s.files, s.dirs, s.bytes, s.blobs_uploaded, s.bytes_uploaded, s.blobs_skipped, s.bytes_skipped
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        AysCommand::Mount { config, verbose } => {
            crate::init_logging(verbose);
            match crate::ays_mount::run(&config, verbose) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
    }
}

fn serve(cfg: ServeConfig) -> Result<(), String> {
    let auth = cfg.auth.is_some();
    let server = Server::open(cfg)?;
    let addr = server.local_addr();
    let handle = server.shutdown_handle();
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let signal_handle = signals.handle();
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            tracing::info!(signal = sig, "stopping");
            handle.shutdown();
        }
    });
    tracing::info!(%addr, backend = %server.describe(), auth, "serving aysfs");
    // The line scripts and tests wait for (the port, when --listen asked for port 0).
    println!("listening on {addr}");
    let _ = std::io::stdout().flush();
    let r = server.run();
    signal_handle.close();
    tracing::info!("stopped");
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(args: &[&str]) -> Result<AysCommand, String> {
        parse(args.iter().map(OsString::from).collect(), 0)
    }

    #[test]
    fn serve_defaults_and_auth() {
        let Ok(AysCommand::Serve { cfg, .. }) = parse_str(&["serve", "--data-dir", "/tmp/x", "--login", "u", "--passwd", "p"]) else {
            panic!("not serve")
        };
        assert_eq!(cfg.listen, "127.0.0.1:8080");
        assert_eq!(cfg.auth, Some(("u".into(), "p".into())));
        assert!(parse_str(&["serve", "--data-dir", "/a", "--redis", "redis://x"]).err().unwrap().contains("exclude"));
        assert!(parse_str(&["serve", "--passwd", "p"]).err().unwrap().contains("--login"));
        assert!(parse_str(&["serve", "--secret", "p"]).is_err());
    }

    #[test]
    fn publish_needs_its_arguments() {
        let Ok(AysCommand::Publish { cfg, .. }) =
            parse_str(&["publish", "--stor", "http://h/stor", "--ays-id", "a|b", "--domain", "_", "/d"])
        else {
            panic!("not publish")
        };
        assert_eq!(cfg.dir, PathBuf::from("/d"));
        assert!(!format!("{cfg:?}").contains("secret"));
        let e = parse_str(&["publish", "--stor", "http://h", "--domain", "d", "/d"]).err().unwrap();
        assert!(e.contains("--ays-id"), "{e}");
    }

    #[test]
    fn mount_and_unknown() {
        assert!(matches!(parse_str(&["mount", "-c", "f.toml"]), Ok(AysCommand::Mount { .. })));
        assert!(parse_str(&["mount"]).err().unwrap().contains("-c"));
        assert!(parse_str(&["frob"]).err().unwrap().contains("frob"));
    }
}
