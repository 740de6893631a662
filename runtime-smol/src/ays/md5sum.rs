//! md5, the content address of every aysfs blob, and the costliest thing the client does with a
//! blob (it hashes every byte before serving one): OpenSSL's implementation where the library
//! offers it (it is linked already, for libcurl and MySQL's TLS; about 1.2x the speed of
//! RustCrypto's `md-5` on x86-64), else `md-5` (an OpenSSL without MD5, as in FIPS mode).

use md5::Digest;
use std::io;
use std::sync::OnceLock;

use openssl::hash::{Hasher, MessageDigest};

/// Computes an md5 incrementally.
pub struct Md5Hasher(Inner);

enum Inner {
    OpenSsl(Hasher),
    RustCrypto(md5::Md5),
    /// OpenSSL failed part-way: the md5 of what was given is unknown.
    Failed,
}

/// Whether OpenSSL's md5 is there and right (checked once, on a known answer).
fn openssl_md5() -> bool {
    static WORKS: OnceLock<bool> = OnceLock::new();
    *WORKS.get_or_init(|| {
        let works = openssl::hash::hash(MessageDigest::md5(), b"abc")
            .is_ok_and(|d| d[..] == [0x90, 0x01, 0x50, 0x98, 0x3c, 0xd2, 0x4f, 0xb0, 0xd6, 0x96, 0x3f, 0x7d, 0x28, 0xe1, 0x7f, 0x72]);
        if !works {
            tracing::info!("OpenSSL offers no md5 here; blobs are hashed with the md-5 crate");
        }
        works
    })
}

impl Default for Md5Hasher {
    fn default() -> Self {
        Md5Hasher::new()
    }
}

impl Md5Hasher {
    pub fn new() -> Md5Hasher {
        if openssl_md5() {
            if let Ok(h) = Hasher::new(MessageDigest::md5()) {
                return Md5Hasher(Inner::OpenSsl(h));
            }
        }
        Md5Hasher(Inner::RustCrypto(md5::Md5::new()))
    }

    pub fn update(&mut self, data: &[u8]) {
        match &mut self.0 {
            Inner::OpenSsl(h) => {
                if h.update(data).is_err() {
                    self.0 = Inner::Failed;
                }
            }
            Inner::RustCrypto(h) => h.update(data),
            Inner::Failed => {}
        }
    }

    /// The md5 of everything given so far.
    pub fn finish(self) -> io::Result<[u8; 16]> {
        let failed = || io::Error::other("OpenSSL failed to compute an md5");
        match self.0 {
            Inner::OpenSsl(mut h) => {
                let d = h.finish().map_err(|_| failed())?;
                d[..].try_into().map_err(|_| failed())
            }
            Inner::RustCrypto(h) => Ok(h.finalize().into()),
            Inner::Failed => Err(failed()),
        }
    }

    /// The md5 of everything given so far, in lowercase hex.
    pub fn finish_hex(self) -> io::Result<String> {
        Ok(super::proto::hex(&self.finish()?))
    }
}

/// The md5 of `data`.
pub fn md5_of(data: &[u8]) -> [u8; 16] {
    let mut h = Md5Hasher::new();
    h.update(data);
    h.finish().unwrap_or_else(|_| md5::Md5::digest(data).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both implementations give RFC 1321's answers, and the same md5 fed in pieces.
    #[test]
    fn openssl_and_rustcrypto_agree_with_rfc_1321() {
        assert!(openssl_md5(), "this machine's OpenSSL offers md5");
        let cases: [(&[u8], &str); 3] = [
            (b"", "d41d8cd98f00b204e9800998ecf8427e"),
            (b"message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            (b"12345678901234567890123456789012345678901234567890123456789012345678901234567890", "57edf4a22be3c955ac49da2e2107b67a"),
        ];
        for (input, want) in cases {
            assert_eq!(super::super::proto::hex(&md5_of(input)), want);
            let mut rust = Md5Hasher(Inner::RustCrypto(md5::Md5::new()));
            let mut ssl = Md5Hasher::new();
            assert!(matches!(ssl.0, Inner::OpenSsl(_)));
            for piece in input.chunks(7) {
                rust.update(piece);
                ssl.update(piece);
            }
            assert_eq!(rust.finish_hex().unwrap(), want);
            assert_eq!(ssl.finish_hex().unwrap(), want);
        }
    }
}
