//! `truckeefs ays mount -c client.toml`: mounts every `[[mount_files]]` and `[[mount_config]]` of
//! the client configuration read-only (writable only where a debug overlay says so), one FUSE
//! session per mount, all in this process, sharing one blob cache and one set of connections.
//!
//! - At start and on every reload the client announces itself (id, platform), its stores and its
//!   mounts to every grid cache.
//! - The configuration file is watched (once a second; SIGHUP or SIGUSR1 reload at once): mounts
//!   added are mounted, removed ones unmounted, changed ones reconfigured in place (a new tree is
//!   loaded in the background; open files keep reading what they opened). A mount whose
//!   writability changes (a `debug` added or removed) is unmounted and mounted again. An invalid
//!   new configuration is reported and the running one kept.
//! - SIGTERM or SIGINT unmounts everything; unmounting the last mount (with `fusermount3 -u` or
//!   `umount`) ends the process.

mod config;
mod fs;
mod passthrough;

use config::{ClientConfig, Mount};
use fuser::MountOption;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};
use truckeefs_core::ays::{LayerNames, Layers, MountSpec};
use truckeefs_runtime_smol::ays::client::{AysMount, Client, HttpTarget, MountServers, RedisTarget};
use truckeefs_runtime_smol::ays::proto::{self, StorAnnounce};

/// How long kernel caches keep attributes and entries (invalidated on a reload anyway).
const TTL: Duration = Duration::from_secs(5);
/// How long the process waits for a session to end after its unmount.
const UNMOUNT_WAIT: Duration = Duration::from_secs(10);

enum Event {
    Signal(i32),
    Ended { id: u64, result: std::io::Result<()> },
}

struct Active {
    id: u64,
    cfg: Mount,
    writable: bool,
    mount: Arc<AysMount>,
    thread: Option<JoinHandle<()>>,
}

