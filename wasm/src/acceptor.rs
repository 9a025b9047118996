//! The server's ClientHello phase (SNI certificate selection): rustls's
//! `Acceptor` reads the ClientHello before a configuration is chosen; the
//! host reads what the client offered (`mimic_acceptor_hello`), picks its
//! options, and turns the acceptor into a server connection
//! (`mimic_acceptor_accept`) that carries over every byte already read.
//!
//! Exports (handles in their own slab; 0 is never a handle):
//! - `mimic_acceptor_new() -> h`
//! - `mimic_acceptor_feed(h, ptr, len) -> consumed | -1`: bytes from the
//!   client; consumed < len once the ClientHello is complete (the rest
//!   belongs to the connection: feed it there after accepting).
//! - `mimic_acceptor_hello(h) -> len | 0 | -1`: 0 until the ClientHello is
//!   complete, then the ClientHello's fields in the result buffer (below).
//! - `mimic_acceptor_take(h, ptr, cap) -> n`: an alert to send after a
//!   failure (0: none).
//! - `mimic_acceptor_accept(h, cfg) -> conn handle | -1 | -2`: once.
//! - `mimic_acceptor_free(h)`.
//!
//! ClientHello layout: fields are `u32 LE length (0xFFFFFFFF = null) + bytes`:
//! server name, then `u32` count and that many ALPN protocols, `u32` count
//! and cipher suite names (IANA; unknown ones as "0x1234"; GREASE omitted),
//! `u32` count and signature scheme names (IANA, e.g.
//! "ecdsa_secp256r1_sha256"; unknown ones as "0x1234").

use rustls::server::{Accepted, Acceptor as RustlsAcceptor};
use rustls::{CipherSuite, Connection, SignatureScheme};

use crate::errors::{self, EngineError};
use crate::{fail, with_engine, put_field, slice, slice_mut, Config, Conn, BUFFER_LIMIT};

enum State {
    Reading(Box<RustlsAcceptor>),
    Ready(Box<Accepted>),
    Done,
}

pub(crate) struct Acceptor {
    state: State,
    head: errors::Head,
    /// An alert to send to the client after a failure.
    alert: Vec<u8>,
    /// Whether the ClientHello offers a PSK (see `pq::set_client_offers_psk`).
    offers_psk: Option<bool>,
}

fn no_acceptor(e: &mut crate::Engine) -> i32 {
    fail(e, EngineError::tls("Closed", "no such acceptor".into()))
}

/// A new acceptor waiting for a ClientHello. Returns its handle (> 0).
#[no_mangle]
pub extern "C" fn mimic_acceptor_new() -> i32 {
    with_engine(|e| {
        e.acceptors.insert(Acceptor {
            state: State::Reading(Box::default()),
            head: Default::default(),
            alert: Vec::new(),
            offers_psk: None,
        })
    })
}

/// Releases an acceptor. Unknown handles are ignored.
#[no_mangle]
pub extern "C" fn mimic_acceptor_free(h: i32) {
    with_engine(|e| e.acceptors.remove(h));
}

/// Feeds bytes from the client. Returns how many were consumed (fewer than
/// `len` once the ClientHello is complete), or -1 on a TLS error (the
/// result buffer holds it; `mimic_acceptor_take` may give an alert).
///
/// # Safety
/// (ptr, len) must be a valid buffer in linear memory.
#[no_mangle]
pub unsafe extern "C" fn mimic_acceptor_feed(h: i32, ptr: *const u8, len: usize) -> i32 {
    // SAFETY: per the contract above.
    let data = unsafe { slice(ptr, len) };
    with_engine(|e| {
        let Some(a) = e.acceptors.get(h) else { return no_acceptor(e) };
        a.head.note(data);
        if a.offers_psk.is_none() && !data.is_empty() {
            a.offers_psk = Some(crate::pq::client_hello_offers_psk(data));
        }
        let State::Reading(acceptor) = &mut a.state else {
            // Complete (or failed): nothing more is read here.
            return 0;
        };
        let mut rest = data;
        while !rest.is_empty() {
            match acceptor.read_tls(&mut rest) {
                Ok(0) => break,
                Ok(_) => {}
                Err(err) => {
                    let err = a.head.explain(EngineError::tls("BadInput", err.to_string()), false);
                    a.state = State::Done;
                    return fail(e, err);
                }
            }
            match acceptor.accept() {
                Ok(None) => {}
                Ok(Some(accepted)) => {
                    a.state = State::Ready(Box::new(accepted));
                    break;
                }
                Err((err, mut alert)) => {
                    let _ = alert.write_all(&mut a.alert);
                    let err = a.head.explain(errors::from_rustls(&err), false);
                    a.state = State::Done;
                    return fail(e, err);
                }
            }
        }
        (data.len() - rest.len()) as i32
    })
}

/// Writes the alert left by a failure into (ptr, cap); returns the count.
///
/// # Safety
/// (ptr, cap) must be a valid buffer in linear memory.
#[no_mangle]
pub unsafe extern "C" fn mimic_acceptor_take(h: i32, ptr: *mut u8, cap: usize) -> i32 {
    // SAFETY: per the contract above.
    let out = unsafe { slice_mut(ptr, cap) };
    with_engine(|e| {
        let Some(a) = e.acceptors.get(h) else { return no_acceptor(e) };
        let n = a.alert.len().min(out.len());
        out[..n].copy_from_slice(&a.alert[..n]);
        a.alert.drain(..n);
        n as i32
    })
}

/// GREASE values (RFC 8701): 0x0A0A, 0x1A1A, ..., 0xFAFA.
fn grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

