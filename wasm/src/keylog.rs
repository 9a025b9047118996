//! Key logging (option tag 12): rustls's secrets as NSS key log lines
//! (the SSLKEYLOGFILE format of NSS, OpenSSL, Wireshark), one per line with
//! its trailing `\n`: `LABEL <client random hex> <secret hex>`.
//!
//! The lines go to one engine-wide buffer, drained by the host with
//! `mimic_keylog_take`. rustls logs synchronously inside the export call that
//! derives the secret (`mimic_client_new`, `mimic_conn_feed`, ...), and the
//! engine is single-threaded, so a host that drains right after each call on
//! a key-logged connection gets that connection's lines. The buffer is
//! bounded (`LIMIT`): lines nobody drains are dropped, oldest first.

use std::fmt::Write;
use std::sync::Mutex;

/// At most this many bytes of undrained lines are kept (a TLS 1.3 handshake
/// logs 5 lines, ~1 KiB).
const LIMIT: usize = 64 * 1024;

static LINES: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// The `KeyLog` of key-logged configs.
#[derive(Debug)]
pub struct BufferedKeyLog;

/// Formats one NSS key log line, with its trailing newline.
pub fn line(label: &str, client_random: &[u8], secret: &[u8]) -> String {
    let mut s = String::with_capacity(label.len() + 3 + 2 * (client_random.len() + secret.len()));
    s.push_str(label);
    s.push(' ');
    for b in client_random {
        let _ = write!(s, "{b:02x}");
    }
    s.push(' ');
    for b in secret {
        let _ = write!(s, "{b:02x}");
    }
    s.push('\n');
    s
}

impl rustls::KeyLog for BufferedKeyLog {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        let l = line(label, client_random, secret);
        let mut buf = LINES.lock().unwrap_or_else(|e| e.into_inner());
        if buf.len() + l.len() > LIMIT {
            // Drop whole lines from the front until it fits.
            let mut cut = 0;
            while cut < buf.len() && buf.len() - cut + l.len() > LIMIT {
                match buf[cut..].iter().position(|&c| c == b'\n') {
                    Some(i) => cut += i + 1,
                    None => cut = buf.len(),
                }
            }
            buf.drain(..cut);
        }
        buf.extend_from_slice(l.as_bytes());
    }
}

/// Moves the buffered lines into `out` (replacing its contents).
pub fn take(out: &mut Vec<u8>) {
    let mut buf = LINES.lock().unwrap_or_else(|e| e.into_inner());
    out.clear();
    out.extend_from_slice(&buf);
    buf.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nss_format() {
        assert_eq!(
            line("CLIENT_RANDOM", &[0, 1, 0xab], &[0xff, 0x10]),
            "CLIENT_RANDOM 0001ab ff10\n"
        );
    }
}
