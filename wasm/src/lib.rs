//! mimic TLS engine: rustls 0.23 (ring provider) compiled to
//! wasm32-unknown-unknown and driven sans-IO from TypeScript
//! (`src/_engine.ts`).
//!
//! ABI: plain C exports, no wasm-bindgen. All integers are i32 (wasm32
//! `usize`). Buffers are passed as (ptr, len) into the exported `memory`; the
//! host allocates them with `mimic_alloc` and releases them with `mimic_free`.
//! Results that are variable-length (errors, handshake info) are left in an
//! engine-owned "result buffer" read through `mimic_result_ptr` /
//! `mimic_result_len`, valid until the next export call.
//!
//! Host imports (module `env`):
//! - `mimic_now_ms() -> f64`: wall-clock time in ms since the Unix epoch.
//! - `mimic_random(ptr, len)`: fill `len` bytes at `ptr` with CSPRNG output.
//! - `mimic_panic(ptr, len)`: a panic's message (UTF-8), just before the trap.

#![deny(unsafe_op_in_unsafe_fn)]

mod abi;
mod acceptor;
mod alloc_count;
#[cfg(target_feature = "simd128")]
mod chacha;
mod ech;
mod errors;
mod host_aead;
mod keylog;
mod options;
mod pq;
mod tls13_record;
mod verify_cache;

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::pki_types::{ServerName, UnixTime};
use rustls::{ClientConnection, Connection, ServerConnection};

use errors::{EngineError, ErrorKind};

#[global_allocator]
static ALLOC: alloc_count::Counting = alloc_count::Counting;

// ---------------------------------------------------------------------------
// Host imports
// ---------------------------------------------------------------------------

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "env")]
extern "C" {
    fn mimic_now_ms() -> f64;
    fn mimic_panic(ptr: *const u8, len: usize);
}
// `env.mimic_random(ptr, len)` is imported by shims/getrandom (ring's RNG).

// Host builds (`cargo test`): the same imports, from the host's std.
#[cfg(not(target_arch = "wasm32"))]
unsafe fn mimic_now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(-1.0)
}
#[cfg(not(target_arch = "wasm32"))]
unsafe fn mimic_panic(_ptr: *const u8, _len: usize) {}

/// Wall-clock time from the host (`Date.now()`); `SystemTime::now()` panics on
/// wasm32-unknown-unknown and is never reached.
#[derive(Debug)]
pub(crate) struct HostTime;

impl rustls::time_provider::TimeProvider for HostTime {
    fn current_time(&self) -> Option<UnixTime> {
        // SAFETY: plain host call without pointers.
        let ms = unsafe { mimic_now_ms() };
        if !ms.is_finite() || ms < 0.0 {
            return None;
        }
        Some(UnixTime::since_unix_epoch(
            core::time::Duration::from_millis(ms as u64),
        ))
    }
}

// ---------------------------------------------------------------------------
// Engine state (single-threaded)
// ---------------------------------------------------------------------------

/// Per-connection bound on buffered outgoing TLS / not-yet-encrypted plaintext.
const BUFFER_LIMIT: usize = 64 * 1024;

enum Config {
    Client(Arc<rustls::ClientConfig>),
    Server(Arc<rustls::ServerConfig>),
}

struct Conn {
    conn: Connection,
    /// Server name sent by the client (None for an IP address), client side.
    sni: Option<String>,
    /// The first fatal error: every later call reports it again, so a
    /// failure has one code whichever call meets it.
    failed: Option<EngineError>,
    /// Decrypted bytes waiting to be read (rustls' count after the last
    /// `process_new_packets`, less what was read since).
    plaintext: usize,
    /// The peer's close_notify was received.
    peer_closed: bool,
    /// The transport's end was fed.
    transport_ended: bool,
    /// close_notify was queued.
    notified: bool,
    /// The peer's first bytes, to explain a failure on them.
    head: errors::Head,
    /// Server side: whether the ClientHello offers a PSK (see
    /// `pq::set_client_offers_psk`); None until its first bytes arrive.
    offers_psk: Option<bool>,
}

