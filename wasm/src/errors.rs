//! Mapping of rustls errors to the stable codes of the TypeScript `TlsError`.

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
