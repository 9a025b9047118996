//! X25519MLKEM768 (codepoint 0x11EC, draft-ietf-tls-ecdhe-mlkem): the
//! post-quantum hybrid key exchange of Chrome, Firefox, Go and Deno, for
//! rustls's ring provider, which has no ML-KEM.
//!
//! - ML-KEM-768 (FIPS 203) is RustCrypto's `ml-kem` crate; X25519 is ring's
//!   (rustls's `kx_group::X25519`).
//! - Client share: ML-KEM-768 encapsulation key (1184 bytes) || X25519 public
//!   key (32). Server share: ML-KEM-768 ciphertext (1088) || X25519 public
//!   key (32). Shared secret: ML-KEM shared secret (32) || X25519 secret (32).
//! - Randomness: ring's `SystemRandom` (the host's `crypto.getRandomValues`
//!   on wasm): the 64-byte decapsulation key seed and the 32-byte
//!   encapsulation message. The ML-KEM operations themselves are the crate's
//!   (`DecapsulationKey::from_seed`, `encapsulate_deterministic`, which is
//!   what `encapsulate_with_rng` runs on 32 random bytes); drawing the bytes
//!   from ring directly keeps an RNG failure a TLS error instead of a panic.
//! - TLS 1.3 only. `hybrid_component()` lets rustls's client send its X25519
//!   share too, from the same X25519 key, so a server without ML-KEM picks
//!   x25519 at once, without a HelloRetryRequest.

use ml_kem::ml_kem_768::{Ciphertext, DecapsulationKey, EncapsulationKey};
use ml_kem::{Decapsulate, Key, KeyExport, Seed, B32};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::crypto::{ActiveKeyExchange, CompletedKeyExchange, SharedSecret, SupportedKxGroup};
use rustls::ffdhe_groups::FfdheGroup;
use rustls::{Error, NamedGroup, PeerMisbehaved, ProtocolVersion};
use zeroize::Zeroizing;

/// ML-KEM-768 encapsulation key length.
const EK_LEN: usize = 1184;
/// ML-KEM-768 ciphertext length.
const CT_LEN: usize = 1088;
/// X25519 public key length.
const X25519_LEN: usize = 32;

/// The X25519MLKEM768 group.
pub static X25519MLKEM768: &dyn SupportedKxGroup = &X25519MlKem768;

#[derive(Debug)]
pub struct X25519MlKem768;

fn classical() -> &'static dyn SupportedKxGroup {
    rustls::crypto::ring::kx_group::X25519
}

fn invalid_share() -> Error {
    Error::PeerMisbehaved(PeerMisbehaved::InvalidKeyShare)
}

/// `N` random bytes, wiped on drop (they are seeds of secrets).
fn random<const N: usize>() -> Result<Zeroizing<[u8; N]>, Error> {
    let mut b = Zeroizing::new([0u8; N]);
    SystemRandom::new()
        .fill(&mut b[..])
        .map_err(|_| Error::FailedToGetRandomBytes)?;
    Ok(b)
}