impl Conn {
    fn new(conn: Connection, sni: Option<String>) -> Self {
        Conn {
            conn,
            sni,
            failed: None,
            plaintext: 0,
            peer_closed: false,
            transport_ended: false,
            notified: false,
            head: Default::default(),
            offers_psk: None,
        }
    }

    /// Records the first fatal error and returns the one to report.
    fn fail(&mut self, err: EngineError) -> EngineError {
        self.failed.get_or_insert(err).clone()
    }

    /// Processes buffered records; Err is the connection's (sticky) error.
    fn process(&mut self) -> Result<(), EngineError> {
        match self.conn.process_new_packets() {
            Ok(io) => {
                self.plaintext = io.plaintext_bytes_to_read();
                self.peer_closed |= io.peer_has_closed();
                Ok(())
            }
            Err(err) => {
                let client = matches!(self.conn, Connection::Client(_));
                let err = self.head.explain(errors::from_rustls(&err), client);
                Err(self.fail(err))
            }
        }
    }

    /// The status flags (see `mimic_status_ptr`).
    fn flags(&self) -> u32 {
        ((self.conn.is_handshaking() as u32) * abi::STATUS_HANDSHAKING as u32)
            | ((self.peer_closed as u32) * abi::STATUS_PEER_CLOSED as u32)
            | ((self.transport_ended as u32) * abi::STATUS_TRANSPORT_ENDED as u32)
            | ((self.failed.is_some() as u32) * abi::STATUS_FAILED as u32)
            | ((self.notified as u32) * abi::STATUS_NOTIFIED as u32)
            | ((self.conn.wants_read() as u32) * abi::STATUS_WANTS_READ as u32)
    }
}

struct Slab<T> {
    items: Vec<Option<T>>,
    free: Vec<u32>,
}

impl<T> Slab<T> {
    const fn new() -> Self {
        Self {
            items: Vec::new(),
            free: Vec::new(),
        }
    }
    fn insert(&mut self, v: T) -> i32 {
        if let Some(i) = self.free.pop() {
            self.items[i as usize] = Some(v);
            i as i32 + 1
        } else {
            self.items.push(Some(v));
            self.items.len() as i32
        }
    }
    fn get(&mut self, h: i32) -> Option<&mut T> {
        if h <= 0 {
            return None;
        }
        self.items.get_mut(h as usize - 1).and_then(|x| x.as_mut())
    }
    fn remove(&mut self, h: i32) -> Option<T> {
        if h <= 0 {
            return None;
        }
        let v = self.items.get_mut(h as usize - 1).and_then(|x| x.take());
        if v.is_some() {
            self.free.push(h as u32 - 1);
        }
        v
    }
}

struct Engine {
    configs: Slab<Config>,
    conns: Slab<Conn>,
    acceptors: Slab<acceptor::Acceptor>,
    result: Vec<u8>,
    /// The status after the last connection call: plaintext bytes to read,
    /// TLS bytes to send (> 0: some), flags.
    status: [u32; 3],
}

thread_local! {
    /// The engine's state. wasm32-unknown-unknown has one thread, where this
    /// is a plain static; the `RefCell` turns a re-entrant export call (which
    /// none makes) into a panic (a trap) instead of aliased `&mut`.
    static ENGINE: RefCell<Engine> = const {
        RefCell::new(Engine {
            configs: Slab::new(),
            conns: Slab::new(),
            acceptors: Slab::new(),
            result: Vec::new(),
            status: [0; 3],
        })
    };
}

/// Runs `f` with the engine's state: every export goes through here, once.
fn with_engine<R>(f: impl FnOnce(&mut Engine) -> R) -> R {
    ENGINE.with(|e| f(&mut e.borrow_mut()))
}

/// Records an error in the result buffer (`code\0alert\0message`) and
/// returns the status for it: -1 for TLS errors, -2 for invalid options.
fn fail(e: &mut Engine, err: EngineError) -> i32 {
    e.result.clear();
    e.result.extend_from_slice(err.code.as_bytes());
    e.result.push(0);
    e.result
        .extend_from_slice(err.alert.unwrap_or("").as_bytes());
    e.result.push(0);
    e.result.extend_from_slice(err.message.as_bytes());
    match err.kind {
        ErrorKind::Tls => abi::ERR_TLS,
        ErrorKind::Options => abi::ERR_OPTIONS,
    }
}

