//! Mapping of rustls errors to the stable codes of the TypeScript `TlsError`.

use rustls::pki_types::UnixTime;
use rustls::{CertificateError, Error};

#[derive(Clone, Copy)]
pub enum ErrorKind {
    /// A TLS failure (TlsError on the TS side).
    Tls,
    /// Invalid options, e.g. malformed PEM (TypeError on the TS side).
    Options,
}

#[derive(Clone)]
pub struct EngineError {
    pub kind: ErrorKind,
    pub code: &'static str,
    pub alert: Option<&'static str>,
    pub message: String,
}

impl EngineError {
    pub fn tls(code: &'static str, message: String) -> Self {
        Self {
            kind: ErrorKind::Tls,
            code,
            alert: None,
            message,
        }
    }
    pub fn options(message: String) -> Self {
        Self {
            kind: ErrorKind::Options,
            code: "InvalidOptions",
            alert: None,
            message,
        }
    }
}

/// IANA TLS alert names (RFC 8446 and registry).
pub fn alert_name(code: u8) -> &'static str {
    match code {
        0 => "close_notify",
        10 => "unexpected_message",
        20 => "bad_record_mac",
        21 => "decryption_failed",
        22 => "record_overflow",
        30 => "decompression_failure",
        40 => "handshake_failure",
        41 => "no_certificate",
        42 => "bad_certificate",
        43 => "unsupported_certificate",
        44 => "certificate_revoked",
        45 => "certificate_expired",
        46 => "certificate_unknown",
        47 => "illegal_parameter",
        48 => "unknown_ca",
        49 => "access_denied",
        50 => "decode_error",
        51 => "decrypt_error",
        60 => "export_restriction",
        70 => "protocol_version",
        71 => "insufficient_security",
        80 => "internal_error",
        86 => "inappropriate_fallback",
        90 => "user_canceled",
        100 => "no_renegotiation",
        109 => "missing_extension",
        110 => "unsupported_extension",
        111 => "certificate_unobtainable",
        112 => "unrecognized_name",
        113 => "bad_certificate_status_response",
        114 => "bad_certificate_hash_value",
        115 => "unknown_psk_identity",
        116 => "certificate_required",
        120 => "no_application_protocol",
        121 => "ech_required",
        _ => "unknown",
    }
}

fn cert_code(e: &CertificateError) -> &'static str {
    use CertificateError as C;
    match e {
        C::UnknownIssuer => "UnknownIssuer",
        C::NotValidForName | C::NotValidForNameContext { .. } => "NotValidForName",
        C::Expired | C::ExpiredContext { .. } => "Expired",
        C::NotValidYet | C::NotValidYetContext { .. } => "NotValidYet",
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => "InvalidPurpose",
        C::BadSignature => "BadSignature",
        _ => "BadCertificate",
    }
}

pub fn from_rustls(err: &Error) -> EngineError {
    let mut e = from_rustls_plain(err);
    if let Error::InvalidCertificate(c) = err {
        if let Some(m) = cert_message(c) {
            e.message = m;
        }
    }
    e
}

fn from_rustls_plain(err: &Error) -> EngineError {
    let mut alert = None;
    let code = match err {
        Error::InvalidCertificate(c) => cert_code(c),
        Error::InvalidCertRevocationList(_) => "BadCertificate",
        Error::AlertReceived(a) => {
            alert = Some(alert_name(a.to_array()[0]));
            "AlertReceived"
        }
        Error::NoApplicationProtocol => "NoApplicationProtocol",
        Error::PeerIncompatible(_) => "PeerIncompatible",
        Error::InvalidMessage(_)
        | Error::InappropriateMessage { .. }
        | Error::InappropriateHandshakeMessage { .. }
        | Error::DecryptError
        | Error::PeerSentOversizedRecord => "BadInput",
        Error::PeerMisbehaved(_) => "ProtocolViolation",
        Error::NoCertificatesPresented => "NoCertificatesPresented",
        Error::UnsupportedNameType => "NotValidForName",
        // rustls reports "no signature scheme in common" as a general error.
        Error::General(m) if m.contains("incompatible signing key") => "PeerIncompatible",
        _ => "TlsFailure",
    };
    EngineError {
        kind: ErrorKind::Tls,
        code,
        alert,
        message: err.to_string(),
    }
}

