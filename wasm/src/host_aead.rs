//! TLS 1.3 record protection with the host's AEAD where it has a fast one.
//!
//! WebAssembly has no AES instructions: ring's constant-time software
//! AES-GCM runs at ~50 MB/s in V8, a tenth of our SIMD ChaCha20-Poly1305. A
//! host with native AES-GCM (`node:crypto` in Node, Deno and Bun: OpenSSL,
//! BoringSSL or RustCrypto with AES-NI) does it many times faster. Here the
//! TLS 1.3 suites keep rustls' record layer (framing, nonces, sequence
//! numbers, key updates, confidentiality limits: all unchanged) and only the
//! AEAD call goes to the host, through synchronous imports:
//!
//! - `env.mimic_host_key(alg, key_ptr, key_len) -> i32`: a key handle > 0,
//!   or <= 0 when the host cannot (then the wasm AEAD is used).
//! - `env.mimic_host_key_drop(handle)`.
//! - `env.mimic_host_seal(handle, nonce_ptr, aad_ptr, aad_len, data_ptr,
//!   data_len, tag_ptr) -> i32`: encrypts in place, writes the 16-byte tag;
//!   0 on success.
//! - `env.mimic_host_open(...)` (same arguments): verifies the tag and
//!   decrypts in place; 0 on success, 1 when the tag is wrong, < 0 when the
//!   host failed.
//!
//! The host path is off until the host enables it with `mimic_set_host_aead`
//! (after its self-test, `mimic_host_aead_selftest`, agreed with the wasm
//! AEAD on known vectors), and each key falls back to the wasm AEAD when the
//! host refuses it. Key bytes given to the host are the traffic keys rustls
//! derives; the host's copies are dropped with the encrypter/decrypter.

use core::sync::atomic::{AtomicU32, Ordering};

use rustls::crypto::cipher::{
    AeadKey, Iv, MessageDecrypter, MessageEncrypter, Tls13AeadAlgorithm, UnsupportedOperationError,
};
use rustls::crypto::CipherSuiteCommon;
use rustls::{ConnectionTrafficSecrets, Tls13CipherSuite};

use crate::tls13_record::{Decrypter, Encrypter, RecordAead, TAG_LEN};

/// The AEAD algorithms the host may provide (the `alg` of the imports).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u32)]
pub enum Alg {
    Aes128Gcm = 1,
    Aes256Gcm = 2,
    Chacha20Poly1305 = 3,
}

impl Alg {
    pub const ALL: [Alg; 3] = [Alg::Aes128Gcm, Alg::Aes256Gcm, Alg::Chacha20Poly1305];

    fn bit(self) -> u32 {
        1 << (self as u32)
    }

    pub fn key_len(self) -> usize {
        match self {
            Alg::Aes128Gcm => 16,
            _ => 32,
        }
    }
}

/// Bit `1 << alg` set: the host AEAD is used for new keys of that algorithm.
static ENABLED: AtomicU32 = AtomicU32::new(0);

/// Bit 0 of the mask: AES-GCM goes before ChaCha20-Poly1305 in the default
/// suite order (a host whose AES-GCM is faster than our ChaCha20).
pub const PREFER_AES: u32 = 1;

/// Enables the host AEAD for the algorithms in `mask` (bits `1 << alg`), and
/// sets the default suite order (bit `PREFER_AES`). Configs made afterwards
/// use it.
pub fn set_enabled(mask: u32) {
    ENABLED.store(mask, Ordering::Relaxed);
}

/// AES-GCM first in the default order.
pub fn prefer_aes() -> bool {
    ENABLED.load(Ordering::Relaxed) & PREFER_AES != 0
}

pub fn enabled(alg: Alg) -> bool {
    ENABLED.load(Ordering::Relaxed) & alg.bit() != 0
}

#[cfg(target_arch = "wasm32")]
mod imports {
    #[link(wasm_import_module = "env")]
    extern "C" {
        pub fn mimic_host_key(alg: u32, key: *const u8, len: usize) -> i32;
        pub fn mimic_host_key_drop(handle: i32);
        pub fn mimic_host_seal(
            handle: i32,
            nonce: *const u8,
            aad: *const u8,
            aad_len: usize,
            data: *mut u8,
            len: usize,
            tag: *mut u8,
        ) -> i32;
        pub fn mimic_host_open(
            handle: i32,
            nonce: *const u8,
            aad: *const u8,
            aad_len: usize,
            data: *mut u8,
            len: usize,
            tag: *mut u8,
        ) -> i32;
    }
}

