//! Encrypted Client Hello on the client (option tag 14: an ECHConfigList the
//! user supplies), for rustls's ring provider, which has no HPKE.
//!
//! rustls does ECH itself; it needs an HPKE (RFC 9180) to seal the inner
//! ClientHello. This is HPKE's base mode, sender side only, composed from
//! ring's primitives (X25519, HKDF-SHA256, AES-GCM, ChaCha20-Poly1305):
//! DHKEM(X25519, HKDF-SHA256) with HKDF-SHA256 and AES-128-GCM, AES-256-GCM
//! or ChaCha20-Poly1305, per RFC 9180 sections 4.1 (DHKEM), 5.1 (key
//! schedule) and 5.2 (Seal). A client never opens, so `open` and
//! `setup_opener` are errors. Checked against Go's ECH server, which
//! accepts what this seals (tests/tls_production_test.ts).

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use ring::hkdf::{KeyType, Prk, Salt, HKDF_SHA256};
use ring::rand::SystemRandom;
use rustls::crypto::hpke::{
    EncapsulatedSecret, Hpke, HpkeOpener, HpkePrivateKey, HpkePublicKey, HpkeSealer, HpkeSuite,
};
use rustls::internal::msgs::enums::{HpkeAead, HpkeKdf, HpkeKem};
use rustls::internal::msgs::handshake::HpkeSymmetricCipherSuite;
use rustls::Error;
use zeroize::{Zeroize, Zeroizing};

/// The HPKE suites offered to rustls for ECH.
pub static SUITES: [&dyn Hpke; 3] = [
    &RingHpke { aead: HpkeAead::AES_128_GCM },
    &RingHpke { aead: HpkeAead::CHACHA20_POLY_1305 },
    &RingHpke { aead: HpkeAead::AES_256_GCM },
];

const KEM_ID: u16 = 0x0020; // DHKEM(X25519, HKDF-SHA256)
const KDF_ID: u16 = 0x0001; // HKDF-SHA256

#[derive(Debug)]
pub struct RingHpke {
    aead: HpkeAead,
}

fn err(what: &str) -> Error {
    Error::General(format!("HPKE: {what}"))
}

struct Len(usize);

impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// `LabeledExtract(salt, label, ikm)` of RFC 9180 section 4.
fn labeled_extract(suite_id: &[u8], salt: &[u8], label: &[u8], ikm: &[u8]) -> Prk {
    // Holds the (secret) input keying material: wiped on drop.
    let mut labeled = Zeroizing::new(Vec::with_capacity(7 + suite_id.len() + label.len() + ikm.len()));
    labeled.extend_from_slice(b"HPKE-v1");
    labeled.extend_from_slice(suite_id);
    labeled.extend_from_slice(label);
    labeled.extend_from_slice(ikm);
    Salt::new(HKDF_SHA256, salt).extract(&labeled)
}

/// `LabeledExpand(prk, label, info, L)` of RFC 9180 section 4.
fn labeled_expand(
    prk: &Prk,
    suite_id: &[u8],
    label: &[u8],
    info: &[u8],
    out: &mut [u8],
) -> Result<(), Error> {
    let len = (out.len() as u16).to_be_bytes();
    let parts: [&[u8]; 5] = [&len, b"HPKE-v1", suite_id, label, info];
    prk.expand(&parts, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .map_err(|_| err("expand"))
}

impl RingHpke {
    fn algorithm(&self) -> &'static aead::Algorithm {
        match self.aead {
            HpkeAead::AES_256_GCM => &aead::AES_256_GCM,
            HpkeAead::CHACHA20_POLY_1305 => &aead::CHACHA20_POLY1305,
            _ => &aead::AES_128_GCM,
        }
    }

    fn aead_id(&self) -> u16 {
        u16::from(self.aead)
    }

    /// Encap (RFC 9180 section 4.1) to `pk_r`: (enc, shared_secret).
    fn encap(&self, pk_r: &[u8]) -> Result<(Vec<u8>, Zeroizing<[u8; 32]>), Error> {
        if pk_r.len() != 32 {
            return Err(err("an X25519 public key is 32 bytes"));
        }
        let rng = SystemRandom::new();
        let sk_e = EphemeralPrivateKey::generate(&X25519, &rng).map_err(|_| err("random"))?;
        let pk_e = sk_e.compute_public_key().map_err(|_| err("public key"))?;
        let enc = pk_e.as_ref().to_vec();
        let mut kem_suite = b"KEM".to_vec();
        kem_suite.extend_from_slice(&KEM_ID.to_be_bytes());
        let mut kem_context = enc.clone();
        kem_context.extend_from_slice(pk_r);
        let mut shared = Zeroizing::new([0u8; 32]);
        agreement::agree_ephemeral(sk_e, &UnparsedPublicKey::new(&X25519, pk_r), |dh| {
            let eae_prk = labeled_extract(&kem_suite, b"", b"eae_prk", dh);
            labeled_expand(&eae_prk, &kem_suite, b"shared_secret", &kem_context, &mut shared[..])
        })
        .map_err(|_| err("X25519 agreement"))??;
        Ok((enc, shared))
    }

    /// KeySchedule (RFC 9180 section 5.1), base mode: (key, base_nonce).
    fn key_schedule(&self, shared: &[u8], info: &[u8]) -> Result<(LessSafeKey, [u8; 12]), Error> {
        let mut suite_id = b"HPKE".to_vec();
        suite_id.extend_from_slice(&KEM_ID.to_be_bytes());
        suite_id.extend_from_slice(&KDF_ID.to_be_bytes());
        suite_id.extend_from_slice(&self.aead_id().to_be_bytes());
        // These two are needed as bytes (ring's Prk hides its own).
        let psk_id_hash = extract_bytes(&suite_id, b"psk_id_hash", b"");
        let info_hash = extract_bytes(&suite_id, b"info_hash", info);
        let mut context = vec![0u8]; // mode_base
        context.extend_from_slice(&psk_id_hash);
        context.extend_from_slice(&info_hash);
        let secret = labeled_extract(&suite_id, shared, b"secret", b"");
        let alg = self.algorithm();
        let mut key = Zeroizing::new(vec![0u8; alg.key_len()]);
        labeled_expand(&secret, &suite_id, b"key", &context, &mut key)?;
        let mut nonce = [0u8; 12];
        labeled_expand(&secret, &suite_id, b"base_nonce", &context, &mut nonce)?;
        let key = LessSafeKey::new(UnboundKey::new(alg, &key).map_err(|_| err("key"))?);
        Ok((key, nonce))
    }
}

