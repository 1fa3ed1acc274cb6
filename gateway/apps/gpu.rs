//! GPU memory as the driver reports it, through NVML (`libnvidia-ml.so.1`, loaded at run
//! time by `nvml-wrapper`: a machine without an NVIDIA driver runs the gateway all the
//! same, on declared budgets alone).
//!
//! Drivers free a stopped process's memory a moment after it exits (longer with MPS or
//! a lingering context). So after an app on device g stops, the next start on g waits
//! until g reports the memory it needs free, for at most `SETTLE`; the measurement is
//! also exported (`gateway_gpu_memory_bytes{kind="measured"}`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nvml_wrapper::Nvml;

/// Longest a start waits for the driver to report a stopped app's memory free.
pub const SETTLE: Duration = Duration::from_secs(30);

/// One device's memory, as measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measured {
    pub free: u64,
    pub used: u64,
    pub total: u64,
    pub at: Instant,
}

/// The driver's view, when there is a driver.
pub struct Gpus {
    nvml: Option<Nvml>,
}

impl Gpus {
    /// Loads NVML; without it (no driver, no GPU) every measurement is empty. Blocking:
    /// called off the coordinator's loop.
    pub fn probe() -> Gpus {
        match Nvml::init() {
            Ok(nvml) => {
                let count = nvml.device_count().unwrap_or(0);
                log::info!("event=nvml_loaded devices={count}");
                Gpus { nvml: Some(nvml) }
            }
            Err(e) => {
                log::info!(
                    "event=nvml_unavailable error=\"{e}\" note=\"GPU room is decided by the declared budgets alone\""
                );
                Gpus { nvml: None }
            }
        }
    }

    pub fn present(&self) -> bool {
        self.nvml.is_some()
    }

    /// The memory of each of `devices` the driver knows. Blocking (FFI).
    pub fn measure(&self, devices: &[u32]) -> HashMap<u32, Measured> {
        let Some(nvml) = &self.nvml else {
            return HashMap::new();
        };
        devices
            .iter()
            .filter_map(|&index| {
                let info = nvml.device_by_index(index).ok()?.memory_info().ok()?;
                let measured = Measured {
                    free: info.free,
                    used: info.used,
                    total: info.total,
                    at: Instant::now(),
                };
                Some((index, measured))
            })
            .collect()
    }
}

/// Whether a start on a device may go ahead: without NVML, or with no stop on it in the
/// last `SETTLE`, at once; else when a measurement taken after that stop shows `need`
/// bytes free, or once `SETTLE` has passed.
pub fn settled(
    present: bool,
    last_stop: Option<Instant>,
    measured: Option<&Measured>,
    need: u64,
    now: Instant,
) -> bool {
    let Some(stopped) = last_stop.filter(|_| present) else {
        return true;
    };
    if now.duration_since(stopped) >= SETTLE {
        return true;
    }
    measured.is_some_and(|m| m.at > stopped && m.free >= need)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_waits_for_a_fresh_measurement_showing_room_at_most_settle() {
        let now = Instant::now();
        let stopped = now - Duration::from_secs(1);
        let m = |free, ago: u64| Measured {
            free,
            used: 0,
            total: 24,
            at: now - Duration::from_millis(ago),
        };
        // No driver, or no recent stop: go.
        assert!(settled(false, Some(stopped), None, 10, now));
        assert!(settled(true, None, None, 10, now));
        // A measurement from before the stop says nothing.
        assert!(!settled(true, Some(stopped), Some(&m(20, 2000)), 10, now));
        // After it: enough free, or not yet.
        assert!(settled(true, Some(stopped), Some(&m(12, 100)), 10, now));
        assert!(!settled(true, Some(stopped), Some(&m(8, 100)), 10, now));
        // Never longer than SETTLE.
        let long_ago = now - SETTLE;
        assert!(settled(true, Some(long_ago), Some(&m(0, 100)), 10, now));
    }
}