/// Mounts every mount of the client configuration `config` and serves them until SIGTERM or
/// until the last one is unmounted.
pub fn run(config_path: &Path, _verbose: u8) -> Result<(), String> {
    let cfg = config::load(config_path)?;
    for w in &cfg.warnings {
        tracing::warn!("{}: {w}", config_path.display());
    }
    if !Path::new("/dev/fuse").exists() {
        return Err("/dev/fuse is missing: load the fuse kernel module (modprobe fuse), or pass the device into the container".into());
    }
    let client = Client::new(&cfg.cache_dir, cfg.cache_size)?;
    tracing::info!(
        "aysfs client {:?}: blob cache {} (at most {} MiB), {} mount(s)",
        cfg.id,
        cfg.cache_dir.display(),
        cfg.cache_size >> 20,
        cfg.mounts.len()
    );
    let (tx, rx) = channel::<Event>();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGUSR1,
    ])
    .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let signal_handle = signals.handle();
    let stx = tx.clone();
    std::thread::spawn(move || {
        for sig in signals.forever() {
            if stx.send(Event::Signal(sig)).is_err() {
                return;
            }
        }
    });

    let mut state = State { client, active: BTreeMap::new(), next_id: 1, tx };
    // The grid caches learn about the mounts before the first tree is asked of them.
    wait_bounded(announce(&state.client, &cfg));
    let mut first_error = None;
    for m in sorted(&cfg.mounts) {
        if let Err(e) = state.start(&cfg, m) {
            tracing::error!("{e}");
            first_error.get_or_insert(e);
        }
    }
    if state.active.is_empty() {
        signal_handle.close();
        return Err(first_error.unwrap_or_else(|| "nothing was mounted".into()));
    }

    let mut cfg = cfg;
    let mut seen = file_stamp(config_path);
    let mut result = Ok(());
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(Event::Signal(sig)) if sig == signal_hook::consts::SIGHUP || sig == signal_hook::consts::SIGUSR1 => {
                tracing::info!(signal = sig, "reloading {}", config_path.display());
                seen = file_stamp(config_path);
                cfg = state.reload(config_path, cfg);
            }
            Ok(Event::Signal(sig)) => {
                tracing::info!(signal = sig, "unmounting everything");
                state.stop_all(&rx);
                break;
            }
            Ok(Event::Ended { id, result: r }) => {
                let path = state.active.iter().find(|(_, a)| a.id == id).map(|(p, _)| p.clone());
                if let Some(p) = path {
                    if let Some(mut a) = state.active.remove(&p) {
                        if let Some(t) = a.thread.take() {
                            let _ = t.join();
                        }
                        match r {
                            Ok(()) => tracing::info!("mount {} at {} was unmounted", a.cfg.name, p.display()),
                            Err(e) => {
                                tracing::error!("mount {} at {}: FUSE session failed: {e}", a.cfg.name, p.display());
                                result = Err(format!("mount {} at {}: FUSE session failed: {e}", a.cfg.name, p.display()));
                            }
                        }
                    }
                }
                if state.active.is_empty() {
                    tracing::info!("the last mount is gone; stopping");
                    break;
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                let now = file_stamp(config_path);
                if now != seen {
                    seen = now;
                    tracing::info!("{} changed; reloading", config_path.display());
                    cfg = state.reload(config_path, cfg);
                    if state.active.is_empty() {
                        tracing::info!("no mount left; stopping");
                        break;
                    }
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    signal_handle.close();
    result
}

struct State {
    client: Arc<Client>,
    /// By mount point.
    active: BTreeMap<PathBuf, Active>,
    next_id: u64,
    tx: Sender<Event>,
}

impl State {
    fn start(&mut self, cfg: &ClientConfig, m: &Mount) -> Result<(), String> {
        let what = format!("mount {} at {}", m.name, m.path.display());
        prepare_mountpoint(&m.path).map_err(|e| format!("{what}: {e}"))?;
        let (spec, servers) = spec_of(cfg, m);
        let replies = fs::AysReplies::new(TTL);
        let sink = Box::new(fs::AysSink(replies.clone()));
        let mount = Arc::new(AysMount::start(self.client.clone(), spec, servers, sink).map_err(|e| format!("{what}: {e}"))?);
        let writable = m.debug.is_some();
        let mut options = vec![
            MountOption::FSName(format!("aysfs:{}", m.name)),
            MountOption::Subtype("aysfs".into()),
            MountOption::DefaultPermissions,
            MountOption::NoDev,
            MountOption::NoSuid,
        ];
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            options.push(MountOption::AllowOther);
        }
        if !writable {
            options.push(MountOption::RO);
        }
        replies.set_mount(&mount);
        let fsys = fs::AysFs::new(mount.clone(), replies.clone());
        let mut session = fuser::Session::new(fsys, &m.path, &options).map_err(|e| format!("{what}: cannot mount: {e}"))?;
        replies.set_notifier(session.notifier());
        let id = self.next_id;
        self.next_id += 1;
        let tx = self.tx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("aysfs-{}", m.name))
            .spawn(move || {
                let result = session.run();
                drop(session);
                let _ = tx.send(Event::Ended { id, result });
            })
            .map_err(|e| format!("{what}: {e}"))?;
        tracing::info!(
            "mounted {} at {} ({:?}{}{})",
            m.name,
            m.path.display(),
            m.ays_id,
            if m.remote != "/" { format!(", {}", m.remote) } else { String::new() },
            if writable { ", debug overlay writable" } else { ", read-only" }
        );
        self.active.insert(m.path.clone(), Active { id, cfg: m.clone(), writable, mount, thread: Some(thread) });
        Ok(())
    }

    /// Unmounts the mount at `path` and waits (bounded) for its session to end.
    fn stop(&mut self, path: &Path, rx: Option<&std::sync::mpsc::Receiver<Event>>) {
        let Some(mut a) = self.active.remove(path) else { return };
        // (Lazily: reads in flight and open files keep working until they are done.)
        if let Err(e) = crate::unmount::lazy(path) {
            tracing::warn!("{e}");
        }
        let _ = rx;
        if let Some(t) = a.thread.take() {
            let deadline = Instant::now() + UNMOUNT_WAIT;
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
        tracing::info!("unmounted {} from {}", a.cfg.name, path.display());
    }

    fn stop_all(&mut self, rx: &std::sync::mpsc::Receiver<Event>) {
        let paths: Vec<PathBuf> = self.active.keys().rev().cloned().collect();
        for p in paths {
            self.stop(&p, Some(rx));
        }
    }

    /// Applies a changed configuration file; returns the configuration now in force.
    fn reload(&mut self, path: &Path, old: ClientConfig) -> ClientConfig {
        let new = match config::load(path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("{e}; keeping the running configuration");
                return old;
            }
        };
        for w in &new.warnings {
            tracing::warn!("{}: {w}", path.display());
        }
        if new.cache_dir != old.cache_dir || new.cache_size != old.cache_size {
            tracing::warn!("[main] cache_dir and cache_size_mb take effect at the next start");
        }
        wait_bounded(announce(&self.client, &new));
        // Unmount what is gone or changes writability, deepest first.
        let gone: Vec<PathBuf> = self
            .active
            .iter()
            .filter(|(p, a)| match new.mounts.iter().find(|m| &m.path == *p) {
                None => true,
                Some(m) => m.debug.is_some() != a.writable,
            })
            .map(|(p, _)| p.clone())
            .rev()
            .collect();
        for p in gone {
            self.stop(&p, None);
        }
        // Reconfigure what stays, mount what is new (parents first).
        for m in sorted(&new.mounts) {
            match self.active.get_mut(&m.path) {
                Some(a) => {
                    let (spec, servers) = spec_of(&new, m);
                    match a.mount.reconfigure(spec, servers) {
                        Ok(()) => {
                            if a.cfg != *m {
                                tracing::info!("mount {} at {}: reconfigured", m.name, m.path.display());
                            }
                            a.cfg = m.clone();
                        }
                        Err(e) => tracing::error!("mount {} at {}: {e}; keeping its previous configuration", m.name, m.path.display()),
                    }
                }
                None => {
                    if let Err(e) = self.start(&new, m) {
                        tracing::error!("{e}");
                    }
                }
            }
        }
        new
    }
}

