//! Runs one filesystem operation in its own process for the integration
//! tests, optionally with other credentials (for permission tests) or as a
//! second lock owner (for fcntl/flock tests).
//!
//! Usage: truckeefs-test-helper [--uid N] [--gid N] [--umask OCTAL] CMD ARGS...
//!
//! `--uid`/`--gid` drop all supplementary groups and set the real, effective,
//! saved and filesystem ids. Prints one line: `ok [fields...]` or
//! `err ERRNO`, and exits 0 (exit 2 on usage errors).
//!
//! Commands:
//!   open PATH r|w|rw            open and close
//!   create PATH MODE            O_CREAT|O_EXCL|O_WRONLY
//!   mkdir PATH MODE
//!   unlink PATH | rmdir PATH | rename OLD NEW | link OLD NEW
//!   symlink TARGET PATH
//!   chmod PATH MODE | chown PATH UID GID   (-1 keeps an id)
//!   access PATH [rwxf]+
//!   stat PATH                   -> ok UID GID MODE(octal)
//!   try-lock PATH START LEN r|w -> fcntl F_SETLK on a fresh O_RDWR fd
//!   getlk PATH START LEN r|w    -> ok unlck|rdlck|wrlck PID START LEN
//!   try-flock PATH ex|sh        -> flock(LOCK_NB)
//!   hold-lock PATH START LEN r|w, hold-flock PATH ex|sh, hold-open PATH
//!                               reply, then keep the fd open until a line
//!                               or EOF arrives on stdin, then close it,
//!                               print "released" and exit.

use std::ffi::CString;
use std::io::{self, BufRead, Write};

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn oct(s: &str) -> u32 {
    u32::from_str_radix(s, 8).unwrap_or_else(|_| usage(&format!("bad octal {s}")))
}

fn num<T: std::str::FromStr>(s: &str) -> T {
    s.parse()
        .unwrap_or_else(|_| usage(&format!("bad number {s}")))
}

fn usage(msg: &str) -> ! {
    eprintln!("truckeefs-test-helper: {msg}");
    std::process::exit(2)
}

fn reply(r: Result<String, i32>) {
    let mut out = io::stdout().lock();
    match r {
        Ok(s) if s.is_empty() => writeln!(out, "ok").unwrap(),
        Ok(s) => writeln!(out, "ok {s}").unwrap(),
        Err(e) => writeln!(out, "err {e}").unwrap(),
    }
    out.flush().unwrap();
}

fn check(r: libc::c_int) -> Result<String, i32> {
    if r == -1 {
        Err(errno())
    } else {
        Ok(String::new())
    }
}