/// Host stand-ins for `cargo test` on the build machine: no host AEAD.
#[cfg(not(target_arch = "wasm32"))]
mod imports {
    pub unsafe fn mimic_host_key(_: u32, _: *const u8, _: usize) -> i32 {
        0
    }
    pub unsafe fn mimic_host_key_drop(_: i32) {}
    pub unsafe fn mimic_host_seal(
        _: i32,
        _: *const u8,
        _: *const u8,
        _: usize,
        _: *mut u8,
        _: usize,
        _: *mut u8,
    ) -> i32 {
        -1
    }
    pub unsafe fn mimic_host_open(
        _: i32,
        _: *const u8,
        _: *const u8,
        _: usize,
        _: *mut u8,
        _: usize,
        _: *mut u8,
    ) -> i32 {
        -1
    }
}

/// A key held by the host; dropped there when this is dropped.
pub struct HostKey(i32);

impl HostKey {
    /// Hands `key` to the host; None when the host refuses it.
    pub fn new(alg: Alg, key: &[u8]) -> Option<Self> {
        // SAFETY: (ptr, len) is a valid buffer for the call's duration.
        let h = unsafe { imports::mimic_host_key(alg as u32, key.as_ptr(), key.len()) };
        (h > 0).then_some(HostKey(h))
    }

    /// Seals (`seal`) or opens `data` in place with the host; `tag` is
    /// written by a seal and read by an open.
    fn crypt(
        &self,
        seal: bool,
        nonce: &[u8; 12],
        aad: &[u8],
        data: &mut [u8],
        tag: &mut [u8; 16],
    ) -> Result<(), ()> {
        let call = if seal {
            imports::mimic_host_seal
        } else {
            imports::mimic_host_open
        };
        let (n, a, d, t) = (
            nonce.as_ptr(),
            aad.as_ptr(),
            data.as_mut_ptr(),
            tag.as_mut_ptr(),
        );
        // SAFETY: every (ptr, len) is a valid buffer for the call's duration;
        // the host writes only `data` and, sealing, the 16 bytes of `tag`.
        let r = unsafe { call(self.0, n, a, aad.len(), d, data.len(), t) };
        if r == 0 {
            Ok(())
        } else {
            Err(())
        }
    }
}

impl RecordAead for HostKey {
    fn seal(&self, nonce: &[u8; 12], aad: &[u8], data: &mut [u8]) -> Result<[u8; 16], ()> {
        let mut tag = [0u8; TAG_LEN];
        self.crypt(true, nonce, aad, data, &mut tag).map(|()| tag)
    }

    fn open(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        data: &mut [u8],
        tag: &[u8; 16],
    ) -> Result<(), ()> {
        self.crypt(false, nonce, aad, data, &mut { *tag })
    }
}

impl Drop for HostKey {
    fn drop(&mut self) {
        // SAFETY: plain host call without pointers.
        unsafe { imports::mimic_host_key_drop(self.0) }
    }
}

/// A TLS 1.3 AEAD: the host's for keys it takes, else `fallback` (ring's,
/// or our SIMD ChaCha20-Poly1305).
pub struct HostAead {
    alg: Alg,
    fallback: &'static dyn Tls13AeadAlgorithm,
}

impl Tls13AeadAlgorithm for HostAead {
    fn encrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageEncrypter> {
        if enabled(self.alg) {
            if let Some(key) = HostKey::new(self.alg, key.as_ref()) {
                return Box::new(Encrypter { aead: key, iv });
            }
        }
        self.fallback.encrypter(key, iv)
    }

    fn decrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageDecrypter> {
        if enabled(self.alg) {
            if let Some(key) = HostKey::new(self.alg, key.as_ref()) {
                return Box::new(Decrypter { aead: key, iv });
            }
        }
        self.fallback.decrypter(key, iv)
    }

    fn key_len(&self) -> usize {
        self.alg.key_len()
    }

    fn extract_keys(
        &self,
        key: AeadKey,
        iv: Iv,
    ) -> Result<ConnectionTrafficSecrets, UnsupportedOperationError> {
        self.fallback.extract_keys(key, iv)
    }

    fn fips(&self) -> bool {
        false
    }
}

/// `suite` with the host AEAD for `alg` in front of its own (made once per
/// algorithm: every config shares it).
pub fn tls13_suite(suite: &'static Tls13CipherSuite, alg: Alg) -> &'static Tls13CipherSuite {
    use std::sync::OnceLock;
    static AEADS: [OnceLock<HostAead>; 3] = [const { OnceLock::new() }; 3];
    static SUITES: [OnceLock<Tls13CipherSuite>; 3] = [const { OnceLock::new() }; 3];
    let i = alg as usize - 1;
    let aead: &'static HostAead = AEADS[i].get_or_init(|| HostAead {
        alg,
        fallback: suite.aead_alg,
    });
    SUITES[i].get_or_init(|| Tls13CipherSuite {
        common: CipherSuiteCommon { ..suite.common },
        hkdf_provider: suite.hkdf_provider,
        aead_alg: aead,
        quic: suite.quic,
    })
}

