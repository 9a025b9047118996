//! Decoding of config options passed from TypeScript and building of rustls
//! configs.
//!
//! Encoding: a sequence of fields `tag: u8, len: u32 LE, bytes[len]`.
//! Repeatable tags accumulate. Tags (their values are `abi::TAG_*`):
//! - 1: trusted CA certificates, PEM (client; default: webpki-roots)
//! - 2: an ALPN protocol (client and server)
//! - 3: certificate chain, PEM (client mTLS / server)
//! - 4: private key, PEM: PKCS#8, PKCS#1 RSA or SEC1 EC (client mTLS / server)
//! - 5: unsafely ignore certificate errors (client, empty)
//! - 6: client CA certificates, PEM (server; when present a client certificate
//!   is required)
//! - 7: TLS 1.2 only (empty; for tests)
//! - 8: a cipher suite, IANA name (repeatable; order = preference; default:
//!   `provider()`'s order)
//! - 9: minimum version, "TLSv1.2" or "TLSv1.3" (default TLSv1.2)
//! - 10: maximum version, "TLSv1.2" or "TLSv1.3" (default TLSv1.3)
//! - 11: a key exchange group, IANA name, case-insensitive (repeatable; order
//!   = preference; default: X25519MLKEM768, x25519, secp256r1, secp384r1)
//! - 12: key log on (empty): NSS key log lines are buffered (see keylog.rs)
//! - 13: resumption off (client, empty)
//! - 14: an ECHConfigList (client, bytes): Encrypted Client Hello, required
//!   (TLS 1.3 only; see ech.rs)
//! - 16: client authentication optional (server, empty; with tag 6: a client
//!   may present no certificate, but one it presents must verify)

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CipherSuite, NamedGroup, SupportedCipherSuite};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::abi;
use crate::errors::{excerpt_max, ordinal, EngineError};
use rustls::pki_types::pem;
use crate::verify_cache::CachingVerifier;
use crate::HostTime;

#[derive(Default)]
struct Options<'a> {
    ca_certs: Vec<&'a [u8]>,
    alpn: Vec<Vec<u8>>,
    cert: Option<&'a [u8]>,
    key: Option<&'a [u8]>,
    unsafely_ignore: bool,
    client_ca_certs: Vec<&'a [u8]>,
    tls12_only: bool,
    cipher_suites: Vec<&'a str>,
    min_version: Option<&'a str>,
    max_version: Option<&'a str>,
    kx_groups: Vec<&'a str>,
    key_log: bool,
    no_resumption: bool,
    ech_config_list: Option<&'a [u8]>,
    client_auth_optional: bool,
}

fn utf8<'a>(v: &'a [u8], what: &str) -> Result<&'a str, EngineError> {
    std::str::from_utf8(v).map_err(|_| bad(format!("{what} is not UTF-8")))
}

fn bad(msg: impl Into<String>) -> EngineError {
    EngineError::options(msg.into())
}

// The tags as bytes, for the match below (values in abi.rs).
const T_CA: u8 = abi::tag(abi::TAG_CA);
const T_ALPN: u8 = abi::tag(abi::TAG_ALPN);
const T_CERT: u8 = abi::tag(abi::TAG_CERT);
const T_KEY: u8 = abi::tag(abi::TAG_KEY);
const T_INSECURE: u8 = abi::tag(abi::TAG_INSECURE);
const T_CLIENT_CA: u8 = abi::tag(abi::TAG_CLIENT_CA);
const T_TLS12_ONLY: u8 = abi::tag(abi::TAG_TLS12_ONLY);
const T_CIPHER_SUITE: u8 = abi::tag(abi::TAG_CIPHER_SUITE);
const T_MIN_VERSION: u8 = abi::tag(abi::TAG_MIN_VERSION);
const T_MAX_VERSION: u8 = abi::tag(abi::TAG_MAX_VERSION);
const T_KX_GROUP: u8 = abi::tag(abi::TAG_KX_GROUP);
const T_KEY_LOG: u8 = abi::tag(abi::TAG_KEY_LOG);
const T_NO_RESUMPTION: u8 = abi::tag(abi::TAG_NO_RESUMPTION);
const T_ECH_CONFIG_LIST: u8 = abi::tag(abi::TAG_ECH_CONFIG_LIST);
const T_CLIENT_AUTH_OPTIONAL: u8 = abi::tag(abi::TAG_CLIENT_AUTH_OPTIONAL);

