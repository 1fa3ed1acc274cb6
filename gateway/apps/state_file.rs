//! `<state_dir>/apps.json`: the processes of the `run` apps, by PID and start time, so
//! that the gateway process that takes over (binary upgrade, restart) adopts them
//! instead of starting them twice. Written whenever one starts or stops.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::process::Identity;

#[derive(Debug, Clone)]
pub struct StateFile {
    path: Option<PathBuf>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    pid: u32,
    start_ticks: u64,
}

impl StateFile {
    /// The file in `dir`; `None`: nothing kept (tests of the coordinator alone).
    pub fn new(dir: Option<PathBuf>) -> StateFile {
        StateFile {
            path: dir.map(|d| d.join("apps.json")),
        }
    }

    /// What the previous process wrote; empty when nothing (or nothing readable) is there.
    pub fn read(&self) -> HashMap<String, Identity> {
        let Some(text) = self.path.as_ref().and_then(|p| std::fs::read(p).ok()) else {
            return HashMap::new();
        };
        let entries: HashMap<String, Entry> = serde_json::from_slice(&text).unwrap_or_default();
        entries
            .into_iter()
            .map(|(name, e)| {
                let identity = Identity {
                    pid: e.pid,
                    start_ticks: e.start_ticks,
                };
                (name, identity)
            })
            .collect()
    }

    /// Replaces the file (written aside, then renamed: a reader never sees half of it).
    pub fn write(&self, running: &HashMap<String, Identity>) {
        let Some(path) = &self.path else {
            return;
        };
        let entries: HashMap<&String, Entry> = running
            .iter()
            .map(|(name, id)| {
                let entry = Entry {
                    pid: id.pid,
                    start_ticks: id.start_ticks,
                };
                (name, entry)
            })
            .collect();
        let Ok(text) = serde_json::to_vec(&entries) else {
            return;
        };
        let aside = path.with_extension("json.new");
        let written = std::fs::write(&aside, text).and_then(|()| std::fs::rename(&aside, path));
        if let Err(e) = written {
            log::warn!(
                "event=apps_state_unwritable path={} error=\"{e}\" note=\"a binary upgrade will not adopt the running apps\"",
                path.display()
            );
        }
    }
}