fn no_conn(e: &mut Engine) -> i32 {
    fail(e, EngineError::tls("Closed", "no such connection".into()))
}

unsafe fn slice<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    if len == 0 {
        &[]
    } else {
        // SAFETY: caller guarantees a valid (ptr, len) inside linear memory.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

unsafe fn slice_mut<'a>(ptr: *mut u8, len: usize) -> &'a mut [u8] {
    if len == 0 {
        &mut []
    } else {
        // SAFETY: caller guarantees a valid (ptr, len) inside linear memory.
        unsafe { std::slice::from_raw_parts_mut(ptr, len) }
    }
}

// ---------------------------------------------------------------------------
// Memory exports
// ---------------------------------------------------------------------------

/// Allocates `len` bytes (alignment 8) for the host; 0 on failure.
#[no_mangle]
pub extern "C" fn mimic_alloc(len: usize) -> *mut u8 {
    let layout = match std::alloc::Layout::from_size_align(len.max(1), 8) {
        Ok(l) => l,
        Err(_) => return std::ptr::null_mut(),
    };
    // SAFETY: non-zero size layout.
    unsafe { std::alloc::alloc(layout) }
}

/// Frees a block returned by `mimic_alloc(len)`.
///
/// # Safety
/// `ptr` must come from `mimic_alloc` with the same `len`.
#[no_mangle]
pub unsafe extern "C" fn mimic_free(ptr: *mut u8, len: usize) {
    if ptr.is_null() {
        return;
    }
    let layout = std::alloc::Layout::from_size_align(len.max(1), 8).unwrap();
    // SAFETY: per the contract above.
    unsafe { std::alloc::dealloc(ptr, layout) }
}

/// Pointer to the result buffer (error or handshake info of the last call).
#[no_mangle]
pub extern "C" fn mimic_result_ptr() -> *const u8 {
    with_engine(|e| e.result.as_ptr())
}

/// Length of the result buffer.
#[no_mangle]
pub extern "C" fn mimic_result_len() -> usize {
    with_engine(|e| e.result.len())
}

/// Bytes currently allocated by the engine's heap (for memory measurements).
#[no_mangle]
pub extern "C" fn mimic_heap_bytes() -> usize {
    alloc_count::allocated()
}

/// Initialises the engine: installs a panic hook that reports the panic's
/// message to the host (`env.mimic_panic`) before the trap. Call once.
#[no_mangle]
pub extern "C" fn mimic_init() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info.to_string();
        // SAFETY: (ptr, len) is a valid UTF-8 buffer for the call's duration.
        unsafe { mimic_panic(msg.as_ptr(), msg.len()) };
    }));
}

/// Panics (a wasm trap, panic=abort): for testing trap containment only.
#[no_mangle]
pub extern "C" fn mimic_debug_trap() {
    panic!("mimic_debug_trap");
}

// ---------------------------------------------------------------------------
// Configs
// ---------------------------------------------------------------------------

/// Builds a client config from encoded options (see `options.rs`). Returns a
/// handle > 0, or -2 for invalid options (result buffer holds the error).
///
/// # Safety
/// (ptr, len) must be a valid buffer in linear memory.
#[no_mangle]
pub unsafe extern "C" fn mimic_client_config_new(ptr: *const u8, len: usize) -> i32 {
    // SAFETY: per the contract above.
    let opts = unsafe { slice(ptr, len) };
    with_engine(|e| {
        match options::client_config(opts) {
            Ok(c) => e.configs.insert(Config::Client(c)),
            Err(err) => fail(e, err),
        }
    })
}