fn decode(mut b: &[u8]) -> Result<Options<'_>, EngineError> {
    let mut o = Options::default();
    while !b.is_empty() {
        if b.len() < 5 {
            return Err(bad("truncated options"));
        }
        let tag = b[0];
        let len = u32::from_le_bytes([b[1], b[2], b[3], b[4]]) as usize;
        if b.len() - 5 < len {
            return Err(bad("truncated options"));
        }
        let v = &b[5..5 + len];
        b = &b[5 + len..];
        match tag {
            T_CA => o.ca_certs.push(v),
            T_ALPN => {
                if v.is_empty() || v.len() > 255 {
                    return Err(bad("an ALPN protocol must be 1 to 255 bytes long"));
                }
                o.alpn.push(v.to_vec())
            }
            T_CERT => o.cert = Some(v),
            T_KEY => o.key = Some(v),
            T_INSECURE => o.unsafely_ignore = true,
            T_CLIENT_CA => o.client_ca_certs.push(v),
            T_TLS12_ONLY => o.tls12_only = true,
            T_CIPHER_SUITE => o.cipher_suites.push(utf8(v, "a cipher suite name")?),
            T_MIN_VERSION => o.min_version = Some(utf8(v, "minVersion")?),
            T_MAX_VERSION => o.max_version = Some(utf8(v, "maxVersion")?),
            T_KX_GROUP => o.kx_groups.push(utf8(v, "a key exchange group name")?),
            T_KEY_LOG => o.key_log = true,
            T_NO_RESUMPTION => o.no_resumption = true,
            T_ECH_CONFIG_LIST => o.ech_config_list = Some(v),
            T_CLIENT_AUTH_OPTIONAL => o.client_auth_optional = true,
            _ => return Err(bad(format!("unknown option tag {tag}"))),
        }
    }
    Ok(o)
}

fn certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, EngineError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(pem, what, &e))?;
    if certs.is_empty() {
        return Err(bad(format!("{what}: no certificate found in PEM")));
    }
    Ok(certs)
}

fn key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, EngineError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => bad("key: no private key found in PEM"),
        e => pem_error(pem, "key", &e),
    })
}

/// Names the PEM section that is malformed (rustls-pki-types reports the
/// bytes of a line, or a bare base64 error): each section is decoded on its
/// own to find the first that fails.
fn pem_error(pem: &[u8], what: &str, e: &pem::Error) -> EngineError {
    let mut n = 0;
    let mut rest = pem;
    while let Some(start) = find(rest, b"-----BEGIN") {
        n += 1;
        let section = &rest[start..];
        let line_end = section.iter().position(|&b| b == b'\n').unwrap_or(section.len());
        let begin = trim_line(&section[..line_end]);
        let label = begin
            .strip_prefix(b"-----BEGIN ")
            .and_then(|l| l.strip_suffix(b"-----"))
            .filter(|l| !l.is_empty() && !l.contains(&b'-'));
        let Some(label) = label else {
            return bad(format!(
                "{what}: the {} PEM section has a malformed BEGIN line: {}",
                ordinal(n),
                excerpt_max(begin, 64)
            ));
        };
        let name = String::from_utf8_lossy(label).into_owned();
        let mut end_marker = b"-----END ".to_vec();
        end_marker.extend_from_slice(label);
        end_marker.extend_from_slice(b"-----");
        let Some(end) = find(section, &end_marker) else {
            return bad(format!(
                "{what}: the {} PEM section ({name}) has no \"-----END {name}-----\" line",
                ordinal(n)
            ));
        };
        let whole = &section[..end + end_marker.len()];
        if let Err(err) = <(pem::SectionKind, Vec<u8>)>::from_pem_slice(whole) {
            let why = match err {
                pem::Error::Base64Decode(d) => format!("its base64 is invalid ({d})"),
                pem::Error::NoItemsFound => "it holds nothing".into(),
                other => other.to_string(),
            };
            // An unknown label decodes to nothing: not an error by itself.
            if !matches!(why.as_str(), "it holds nothing") {
                return bad(format!(
                    "{what}: the {} PEM section ({name}) is malformed: {why}",
                    ordinal(n)
                ));
            }
        }
        rest = &section[end + end_marker.len()..];
    }
    if n == 0 {
        return bad(format!("{what}: no PEM section found (expected \"-----BEGIN ...-----\")"));
    }
    bad(format!("{what}: malformed PEM: {}", describe(e)))
}

fn describe(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { end_marker } => {
            format!("no END line for {}", excerpt_max(end_marker, 64))
        }
        pem::Error::IllegalSectionStart { line } => {
            format!("a malformed BEGIN line: {}", excerpt_max(trim_line(line), 64))
        }
        other => other.to_string(),
    }
}