impl SupportedKxGroup for X25519MlKem768 {
    /// Client: a fresh ML-KEM-768 key pair and X25519 key pair.
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
        let x25519 = classical().start()?;
        // The decapsulation key wipes itself on drop (ml-kem's "zeroize").
        let dk = DecapsulationKey::from_seed(Seed::from(*random::<64>()?));
        let ek = dk.encapsulation_key().to_bytes();
        let mut share = Vec::with_capacity(EK_LEN + X25519_LEN);
        share.extend_from_slice(&ek);
        share.extend_from_slice(x25519.pub_key());
        Ok(Box::new(Active { dk, x25519, share }))
    }

    /// Server: encapsulates to the client's key, and completes X25519.
    fn start_and_complete(&self, client_share: &[u8]) -> Result<CompletedKeyExchange, Error> {
        if client_share.len() != EK_LEN + X25519_LEN {
            return Err(invalid_share());
        }
        let (ek, x) = client_share.split_at(EK_LEN);
        let ek = Key::<EncapsulationKey>::try_from(ek).map_err(|_| invalid_share())?;
        let ek = EncapsulationKey::new(&ek).map_err(|_| invalid_share())?;
        let m = Zeroizing::new(B32::from(*random::<32>()?));
        let (ct, pq_secret) = ek.encapsulate_deterministic(&m);
        let pq_secret = Zeroizing::new(pq_secret);
        let cl = classical().start_and_complete(x)?;
        let mut share = Vec::with_capacity(CT_LEN + X25519_LEN);
        share.extend_from_slice(&ct);
        share.extend_from_slice(&cl.pub_key);
        let mut secret = Vec::with_capacity(64);
        secret.extend_from_slice(&pq_secret);
        secret.extend_from_slice(cl.secret.secret_bytes());
        Ok(CompletedKeyExchange {
            group: NamedGroup::X25519MLKEM768,
            pub_key: share,
            secret: SharedSecret::from(secret),
        })
    }

    fn ffdhe_group(&self) -> Option<FfdheGroup<'static>> {
        None
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519MLKEM768
    }

    fn usable_for_version(&self, version: ProtocolVersion) -> bool {
        version == ProtocolVersion::TLSv1_3
    }
}

/// The client's half-done exchange.
struct Active {
    dk: DecapsulationKey,
    x25519: Box<dyn ActiveKeyExchange>,
    share: Vec<u8>,
}

impl ActiveKeyExchange for Active {
    fn complete(self: Box<Self>, server_share: &[u8]) -> Result<SharedSecret, Error> {
        if server_share.len() != CT_LEN + X25519_LEN {
            return Err(invalid_share());
        }
        let (ct, x) = server_share.split_at(CT_LEN);
        let ct = Ciphertext::try_from(ct).map_err(|_| invalid_share())?;
        let pq_secret = Zeroizing::new(self.dk.decapsulate(&ct));
        let cl = self.x25519.complete(x)?;
        let mut secret = Vec::with_capacity(64);
        secret.extend_from_slice(&pq_secret);
        secret.extend_from_slice(cl.secret_bytes());
        Ok(SharedSecret::from(secret))
    }

    fn hybrid_component(&self) -> Option<(NamedGroup, &[u8])> {
        Some((self.x25519.group(), self.x25519.pub_key()))
    }

    fn complete_hybrid_component(
        self: Box<Self>,
        server_share: &[u8],
    ) -> Result<SharedSecret, Error> {
        self.x25519.complete(server_share)
    }

    fn pub_key(&self) -> &[u8] {
        &self.share
    }

    fn ffdhe_group(&self) -> Option<FfdheGroup<'static>> {
        None
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::X25519MLKEM768
    }
}

// ---------------------------------------------------------------------------
// Server preference for the hybrid
// ---------------------------------------------------------------------------
//
// rustls's server takes the first group *in the client's order* that it
// supports. Deno's client (and others) list X25519MLKEM768 last, with an
// x25519 key share only, so a rustls server would settle for x25519. Like
// Go's crypto/tls, our server prefers the hybrid whenever the client supports
// it, even at the cost of a HelloRetryRequest: a server config whose first
// group is X25519MLKEM768 has its cert resolver wrapped in `PreferHybrid`,
// which notes (per ClientHello, just before rustls picks the group) whether
// the client listed the hybrid, and its classical groups wrapped in
// `ServerClassical`, which then say they are unusable for TLS 1.3 for that
// ClientHello. Single-threaded engine: the note is a thread-local, written
// and read inside one `process_new_packets`.

use std::cell::Cell;
use std::sync::{Arc, OnceLock};

thread_local! {
    static CLIENT_OFFERS_HYBRID: Cell<bool> = const { Cell::new(false) };
    static CLIENT_OFFERS_PSK: Cell<bool> = const { Cell::new(false) };
}

