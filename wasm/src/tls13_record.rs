//! The TLS 1.3 record protection of rustls' ring provider
//! (`crypto/ring/tls13.rs`) over any AEAD with a 12-byte nonce and a 16-byte
//! tag: the one copy shared by our SIMD ChaCha20-Poly1305 (chacha.rs) and
//! the host AEAD (host_aead.rs). Framing, nonces (IV xor sequence number)
//! and the additional data are rustls'; only the AEAD call differs.

use rustls::crypto::cipher::{
    make_tls13_aad, InboundOpaqueMessage, InboundPlainMessage, Iv, MessageDecrypter,
    MessageEncrypter, Nonce, OutboundOpaqueMessage, OutboundPlainMessage, PrefixedPayload,
};
use rustls::{ContentType, Error, ProtocolVersion};

pub const TAG_LEN: usize = 16;

/// An AEAD keyed for one direction of a connection.
pub trait RecordAead: Send + Sync {
    /// Encrypts `data` in place; returns the tag.
    fn seal(&self, nonce: &[u8; 12], aad: &[u8], data: &mut [u8]) -> Result<[u8; 16], ()>;
    /// Verifies `tag` and decrypts `data` in place.
    fn open(&self, nonce: &[u8; 12], aad: &[u8], data: &mut [u8], tag: &[u8; 16])
        -> Result<(), ()>;
}

/// TLS 1.3 records out, sealed with `A`.
pub struct Encrypter<A> {
    pub aead: A,
    pub iv: Iv,
}

/// TLS 1.3 records in, opened with `A`.
pub struct Decrypter<A> {
    pub aead: A,
    pub iv: Iv,
}

impl<A: RecordAead> MessageEncrypter for Encrypter<A> {
    fn encrypt(
        &mut self,
        msg: OutboundPlainMessage<'_>,
        seq: u64,
    ) -> Result<OutboundOpaqueMessage, Error> {
        let total_len = self.encrypted_payload_len(msg.payload.len());
        let mut payload = PrefixedPayload::with_capacity(total_len);
        let nonce = Nonce::new(&self.iv, seq).0;
        let aad = make_tls13_aad(total_len);
        payload.extend_from_chunks(&msg.payload);
        payload.extend_from_slice(&msg.typ.to_array());
        let tag = self.aead.seal(&nonce, &aad, payload.as_mut()).map_err(|_| Error::EncryptError)?;
        payload.extend_from_slice(&tag);
        Ok(OutboundOpaqueMessage::new(
            ContentType::ApplicationData,
            // TLS 1.3 records carry TLSv1_2 as the legacy version (RFC 8446 §5.1).
            ProtocolVersion::TLSv1_2,
            payload,
        ))
    }

    fn encrypted_payload_len(&self, payload_len: usize) -> usize {
        payload_len + 1 + TAG_LEN
    }
}

impl<A: RecordAead> MessageDecrypter for Decrypter<A> {
    fn decrypt<'a>(
        &mut self,
        mut msg: InboundOpaqueMessage<'a>,
        seq: u64,
    ) -> Result<InboundPlainMessage<'a>, Error> {
        let payload = &mut msg.payload;
        if payload.len() < TAG_LEN {
            return Err(Error::DecryptError);
        }
        let nonce = Nonce::new(&self.iv, seq).0;
        let aad = make_tls13_aad(payload.len());
        let plain_len = payload.len() - TAG_LEN;
        let (data, tag) = payload.split_at_mut(plain_len);
        let tag: &[u8; 16] = (&*tag).try_into().map_err(|_| Error::DecryptError)?;
        self.aead.open(&nonce, &aad, data, tag).map_err(|_| Error::DecryptError)?;
        payload.truncate(plain_len);
        msg.into_tls13_unpadded_message()
    }
}