/// `LabeledExtract("", label, ikm)` as bytes: HMAC-SHA256 with an empty key
/// (HKDF-Extract with an empty salt) over the labelled input.
fn extract_bytes(suite_id: &[u8], label: &[u8], ikm: &[u8]) -> [u8; 32] {
    let mut labeled = Vec::with_capacity(7 + suite_id.len() + label.len() + ikm.len());
    labeled.extend_from_slice(b"HPKE-v1");
    labeled.extend_from_slice(suite_id);
    labeled.extend_from_slice(label);
    labeled.extend_from_slice(ikm);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[]);
    let tag = ring::hmac::sign(&key, &labeled);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// The sender's context: key, base nonce, sequence number.
struct Sealer {
    key: LessSafeKey,
    base_nonce: [u8; 12],
    seq: u64,
}

impl Drop for Sealer {
    fn drop(&mut self) {
        // The AEAD key is ring's; the base nonce is ours.
        self.base_nonce.zeroize();
    }
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer")
    }
}

impl HpkeSealer for Sealer {
    fn seal(&mut self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        let mut nonce = self.base_nonce;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        self.seq = self.seq.checked_add(1).ok_or_else(|| err("sequence overflow"))?;
        let mut out = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut out)
            .map_err(|_| err("seal"))?;
        Ok(out)
    }
}

impl Hpke for RingHpke {
    fn seal(
        &self,
        info: &[u8],
        aad: &[u8],
        plaintext: &[u8],
        pub_key: &HpkePublicKey,
    ) -> Result<(EncapsulatedSecret, Vec<u8>), Error> {
        let (enc, mut sealer) = self.setup_sealer(info, pub_key)?;
        Ok((enc, sealer.seal(aad, plaintext)?))
    }

    fn setup_sealer(
        &self,
        info: &[u8],
        pub_key: &HpkePublicKey,
    ) -> Result<(EncapsulatedSecret, Box<dyn HpkeSealer + 'static>), Error> {
        let (enc, shared) = self.encap(&pub_key.0)?;
        let (key, base_nonce) = self.key_schedule(&shared[..], info)?;
        Ok((EncapsulatedSecret(enc), Box::new(Sealer { key, base_nonce, seq: 0 })))
    }

    fn open(
        &self,
        _enc: &EncapsulatedSecret,
        _info: &[u8],
        _aad: &[u8],
        _ciphertext: &[u8],
        _secret_key: &HpkePrivateKey,
    ) -> Result<Vec<u8>, Error> {
        Err(err("this engine only seals (ECH client)"))
    }

    fn setup_opener(
        &self,
        _enc: &EncapsulatedSecret,
        _info: &[u8],
        _secret_key: &HpkePrivateKey,
    ) -> Result<Box<dyn HpkeOpener + 'static>, Error> {
        Err(err("this engine only seals (ECH client)"))
    }

    fn generate_key_pair(&self) -> Result<(HpkePublicKey, HpkePrivateKey), Error> {
        Err(err("this engine makes no HPKE key pairs"))
    }

    fn suite(&self) -> HpkeSuite {
        HpkeSuite {
            kem: HpkeKem::DHKEM_X25519_HKDF_SHA256,
            sym: HpkeSymmetricCipherSuite { kdf_id: HpkeKdf::HKDF_SHA256, aead_id: self.aead },
        }
    }
}