/// Notes, before the engine processes a server connection's bytes, whether
/// its ClientHello offers a PSK (a resumption). Such a ClientHello is not
/// pushed to the hybrid: after a HelloRetryRequest whose suite cannot resume
/// the ticket's, rustls's client withdraws the PSK and rustls's server
/// refuses that (`MissingPskExtensionInSecondClientHello`), so a resuming
/// client (a ticket from another server of the same name, say) would fail.
pub fn set_client_offers_psk(offers: bool) {
    CLIENT_OFFERS_PSK.with(|c| c.set(offers));
}

/// Whether the first TLS record in `b` is a ClientHello with a
/// pre_shared_key extension; true when `b` cannot be read as a whole
/// ClientHello (the safe answer: no HelloRetryRequest is forced).
pub fn client_hello_offers_psk(b: &[u8]) -> bool {
    fn u16_at(b: &[u8], i: usize) -> Option<usize> {
        Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]) as usize)
    }
    fn parse(b: &[u8]) -> Option<bool> {
        if *b.first()? != 22 {
            return None;
        }
        let body = b.get(5..5 + u16_at(b, 3)?)?;
        if *body.first()? != 1 {
            return None;
        }
        let len = u32::from_be_bytes([0, *body.get(1)?, *body.get(2)?, *body.get(3)?]) as usize;
        let m = body.get(4..4 + len)?;
        let mut i = 2 + 32; // legacy_version, random
        i += 1 + *m.get(i)? as usize; // legacy_session_id
        i += 2 + u16_at(m, i)?; // cipher_suites
        i += 1 + *m.get(i)? as usize; // legacy_compression_methods
        let exts = m.get(i + 2..i + 2 + u16_at(m, i)?)?;
        let mut j = 0;
        while j + 4 <= exts.len() {
            if u16_at(exts, j)? == 41 {
                return Some(true);
            }
            j += 4 + u16_at(exts, j + 2)?;
        }
        Some(false)
    }
    parse(b).unwrap_or(true)
}

/// A server's cert resolver that notes whether the ClientHello lists the
/// hybrid, then resolves as the inner one.
#[derive(Debug)]
pub struct PreferHybrid(pub Arc<dyn rustls::server::ResolvesServerCert>);

impl rustls::server::ResolvesServerCert for PreferHybrid {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let offers = hello
            .named_groups()
            .is_some_and(|g| g.contains(&NamedGroup::X25519MLKEM768))
            && !CLIENT_OFFERS_PSK.with(|c| c.get());
        CLIENT_OFFERS_HYBRID.with(|c| c.set(offers));
        self.0.resolve(hello)
    }

    fn only_raw_public_keys(&self) -> bool {
        self.0.only_raw_public_keys()
    }
}

/// A classical group of a hybrid-preferring server config.
#[derive(Debug)]
struct ServerClassical(&'static dyn SupportedKxGroup);

impl SupportedKxGroup for ServerClassical {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
        self.0.start()
    }
    fn start_and_complete(&self, peer: &[u8]) -> Result<CompletedKeyExchange, Error> {
        self.0.start_and_complete(peer)
    }
    fn ffdhe_group(&self) -> Option<FfdheGroup<'static>> {
        self.0.ffdhe_group()
    }
    fn name(&self) -> NamedGroup {
        self.0.name()
    }
    fn fips(&self) -> bool {
        self.0.fips()
    }
    fn usable_for_version(&self, version: ProtocolVersion) -> bool {
        if version == ProtocolVersion::TLSv1_3 && CLIENT_OFFERS_HYBRID.with(|c| c.get()) {
            return false;
        }
        self.0.usable_for_version(version)
    }
}

