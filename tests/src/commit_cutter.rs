//! A TCP proxy in front of the private MariaDB that can lose one `COMMIT` or its answer: the
//! two halves of a commit in doubt, for the tests of what the store and the mounts make of one.

use crate::mariadb::MariaDb;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU8, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread;

/// What [`CommitCutter`] does to the next `COMMIT`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Cut {
    Nothing,
    /// Never forwarded: the connection closes before the server has it.
    Commit,
    /// Forwarded, and the connection closes instead of passing the server's answer on.
    Answer,
    /// Forwarded, and the server's answers are dropped from then on: the client hears nothing.
    Stall,
}

/// A TCP proxy in front of the server that can lose one `COMMIT` or its answer: the two halves
/// of a commit in doubt. It reads the client's side packet by packet (3-byte length, sequence
/// number, payload; `COM_QUERY` is `0x03` and the text).
pub struct CommitCutter {
    /// Where clients connect (on 127.0.0.1).
    pub port: u16,
    cut: Arc<Mutex<Cut>>,
}

impl CommitCutter {
    /// Listens on a free loopback port and relays each connection to `server`.
    pub fn start(server: &MariaDb) -> CommitCutter {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(Mutex::new(Cut::Nothing));
        let (host, server_port, shared) = (server.host().to_string(), server.port(), cut.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(upstream) = TcpStream::connect((host.as_str(), server_port)) else {
                    continue;
                };
                let cut = shared.clone();
                thread::spawn(move || relay(client, upstream, cut));
            }
        });
        CommitCutter { port, cut }
    }

    /// What happens to the next `COMMIT` of any connection.
    pub fn arm(&self, how: Cut) {
        *self.cut.lock().unwrap() = how;
    }

    /// What is still armed: `Cut::Nothing` once a `COMMIT` took it.
    pub fn armed(&self) -> Cut {
        *self.cut.lock().unwrap()
    }
}

fn relay(client: TcpStream, server: TcpStream, cut: Arc<Mutex<Cut>>) {
    // What becomes of the server's answers: passed on, or the connection closes, or dropped.
    const PASS: u8 = 0;
    const CLOSE: u8 = 1;
    const DROP: u8 = 2;
    let answers_go = Arc::new(AtomicU8::new(PASS));
    let (mut answers, mut back) = (server.try_clone().unwrap(), client.try_clone().unwrap());
    let go = answers_go.clone();
    thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok(n @ 1..) = answers.read(&mut buf) {
            match go.load(SeqCst) {
                PASS if back.write_all(&buf[..n]).is_ok() => {}
                DROP => {}
                _ => break,
            }
        }
        let _ = back.shutdown(Shutdown::Both);
        let _ = answers.shutdown(Shutdown::Both);
    });
    let (mut from, mut to) = (client, server);
    loop {
        let mut header = [0u8; 4];
        if from.read_exact(&mut header).is_err() {
            break;
        }
        let mut payload =
            vec![0u8; u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize];
        if from.read_exact(&mut payload).is_err() {
            break;
        }
        if payload.starts_with(b"\x03SELECT @@max_allowed_packet")
            && payload.ends_with(b",@@socket")
        {
            // The driver asks a server on this machine for its unix socket, to move there (past
            // this proxy); it hears of none, as from a server on another machine, and stays.
            payload.truncate(payload.len() - b"@@socket".len());
            payload.extend_from_slice(b"NULL");
            header[..3].copy_from_slice(&(payload.len() as u32).to_le_bytes()[..3]);
        }
        if payload == b"\x03COMMIT" {
            match std::mem::replace(&mut *cut.lock().unwrap(), Cut::Nothing) {
                Cut::Commit => break,
                Cut::Answer => answers_go.store(CLOSE, SeqCst),
                Cut::Stall => answers_go.store(DROP, SeqCst),
                Cut::Nothing => {}
            }
        }
        if to
            .write_all(&header)
            .and_then(|()| to.write_all(&payload))
            .is_err()
        {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