fn trim_line(line: &[u8]) -> &[u8] {
    let mut l = line;
    while let [rest @ .., b'\r' | b'\n' | b' ' | b'\t'] = l {
        l = rest;
    }
    l
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn roots(pems: &[&[u8]], what: &str) -> Result<RootCertStore, EngineError> {
    let mut store = RootCertStore::empty();
    for pem in pems {
        for cert in certs(pem, what)? {
            store
                .add(cert)
                .map_err(|e| bad(format!("{what}: invalid certificate: {e}")))?;
        }
    }
    Ok(store)
}

/// ring's provider with our record protection and default orders. This is
/// the one place the default orders are decided.
///
/// - TLS 1.3 ChaCha20-Poly1305 uses our SIMD ChaCha20 (see chacha.rs);
/// - the TLS 1.3 suites go to the host's AEAD where the host enabled it
///   (see host_aead.rs), else stay in wasm;
/// - suites: without AES instructions ring's constant-time software AES-GCM
///   is ~10x slower than ChaCha20-Poly1305, so ChaCha20 comes first, then
///   AES-128-GCM, then AES-256-GCM; a host whose AES-GCM is faster
///   (`host_aead::prefer_aes`) puts AES-128-GCM and AES-256-GCM first.
///   TLS 1.3 suites before TLS 1.2 ones;
/// - key exchange: X25519MLKEM768 (see pq.rs) first, then ring's x25519,
///   secp256r1, secp384r1.
fn default_provider() -> CryptoProvider {
    use crate::host_aead::{self, Alg};
    let mut p = rustls::crypto::ring::default_provider();
    for s in p.cipher_suites.iter_mut() {
        let SupportedCipherSuite::Tls13(t) = *s else {
            continue;
        };
        let alg = match t.common.suite {
            CipherSuite::TLS13_AES_128_GCM_SHA256 => Alg::Aes128Gcm,
            CipherSuite::TLS13_AES_256_GCM_SHA384 => Alg::Aes256Gcm,
            _ => Alg::Chacha20Poly1305,
        };
        #[cfg(target_feature = "simd128")]
        let t = if alg == Alg::Chacha20Poly1305 {
            simd_chacha_suite(t)
        } else {
            t
        };
        *s = SupportedCipherSuite::Tls13(host_aead::tls13_suite(t, alg));
    }
    let aes_first = host_aead::prefer_aes();
    p.cipher_suites.sort_by_key(|s| {
        let name = s.suite().as_str().unwrap_or("");
        let tls13 = name.starts_with("TLS13_") as u8;
        let rank = match (
            name.contains("CHACHA20"),
            name.contains("AES_128"),
            aes_first,
        ) {
            (true, _, false) => 0,
            (true, _, true) => 2,
            (false, true, false) => 1,
            (false, true, true) => 0,
            (false, false, false) => 2,
            (false, false, true) => 1,
        };
        (1 - tls13, rank)
    });
    p.kx_groups.insert(0, crate::pq::X25519MLKEM768);
    p
}

/// The IANA name of a cipher suite (rustls spells the TLS 1.3 ones "TLS13_*").
pub fn suite_name(s: CipherSuite) -> String {
    match s.as_str() {
        Some(n) => match n.strip_prefix("TLS13_") {
            Some(rest) => format!("TLS_{rest}"),
            None => n.to_string(),
        },
        None => format!("{s:?}"),
    }
}

/// The IANA name of a key exchange group.
pub fn group_name(g: NamedGroup) -> String {
    match g {
        NamedGroup::X25519 => "x25519".into(),
        NamedGroup::X448 => "x448".into(),
        g => match g.as_str() {
            Some(n) => n.to_string(),
            None => format!("{g:?}"),
        },
    }
}

/// The provider for these options: the default one, or the suites and groups
/// named, in the order given.
fn provider(o: &Options<'_>) -> Result<Arc<CryptoProvider>, EngineError> {
    let mut p = default_provider();
    if !o.cipher_suites.is_empty() {
        let mut chosen = Vec::with_capacity(o.cipher_suites.len());
        for name in &o.cipher_suites {
            let Some(s) = p.cipher_suites.iter().find(|s| suite_name(s.suite()) == *name) else {
                return Err(bad(format!("cipherSuites: unknown cipher suite {name:?}")));
            };
            if !chosen.iter().any(|c: &SupportedCipherSuite| c.suite() == s.suite()) {
                chosen.push(*s);
            }
        }
        p.cipher_suites = chosen;
    }
    if !o.kx_groups.is_empty() {
        let mut chosen: Vec<&'static dyn rustls::crypto::SupportedKxGroup> = Vec::new();
        for name in &o.kx_groups {
            let Some(g) = p.kx_groups.iter().find(|g| group_name(g.name()).eq_ignore_ascii_case(name))
            else {
                return Err(bad(format!("keyExchangeGroups: unknown group {name:?}")));
            };
            if !chosen.iter().any(|c| c.name() == g.name()) {
                chosen.push(*g);
            }
        }
        p.kx_groups = chosen;
    }
    Ok(Arc::new(p))
}

#[cfg(target_feature = "simd128")]
fn simd_chacha_suite(ring: &'static rustls::Tls13CipherSuite) -> &'static rustls::Tls13CipherSuite {
    static SUITE: std::sync::OnceLock<rustls::Tls13CipherSuite> = std::sync::OnceLock::new();
    SUITE.get_or_init(|| crate::chacha::tls13_suite(ring))
}

static TLS12_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
static TLS13_AND_12: [&rustls::SupportedProtocolVersion; 2] =
    [&rustls::version::TLS13, &rustls::version::TLS12];

fn version(v: Option<&str>, what: &str, default: u8) -> Result<u8, EngineError> {
    match v {
        None => Ok(default),
        Some("TLSv1.2") => Ok(2),
        Some("TLSv1.3") => Ok(3),
        Some(v) => Err(bad(format!("{what}: unknown TLS version {v:?} (TLSv1.2 or TLSv1.3)"))),
    }
}

/// The versions allowed, checked against the suites and groups of `p`.
fn versions(
    o: &Options<'_>,
    p: &CryptoProvider,
) -> Result<&'static [&'static rustls::SupportedProtocolVersion], EngineError> {
    let min = version(o.min_version, "minVersion", 2)?;
    let max = version(o.max_version, "maxVersion", if o.tls12_only { 2 } else { 3 })?;
    if min > max {
        return Err(bad(format!("minVersion TLSv1.{min} is above maxVersion TLSv1.{max}")));
    }
    let list: &'static [&'static rustls::SupportedProtocolVersion] = match (min, max) {
        (2, 2) => &TLS12_ONLY,
        (3, 3) => &TLS13_ONLY,
        _ => &TLS13_AND_12,
    };
    let usable = |v: &rustls::SupportedProtocolVersion| {
        p.cipher_suites.iter().any(|s| s.version() == v)
            && p.kx_groups.iter().any(|g| g.usable_for_version(v.version))
    };
    if !list.iter().any(|v| p.cipher_suites.iter().any(|s| s.version() == *v)) {
        return Err(bad("cipherSuites: no cipher suite left for the versions allowed"));
    }
    if !list.iter().any(|v| usable(v)) {
        return Err(bad("keyExchangeGroups: no key exchange group left for the versions allowed"));
    }
    Ok(list)
}