// ---------------------------------------------------------------------------
// Known-answer vectors for the self-test (host against the wasm AEAD)
// ---------------------------------------------------------------------------

/// One AEAD test vector: key, nonce, aad, plaintext, ciphertext || tag.
pub struct Vector {
    pub alg: Alg,
    pub key: &'static [u8],
    pub nonce: [u8; 12],
    pub aad: &'static [u8],
    pub plaintext: &'static [u8],
    pub sealed: &'static [u8],
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn leak(s: &str) -> &'static [u8] {
    Box::leak(hex(s).into_boxed_slice())
}

fn nonce(s: &str) -> [u8; 12] {
    hex(s).try_into().unwrap()
}

/// RFC 8439 §2.8.2 (ChaCha20-Poly1305) and the GCM specification's test
/// cases 4 (AES-128) and 16 (AES-256) with 96-bit IVs.
pub fn vectors() -> Vec<Vector> {
    vec![
        Vector {
            alg: Alg::Chacha20Poly1305,
            key: leak("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"),
            nonce: nonce("070000004041424344454647"),
            aad: leak("50515253c0c1c2c3c4c5c6c7"),
            plaintext: b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.",
            sealed: leak(concat!(
                "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc3ff4def08e4b7a9de576d26586cec64b6116",
                "1ae10b594f09e26a7e902ecbd0600691"
            )),
        },
        Vector {
            alg: Alg::Aes128Gcm,
            key: leak("feffe9928665731c6d6a8f9467308308"),
            nonce: nonce("cafebabefacedbaddecaf888"),
            aad: leak("feedfacedeadbeeffeedfacedeadbeefabaddad2"),
            plaintext: leak(concat!(
                "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72",
                "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"
            )),
            sealed: leak(concat!(
                "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e",
                "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
                "5bc94fbc3221a5db94fae95ae7121a47"
            )),
        },
        Vector {
            alg: Alg::Aes256Gcm,
            key: leak("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308"),
            nonce: nonce("cafebabefacedbaddecaf888"),
            aad: leak("feedfacedeadbeeffeedfacedeadbeefabaddad2"),
            plaintext: leak(concat!(
                "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72",
                "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"
            )),
            sealed: leak(concat!(
                "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa",
                "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
                "76fc6ece0f4e1768cddf8853bb2d551b"
            )),
        },
    ]
}

/// The wasm AEAD (ring's) on a vector: Ok when it matches.
fn ring_agrees(v: &Vector) -> bool {
    use ring::aead::{Aad, LessSafeKey, Nonce as RingNonce, UnboundKey};
    let alg = match v.alg {
        Alg::Aes128Gcm => &ring::aead::AES_128_GCM,
        Alg::Aes256Gcm => &ring::aead::AES_256_GCM,
        Alg::Chacha20Poly1305 => &ring::aead::CHACHA20_POLY1305,
    };
    let Ok(key) = UnboundKey::new(alg, v.key) else {
        return false;
    };
    let key = LessSafeKey::new(key);
    let mut data = v.plaintext.to_vec();
    let Ok(tag) = key.seal_in_place_separate_tag(
        RingNonce::assume_unique_for_key(v.nonce),
        Aad::from(v.aad),
        &mut data,
    ) else {
        return false;
    };
    data.extend_from_slice(tag.as_ref());
    data == v.sealed
}

/// The host AEAD on a vector, both ways, and a tampered tag refused.
fn host_agrees(v: &Vector) -> bool {
    let Some(key) = HostKey::new(v.alg, v.key) else {
        return false;
    };
    let mut data = v.plaintext.to_vec();
    let Ok(tag) = key.seal(&v.nonce, v.aad, &mut data) else {
        return false;
    };
    data.extend_from_slice(&tag);
    if data != v.sealed {
        return false;
    }
    let n = v.plaintext.len();
    let mut ct = v.sealed[..n].to_vec();
    let tag: [u8; 16] = v.sealed[n..].try_into().unwrap();
    if key.open(&v.nonce, v.aad, &mut ct, &tag).is_err() || ct != v.plaintext {
        return false;
    }
    let mut bad = tag;
    bad[0] ^= 1;
    let mut ct = v.sealed[..n].to_vec();
    key.open(&v.nonce, v.aad, &mut ct, &bad).is_err()
}

