//! Apps the gateway starts on demand and stops when idle, sharing a GPU's memory
//! (issue 29, docs/on-demand.md).
//!
//! - `App` (`app`): what requests and the coordinator share about one app: its state,
//!   its requests in flight and held, its last use.
//! - `coordinator`: the one loop that decides every start and stop, on a thread of its
//!   own (it outlives reloads; it ends with the process).
//! - `room`: whether an app fits on its GPU, and which apps stop to make room;
//!   `gpu`: the memory the driver reports (NVML), when there is a driver.
//! - `tasks`, `process`, `ready`: starting, watching and stopping an app; its readiness.
//! - `state_file`: the processes handed over to the next gateway process.
//! - `page`: the waiting page a browser gets while its app starts.
//!
//! `Apps` is the registry the configuration's routes are resolved against.

mod app;
mod coordinator;
mod gpu;
pub mod page;
pub mod process;
mod ready;
mod room;
mod state_file;
mod tasks;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

pub use app::{App, Held, InFlight, Notice, State, Status, Tunnel};
pub use coordinator::Reason;
use coordinator::{Coordinator, Event};
use state_file::StateFile;

use crate::config;
use crate::metrics::Metrics;

/// Every managed app of this process, by name, across reloads.
pub struct Apps {
    /// Every app ever configured: one removed by a reload keeps its `App` (the
    /// coordinator may still be stopping it), and gets it back if a later reload
    /// names it again.
    by_name: Mutex<HashMap<String, Arc<App>>>,
    /// The names of the configuration in force.
    configured: Mutex<Vec<String>>,
    events: mpsc::UnboundedSender<Event>,
    /// What the apps send for their requests.
    notices: mpsc::UnboundedSender<Notice>,
    metrics: Option<Arc<Metrics>>,
}

impl std::fmt::Debug for Apps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Apps").finish_non_exhaustive()
    }
}

impl Apps {
    /// Starts the coordinator on a thread of its own; `state_dir` keeps the state file.
    pub fn start(
        state_dir: Option<PathBuf>,
        metrics: Option<Arc<Metrics>>,
    ) -> std::io::Result<Arc<Apps>> {
        let (events, inbox) = mpsc::unbounded_channel();
        let (notices, notices_in) = mpsc::unbounded_channel();
        let state_file = StateFile::new(state_dir);
        let coordinator = Coordinator::new(events.clone(), state_file, metrics.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("apps")
            .build()?;
        std::thread::Builder::new()
            .name("apps".to_string())
            .spawn(move || runtime.block_on(coordinator.run(inbox, notices_in)))?;
        Ok(Arc::new(Apps {
            by_name: Mutex::new(HashMap::new()),
            configured: Mutex::new(Vec::new()),
            events,
            notices,
            metrics,
        }))
    }

    /// The apps of a configuration: those already known keep their state (their settings
    /// replaced), new ones start stopped (or adopted, when they serve already), and
    /// those no longer configured are stopped. `upgrade_grace` is how long a previous
    /// gateway process may still serve an app found running.
    pub fn resolve(
        &self,
        settings: &config::Apps,
        upgrade_grace: Duration,
    ) -> HashMap<String, Arc<App>> {
        let mut by_name = self.by_name.lock();
        let mut resolved = HashMap::new();
        for spec in &settings.apps {
            let app = by_name
                .entry(spec.name.clone())
                .or_insert_with(|| {
                    let series = self.metrics.as_ref().map(|m| {
                        m.app(
                            &spec.name,
                            State::ALL.map(State::as_str),
                            Reason::ALL.map(Reason::as_str),
                        )
                    });
                    Arc::new(App::new(spec.clone(), self.notices.clone(), series))
                })
                .clone();
            app.spec.store(Arc::new(spec.clone()));
            resolved.insert(spec.name.clone(), app);
        }
        *self.configured.lock() = settings.apps.iter().map(|a| a.name.clone()).collect();
        if let Some(m) = &self.metrics {
            for (device, budget) in &settings.gpus {
                m.set_gpu_memory(*device, "budget", *budget);
            }
        }
        let _ = self.events.send(Event::Configure {
            apps: resolved.values().cloned().collect(),
            settings: Arc::new(settings.clone()),
            upgrade_grace,
        });
        resolved
    }

    /// Every app of the configuration in force, by name.
    pub fn list(&self) -> Vec<Arc<App>> {
        let configured = self.configured.lock().clone();
        let by_name = self.by_name.lock();
        let mut apps: Vec<_> = configured
            .iter()
            .filter_map(|name| by_name.get(name).cloned())
            .collect();
        apps.sort_by(|a, b| a.name.cmp(&b.name));
        apps
    }

    /// Every app's state for `GET /-/apps`: name, state, PID, seconds since ready and
    /// since last use, requests in flight and held, GPU device and declared memory, the
    /// last failed start's reason.
    pub fn report(&self) -> serde_json::Value {
        let now = std::time::Instant::now();
        let apps: Vec<serde_json::Value> = self
            .list()
            .iter()
            .map(|app| {
                let status = app.current();
                let spec = app.spec.load();
                let up = matches!(status.state, State::Ready | State::Draining);
                serde_json::json!({
                    "name": &*app.name,
                    "state": status.state.as_str(),
                    "pid": status.pid,
                    "uptime_seconds": status.ready_at.filter(|_| up).map(|t| now.duration_since(t).as_secs()),
                    "idle_seconds": up.then(|| app.idle_for().as_secs()),
                    "in_flight": app.in_flight(),
                    "waiting": app.waiting(),
                    "device": spec.gpu.map(|g| g.device),
                    "memory_bytes": spec.gpu.map(|g| g.memory),
                    "idle_stop_seconds": spec.idle_stop.map(|d| d.as_secs()),
                    "last_failure": status.failure.as_deref(),
                })
            })
            .collect();
        serde_json::json!({ "apps": apps })
    }

    /// An operator's start or stop (`POST /-/apps/NAME/start|stop`).
    pub async fn operate(&self, name: &str, start: bool) -> Result<String, String> {
        let (reply, answer) = oneshot::channel();
        let event = Event::Operator {
            name: name.to_string(),
            start,
            reply,
        };
        self.events
            .send(event)
            .map_err(|_| "the apps coordinator is gone".to_string())?;
        answer
            .await
            .map_err(|_| "the apps coordinator is gone".to_string())?
    }

    /// A binary upgrade begins: the next process takes the apps over (`state_file`), so
    /// this one decides nothing more about them.
    pub fn hand_over(&self) {
        let _ = self.events.send(Event::HandOver);
    }

    /// The gateway stops: its `run` apps are stopped (those with `stop_on_exit`), within
    /// the longest `stop_timeout` and a second for the SIGKILL after it. Blocks; called
    /// from the shutdown thread.
    pub fn stop_all(&self) {
        let longest = self.list().iter().map(|a| a.spec.load().stop_timeout).max();
        let limit = longest.unwrap_or_default() + Duration::from_secs(1);
        let (done, finished) = std::sync::mpsc::channel();
        if self.events.send(Event::Shutdown(done)).is_ok() {
            let _ = finished.recv_timeout(limit);
        }
    }
}