fn config_err(e: rustls::Error) -> EngineError {
    bad(format!("invalid TLS configuration: {e}"))
}

pub fn client_config(b: &[u8]) -> Result<Arc<ClientConfig>, EngineError> {
    let o = decode(b)?;
    let provider = provider(&o)?;
    let versions = versions(&o, &provider)?;
    let builder = ClientConfig::builder_with_details(provider.clone(), Arc::new(HostTime));
    let builder = match o.ech_config_list {
        None => builder.with_protocol_versions(versions).map_err(config_err)?,
        Some(list) => {
            if !versions.contains(&&rustls::version::TLS13) {
                return Err(bad("echConfigList needs TLS 1.3 (maxVersion is TLSv1.2)"));
            }
            let ech = rustls::client::EchConfig::new(list.to_vec().into(), &crate::ech::SUITES)
                .map_err(|e| bad(format!("echConfigList: {e}")))?;
            // ECH is TLS 1.3 only.
            builder.with_ech(rustls::client::EchMode::Enable(ech)).map_err(config_err)?
        }
    };
    // Parse the CA certificates even when verification is off, so malformed
    // PEM is always reported.
    let store = if o.ca_certs.is_empty() {
        RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        }
    } else {
        roots(&o.ca_certs, "caCerts")?
    };
    let builder = if o.unsafely_ignore {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert(provider)))
    } else {
        // webpki's verifier, as with_root_certificates() makes it, behind a
        // cache of its successes (see verify_cache.rs).
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider)
            .build()
            .map_err(|e| bad(format!("caCerts: {e}")))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(CachingVerifier::new(webpki)))
    };
    let mut cfg = match (o.cert, o.key) {
        (Some(c), Some(k)) => builder
            .with_client_auth_cert(certs(c, "cert")?, key(k)?)
            .map_err(config_err)?,
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(bad("cert and key must be given together")),
    };
    cfg.alpn_protocols = o.alpn;
    cfg.resumption = if o.no_resumption {
        Resumption::disabled()
    } else {
        Resumption::store(Arc::new(SessionsWithoutKxHints(
            rustls::client::ClientSessionMemoryCache::new(64),
        )))
    };
    if o.key_log {
        cfg.key_log = Arc::new(crate::keylog::BufferedKeyLog);
    }
    Ok(Arc::new(cfg))
}