/// The server-side wrapper of a classical group (one per group, for the
/// life of the engine).
pub fn server_classical(g: &'static dyn SupportedKxGroup) -> &'static dyn SupportedKxGroup {
    static WRAPPED: OnceLock<Vec<&'static ServerClassical>> = OnceLock::new();
    let all = WRAPPED.get_or_init(|| {
        rustls::crypto::ring::ALL_KX_GROUPS
            .iter()
            .map(|g| &*Box::leak(Box::new(ServerClassical(*g))))
            .collect()
    });
    match all.iter().find(|w| w.0.name() == g.name()) {
        Some(w) => *w,
        None => g,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let client = X25519MLKEM768.start().unwrap();
        assert_eq!(client.pub_key().len(), EK_LEN + X25519_LEN);
        let server = X25519MLKEM768.start_and_complete(client.pub_key()).unwrap();
        assert_eq!(server.pub_key.len(), CT_LEN + X25519_LEN);
        let hybrid = client.hybrid_component().unwrap();
        assert_eq!(hybrid.0, NamedGroup::X25519);
        assert_eq!(hybrid.1, &client.pub_key()[EK_LEN..]);
        let secret = client.complete(&server.pub_key).unwrap();
        assert_eq!(secret.secret_bytes().len(), 64);
        assert_eq!(secret.secret_bytes(), server.secret.secret_bytes());
    }

    #[test]
    fn classical_component_only() {
        let client = X25519MLKEM768.start().unwrap();
        let x = classical().start_and_complete(client.hybrid_component().unwrap().1).unwrap();
        let secret = client.complete_hybrid_component(&x.pub_key).unwrap();
        assert_eq!(secret.secret_bytes(), x.secret.secret_bytes());
    }

    #[test]
    fn bad_shares() {
        assert!(X25519MLKEM768.start_and_complete(&[0u8; 32]).is_err());
        let client = X25519MLKEM768.start().unwrap();
        assert!(client.complete(&[0u8; 1000]).is_err());
        // A tampered ciphertext decapsulates (implicit rejection) to another secret.
        let client = X25519MLKEM768.start().unwrap();
        let mut server = X25519MLKEM768.start_and_complete(client.pub_key()).unwrap();
        server.pub_key[7] ^= 1;
        let secret = client.complete(&server.pub_key).unwrap();
        assert_ne!(secret.secret_bytes(), server.secret.secret_bytes());
        assert!(!X25519MLKEM768.usable_for_version(ProtocolVersion::TLSv1_2));
    }
    /// A ClientHello record with these extensions (type, body).
    fn hello(exts: &[(u16, &[u8])]) -> Vec<u8> {
        let mut e = Vec::new();
        for (t, body) in exts {
            e.extend_from_slice(&t.to_be_bytes());
            e.extend_from_slice(&(body.len() as u16).to_be_bytes());
            e.extend_from_slice(body);
        }
        let mut m = vec![3, 3];
        m.extend_from_slice(&[7; 32]);
        m.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
        m.extend_from_slice(&(e.len() as u16).to_be_bytes());
        m.extend_from_slice(&e);
        let mut hs = vec![1, 0, (m.len() >> 8) as u8, m.len() as u8];
        hs.extend_from_slice(&m);
        let mut rec = vec![22, 3, 1, (hs.len() >> 8) as u8, hs.len() as u8];
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn a_client_hello_with_a_psk_is_told_from_one_without() {
        let without = hello(&[(10, &[0, 2, 0x11, 0xec]), (43, &[2, 3, 4])]);
        assert!(!client_hello_offers_psk(&without));
        let with = hello(&[(10, &[0, 2, 0x11, 0xec]), (41, &[0; 8])]);
        assert!(client_hello_offers_psk(&with));
        // What cannot be read whole is taken as offering one (no HRR forced).
        assert!(client_hello_offers_psk(&without[..without.len() - 1]));
        assert!(client_hello_offers_psk(b"GET / HTTP/1.1"));
        assert!(client_hello_offers_psk(&[]));
    }
}