// ---------------------------------------------------------------------------
// Wording: dates, ordinals, what a non-TLS peer sent
// ---------------------------------------------------------------------------

/// `secs` since the Unix epoch as ISO 8601 UTC, e.g. "2001-01-01T00:00:00Z".
pub fn iso8601(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn iso(t: &UnixTime) -> String {
    iso8601(t.as_secs())
}

/// Certificate validity errors with ISO 8601 dates (rustls prints UNIX seconds).
fn cert_message(e: &CertificateError) -> Option<String> {
    match e {
        CertificateError::ExpiredContext { time, not_after } => Some(format!(
            "invalid peer certificate: expired: it is not valid after {}, and the time is {}",
            iso(not_after),
            iso(time)
        )),
        CertificateError::NotValidYetContext { time, not_before } => Some(format!(
            "invalid peer certificate: not valid yet: it is not valid before {}, and the time is {}",
            iso(not_before),
            iso(time)
        )),
        _ => None,
    }
}

/// "1st", "2nd", "3rd", "4th", ..., "11th", "12th", "13th", "21st", ...
pub fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// Most bytes of a non-TLS peer's first bytes quoted in a message.
const EXCERPT_BYTES: usize = 24;

/// A short printable excerpt of `bytes`, quoted: printable ASCII as is,
/// `\r`, `\n`, `\t`, `\"`, `\\` and `\xNN` otherwise, "..." when cut.
pub fn excerpt(bytes: &[u8]) -> String {
    excerpt_max(bytes, EXCERPT_BYTES)
}

/// [`excerpt`] of at most `max` bytes.
pub fn excerpt_max(bytes: &[u8], max: usize) -> String {
    let mut out = String::from("\"");
    for &b in bytes.iter().take(max) {
        match b {
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    if bytes.len() > max {
        out.push_str("...");
    }
    out.push('"');
    out
}

/// The first bytes a connection received from its peer (at most
/// `HEAD_BYTES`), kept to explain a failure on them.
#[derive(Default)]
pub struct Head(Vec<u8>);

const HEAD_BYTES: usize = 32;

impl Head {
    /// Records the start of the peer's bytes.
    pub fn note(&mut self, data: &[u8]) {
        if self.0.len() < HEAD_BYTES {
            let n = (HEAD_BYTES - self.0.len()).min(data.len());
            self.0.extend_from_slice(&data[..n]);
        }
    }

    /// True when the peer's first bytes cannot start a TLS record: the first
    /// record from a TLS peer is a handshake (22) or an alert (21) of
    /// version 3.x.
    pub fn not_tls(&self) -> bool {
        let h = &self.0;
        match h.len() {
            0 => false,
            1 => !matches!(h[0], 21 | 22),
            _ => !matches!(h[0], 21 | 22) || h[1] != 3,
        }
    }

    /// `err` reworded for a person when the peer's first bytes explain it:
    /// a peer that does not speak TLS (code "BadInput", with what it sent),
    /// or one that echoed our ClientHello back.
    pub fn explain(&self, mut err: EngineError, client: bool) -> EngineError {
        if self.not_tls() {
            err.code = "BadInput";
            err.message = format!("the peer does not speak TLS: it sent {}", excerpt(&self.0));
        } else if client && err.code == "BadInput" && self.0.len() >= 6 && self.0[5] == 1 {
            // A handshake record holding a ClientHello, sent to a client.
            err.message = format!(
                "the peer does not speak TLS: it sent a ClientHello back (an echo server, or another TLS client): {}",
                err.message
            );
        }
        err
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(978_307_200), "2001-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(4_102_444_800), "2100-01-01T00:00:00Z");
        assert_eq!(iso8601(1_764_583_151), "2025-12-01T09:59:11Z");
    }

    #[test]
    fn ordinals() {
        let got: Vec<String> = [1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111].map(ordinal).to_vec();
        assert_eq!(got, ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st", "111th"]);
    }

    #[test]
    fn excerpts() {
        assert_eq!(excerpt(b"HTTP/1.1 400 Bad Request\r\n"), "\"HTTP/1.1 400 Bad Request...\"");
        assert_eq!(excerpt(b"hi\r\n\x00\""), "\"hi\\r\\n\\x00\\\"\"");
    }

    #[test]
    fn heads() {
        let mut h = Head::default();
        assert!(!h.not_tls());
        h.note(b"\x16");
        assert!(!h.not_tls());
        h.note(b"\x03\x01");
        assert!(!h.not_tls());
        let mut h = Head::default();
        h.note(b"SSH-2.0-OpenSSH_9.2\r\n");
        assert!(h.not_tls());
        let e = h.explain(EngineError::tls("TlsFailure", "x".into()), false);
        assert_eq!(e.code, "BadInput");
        assert_eq!(e.message, "the peer does not speak TLS: it sent \"SSH-2.0-OpenSSH_9.2\\r\\n\"");
    }
}

#[cfg(test)]
mod mapping_tests {
    use super::*;
    use rustls::{
        AlertDescription, CertRevocationListError, ContentType, HandshakeType, InvalidMessage,
        OtherError, PeerIncompatible, PeerMisbehaved,
    };

    fn code(e: Error) -> &'static str {
        let m = from_rustls(&e);
        assert!(matches!(m.kind, ErrorKind::Tls));
        m.code
    }

    #[test]
    fn rustls_errors_to_codes() {
        use CertificateError as C;
        let t = UnixTime::since_unix_epoch(core::time::Duration::from_secs(1_000_000_000));
        let cases: Vec<(Error, &str)> = vec![
            (Error::InvalidCertificate(C::UnknownIssuer), "UnknownIssuer"),
            (Error::InvalidCertificate(C::NotValidForName), "NotValidForName"),
            (Error::InvalidCertificate(C::Expired), "Expired"),
            (Error::InvalidCertificate(C::ExpiredContext { time: t, not_after: t }), "Expired"),
            (Error::InvalidCertificate(C::NotValidYet), "NotValidYet"),
            (Error::InvalidCertificate(C::NotValidYetContext { time: t, not_before: t }), "NotValidYet"),
            (Error::InvalidCertificate(C::InvalidPurpose), "InvalidPurpose"),
            (Error::InvalidCertificate(C::BadSignature), "BadSignature"),
            (Error::InvalidCertificate(C::BadEncoding), "BadCertificate"),
            (Error::InvalidCertificate(C::Revoked), "BadCertificate"),
            (Error::InvalidCertRevocationList(CertRevocationListError::BadSignature), "BadCertificate"),
            (Error::AlertReceived(AlertDescription::HandshakeFailure), "AlertReceived"),
            (Error::NoApplicationProtocol, "NoApplicationProtocol"),
            (Error::PeerIncompatible(PeerIncompatible::NoCipherSuitesInCommon), "PeerIncompatible"),
            (Error::InvalidMessage(InvalidMessage::InvalidContentType), "BadInput"),
            (
                Error::InappropriateMessage { expect_types: vec![ContentType::Handshake], got_type: ContentType::Alert },
                "BadInput",
            ),
            (
                Error::InappropriateHandshakeMessage {
                    expect_types: vec![HandshakeType::ServerHello],
                    got_type: HandshakeType::Finished,
                },
                "BadInput",
            ),
            (Error::DecryptError, "BadInput"),
            (Error::PeerSentOversizedRecord, "BadInput"),
            (Error::PeerMisbehaved(PeerMisbehaved::InvalidKeyShare), "ProtocolViolation"),
            (Error::NoCertificatesPresented, "NoCertificatesPresented"),
            (Error::UnsupportedNameType, "NotValidForName"),
            (Error::General("incompatible signing key".into()), "PeerIncompatible"),
            (Error::General("something else".into()), "TlsFailure"),
            (Error::EncryptError, "TlsFailure"),
            (Error::FailedToGetRandomBytes, "TlsFailure"),
            (Error::HandshakeNotComplete, "TlsFailure"),
            (Error::Other(OtherError(std::sync::Arc::new(std::fmt::Error))), "TlsFailure"),
        ];
        for (e, want) in cases {
            let shown = format!("{e:?}");
            assert_eq!(code(e), want, "{shown}");
        }
    }

    #[test]
    fn alerts_are_named() {
        let m = from_rustls(&Error::AlertReceived(AlertDescription::HandshakeFailure));
        assert_eq!(m.alert, Some("handshake_failure"));
        let m = from_rustls(&Error::AlertReceived(AlertDescription::CertificateRequired));
        assert_eq!(m.alert, Some("certificate_required"));
        let m = from_rustls(&Error::AlertReceived(AlertDescription::Unknown(222)));
        assert_eq!(m.alert, Some("unknown"));
        assert_eq!(from_rustls(&Error::DecryptError).alert, None);
        for (n, name) in [(0, "close_notify"), (48, "unknown_ca"), (120, "no_application_protocol"), (121, "ech_required")] {
            assert_eq!(alert_name(n), name);
        }
        // The message is rustls's own.
        assert_eq!(from_rustls(&Error::DecryptError).message, Error::DecryptError.to_string());
    }

    #[test]
    fn validity_messages_have_iso_dates() {
        let at = |s: u64| UnixTime::since_unix_epoch(core::time::Duration::from_secs(s));
        let m = from_rustls(&Error::InvalidCertificate(CertificateError::ExpiredContext {
            time: at(1_764_583_151),
            not_after: at(978_307_200),
        }));
        assert_eq!(m.code, "Expired");
        assert_eq!(
            m.message,
            "invalid peer certificate: expired: it is not valid after 2001-01-01T00:00:00Z, and the time is 2025-12-01T09:59:11Z"
        );
        let m = from_rustls(&Error::InvalidCertificate(CertificateError::NotValidYetContext {
            time: at(0),
            not_before: at(951_782_400),
        }));
        assert_eq!(m.code, "NotValidYet");
        assert_eq!(
            m.message,
            "invalid peer certificate: not valid yet: it is not valid before 2000-02-29T00:00:00Z, and the time is 1970-01-01T00:00:00Z"
        );
        // Without context: rustls's message.
        let e = Error::InvalidCertificate(CertificateError::Expired);
        assert_eq!(from_rustls(&e).message, e.to_string());
    }

    #[test]
    fn more_dates() {
        // End of days, leap years (1900 and 2100 are not, 2000 is).
        assert_eq!(iso8601(86_399), "1970-01-01T23:59:59Z");
        assert_eq!(iso8601(1_709_164_800), "2024-02-29T00:00:00Z");
        assert_eq!(iso8601(4_107_542_400), "2100-03-01T00:00:00Z");
        assert_eq!(iso8601(253_402_300_799), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn echo_is_explained_to_a_client() {
        let mut h = Head::default();
        h.note(&[22, 3, 1, 0, 100, 1, 0, 0, 96]);
        let e = h.explain(EngineError::tls("BadInput", "x".into()), true);
        assert!(e.message.starts_with("the peer does not speak TLS: it sent a ClientHello back"), "{}", e.message);
        // A server is not told so, nor another code.
        let e = h.explain(EngineError::tls("BadInput", "x".into()), false);
        assert_eq!(e.message, "x");
        let e = h.explain(EngineError::tls("UnknownIssuer", "y".into()), true);
        assert_eq!((e.code, e.message.as_str()), ("UnknownIssuer", "y"));
    }
}