/// Mounts sorted by mount point, so a mount inside another comes after it.
fn sorted(mounts: &[Mount]) -> Vec<&Mount> {
    let mut v: Vec<&Mount> = mounts.iter().collect();
    v.sort_by(|a, b| a.path.cmp(&b.path));
    v
}

/// Read-ahead of the files after the one opened (see `MountSpec::readahead_files`): a window of
/// at most 8 files and 64 MiB (and a quarter of the blob cache), 3 fetches at once besides the
/// reader's own (each blob is hashed on its own thread, so several use the cores a single md5
/// cannot). Measured with `tests/benches/ays_bench.rs`.
const READAHEAD_FILES: usize = 8;
const READAHEAD_BYTES: u64 = 64 << 20;
const READAHEAD_PARALLEL: usize = 3;

/// The core's view of mount `m` and the servers its runtime talks to.
fn spec_of(cfg: &ClientConfig, m: &Mount) -> (MountSpec, MountServers) {
    let stor = m.stor.as_deref().and_then(|n| cfg.stor(n));
    let debug = m.debug.as_deref().and_then(|n| cfg.debug(n));
    let names = LayerNames {
        local: cfg.local.as_ref().map(|l| format!("127.0.0.1:{}", l.port)).unwrap_or_default(),
        grids: cfg.grids.iter().map(|g| proto::redact_url(&g.url)).collect(),
        store: stor.map(|s| format!("{} ({})", s.name, proto::redact_url(&s.url))).unwrap_or_default(),
        debug: debug.map(|d| format!("{} ({}:{})", d.name, d.addr, d.port)).unwrap_or_default(),
    };
    let spec = MountSpec {
        name: m.name.clone(),
        client_id: cfg.id.clone(),
        ays_id: m.ays_id.clone(),
        root: m.remote.clone(),
        domain: m.dedupe_domain.clone(),
        layers: Layers { local: cfg.local.is_some(), grids: cfg.grids.len(), store: stor.is_some() },
        names,
        local_expiration_hours: cfg.local.as_ref().map_or(0, |l| l.expiration),
        debug_filters: debug.map(|_| m.debug_filter.clone()),
        prefetch: m.prefetch,
        prefetch_parallel: 4,
        walk_parallel: 8,
        readahead_files: READAHEAD_FILES,
        readahead_bytes: READAHEAD_BYTES.min(cfg.cache_size / 4),
        readahead_parallel: READAHEAD_PARALLEL,
    };
    let servers = MountServers {
        local: cfg.local.as_ref().map(|l| RedisTarget { host: "127.0.0.1".into(), port: l.port, password: String::new() }),
        debug: debug.map(|d| RedisTarget { host: d.addr.clone(), port: d.port, password: d.passwd.clone() }),
        grids: cfg
            .grids
            .iter()
            .map(|g| HttpTarget { url: g.url.clone(), login: g.login.clone(), password: g.passwd.clone() })
            .collect(),
        store: stor.map(|s| HttpTarget { url: s.url.clone(), login: s.login.clone(), password: s.secret.clone() }),
    };
    (spec, servers)
}

