//! The constants the engine and its TypeScript binding (`src/_engine.ts`)
//! share: status codes, status flags and option tags. This file is their one
//! source of truth: `mimic_abi(i)` returns entry `i` of [`TABLE`], the
//! binding checks every entry against its copy when it loads the engine
//! (`checkAbi`), and `tests/engine_abi_test.ts` compares this file, the
//! committed engine and the binding, so a change on one side alone fails.
//!
//! Entries are `pub const NAME: i32 = value;` lines, listed in [`TABLE`] in
//! the same order (the test reads them from this file).

// Status codes returned by the exports (handles and counts are >= 0).
/// A TLS error: the result buffer holds it (`code\0alert\0message`).
pub const ERR_TLS: i32 = -1;
/// Invalid options or arguments (a TypeError for the host).
pub const ERR_OPTIONS: i32 = -2;
/// `mimic_conn_read` after the peer's close_notify: clean end of flow.
pub const READ_CLOSED: i32 = -3;

// Status flags, word 2 of the status block (see `mimic_status_ptr`).
/// The handshake is not complete.
pub const STATUS_HANDSHAKING: i32 = 1;
/// The peer's close_notify was received: after the plaintext, end of flow.
pub const STATUS_PEER_CLOSED: i32 = 2;
/// The transport's end was fed.
pub const STATUS_TRANSPORT_ENDED: i32 = 4;
/// The connection failed: every call returns its error.
pub const STATUS_FAILED: i32 = 8;
/// close_notify was queued.
pub const STATUS_NOTIFIED: i32 = 16;
/// The engine wants TLS bytes from the peer.
pub const STATUS_WANTS_READ: i32 = 32;

// Option tags (the encoding is described in options.rs).
/// Trusted CA certificates, PEM.
pub const TAG_CA: i32 = 1;
/// An ALPN protocol.
pub const TAG_ALPN: i32 = 2;
/// Certificate chain, PEM.
pub const TAG_CERT: i32 = 3;
/// Private key, PEM.
pub const TAG_KEY: i32 = 4;
/// Unsafely ignore certificate errors.
pub const TAG_INSECURE: i32 = 5;
/// Client CA certificates, PEM (server).
pub const TAG_CLIENT_CA: i32 = 6;
/// TLS 1.2 only.
pub const TAG_TLS12_ONLY: i32 = 7;
/// A cipher suite, IANA name.
pub const TAG_CIPHER_SUITE: i32 = 8;
/// Minimum TLS version.
pub const TAG_MIN_VERSION: i32 = 9;
/// Maximum TLS version.
pub const TAG_MAX_VERSION: i32 = 10;
/// A key exchange group.
pub const TAG_KX_GROUP: i32 = 11;
/// Key log on.
pub const TAG_KEY_LOG: i32 = 12;
/// Resumption off (client).
pub const TAG_NO_RESUMPTION: i32 = 13;
/// An ECHConfigList (client).
pub const TAG_ECH_CONFIG_LIST: i32 = 14;
/// Client authentication optional (server).
pub const TAG_CLIENT_AUTH_OPTIONAL: i32 = 16;

/// Every shared constant, in the order of `mimic_abi(i)` (and of the
/// binding's `ABI` table).
pub const TABLE: [i32; 24] = [
    ERR_TLS,
    ERR_OPTIONS,
    READ_CLOSED,
    STATUS_HANDSHAKING,
    STATUS_PEER_CLOSED,
    STATUS_TRANSPORT_ENDED,
    STATUS_FAILED,
    STATUS_NOTIFIED,
    STATUS_WANTS_READ,
    TAG_CA,
    TAG_ALPN,
    TAG_CERT,
    TAG_KEY,
    TAG_INSECURE,
    TAG_CLIENT_CA,
    TAG_TLS12_ONLY,
    TAG_CIPHER_SUITE,
    TAG_MIN_VERSION,
    TAG_MAX_VERSION,
    TAG_KX_GROUP,
    TAG_KEY_LOG,
    TAG_NO_RESUMPTION,
    TAG_ECH_CONFIG_LIST,
    TAG_CLIENT_AUTH_OPTIONAL,
];

/// What `mimic_abi` returns past the end of [`TABLE`]: no constant has it.
pub const END: i32 = i32::MIN;

/// Entry `i` of [`TABLE`], or [`END`].
pub fn entry(i: u32) -> i32 {
    TABLE.get(i as usize).copied().unwrap_or(END)
}

/// An option tag as the byte of the encoding.
pub const fn tag(t: i32) -> u8 {
    t as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_the_file() {
        // Every `pub const NAME: i32` of this file is in TABLE, in order.
        let src = include_str!("abi.rs");
        let names: Vec<&str> = src
            .lines()
            .filter_map(|l| l.strip_prefix("pub const "))
            .filter_map(|l| l.split_once(": i32 = "))
            .map(|(n, _)| n)
            .filter(|n| *n != "END")
            .collect();
        assert_eq!(names.len(), TABLE.len(), "{names:?}");
        let values: Vec<i32> = src
            .lines()
            .filter_map(|l| l.strip_prefix("pub const "))
            .filter_map(|l| l.split_once(": i32 = "))
            .filter(|(n, _)| *n != "END")
            .map(|(_, v)| v.trim_end_matches(';').parse().unwrap())
            .collect();
        assert_eq!(values, TABLE);
        assert_eq!(entry(TABLE.len() as u32), END);
        assert!(!TABLE.contains(&END));
        // Tags fit the encoding's byte and are distinct.
        let tags: Vec<i32> = names.iter().zip(&values).filter(|(n, _)| n.starts_with("TAG_")).map(|(_, v)| *v).collect();
        assert!(tags.iter().all(|t| (1..=255).contains(t)));
        let mut sorted = tags.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), tags.len());
    }
}
