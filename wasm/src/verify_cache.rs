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

#[cfg(test)]
mod tests {
    use super::der::validity;
    use super::validity_window;
    use crate::errors::iso8601;
    use rustls::pki_types::pem::PemObject;

    /// `openssl x509`'s notBefore / notAfter of a fixture, ISO 8601.
    fn openssl_dates(name: &str) -> (String, String) {
        let path = format!("{}/../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let out = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-startdate", "-enddate", "-dateopt", "iso_8601", "-in", &path])
            .output()
            .expect("openssl runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        let get = |k: &str| -> String {
            let v = text.lines().find_map(|l| l.strip_prefix(k)).expect(k);
            v.replace(' ', "T")
        };
        (get("notBefore="), get("notAfter="))
    }

    fn der(name: &str) -> Vec<u8> {
        let path = format!("{}/../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let c = rustls::pki_types::CertificateDer::from_pem_file(&path).expect(&path);
        c.as_ref().to_vec()
    }

    #[test]
    fn fixtures_agree_with_openssl() {
        // UTCTime and (after 2049) GeneralizedTime, expired and not yet valid.
        for name in ["ca.pem", "localhost.pem", "rsa.pem", "expired.pem", "notyet.pem", "selfsigned.pem"] {
            let (nb, na) = validity(&der(name)).unwrap_or_else(|| panic!("{name}: no validity"));
            assert_eq!((iso8601(nb), iso8601(na)), openssl_dates(name), "{name}");
        }
        let (ca, leaf) = (der("ca.pem"), der("expired.pem"));
        let (lo, hi) = validity_window([&ca[..], &leaf[..]].into_iter()).unwrap();
        let (a, b) = (validity(&ca).unwrap(), validity(&leaf).unwrap());
        assert_eq!((lo, hi), (a.0.max(b.0), a.1.min(b.1)));
        assert_eq!(validity_window(std::iter::empty()), Some((0, u64::MAX)));
    }

    /// A certificate skeleton around a validity of two times (tag, text).
    fn cert(t1: (u8, &str), t2: (u8, &str), version: bool) -> Vec<u8> {
        fn tlv(tag: u8, v: &[u8]) -> Vec<u8> {
            let mut out = vec![tag];
            if v.len() < 0x80 {
                out.push(v.len() as u8);
            } else {
                // Long form, as DER does beyond 127 bytes.
                out.extend([0x82, (v.len() >> 8) as u8, v.len() as u8]);
            }
            out.extend_from_slice(v);
            out
        }
        let mut validity = tlv(t1.0, t1.1.as_bytes());
        validity.extend(tlv(t2.0, t2.1.as_bytes()));
        let mut tbs = Vec::new();
        if version {
            tbs.extend(tlv(0xa0, &tlv(0x02, &[2])));
        }
        tbs.extend(tlv(0x02, &[1, 2, 3]));
        tbs.extend(tlv(0x30, &[0x06, 0x01, 0x00]));
        tbs.extend(tlv(0x30, &[0u8; 200])); // a long issuer
        tbs.extend(tlv(0x30, &validity));
        tbs.extend(tlv(0x30, b"subject and the rest"));
        let mut c = tlv(0x30, &tbs);
        c.extend(tlv(0x30, b"sigalg"));
        tlv(0x30, &c)
    }

    const UTC: u8 = 0x17;
    const GEN: u8 = 0x18;

    #[test]
    fn times() {
        let v = |t1, t2| validity(&cert(t1, t2, true)).map(|(a, b)| (iso8601(a), iso8601(b)));
        let ok = |a: &str, b: &str| Some((a.to_string(), b.to_string()));
        assert_eq!(
            v((UTC, "250101000000Z"), (GEN, "20991231235959Z")),
            ok("2025-01-01T00:00:00Z", "2099-12-31T23:59:59Z")
        );
        // UTCTime: YY >= 50 is 19YY (RFC 5280 4.1.2.5.1).
        assert_eq!(
            v((UTC, "900101000000Z"), (UTC, "491231235959Z")),
            ok("1990-01-01T00:00:00Z", "2049-12-31T23:59:59Z")
        );
        assert_eq!(
            v((UTC, "000229120000Z"), (GEN, "21000301000000Z")),
            ok("2000-02-29T12:00:00Z", "2100-03-01T00:00:00Z")
        );
        // No version field (v1 certificates) parses too.
        assert!(validity(&cert((UTC, "250101000000Z"), (UTC, "260101000000Z"), false)).is_some());
        // Before 1970 (UTCTime 50..69 too): not representable, refused.
        assert_eq!(v((GEN, "19690101000000Z"), (UTC, "260101000000Z")), None);
        assert_eq!(v((UTC, "500101000000Z"), (UTC, "260101000000Z")), None);
    }

    #[test]
    fn bad_times_are_refused() {
        let good = (UTC, "250101000000Z");
        for bad in [
            (UTC, "2501010000Z"),      // no seconds
            (UTC, "250101000000"),     // no Z
            (UTC, "250101000000+0100"), // an offset
            (UTC, "25010100000aZ"),    // not a digit
            (UTC, "251301000000Z"),    // month 13
            (UTC, "250100000000Z"),    // day 0
            (UTC, "250132000000Z"),    // day 32
            (UTC, "250101240000Z"),    // hour 24
            (UTC, "250101006000Z"),    // minute 60
            (UTC, "250101000060Z"),    // second 60
            (GEN, "20250101000000.5Z"), // a fraction
            (GEN, "250101000000Z"),    // UTCTime text as GeneralizedTime
            (UTC, "20250101000000Z"),  // and the reverse
            (0x04, "250101000000Z"),   // not a time
        ] {
            assert_eq!(validity(&cert(good, bad, true)), None, "{bad:?}");
            assert_eq!(validity(&cert(bad, good, true)), None, "{bad:?}");
        }
    }

    #[test]
    fn bad_der_is_refused() {
        let c = cert((UTC, "250101000000Z"), (UTC, "260101000000Z"), true);
        assert!(validity(&c).is_some());
        // Every truncation fails cleanly.
        for n in 0..c.len() {
            assert_eq!(validity(&c[..n]), None, "truncated to {n}");
        }
        // Not a SEQUENCE; an indefinite length; a 5-byte length.
        let mut x = c.clone();
        x[0] = 0x31;
        assert_eq!(validity(&x), None);
        assert_eq!(validity(&[0x30, 0x80, 0x00, 0x00]), None);
        assert_eq!(validity(&[0x30, 0x85, 1, 0, 0, 0, 0]), None);
        // A length beyond the input.
        assert_eq!(validity(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0x30]), None);
        // Garbage never panics.
        let mut seed = 0x1234_5678u32;
        for len in 0..300 {
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            let _ = validity(&junk);
        }
    }
}