/// Waits for the announcements a while (a grid cache that is down must not hold the mounts up).
fn wait_bounded(t: Option<JoinHandle<()>>) {
    let Some(t) = t else { return };
    let deadline = Instant::now() + Duration::from_secs(3);
    while !t.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Announces the client, its stores and its mounts to every grid cache, in the background.
fn announce(client: &Arc<Client>, cfg: &ClientConfig) -> Option<JoinHandle<()>> {
    if cfg.grids.is_empty() {
        return None;
    }
    let grids: Vec<HttpTarget> =
        cfg.grids.iter().map(|g| HttpTarget { url: g.url.clone(), login: g.login.clone(), password: g.passwd.clone() }).collect();
    let stores: Vec<(String, StorAnnounce)> = cfg
        .stores
        .iter()
        .map(|s| {
            let a = StorAnnounce { url: s.url.clone(), login: s.login.clone(), passwd: s.secret.clone(), expiration: s.expiration };
            (s.name.clone(), a)
        })
        .collect();
    let mounts: Vec<(String, serde_json::Value)> = cfg.mounts.iter().map(|m| (m.name.clone(), m.table.clone())).collect();
    let (client, id, platform) = (client.clone(), cfg.id.clone(), cfg.platform.clone());
    Some(std::thread::spawn(move || client.announce(&grids, &id, &platform, &stores, &mounts)))
}

/// Modification time and length of the configuration file (a change of either reloads).
fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Makes `path` ready to be mounted on: created if missing; a dead FUSE mount left by a crashed
/// process ("transport endpoint is not connected") is detached first.
fn prepare_mountpoint(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            tracing::warn!("{} is a dead mount (transport endpoint is not connected); detaching it", path.display());
            if let Err(e) = crate::unmount::lazy(path) {
                tracing::warn!("{e}");
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(path).map_err(|e| format!("cannot create the mount point: {e}"))?;
        }
        Err(e) => return Err(format!("mount point: {e}")),
        Ok(m) if !m.is_dir() => return Err("the mount point is not a directory".into()),
        Ok(_) => {}
    }
    let canonical = std::fs::canonicalize(path).map_err(|e| format!("mount point: {e}"))?;
    if is_mount_point(&canonical) {
        return Err("something is already mounted there; unmount it first".into());
    }
    Ok(())
}

fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = path.to_string_lossy();
    info.lines().any(|l| {
        l.split(' ').nth(4).is_some_and(|mp| {
            mp.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\") == want
        })
    })
}