fn open_rw(path: &str) -> Result<libc::c_int, i32> {
    let fd = unsafe { libc::open(c(path).as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd == -1 {
        Err(errno())
    } else {
        Ok(fd)
    }
}

fn lock_type(s: &str) -> libc::c_short {
    match s {
        "r" => libc::F_RDLCK as libc::c_short,
        "w" => libc::F_WRLCK as libc::c_short,
        _ => usage("lock type must be r or w"),
    }
}

fn flock_struct(t: libc::c_short, start: i64, len: i64) -> libc::flock {
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = t;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start;
    fl.l_len = len;
    fl
}

fn flock_op(s: &str) -> libc::c_int {
    match s {
        "ex" => libc::LOCK_EX,
        "sh" => libc::LOCK_SH,
        _ => usage("flock mode must be ex or sh"),
    }
}

fn wait_for_release(fd: libc::c_int) {
    let mut line = String::new();
    let _ = io::stdin().lock().read_line(&mut line);
    if fd >= 0 {
        unsafe { libc::close(fd) };
    }
    println!("released");
    let _ = io::stdout().flush();
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut uid: Option<u32> = None;
    let mut gid: Option<u32> = None;
    let mut umask: Option<u32> = None;
    loop {
        match args.first().map(String::as_str) {
            Some("--uid") if args.len() > 1 => {
                uid = Some(num(&args[1]));
                args.drain(..2);
            }
            Some("--gid") if args.len() > 1 => {
                gid = Some(num(&args[1]));
                args.drain(..2);
            }
            Some("--umask") if args.len() > 1 => {
                umask = Some(oct(&args[1]));
                args.drain(..2);
            }
            _ => break,
        }
    }
    unsafe {
        if let Some(m) = umask {
            libc::umask(m as libc::mode_t);
        }
        if (uid.is_some() || gid.is_some()) && libc::setgroups(0, std::ptr::null()) != 0 {
            usage(&format!("setgroups: {}", io::Error::last_os_error()));
        }
        if let Some(g) = gid {
            if libc::setresgid(g, g, g) != 0 {
                usage(&format!("setresgid: {}", io::Error::last_os_error()));
            }
        }
        if let Some(u) = uid {
            if libc::setresuid(u, u, u) != 0 {
                usage(&format!("setresuid: {}", io::Error::last_os_error()));
            }
        }
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["open", path, mode] => {
            let flags = match *mode {
                "r" => libc::O_RDONLY,
                "w" => libc::O_WRONLY,
                "rw" => libc::O_RDWR,
                _ => usage("open mode must be r, w or rw"),
            };
            let fd = unsafe { libc::open(c(path).as_ptr(), flags) };
            if fd >= 0 {
                unsafe { libc::close(fd) };
            }
            reply(check(fd));
        }
        ["create", path, mode] => {
            let fd = unsafe {
                libc::open(
                    c(path).as_ptr(),
                    libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                    oct(mode) as libc::c_uint,
                )
            };
            if fd >= 0 {
                unsafe { libc::close(fd) };
            }
            reply(check(fd));
        }
        ["mkdir", path, mode] => reply(check(unsafe {
            libc::mkdir(c(path).as_ptr(), oct(mode) as libc::mode_t)
        })),
        ["unlink", path] => reply(check(unsafe { libc::unlink(c(path).as_ptr()) })),
        ["rmdir", path] => reply(check(unsafe { libc::rmdir(c(path).as_ptr()) })),
        ["rename", old, new] => reply(check(unsafe {
            libc::rename(c(old).as_ptr(), c(new).as_ptr())
        })),
        ["link", old, new] => reply(check(unsafe {
            libc::link(c(old).as_ptr(), c(new).as_ptr())
        })),
        ["symlink", target, path] => reply(check(unsafe {
            libc::symlink(c(target).as_ptr(), c(path).as_ptr())
        })),
        ["chmod", path, mode] => reply(check(unsafe {
            libc::chmod(c(path).as_ptr(), oct(mode) as libc::mode_t)
        })),
        ["chown", path, u, g] => reply(check(unsafe {
            libc::chown(c(path).as_ptr(), num::<i64>(u) as u32, num::<i64>(g) as u32)
        })),
        ["access", path, mode] => {
            let mut m = 0;
            for ch in mode.chars() {
                m |= match ch {
                    'r' => libc::R_OK,
                    'w' => libc::W_OK,
                    'x' => libc::X_OK,
                    'f' => libc::F_OK,
                    _ => usage("access mode letters: r w x f"),
                };
            }
            reply(check(unsafe { libc::access(c(path).as_ptr(), m) }))
        }
        ["stat", path] => {
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            let r = unsafe { libc::lstat(c(path).as_ptr(), &mut st) };
            reply(check(r).map(|_| format!("{} {} {:o}", st.st_uid, st.st_gid, st.st_mode)));
        }
        ["try-lock", path, start, len, t] => {
            let r = open_rw(path).and_then(|fd| {
                let fl = flock_struct(lock_type(t), num(start), num(len));
                let r = check(unsafe { libc::fcntl(fd, libc::F_SETLK, &fl) });
                unsafe { libc::close(fd) };
                r
            });
            reply(r);
        }
        ["getlk", path, start, len, t] => {
            let r = open_rw(path).and_then(|fd| {
                let mut fl = flock_struct(lock_type(t), num(start), num(len));
                let r = check(unsafe { libc::fcntl(fd, libc::F_GETLK, &mut fl) });
                unsafe { libc::close(fd) };
                r.map(|_| {
                    let ty = match fl.l_type as libc::c_int {
                        libc::F_UNLCK => "unlck",
                        libc::F_RDLCK => "rdlck",
                        libc::F_WRLCK => "wrlck",
                        _ => "unknown",
                    };
                    format!("{ty} {} {} {}", fl.l_pid, fl.l_start, fl.l_len)
                })
            });
            reply(r);
        }
        ["try-flock", path, mode] => {
            let r = open_rw(path).and_then(|fd| {
                let r = check(unsafe { libc::flock(fd, flock_op(mode) | libc::LOCK_NB) });
                unsafe { libc::close(fd) };
                r
            });
            reply(r);
        }
        ["hold-lock", path, start, len, t] => match open_rw(path) {
            Ok(fd) => {
                let fl = flock_struct(lock_type(t), num(start), num(len));
                reply(check(unsafe { libc::fcntl(fd, libc::F_SETLK, &fl) }));
                wait_for_release(fd);
            }
            Err(e) => {
                reply(Err(e));
                wait_for_release(-1);
            }
        },
        ["hold-flock", path, mode] => match open_rw(path) {
            Ok(fd) => {
                reply(check(unsafe {
                    libc::flock(fd, flock_op(mode) | libc::LOCK_NB)
                }));
                wait_for_release(fd);
            }
            Err(e) => {
                reply(Err(e));
                wait_for_release(-1);
            }
        },
        ["hold-open", path] => match open_rw(path) {
            Ok(fd) => {
                reply(Ok(String::new()));
                wait_for_release(fd);
            }
            Err(e) => {
                reply(Err(e));
                wait_for_release(-1);
            }
        },
        _ => usage(&format!("unknown command {a:?}")),
    }
}