/// Runs the vectors: bit `1 << alg` set where the host AEAD agrees with the
/// expected answer and with the wasm AEAD (which must agree too).
pub fn selftest() -> u32 {
    let mut ok = 0;
    for alg in Alg::ALL {
        let vs: Vec<Vector> = vectors().into_iter().filter(|v| v.alg == alg).collect();
        if vs.iter().all(|v| ring_agrees(v) && host_agrees(v)) {
            ok |= alg.bit();
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasm_aead_matches_the_published_vectors() {
        for v in vectors() {
            assert!(ring_agrees(&v), "{:?}", v.alg);
        }
    }

    #[test]
    fn without_a_host_nothing_is_enabled() {
        assert_eq!(selftest(), 0);
        set_enabled(0);
        assert!(!enabled(Alg::Aes128Gcm));
    }
}

#[cfg(test)]
mod vector_tests {
    use super::*;

    /// The GCM specification's other 96-bit-IV test cases (1-3: AES-128,
    /// 13-15: AES-256; "The Galois/Counter Mode of Operation", McGrew and
    /// Viega, appendix B), without AAD.
    fn gcm_vectors() -> Vec<Vector> {
        let p3 = concat!(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72",
            "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255"
        );
        let v = |alg, key: &str, nonce_hex: &str, p: &str, c: &str| Vector {
            alg,
            key: leak(key),
            nonce: nonce(nonce_hex),
            aad: &[],
            plaintext: leak(p),
            sealed: leak(c),
        };
        let z12 = "000000000000000000000000";
        let k128 = "feffe9928665731c6d6a8f9467308308";
        let k256 = "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308";
        vec![
            v(
                Alg::Aes128Gcm,
                "00000000000000000000000000000000",
                z12,
                "",
                "58e2fccefa7e3061367f1d57a4e7455a",
            ),
            v(
                Alg::Aes128Gcm,
                "00000000000000000000000000000000",
                z12,
                "00000000000000000000000000000000",
                "0388dace60b6a392f328c2b971b2fe78ab6e47d42cec13bdf53a67b21257bddf",
            ),
            v(
                Alg::Aes128Gcm,
                k128,
                "cafebabefacedbaddecaf888",
                p3,
                concat!(
                    "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e",
                    "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985",
                    "4d5c2af327cd64a62cf35abd2ba6fab4"
                ),
            ),
            v(
                Alg::Aes256Gcm,
                "0000000000000000000000000000000000000000000000000000000000000000",
                z12,
                "",
                "530f8afbc74536b9a963b4f1c4cb738b",
            ),
            v(
                Alg::Aes256Gcm,
                "0000000000000000000000000000000000000000000000000000000000000000",
                z12,
                "00000000000000000000000000000000",
                "cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919",
            ),
            v(
                Alg::Aes256Gcm,
                k256,
                "cafebabefacedbaddecaf888",
                p3,
                concat!(
                    "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa",
                    "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
                    "b094dac5d93471bdec1a502270e3cc6c"
                ),
            ),
        ]
    }

    #[test]
    fn ring_matches_more_gcm_vectors() {
        for (i, v) in gcm_vectors().iter().enumerate() {
            assert!(ring_agrees(v), "GCM vector {i}");
        }
    }

    #[test]
    fn a_changed_byte_is_noticed() {
        // The comparison is of every byte: ciphertext (start, middle) and tag.
        for v in vectors().into_iter().chain(gcm_vectors()) {
            let mut sealed = v.sealed.to_vec();
            for i in [0, sealed.len() / 2, sealed.len() - 1] {
                sealed[i] ^= 1;
                let bad = Vector {
                    sealed: Box::leak(sealed.clone().into_boxed_slice()),
                    ..v
                };
                assert!(!ring_agrees(&bad), "{:?} byte {i}", v.alg);
                sealed[i] ^= 1;
            }
        }
    }

    #[test]
    fn ring_opens_the_rfc8439_vector() {
        use ring::aead::{Aad, LessSafeKey, Nonce as RingNonce, UnboundKey, CHACHA20_POLY1305};
        let v = &vectors()[0];
        assert_eq!(v.alg, Alg::Chacha20Poly1305);
        let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, v.key).unwrap());
        let mut data = v.sealed.to_vec();
        let plain = key
            .open_in_place(
                RingNonce::assume_unique_for_key(v.nonce),
                Aad::from(v.aad),
                &mut data,
            )
            .unwrap();
        assert_eq!(plain, v.plaintext);
    }
}