/// Builds a server config from encoded options. Handle > 0, or -2.
///
/// # Safety
/// (ptr, len) must be a valid buffer in linear memory.
#[no_mangle]
pub unsafe extern "C" fn mimic_server_config_new(ptr: *const u8, len: usize) -> i32 {
    // SAFETY: per the contract above.
    let opts = unsafe { slice(ptr, len) };
    with_engine(|e| {
        match options::server_config(opts) {
            Ok(c) => e.configs.insert(Config::Server(c)),
            Err(err) => fail(e, err),
        }
    })
}

/// Releases a config handle (connections using it keep it alive).
#[no_mangle]
pub extern "C" fn mimic_config_free(h: i32) {
    with_engine(|e| e.configs.remove(h));
}

// ---------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------

/// Parses a hostname: IP literals (optionally `[v6]`) become IP addresses.
fn server_name(host: &str) -> Result<ServerName<'static>, EngineError> {
    let h = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = h.parse::<std::net::IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    let h = h.strip_suffix('.').unwrap_or(h);
    ServerName::try_from(h.to_string())
        .map_err(|_| EngineError::options(format!("invalid hostname: {host:?}")))
}

/// New client connection for config `cfg` and hostname (UTF-8 at ptr/len).
/// Returns a connection handle > 0, -1 (TLS error) or -2 (invalid hostname).
///
/// # Safety
/// (ptr, len) must be a valid buffer in linear memory.
#[no_mangle]
pub unsafe extern "C" fn mimic_client_new(cfg: i32, ptr: *const u8, len: usize) -> i32 {
    // SAFETY: per the contract above.
    let host = unsafe { slice(ptr, len) };
    with_engine(|e| {
        let config = match e.configs.get(cfg) {
            Some(Config::Client(c)) => c.clone(),
            _ => return fail(e, EngineError::options("not a client config handle".into())),
        };
        let host = match std::str::from_utf8(host) {
            Ok(h) => h,
            Err(_) => return fail(e, EngineError::options("hostname is not UTF-8".into())),
        };
        let name = match server_name(host) {
            Ok(n) => n,
            Err(err) => return fail(e, err),
        };
        let sni = match &name {
            ServerName::DnsName(d) => Some(d.as_ref().to_string()),
            _ => None,
        };
        match ClientConnection::new(config, name) {
            Ok(mut c) => {
                c.set_buffer_limit(Some(BUFFER_LIMIT));
                e.conns.insert(Conn::new(c.into(), sni))
            }
            Err(err) => fail(e, errors::from_rustls(&err)),
        }
    })
}

/// New server connection for config `cfg`. Handle > 0, or < 0 on error.
#[no_mangle]
pub extern "C" fn mimic_server_new(cfg: i32) -> i32 {
    with_engine(|e| {
        let config = match e.configs.get(cfg) {
            Some(Config::Server(c)) => c.clone(),
            _ => return fail(e, EngineError::options("not a server config handle".into())),
        };
        match ServerConnection::new(config) {
            Ok(mut c) => {
                c.set_buffer_limit(Some(BUFFER_LIMIT));
                e.conns.insert(Conn::new(c.into(), None))
            }
            Err(err) => fail(e, errors::from_rustls(&err)),
        }
    })
}

/// Releases a connection. Unknown handles are ignored.
#[no_mangle]
pub extern "C" fn mimic_conn_free(h: i32) {
    with_engine(|e| e.conns.remove(h));
}

/// The status block: three u32 written after every connection call (feed,
/// take, read, write, close_notify), for the host to read without another
/// call: `[plaintext bytes ready to read, TLS bytes to send (> 0 when there
/// are some), flags]`, flags as `abi::STATUS_*`.
#[no_mangle]
pub extern "C" fn mimic_status_ptr() -> *const u32 {
    with_engine(|e| e.status.as_ptr())
}

/// Entry `i` of the ABI table (`abi::TABLE`: status codes, status flags,
/// option tags), or `i32::MIN` past its end: lets the host check its copy
/// of every shared constant against the engine's.
#[no_mangle]
pub extern "C" fn mimic_abi(i: u32) -> i32 {
    abi::entry(i)
}

