//! A cache of successful server certificate verifications (client side).
//!
//! Verifying the server's chain costs the CA's ECDSA/RSA signature over the
//! leaf (~0.4 ms for P-256 here) plus parsing and path building, on every
//! handshake, although a client mostly meets the same chain again. Like
//! Chromium's `CachingCertVerifier`, [`CachingVerifier`] remembers that
//! webpki accepted a chain for a server name, and accepts exactly that again
//! while the time still lies inside the validity of every certificate
//! presented:
//!
//! - Key: SHA-256 over the server name and the exact DER of the end-entity
//!   certificate and of each intermediate, in order, each length-prefixed.
//!   One cache belongs to one verifier, i.e. one set of trust anchors and
//!   signature algorithms, without revocation checking (no CRLs: webpki's
//!   result then depends only on the chain, the anchors, the name and the
//!   time).
//! - The time: webpki checks `notBefore <= now <= notAfter` of the end-entity
//!   and intermediate certificates of the path (never of the trust anchor).
//!   An entry holds the intersection of the validity periods of all the
//!   certificates presented (a subset of the path's); outside it the chain is
//!   verified again in full, so an expired or not-yet-valid certificate gets
//!   webpki's own error.
//! - Only successes are stored, at most [`CAPACITY`] (least recently used
//!   goes first); failures are always verified again.
//! - The handshake signature (TLS 1.3 CertificateVerify, TLS 1.2
//!   ServerKeyExchange), the proof that the server holds the leaf's key, is
//!   verified on every handshake: it is never cached.

use std::sync::{Arc, Mutex};

use ring::digest;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// Entries per verifier (one verifier per client config).
pub const CAPACITY: usize = 64;

struct Entry {
    key: [u8; 32],
    /// Validity intersection, seconds since the Unix epoch, inclusive.
    not_before: u64,
    not_after: u64,
}

/// webpki's server certificate verifier with a cache of its successes.
pub struct CachingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    /// Most recently used last.
    entries: Mutex<Vec<Entry>>,
}

impl core::fmt::Debug for CachingVerifier {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CachingVerifier")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl CachingVerifier {
    pub fn new(inner: Arc<WebPkiServerVerifier>) -> Self {
        Self {
            inner,
            entries: Mutex::new(Vec::new()),
        }
    }

    fn lookup(&self, key: &[u8; 32], now: u64) -> bool {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let Some(i) = entries.iter().position(|e| &e.key == key) else {
            return false;
        };
        let e = entries.remove(i);
        let hit = e.not_before <= now && now <= e.not_after;
        if hit {
            entries.push(e);
        }
        hit
    }

    fn store(&self, key: [u8; 32], not_before: u64, not_after: u64) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|e| e.key != key);
        if entries.len() >= CAPACITY {
            entries.remove(0);
        }
        entries.push(Entry {
            key,
            not_before,
            not_after,
        });
    }
}

fn cache_key(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    server_name: &ServerName<'_>,
) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut field = |tag: u8, bytes: &[u8]| {
        ctx.update(&[tag]);
        ctx.update(&(bytes.len() as u64).to_be_bytes());
        ctx.update(bytes);
    };
    match server_name {
        ServerName::DnsName(d) => field(1, d.as_ref().as_bytes()),
        ServerName::IpAddress(ip) => match ip {
            rustls::pki_types::IpAddr::V4(v4) => field(2, v4.as_ref()),
            rustls::pki_types::IpAddr::V6(v6) => field(3, v6.as_ref()),
        },
        // Unknown kinds of name: a key no real name can have.
        _ => field(0xff, format!("{server_name:?}").as_bytes()),
    }
    field(4, end_entity.as_ref());
    for c in intermediates {
        field(5, c.as_ref());
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(ctx.finish().as_ref());
    key
}

/// The intersection of the validity periods of `certs` (seconds, inclusive),
/// or None if one does not parse (then nothing is cached).
fn validity_window<'a>(certs: impl Iterator<Item = &'a [u8]>) -> Option<(u64, u64)> {
    let (mut lo, mut hi) = (0u64, u64::MAX);
    for der in certs {
        let (nb, na) = der::validity(der)?;
        lo = lo.max(nb);
        hi = hi.min(na);
    }
    Some((lo, hi))
}

