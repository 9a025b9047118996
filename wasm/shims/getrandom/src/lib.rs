//! Minimal getrandom 0.2 API backed by the host import
//! `env.mimic_random(ptr, len)`, which fills `len` bytes at `ptr` from
//! `crypto.getRandomValues`. Only what ring 0.17 uses is provided.

use core::fmt;
use core::num::NonZeroU32;

#[cfg(all(target_family = "wasm", target_os = "unknown"))]
#[link(wasm_import_module = "env")]
extern "C" {
    fn mimic_random(ptr: *mut u8, len: usize);
}

/// An error from [`getrandom`] (never produced by this implementation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Error(NonZeroU32);

impl Error {
    /// The platform-independent "unsupported" code.
    pub const UNSUPPORTED: Error = Error(match NonZeroU32::new(1 << 31) {
        Some(c) => c,
        None => unreachable!(),
    });

    /// The raw error code.
    pub fn code(self) -> NonZeroU32 {
        self.0
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error({})", self.0)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "getrandom error {}", self.0)
    }
}

impl std::error::Error for Error {}

/// Fills `dest` with cryptographically secure random bytes from the host.
#[cfg(all(target_family = "wasm", target_os = "unknown"))]
pub fn getrandom(dest: &mut [u8]) -> Result<(), Error> {
    if !dest.is_empty() {
        // SAFETY: the host writes exactly `dest.len()` bytes at `dest`.
        unsafe { mimic_random(dest.as_mut_ptr(), dest.len()) };
    }
    Ok(())
}

/// Off wasm32-unknown-unknown (host `cargo test` of the engine): the OS's
/// `/dev/urandom`.
#[cfg(not(all(target_family = "wasm", target_os = "unknown")))]
pub fn getrandom(dest: &mut [u8]) -> Result<(), Error> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(dest))
        .map_err(|_| Error::UNSUPPORTED)
}