/// Writes connection `h`'s status into the status block and returns `r`.
fn done(e: &mut Engine, h: i32, r: i32) -> i32 {
    if let Some(c) = e.conns.get(h) {
        let out = c.conn.wants_write() as u32;
        e.status = [c.plaintext as u32, out, c.flags()];
    }
    r
}

/// Reports connection `h`'s error `err` (also in the status block).
fn conn_fail(e: &mut Engine, h: i32, err: EngineError) -> i32 {
    let r = fail(e, err);
    done(e, h, r)
}

/// Feeds TLS bytes received from the peer and processes them. Returns the
/// number of bytes consumed (fewer than `len` when the received-plaintext
/// buffer is full: read first), or -1 on a TLS error (result buffer holds
/// it; the status says whether an alert waits to be sent). `len == 0`
/// signals the transport's end; then a read without the peer's
/// close_notify fails with `UnexpectedEof` (during the handshake, this call
/// does).
///
/// # Safety
/// (ptr, len) must be a valid buffer in linear memory.
#[no_mangle]
pub unsafe extern "C" fn mimic_conn_feed(h: i32, ptr: *const u8, len: usize) -> i32 {
    // SAFETY: per the contract above.
    let data = unsafe { slice(ptr, len) };
    with_engine(|e| {
        let Some(c) = e.conns.get(h) else {
            return no_conn(e);
        };
        if let Some(err) = &c.failed {
            let err = err.clone();
            return conn_fail(e, h, err);
        }
        c.head.note(data);
        let client = matches!(c.conn, Connection::Client(_));
        if !client {
            if c.offers_psk.is_none() && !data.is_empty() {
                c.offers_psk = Some(pq::client_hello_offers_psk(data));
            }
            pq::set_client_offers_psk(c.offers_psk.unwrap_or(true));
        }
        if data.is_empty() {
            c.transport_ended = true;
            if c.peer_closed {
                // Nothing is processed after close_notify. rustls 0.23.46 would
                // panic here after an empty handshake record and close_notify
                // read together: it discards the buffer, its handshake deframer
                // keeps an offset into it (tests/tls_fuzz_findings_test.ts).
                return done(e, h, 0);
            }
            // Reading from an empty slice returns Ok(0): rustls records the EOF.
            let _ = c.conn.read_tls(&mut &data[..]);
            if let Err(err) = c.process() {
                return conn_fail(e, h, err);
            }
            if c.conn.is_handshaking() {
                let err = c.fail(EngineError::tls(
                    "UnexpectedEof",
                    "the peer closed the connection during the TLS handshake".into(),
                ));
                return conn_fail(e, h, err);
            }
            return done(e, h, 0);
        }
        let mut rest = data;
        while !rest.is_empty() {
            match c.conn.read_tls(&mut rest) {
                Ok(0) => {
                    // close_notify already received: the rest is ignored.
                    rest = &[];
                    break;
                }
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::Other => break, // plaintext full
                Err(err) => {
                    // A pending TLS error explains it better, if there is one.
                    let err = match c.process() {
                        Err(tls) => tls,
                        Ok(()) => {
                            let err = c.head.explain(EngineError::tls("BadInput", err.to_string()), client);
                            c.fail(err)
                        }
                    };
                    return conn_fail(e, h, err);
                }
            }
            if let Err(err) = c.process() {
                return conn_fail(e, h, err);
            }
        }
        done(e, h, (data.len() - rest.len()) as i32)
    })
}

/// Writes outgoing TLS bytes into (ptr, cap). Returns the count (0: none).
/// An alert after a failure is sent this way too.
///
/// # Safety
/// (ptr, cap) must be a valid buffer in linear memory.
#[no_mangle]
pub unsafe extern "C" fn mimic_conn_take(h: i32, ptr: *mut u8, cap: usize) -> i32 {
    // SAFETY: per the contract above.
    let mut out = unsafe { slice_mut(ptr, cap) };
    with_engine(|e| {
        let Some(c) = e.conns.get(h) else {
            return no_conn(e);
        };
        let mut total = 0usize;
        while c.conn.wants_write() && !out.is_empty() {
            match c.conn.write_tls(&mut out) {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(_) => break,
            }
        }
        done(e, h, total as i32)
    })
}