fn suite_name(cs: CipherSuite) -> Option<String> {
    let v = u16::from(cs);
    if grease(v) {
        return None;
    }
    Some(match cs.as_str() {
        Some(n) => match n.strip_prefix("TLS13_") {
            Some(rest) => format!("TLS_{rest}"),
            None => n.to_string(),
        },
        None => format!("0x{v:04X}"),
    })
}

/// IANA names (TLS SignatureScheme registry).
fn scheme_name(s: SignatureScheme) -> Option<String> {
    let v = u16::from(s);
    if grease(v) {
        return None;
    }
    let name = match v {
        0x0201 => "rsa_pkcs1_sha1",
        0x0203 => "ecdsa_sha1",
        0x0401 => "rsa_pkcs1_sha256",
        0x0403 => "ecdsa_secp256r1_sha256",
        0x0501 => "rsa_pkcs1_sha384",
        0x0503 => "ecdsa_secp384r1_sha384",
        0x0601 => "rsa_pkcs1_sha512",
        0x0603 => "ecdsa_secp521r1_sha512",
        0x0804 => "rsa_pss_rsae_sha256",
        0x0805 => "rsa_pss_rsae_sha384",
        0x0806 => "rsa_pss_rsae_sha512",
        0x0807 => "ed25519",
        0x0808 => "ed448",
        0x0809 => "rsa_pss_pss_sha256",
        0x080a => "rsa_pss_pss_sha384",
        0x080b => "rsa_pss_pss_sha512",
        0x081a => "ecdsa_brainpoolP256r1tls13_sha256",
        0x081b => "ecdsa_brainpoolP384r1tls13_sha384",
        0x081c => "ecdsa_brainpoolP512r1tls13_sha512",
        0x0904 => "mldsa44",
        0x0905 => "mldsa65",
        0x0906 => "mldsa87",
        _ => return Some(format!("0x{v:04X}")),
    };
    Some(name.to_string())
}

fn put_list(out: &mut Vec<u8>, items: &[String]) {
    out.extend_from_slice(&(items.len() as u32).to_le_bytes());
    for i in items {
        put_field(out, Some(i.as_bytes()));
    }
}

/// 0 until the ClientHello is complete; then writes it into the result
/// buffer (layout in the module docs) and returns its length. -1 when the
/// acceptor failed or was accepted already.
#[no_mangle]
pub extern "C" fn mimic_acceptor_hello(h: i32) -> i32 {
    with_engine(|e| {
        let Some(a) = e.acceptors.get(h) else { return no_acceptor(e) };
        let accepted = match &a.state {
            State::Reading(_) => return 0,
            State::Ready(accepted) => accepted,
            State::Done => {
                return fail(e, EngineError::tls("Closed", "the acceptor is done".into()));
            }
        };
        let hello = accepted.client_hello();
        let mut out = std::mem::take(&mut e.result);
        out.clear();
        put_field(&mut out, hello.server_name().map(str::as_bytes));
        let alpn: Vec<Vec<u8>> = hello.alpn().map(|i| i.map(<[u8]>::to_vec).collect()).unwrap_or_default();
        out.extend_from_slice(&(alpn.len() as u32).to_le_bytes());
        for p in &alpn {
            put_field(&mut out, Some(p));
        }
        let suites: Vec<String> = hello.cipher_suites().iter().filter_map(|c| suite_name(*c)).collect();
        put_list(&mut out, &suites);
        let schemes: Vec<String> =
            hello.signature_schemes().iter().filter_map(|s| scheme_name(*s)).collect();
        put_list(&mut out, &schemes);
        e.result = out;
        e.result.len() as i32
    })
}

/// Turns a complete acceptor into a server connection with config `cfg`.
/// Returns the connection's handle (in the connections' slab: every
/// `mimic_conn_*` export applies), -1 on a TLS error (an alert may be left
/// for `mimic_acceptor_take`) or -2 for a handle that is not a server
/// config. The acceptor is spent either way (free it).
#[no_mangle]
pub extern "C" fn mimic_acceptor_accept(h: i32, cfg: i32) -> i32 {
    with_engine(|e| {
        let config = match e.configs.get(cfg) {
            Some(Config::Server(c)) => c.clone(),
            _ => return fail(e, EngineError::options("not a server config handle".into())),
        };
        let Some(a) = e.acceptors.get(h) else { return no_acceptor(e) };
        let accepted = match std::mem::replace(&mut a.state, State::Done) {
            State::Ready(accepted) => accepted,
            other => {
                a.state = other;
                return fail(e, EngineError::tls("Closed", "the ClientHello is not complete".into()));
            }
        };
        crate::pq::set_client_offers_psk(a.offers_psk.unwrap_or(true));
        match accepted.into_connection(config) {
            Ok(mut c) => {
                c.set_buffer_limit(Some(BUFFER_LIMIT));
                // Bytes read after the ClientHello are processed now.
                if let Err(err) = c.process_new_packets() {
                    while c.wants_write() {
                        if c.write_tls(&mut a.alert).is_err() {
                            break;
                        }
                    }
                    let err = a.head.explain(errors::from_rustls(&err), false);
                    return fail(e, err);
                }
                let mut conn = Conn::new(Connection::Server(c), None);
                conn.head = std::mem::take(&mut a.head);
                conn.offers_psk = a.offers_psk;
                e.conns.insert(conn)
            }
            Err((err, mut alert)) => {
                let _ = alert.write_all(&mut a.alert);
                fail(e, errors::from_rustls(&err))
            }
        }
    })
}