impl ServerCertVerifier for CachingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let key = cache_key(end_entity, intermediates, server_name);
        if self.lookup(&key, now.as_secs()) {
            return Ok(ServerCertVerified::assertion());
        }
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let certs =
            core::iter::once(end_entity.as_ref()).chain(intermediates.iter().map(|c| c.as_ref()));
        if let Some((nb, na)) = validity_window(certs) {
            // webpki just accepted `now`; a window that does not hold it means
            // our reading of the dates differs from webpki's: do not cache.
            if nb <= now.as_secs() && now.as_secs() <= na {
                self.store(key, nb, na);
            }
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

/// Just enough DER to read a certificate's validity (RFC 5280 4.1.2.5).
mod der {
    /// Splits one TLV off `input`: (tag, value, rest). Definite lengths only.
    fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            first as usize
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let mut len = 0usize;
            for &b in &rest[..n] {
                len = (len << 8) | b as usize;
            }
            rest = &rest[n..];
            len
        };
        if rest.len() < len {
            return None;
        }
        Some((tag, &rest[..len], &rest[len..]))
    }

    fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        let (t, v, rest) = tlv(input)?;
        (t == tag).then_some((v, rest))
    }

    /// (notBefore, notAfter) in seconds since the Unix epoch.
    pub fn validity(cert: &[u8]) -> Option<(u64, u64)> {
        const SEQUENCE: u8 = 0x30;
        let (cert, _) = expect(cert, SEQUENCE)?;
        let (tbs, _) = expect(cert, SEQUENCE)?;
        let mut rest = tbs;
        if rest.first() == Some(&0xa0) {
            rest = tlv(rest)?.2; // [0] EXPLICIT version
        }
        rest = expect(rest, 0x02)?.1; // serialNumber
        rest = expect(rest, SEQUENCE)?.1; // signature
        rest = expect(rest, SEQUENCE)?.1; // issuer
        let (validity, _) = expect(rest, SEQUENCE)?;
        let (t1, v1, rest) = tlv(validity)?;
        let (t2, v2, rest) = tlv(rest)?;
        if !rest.is_empty() {
            return None;
        }
        Some((time(t1, v1)?, time(t2, v2)?))
    }

    /// UTCTime (YYMMDDHHMMSSZ) or GeneralizedTime (YYYYMMDDHHMMSSZ), as
    /// RFC 5280 requires them (UTC, seconds, no fraction).
    fn time(tag: u8, v: &[u8]) -> Option<u64> {
        let digits = |s: &[u8]| -> Option<u64> {
            s.iter().try_fold(0u64, |acc, &c| {
                c.is_ascii_digit().then(|| acc * 10 + (c - b'0') as u64)
            })
        };
        let (year, rest) = match tag {
            0x17 if v.len() == 13 => {
                let yy = digits(&v[..2])?;
                (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &v[2..])
            }
            0x18 if v.len() == 15 => (digits(&v[..4])?, &v[4..]),
            _ => return None,
        };
        if rest[10] != b'Z' {
            return None;
        }
        let month = digits(&rest[0..2])?;
        let day = digits(&rest[2..4])?;
        let hour = digits(&rest[4..6])?;
        let minute = digits(&rest[6..8])?;
        let second = digits(&rest[8..10])?;
        if !(1..=12).contains(&month)
            || !(1..=31).contains(&day)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return None;
        }
        // Days from 1970-01-01 to year-month-day (proleptic Gregorian).
        let (y, m) = if month <= 2 {
            (year - 1, month + 9)
        } else {
            (year, month - 3)
        };
        let era = y / 400;
        let yoe = y - era * 400;
        let doy = (153 * m + 2) / 5 + day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = (era * 146_097 + doe).checked_sub(719_468)?;
        Some(days * 86_400 + hour * 3600 + minute * 60 + second)
    }
}