/// Reads decrypted plaintext into (ptr, cap). Returns the count (> 0), 0 when
/// none is available yet, -3 after the peer's close_notify (clean end of
/// flow, every time), or -1 on an error: the connection's, or
/// `UnexpectedEof` when the transport ended without close_notify.
///
/// # Safety
/// (ptr, cap) must be a valid buffer in linear memory, cap > 0.
#[no_mangle]
pub unsafe extern "C" fn mimic_conn_read(h: i32, ptr: *mut u8, cap: usize) -> i32 {
    // SAFETY: per the contract above.
    let buf = unsafe { slice_mut(ptr, cap) };
    with_engine(|e| {
        let Some(c) = e.conns.get(h) else {
            return no_conn(e);
        };
        if let Some(err) = &c.failed {
            let err = err.clone();
            return conn_fail(e, h, err);
        }
        if buf.is_empty() {
            return done(e, h, 0);
        }
        let r = match c.conn.reader().read(buf) {
            Ok(0) => {
                c.peer_closed = true;
                abi::READ_CLOSED
            }
            Ok(n) => {
                c.plaintext = c.plaintext.saturating_sub(n);
                n as i32
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => 0,
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
                let err = c.fail(EngineError::tls(
                    "UnexpectedEof",
                    "the peer closed the connection without sending close_notify".into(),
                ));
                return conn_fail(e, h, err);
            }
            Err(err) => {
                let err = c.fail(EngineError::tls("TlsFailure", err.to_string()));
                return conn_fail(e, h, err);
            }
        };
        done(e, h, r)
    })
}

/// Encrypts plaintext from (ptr, len). Returns the count accepted (fewer when
/// the outgoing buffer limit is reached: take first), or -1 after a failure.
///
/// # Safety
/// (ptr, len) must be a valid buffer in linear memory.
#[no_mangle]
pub unsafe extern "C" fn mimic_conn_write(h: i32, ptr: *const u8, len: usize) -> i32 {
    // SAFETY: per the contract above.
    let data = unsafe { slice(ptr, len) };
    with_engine(|e| {
        let Some(c) = e.conns.get(h) else {
            return no_conn(e);
        };
        if let Some(err) = &c.failed {
            let err = err.clone();
            return conn_fail(e, h, err);
        }
        match c.conn.writer().write(data) {
            Ok(n) => done(e, h, n as i32),
            Err(err) => {
                let err = c.fail(EngineError::tls("TlsFailure", err.to_string()));
                conn_fail(e, h, err)
            }
        }
    })
}

/// Queues a close_notify alert (once; then take).
#[no_mangle]
pub extern "C" fn mimic_conn_close_notify(h: i32) {
    with_engine(|e| {
        if let Some(c) = e.conns.get(h) {
            if !c.notified && c.failed.is_none() {
                c.conn.send_close_notify();
            }
            c.notified = true;
        }
        done(e, h, 0);
    })
}

// ---------------------------------------------------------------------------
// Host AEAD (see host_aead.rs)
// ---------------------------------------------------------------------------

/// Runs the host AEAD against the wasm one on known vectors (RFC 8439, the
/// GCM specification): bit `1 << alg` set for each algorithm where both give
/// the published answer (1 AES-128-GCM, 2 AES-256-GCM, 3 ChaCha20-Poly1305).
#[no_mangle]
pub extern "C" fn mimic_host_aead_selftest() -> u32 {
    host_aead::selftest()
}

/// Enables the host AEAD for new keys of the algorithms in `mask` (bits
/// `1 << alg`, only those the self-test passed should be set) and, with bit
/// 0, puts AES-GCM first in the default suite order of configs made after.
#[no_mangle]
pub extern "C" fn mimic_set_host_aead(mask: u32) {
    host_aead::set_enabled(mask);
}

fn put_field(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        Some(b) => {
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        }
        None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
    }
}

