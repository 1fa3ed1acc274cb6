//! The coordinator's side of `gpu`: NVML probed once an app declares GPU memory, the
//! devices measured (every `MEASURE_EVERY`, every tick while a start waits for memory
//! to be freed), the declared and measured figures exported, and the gate a start on a
//! device passes after a stop there (`gpu::settled`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::super::app::State;
use super::super::gpu::{self, Gpus, Measured};
use super::{Coordinator, Event};

/// How often the devices are measured while nothing waits on them.
const MEASURE_EVERY: Duration = Duration::from_secs(5);

impl Coordinator {
    /// Each tick: probe NVML once it is needed, measure when due, export the memory the
    /// running apps declare.
    pub(super) fn watch_gpus(&mut self) {
        if self.settings.gpus.is_empty() {
            return;
        }
        let Some(gpus) = self.gpus.clone() else {
            if !self.probing {
                self.probing = true;
                let events = self.events.clone();
                tokio::task::spawn_blocking(move || {
                    let _ = events.send(Event::GpusProbed(Arc::new(Gpus::probe())));
                });
            }
            return;
        };
        self.export_declared();
        if !gpus.present() {
            return;
        }
        let now = Instant::now();
        let settling = self
            .last_stop
            .values()
            .any(|at| now.duration_since(*at) < gpu::SETTLE);
        let due = self
            .measuring_since
            .is_none_or(|at| settling || now.duration_since(at) >= MEASURE_EVERY);
        if !due {
            return;
        }
        self.measuring_since = Some(now);
        let devices: Vec<u32> = self.settings.gpus.keys().copied().collect();
        let events = self.events.clone();
        tokio::task::spawn_blocking(move || {
            let _ = events.send(Event::Measured(gpus.measure(&devices)));
        });
    }

    pub(super) fn measured(&mut self, measured: HashMap<u32, Measured>) {
        if let Some(m) = &self.metrics {
            for (device, memory) in &measured {
                m.set_gpu_memory(*device, "measured", memory.used);
            }
        }
        self.measured.extend(measured);
    }

    /// `gateway_gpu_memory_bytes{kind="declared"}`: the memory the apps running on each
    /// device declare.
    fn export_declared(&self) {
        let Some(m) = &self.metrics else {
            return;
        };
        for device in self.settings.gpus.keys() {
            let declared: u64 = self
                .apps
                .values()
                .filter(|a| a.app.state() != State::Stopped)
                .filter_map(|a| a.spec.gpu.filter(|g| g.device == *device))
                .map(|g| g.memory)
                .sum();
            m.set_gpu_memory(*device, "declared", declared);
        }
    }

    /// An app with GPU memory on `device` stopped: the next start there waits for the
    /// driver to show the memory free.
    pub(super) fn gpu_released(&mut self, device: u32) {
        self.last_stop.insert(device, Instant::now());
    }

    /// Whether the app `name` may start on its device now (see `gpu::settled`).
    pub(super) fn gpu_settled(&self, name: &str) -> bool {
        let Some(need) = self.apps.get(name).and_then(|m| m.spec.gpu) else {
            return true;
        };
        let present = self.gpus.as_ref().is_some_and(|g| g.present());
        gpu::settled(
            present,
            self.last_stop.get(&need.device).copied(),
            self.measured.get(&need.device),
            need.memory,
            Instant::now(),
        )
    }
}