pub fn server_config(b: &[u8]) -> Result<Arc<ServerConfig>, EngineError> {
    let o = decode(b)?;
    let (Some(c), Some(k)) = (o.cert, o.key) else {
        return Err(bad("a server needs cert and key"));
    };
    let chain = certs(c, "cert")?;
    let key = key(k)?;
    if o.no_resumption {
        return Err(bad("resumption is a client option"));
    }
    if o.ech_config_list.is_some() {
        return Err(bad("echConfigList is a client option"));
    }
    let mut p = Arc::unwrap_or_clone(provider(&o)?);
    let prefers_hybrid = p.kx_groups.first().map(|g| g.name()) == Some(NamedGroup::X25519MLKEM768);
    if prefers_hybrid {
        for g in p.kx_groups.iter_mut().skip(1) {
            *g = crate::pq::server_classical(*g);
        }
    }
    let provider = Arc::new(p);
    let builder = ServerConfig::builder_with_details(provider.clone(), Arc::new(HostTime))
        .with_protocol_versions(versions(&o, &provider)?)
        .map_err(config_err)?;
    if o.client_auth_optional && o.client_ca_certs.is_empty() {
        return Err(bad("clientAuth needs clientCaCerts"));
    }
    let builder = if o.client_ca_certs.is_empty() {
        builder.with_no_client_auth()
    } else {
        let store = roots(&o.client_ca_certs, "clientCaCerts")?;
        let mut verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider);
        if o.client_auth_optional {
            verifier = verifier.allow_unauthenticated();
        }
        let verifier = verifier
            .build()
            .map_err(|e| bad(format!("clientCaCerts: {e}")))?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut cfg = builder.with_single_cert(chain, key).map_err(config_err)?;
    if prefers_hybrid {
        // See pq.rs: the hybrid whenever the client supports it.
        cfg.cert_resolver = Arc::new(crate::pq::PreferHybrid(cfg.cert_resolver.clone()));
    }
    cfg.alpn_protocols = o.alpn;
    // Our suite order (ChaCha20 first, see provider()) over the client's.
    cfg.ignore_client_order = true;
    // Sessions: TLS 1.3 tickets and TLS 1.2 tickets are stateless (ring's
    // AEAD ticketer, keys rotated every 6 hours); TLS 1.2 session IDs use the
    // default in-memory cache (256 sessions).
    cfg.ticketer = rustls::crypto::ring::Ticketer::new().map_err(config_err)?;
    if o.key_log {
        cfg.key_log = Arc::new(crate::keylog::BufferedKeyLog);
    }
    Ok(Arc::new(cfg))
}

/// `unsafelyIgnoreCertificateErrors`: accepts any certificate, but still
/// checks the handshake signatures made with the presented key.
#[derive(Debug)]
struct AcceptAnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// rustls' in-memory session cache without its key exchange hints. A hint
/// makes the next ClientHello to that server carry a key share for the group
/// used last time (x25519, say) while still listing X25519MLKEM768 first; a
/// rustls server then answers with a HelloRetryRequest for the hybrid, and
/// when its suite cannot resume the ticket's, rustls' client withdraws its
/// PSK, which rustls' server refuses (`MissingPskExtensionInSecondClientHello`).
/// Without hints every ClientHello carries the default shares (the hybrid and
/// its x25519 component), which every server we meet can answer at once.
#[derive(Debug)]
struct SessionsWithoutKxHints(rustls::client::ClientSessionMemoryCache);