/// Writes handshake info into the result buffer and returns its length, or
/// -1 if the handshake has not completed. Layout: fields as
/// `u32 LE length (0xFFFFFFFF = null) + bytes`: protocol, cipher suite,
/// ALPN, server name, then `u32` certificate count and each DER certificate.
#[no_mangle]
pub extern "C" fn mimic_conn_info(h: i32) -> i32 {
    with_engine(|e| {
        let Some(c) = e.conns.get(h) else {
            return no_conn(e);
        };
        if c.conn.is_handshaking() {
            return fail(
                e,
                EngineError::tls("TlsFailure", "handshake not complete".into()),
            );
        }
        let conn = &c.conn;
        let mut out = std::mem::take(&mut e.result);
        out.clear();
        let proto = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "",
        };
        put_field(&mut out, Some(proto.as_bytes()));
        // IANA names: rustls spells the TLS 1.3 suites "TLS13_*".
        let suite = conn.negotiated_cipher_suite().map(|s| options::suite_name(s.suite()));
        put_field(&mut out, suite.as_deref().map(str::as_bytes));
        put_field(&mut out, conn.alpn_protocol());
        let sni: Option<&str> = match conn {
            Connection::Client(_) => c.sni.as_deref(),
            Connection::Server(s) => s.server_name(),
        };
        put_field(&mut out, sni.map(str::as_bytes));
        let certs = conn.peer_certificates().unwrap_or(&[]);
        out.extend_from_slice(&(certs.len() as u32).to_le_bytes());
        for cert in certs {
            put_field(&mut out, Some(cert.as_ref()));
        }
        // Appended (issue 9): u32 handshake kind (0 full, 1 full with a
        // HelloRetryRequest, 2 resumed), then the key exchange group's IANA name
        // (null when none, e.g. a TLS 1.2 resumption).
        let kind: u32 = match conn.handshake_kind() {
            Some(rustls::HandshakeKind::Resumed) => 2,
            Some(rustls::HandshakeKind::FullWithHelloRetryRequest) => 1,
            _ => 0,
        };
        out.extend_from_slice(&kind.to_le_bytes());
        let group = conn.negotiated_key_exchange_group().map(|g| options::group_name(g.name()));
        put_field(&mut out, group.as_deref().map(str::as_bytes));
        e.result = out;
        e.result.len() as i32
    })
}

/// Moves the buffered NSS key log lines (see keylog.rs) into the result
/// buffer and returns their length (0: none). Lines are UTF-8, each ending
/// in `\n`.
#[no_mangle]
pub extern "C" fn mimic_keylog_take() -> i32 {
    with_engine(|e| {
        keylog::take(&mut e.result);
        e.result.len() as i32
    })
}

/// Largest `length` of `mimic_conn_export`.
const EXPORT_LIMIT: usize = 16 * 1024;

/// Labels TLS itself uses with its PRF (RFC 5705 section 4, and TLS 1.2's
/// extended master secret, RFC 7627): an exporter must not reuse them.
const RESERVED_LABELS: [&str; 5] =
    ["client finished", "server finished", "master secret", "extended master secret", "key expansion"];

/// Keying material exporter (RFC 5705, RFC 8446 section 7.5): writes
/// `length` bytes into the result buffer and returns `length`. The label is
/// at (label_ptr, label_len); the context at (ctx_ptr, ctx_len) when
/// `has_ctx` is 1 (TLS 1.2 tells no context from an empty one). -1 when the
/// handshake is not complete, -2 for a bad length or a reserved label.
///
/// # Safety
/// Both (ptr, len) must be valid buffers in linear memory.
#[no_mangle]
pub unsafe extern "C" fn mimic_conn_export(
    h: i32,
    length: usize,
    label_ptr: *const u8,
    label_len: usize,
    ctx_ptr: *const u8,
    ctx_len: usize,
    has_ctx: i32,
) -> i32 {
    // SAFETY: per the contract above.
    let (label, ctx) = unsafe { (slice(label_ptr, label_len), slice(ctx_ptr, ctx_len)) };
    with_engine(|e| {
        let Some(c) = e.conns.get(h) else { return no_conn(e) };
        if length == 0 || length > EXPORT_LIMIT {
            return fail(
                e,
                EngineError::options(format!("length must be 1 to {EXPORT_LIMIT} bytes, got {length}")),
            );
        }
        if RESERVED_LABELS.iter().any(|r| r.as_bytes() == label) {
            let l = String::from_utf8_lossy(label);
            return fail(e, EngineError::options(format!("the label {l:?} is reserved by TLS")));
        }
        if c.conn.is_handshaking() {
            return fail(e, EngineError::tls("TlsFailure", "handshake not complete".into()));
        }
        let out = vec![0u8; length];
        match c.conn.export_keying_material(out, label, (has_ctx != 0).then_some(ctx)) {
            Ok(out) => {
                e.result = out;
                length as i32
            }
            Err(err) => fail(e, errors::from_rustls(&err)),
        }
    })
}

