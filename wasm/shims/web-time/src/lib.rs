//! Minimal `web_time::SystemTime` backed by the host import
//! `env.mimic_now_ms() -> f64` (milliseconds since the Unix epoch), for the
//! mimic TLS engine. Only what rustls-pki-types uses is provided.

use core::time::Duration;

#[cfg(all(target_family = "wasm", target_os = "unknown"))]
#[link(wasm_import_module = "env")]
extern "C" {
    fn mimic_now_ms() -> f64;
}

#[cfg(not(all(target_family = "wasm", target_os = "unknown")))]
unsafe fn mimic_now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// A point in wall-clock time, as a duration since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SystemTime(Duration);

/// The error of [`SystemTime::duration_since`] when `earlier` is later.
#[derive(Clone, Debug)]
pub struct SystemTimeError(Duration);

impl SystemTimeError {
    /// How far apart the two times were.
    pub fn duration(&self) -> Duration {
        self.0
    }
}

impl core::fmt::Display for SystemTimeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("second time provided was later than self")
    }
}

impl std::error::Error for SystemTimeError {}

impl SystemTime {
    /// The Unix epoch.
    pub const UNIX_EPOCH: SystemTime = SystemTime(Duration::ZERO);

    /// The current time, from the host's `Date.now()`.
    pub fn now() -> SystemTime {
        // SAFETY: plain host call without pointers.
        let ms = unsafe { mimic_now_ms() };
        let ms = if ms.is_finite() && ms > 0.0 { ms } else { 0.0 };
        SystemTime(Duration::from_millis(ms as u64))
    }

    /// `self - earlier`, or an error when `earlier` is later than `self`.
    pub fn duration_since(&self, earlier: SystemTime) -> Result<Duration, SystemTimeError> {
        self.0.checked_sub(earlier.0).ok_or_else(|| SystemTimeError(earlier.0 - self.0))
    }
}

/// The Unix epoch.
pub const UNIX_EPOCH: SystemTime = SystemTime::UNIX_EPOCH;