impl rustls::client::ClientSessionStore for SessionsWithoutKxHints {
    fn set_kx_hint(&self, _: ServerName<'static>, _: rustls::NamedGroup) {}

    fn kx_hint(&self, _: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        None
    }

    fn set_tls12_session(
        &self,
        server_name: ServerName<'static>,
        value: rustls::client::Tls12ClientSessionValue,
    ) {
        self.0.set_tls12_session(server_name, value)
    }

    fn tls12_session(
        &self,
        server_name: &ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.0.tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.0.remove_tls12_session(server_name)
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        self.0.insert_tls13_ticket(server_name, value)
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.0.take_tls13_ticket(server_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::{ClientConnection, Connection, ServerConnection};

    const CA: &str = include_str!("../../tests/fixtures/ca.pem");
    const CERT: &str = include_str!("../../tests/fixtures/localhost.pem");
    const KEY: &str = include_str!("../../tests/fixtures/localhost.key");

    fn enc(fields: &[(u8, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (tag, v) in fields {
            out.push(*tag);
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v.as_bytes());
        }
        out
    }

    fn client(extra: &[(u8, &str)]) -> Arc<ClientConfig> {
        let mut f = vec![(1, CA)];
        f.extend_from_slice(extra);
        client_config(&enc(&f)).unwrap_or_else(|e| panic!("{}", e.message))
    }

    fn server(extra: &[(u8, &str)]) -> Arc<ServerConfig> {
        let mut f = vec![(3, CERT), (4, KEY)];
        f.extend_from_slice(extra);
        server_config(&enc(&f)).unwrap_or_else(|e| panic!("{}", e.message))
    }

    /// Runs a handshake in memory, then lets the client read the server's
    /// post-handshake messages (tickets).
    fn handshake(c: Arc<ClientConfig>, s: Arc<ServerConfig>) -> (Connection, Connection) {
        let name = ServerName::try_from("localhost").unwrap();
        let mut c: Connection = ClientConnection::new(c, name).unwrap().into();
        let mut s: Connection = ServerConnection::new(s).unwrap().into();
        for _ in 0..20 {
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            s.read_tls(&mut &buf[..]).unwrap();
            s.process_new_packets().unwrap();
            let mut buf = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut buf).unwrap();
            }
            c.read_tls(&mut &buf[..]).unwrap();
            c.process_new_packets().unwrap();
            if !c.is_handshaking() && !s.is_handshaking() && !s.wants_write() {
                break;
            }
        }
        assert!(!c.is_handshaking() && !s.is_handshaking());
        (c, s)
    }

    fn group(c: &Connection) -> String {
        group_name(c.negotiated_key_exchange_group().unwrap().name())
    }

    #[test]
    fn hybrid_by_default_and_fallback() {
        let (c, s) = handshake(client(&[]), server(&[]));
        assert_eq!(group(&c), "X25519MLKEM768");
        assert_eq!(group(&s), "X25519MLKEM768");
        // A server without ML-KEM takes the client's X25519 share: no HRR.
        let (c, _) = handshake(client(&[]), server(&[(11, "x25519")]));
        assert_eq!(group(&c), "x25519");
        assert_eq!(c.handshake_kind(), Some(rustls::HandshakeKind::Full));
        // secp256r1 only: a HelloRetryRequest.
        let (c, _) = handshake(client(&[]), server(&[(11, "SECP256R1")]));
        assert_eq!(group(&c), "secp256r1");
        assert_eq!(c.handshake_kind(), Some(rustls::HandshakeKind::FullWithHelloRetryRequest));
        // A client listing the hybrid last (as Deno's): our server still
        // takes it, with a HelloRetryRequest.
        let (c, s) = handshake(client(&[(11, "x25519"), (11, "X25519MLKEM768")]), server(&[]));
        assert_eq!(group(&c), "X25519MLKEM768");
        assert_eq!(group(&s), "X25519MLKEM768");
        assert_eq!(c.handshake_kind(), Some(rustls::HandshakeKind::FullWithHelloRetryRequest));
        // ... but not when the server itself puts x25519 first.
        let (c, _) = handshake(
            client(&[(11, "x25519"), (11, "X25519MLKEM768")]),
            server(&[(11, "x25519"), (11, "X25519MLKEM768")]),
        );
        assert_eq!(group(&c), "x25519");
        // A client without the hybrid still gets x25519 from a default server.
        let (c, _) = handshake(client(&[(11, "x25519")]), server(&[]));
        assert_eq!(group(&c), "x25519");
        assert_eq!(c.handshake_kind(), Some(rustls::HandshakeKind::Full));
        // TLS 1.2: the hybrid is not usable, x25519 is.
        let (c, _) = handshake(client(&[(10, "TLSv1.2")]), server(&[]));
        assert_eq!(group(&c), "x25519");
        assert_eq!(c.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    }

    #[test]
    fn suites_and_versions() {
        let (c, _) = handshake(client(&[(8, "TLS_AES_256_GCM_SHA384")]), server(&[]));
        assert_eq!(suite_name(c.negotiated_cipher_suite().unwrap().suite()), "TLS_AES_256_GCM_SHA384");
        let (c, _) = handshake(
            client(&[]),
            server(&[(8, "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"), (9, "TLSv1.2"), (10, "TLSv1.2")]),
        );
        assert_eq!(
            suite_name(c.negotiated_cipher_suite().unwrap().suite()),
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
        );
        let err = |f: &[(u8, &str)]| client_config(&enc(f)).err().unwrap().message;
        assert!(err(&[(8, "TLS_NOPE")]).contains("\"TLS_NOPE\""));
        assert!(err(&[(11, "x9")]).contains("\"x9\""));
        assert!(err(&[(9, "TLSv1.1")]).contains("\"TLSv1.1\""));
        assert!(err(&[(9, "TLSv1.3"), (10, "TLSv1.2")]).contains("above"));
        assert!(err(&[(8, "TLS_AES_128_GCM_SHA256"), (10, "TLSv1.2")]).contains("no cipher suite"));
        assert!(err(&[(11, "X25519MLKEM768"), (10, "TLSv1.2")]).contains("no key exchange group"));
    }

    #[test]
    fn resumption_exporter_keylog() {
        let cc = client(&[(12, "")]);
        let sc = server(&[(12, "")]);
        let (c, s) = handshake(cc.clone(), sc.clone());
        assert_eq!(c.handshake_kind(), Some(rustls::HandshakeKind::Full));
        let a = c.export_keying_material([0u8; 32], b"EXPERIMENTAL x", Some(b"ctx")).unwrap();
        let b = s.export_keying_material([0u8; 32], b"EXPERIMENTAL x", Some(b"ctx")).unwrap();
        assert_eq!(a, b);
        let mut lines = Vec::new();
        crate::keylog::take(&mut lines);
        let text = String::from_utf8(lines).unwrap();
        // 5 labels, each from both sides.
        assert_eq!(text.lines().count(), 10, "{text}");
        assert!(text.contains("CLIENT_HANDSHAKE_TRAFFIC_SECRET "));
        let (c, s) = handshake(cc, sc.clone());
        assert_eq!(c.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
        assert_eq!(s.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
        let off = client(&[(13, "")]);
        let (c, _) = handshake(off.clone(), sc.clone());
        let (c2, _) = handshake(off, sc);
        assert_eq!(c.handshake_kind(), Some(rustls::HandshakeKind::Full));
        assert_eq!(c2.handshake_kind(), Some(rustls::HandshakeKind::Full));
    }
}

#[cfg(test)]
mod decode_tests {
    use super::*;

    fn field(tag: i32, v: &[u8]) -> Vec<u8> {
        let mut out = vec![abi::tag(tag)];
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v);
        out
    }

    fn err(b: &[u8]) -> String {
        match decode(b) {
            Ok(_) => panic!("decoded {b:?}"),
            Err(e) => {
                assert!(matches!(e.kind, crate::errors::ErrorKind::Options));
                e.message
            }
        }
    }

    #[test]
    fn every_tag() {
        let mut b = Vec::new();
        for (tag, v) in [
            (abi::TAG_CA, &b"ca1"[..]),
            (abi::TAG_CA, b"ca2"),
            (abi::TAG_ALPN, b"h2"),
            (abi::TAG_ALPN, b"http/1.1"),
            (abi::TAG_CERT, b"cert"),
            (abi::TAG_KEY, b"key"),
            (abi::TAG_INSECURE, b""),
            (abi::TAG_CLIENT_CA, b"cca"),
            (abi::TAG_TLS12_ONLY, b""),
            (abi::TAG_CIPHER_SUITE, b"TLS_AES_128_GCM_SHA256"),
            (abi::TAG_CIPHER_SUITE, b"TLS_AES_256_GCM_SHA384"),
            (abi::TAG_MIN_VERSION, b"TLSv1.2"),
            (abi::TAG_MAX_VERSION, b"TLSv1.3"),
            (abi::TAG_KX_GROUP, b"x25519"),
            (abi::TAG_KEY_LOG, b""),
            (abi::TAG_NO_RESUMPTION, b""),
            (abi::TAG_ECH_CONFIG_LIST, b"\x00\x01"),
            (abi::TAG_CLIENT_AUTH_OPTIONAL, b""),
        ] {
            b.extend(field(tag, v));
        }
        let o = decode(&b).unwrap_or_else(|e| panic!("{}", e.message));
        assert_eq!(o.ca_certs, [&b"ca1"[..], b"ca2"]);
        assert_eq!(o.alpn, [b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert_eq!(o.cert, Some(&b"cert"[..]));
        assert_eq!(o.key, Some(&b"key"[..]));
        assert!(o.unsafely_ignore);
        assert_eq!(o.client_ca_certs, [&b"cca"[..]]);
        assert!(o.tls12_only);
        assert_eq!(o.cipher_suites, ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384"]);
        assert_eq!(o.min_version, Some("TLSv1.2"));
        assert_eq!(o.max_version, Some("TLSv1.3"));
        assert_eq!(o.kx_groups, ["x25519"]);
        assert!(o.key_log);
        assert!(o.no_resumption);
        assert_eq!(o.ech_config_list, Some(&b"\x00\x01"[..]));
        assert!(o.client_auth_optional);
        // Nothing given: the defaults.
        let o = decode(&[]).unwrap_or_else(|e| panic!("{}", e.message));
        assert!(o.ca_certs.is_empty() && o.alpn.is_empty() && o.cert.is_none());
        assert!(!o.unsafely_ignore && !o.tls12_only && !o.key_log && !o.no_resumption);
        assert!(!o.client_auth_optional && o.ech_config_list.is_none());
    }

    #[test]
    fn truncation() {
        let whole = field(abi::TAG_ALPN, b"h2");
        for cut in 1..whole.len() {
            assert_eq!(err(&whole[..cut]), "truncated options", "cut at {cut}");
            // After a complete field too.
            let mut b = field(abi::TAG_KEY_LOG, b"");
            b.extend_from_slice(&whole[..cut]);
            assert_eq!(err(&b), "truncated options", "cut at {cut}");
        }
        // A length beyond the input, even u32::MAX, is not trusted.
        let mut b = vec![abi::tag(abi::TAG_CA)];
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        b.extend_from_slice(b"abc");
        assert_eq!(err(&b), "truncated options");
    }

    #[test]
    fn unknown_tags() {
        for tag in [0u8, 15, 17, 100, 255] {
            let mut b = vec![tag];
            b.extend_from_slice(&0u32.to_le_bytes());
            assert_eq!(err(&b), format!("unknown option tag {tag}"));
        }
    }

    #[test]
    fn bad_values() {
        assert_eq!(err(&field(abi::TAG_ALPN, b"")), "an ALPN protocol must be 1 to 255 bytes long");
        assert_eq!(err(&field(abi::TAG_ALPN, &[b'a'; 256])), "an ALPN protocol must be 1 to 255 bytes long");
        assert!(decode(&field(abi::TAG_ALPN, &[b'a'; 255])).is_ok());
        for (tag, what) in [
            (abi::TAG_CIPHER_SUITE, "a cipher suite name"),
            (abi::TAG_MIN_VERSION, "minVersion"),
            (abi::TAG_MAX_VERSION, "maxVersion"),
            (abi::TAG_KX_GROUP, "a key exchange group name"),
        ] {
            assert_eq!(err(&field(tag, b"\xff\xfe")), format!("{what} is not UTF-8"));
        }
    }

    #[test]
    fn bad_names() {
        let msg = |f: &[(i32, &[u8])]| {
            let b: Vec<u8> = f.iter().flat_map(|(t, v)| field(*t, v)).collect();
            let e = client_config(&b).expect_err("an error");
            assert!(matches!(e.kind, crate::errors::ErrorKind::Options));
            e.message
        };
        assert!(msg(&[(abi::TAG_CIPHER_SUITE, b"TLS_RC4")]).contains("\"TLS_RC4\""));
        assert!(msg(&[(abi::TAG_KX_GROUP, b"ffdhe1024")]).contains("\"ffdhe1024\""));
        assert!(msg(&[(abi::TAG_MIN_VERSION, b"SSLv3")]).contains("\"SSLv3\""));
        assert!(msg(&[(abi::TAG_MAX_VERSION, b"TLSv1.4")]).contains("\"TLSv1.4\""));
        assert!(msg(&[(abi::TAG_CERT, b"x")]).contains("cert and key must be given together"));
        // Names are exact for suites, case-insensitive for groups.
        assert!(client_config(&field(abi::TAG_KX_GROUP, b"X25519")).is_ok());
        let b: Vec<u8> = field(abi::TAG_CIPHER_SUITE, b"tls_aes_128_gcm_sha256");
        assert!(client_config(&b).is_err());
        // The server needs a certificate and key.
        let e = server_config(&[]).expect_err("an error");
        assert!(matches!(e.kind, crate::errors::ErrorKind::Options));
    }
}