/// Case number of `mimic_selftest`'s known-answer test (above the random ones).
#[cfg(target_feature = "simd128")]
const SELFTEST_KNOWN_ANSWER: i32 = 1_000_000;

/// Self-test of the SIMD ChaCha20-Poly1305: first the published vector of
/// RFC 8439 section 2.8.2 (case `SELFTEST_KNOWN_ANSWER`), then against
/// ring's on random keys, nonces, AADs and payloads of every length up to
/// 1100 bytes and a few record sizes. Returns 0 when all agree (and
/// tampered tags are rejected), else the failing case number; -1 without
/// SIMD.
#[no_mangle]
pub extern "C" fn mimic_selftest() -> i32 {
    #[cfg(target_feature = "simd128")]
    {
        use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
        use ring::rand::{SecureRandom, SystemRandom};
        for v in host_aead::vectors() {
            if v.alg != host_aead::Alg::Chacha20Poly1305 {
                continue;
            }
            let Ok(key) = <&[u8; 32]>::try_from(v.key) else {
                return SELFTEST_KNOWN_ANSWER;
            };
            let mut data = v.plaintext.to_vec();
            let tag = chacha::seal(key, &v.nonce, v.aad, &mut data);
            let n = v.plaintext.len();
            if data[..] != v.sealed[..n] || tag[..] != v.sealed[n..] {
                return SELFTEST_KNOWN_ANSWER;
            }
            if chacha::open(key, &v.nonce, v.aad, &mut data, &tag).is_err() || data != v.plaintext {
                return SELFTEST_KNOWN_ANSWER;
            }
        }
        let rng = SystemRandom::new();
        let lens = (0..1100usize).chain([4095, 4096, 16383, 16384, 16401, 65536, 100_000]);
        for (case, len) in lens.enumerate() {
            let case = case as i32 + 1;
            let mut key = [0u8; 32];
            let mut nonce = [0u8; 12];
            let mut aad = [0u8; 13];
            let mut data = vec![0u8; len];
            if rng.fill(&mut key).is_err()
                || rng.fill(&mut nonce).is_err()
                || rng.fill(&mut aad).is_err()
                || rng.fill(&mut data).is_err()
            {
                return case;
            }
            let aad = &aad[..len % 14];
            let ring_key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &key).unwrap());
            let mut expect = data.clone();
            let ring_tag = ring_key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(aad),
                    &mut expect,
                )
                .unwrap();
            let mut ours = data.clone();
            let tag = chacha::seal(&key, &nonce, aad, &mut ours);
            if ours != expect || tag[..] != ring_tag.as_ref()[..] {
                return case;
            }
            if chacha::open(&key, &nonce, aad, &mut ours, &tag).is_err() || ours != data {
                return case;
            }
            let mut bad = tag;
            bad[len % 16] ^= 1 << (len % 8);
            let mut ct = expect.clone();
            if chacha::open(&key, &nonce, aad, &mut ct, &bad).is_ok() || ct != expect {
                return case;
            }
            if len > 0 {
                let mut ct = expect.clone();
                ct[len / 2] ^= 0x80;
                if chacha::open(&key, &nonce, aad, &mut ct, &tag).is_ok() {
                    return case;
                }
            }
        }
        0
    }
    #[cfg(not(target_feature = "simd128"))]
    {
        -1
    }
}
