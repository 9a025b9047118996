//! Decoding of config options passed from TypeScript and building of rustls
//! configs.
//!
//! Encoding: a sequence of fields `tag: u8, len: u32 LE, bytes[len]`.
//! Repeatable tags accumulate. Tags:
//! - 1: trusted CA certificates, PEM (client; default: webpki-roots)
//! - 2: an ALPN protocol (client and server)
//! - 3: certificate chain, PEM (client mTLS / server)
//! - 4: private key, PEM: PKCS#8, PKCS#1 RSA or SEC1 EC (client mTLS / server)
//! - 5: unsafely ignore certificate errors (client, empty)
//! - 6: client CA certificates, PEM (server; when present a client certificate
//!   is required)
//! - 7: TLS 1.2 only (empty; for tests)
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
use rustls::{CipherSuite, SupportedCipherSuite};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

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
    client_auth_optional: bool,
}

fn bad(msg: impl Into<String>) -> EngineError {
    EngineError::options(msg.into())
}

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
            1 => o.ca_certs.push(v),
            2 => {
                if v.is_empty() || v.len() > 255 {
                    return Err(bad("an ALPN protocol must be 1 to 255 bytes long"));
                }
                o.alpn.push(v.to_vec())
            }
            3 => o.cert = Some(v),
            4 => o.key = Some(v),
            5 => o.unsafely_ignore = true,
            6 => o.client_ca_certs.push(v),
            7 => o.tls12_only = true,
            16 => o.client_auth_optional = true,
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
            store.add(cert).map_err(|e| bad(format!("{what}: invalid certificate: {e}")))?;
        }
    }
    Ok(store)
}

/// ring's provider, with the cipher suites reordered for wasm: without
/// AES/CLMUL instructions ring falls back to constant-time software AES-GCM,
/// which is slower than ChaCha20-Poly1305, so ChaCha20 comes first, then
/// AES-128-GCM, then AES-256-GCM.
fn provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    // TLS 1.3 ChaCha20-Poly1305 with our SIMD ChaCha20 (see chacha.rs).
    #[cfg(target_feature = "simd128")]
    for s in p.cipher_suites.iter_mut() {
        if let SupportedCipherSuite::Tls13(t) = s {
            if t.common.suite == CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 {
                *s = SupportedCipherSuite::Tls13(simd_chacha_suite(t));
            }
        }
    }
    p.cipher_suites.sort_by_key(|s| {
        let name = s.suite().as_str().unwrap_or("");
        let tls13 = name.starts_with("TLS13_") as u8;
        let rank = if name.contains("CHACHA20") {
            0
        } else if name.contains("AES_128") {
            1
        } else {
            2
        };
        (1 - tls13, rank)
    });
    Arc::new(p)
}

#[cfg(target_feature = "simd128")]
fn simd_chacha_suite(ring: &'static rustls::Tls13CipherSuite) -> &'static rustls::Tls13CipherSuite {
    static SUITE: std::sync::OnceLock<rustls::Tls13CipherSuite> = std::sync::OnceLock::new();
    SUITE.get_or_init(|| crate::chacha::tls13_suite(ring))
}

static TLS12_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
static TLS13_AND_12: [&rustls::SupportedProtocolVersion; 2] =
    [&rustls::version::TLS13, &rustls::version::TLS12];

fn versions(tls12_only: bool) -> &'static [&'static rustls::SupportedProtocolVersion] {
    if tls12_only {
        &TLS12_ONLY
    } else {
        &TLS13_AND_12
    }
}

fn config_err(e: rustls::Error) -> EngineError {
    bad(format!("invalid TLS configuration: {e}"))
}

pub fn client_config(b: &[u8]) -> Result<Arc<ClientConfig>, EngineError> {
    let o = decode(b)?;
    let provider = provider();
    let builder = ClientConfig::builder_with_details(provider.clone(), Arc::new(HostTime))
        .with_protocol_versions(versions(o.tls12_only))
        .map_err(config_err)?;
    // Parse the CA certificates even when verification is off, so malformed
    // PEM is always reported.
    let store = if o.ca_certs.is_empty() {
        RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() }
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
        builder.dangerous().with_custom_certificate_verifier(Arc::new(CachingVerifier::new(webpki)))
    };
    let mut cfg = match (o.cert, o.key) {
        (Some(c), Some(k)) => {
            builder.with_client_auth_cert(certs(c, "cert")?, key(k)?).map_err(config_err)?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(bad("cert and key must be given together")),
    };
    cfg.alpn_protocols = o.alpn;
    cfg.resumption = Resumption::in_memory_sessions(64);
    Ok(Arc::new(cfg))
}

pub fn server_config(b: &[u8]) -> Result<Arc<ServerConfig>, EngineError> {
    let o = decode(b)?;
    let (Some(c), Some(k)) = (o.cert, o.key) else {
        return Err(bad("a server needs cert and key"));
    };
    let chain = certs(c, "cert")?;
    let key = key(k)?;
    let provider = provider();
    let builder = ServerConfig::builder_with_details(provider.clone(), Arc::new(HostTime))
        .with_protocol_versions(versions(o.tls12_only))
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
    cfg.alpn_protocols = o.alpn;
    // Our suite order (ChaCha20 first, see provider()) over the client's.
    cfg.ignore_client_order = true;
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
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
