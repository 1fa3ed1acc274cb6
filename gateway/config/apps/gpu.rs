//! `gpu`, `gpus` and `groups`: an app's declared GPU memory, each device's budget, and
//! the groups that tie apps together; the checks between them.

use std::collections::BTreeMap;

use serde_yaml::Value;

use super::super::checker::Checker;
use super::super::units::{self, shown};
use super::{mapping, App, GpuNeed, Group};

pub(super) fn gpu_need(c: &mut Checker, path: &str, v: &Value) -> Option<GpuNeed> {
    let example = "{ device: 0, memory: 12GiB }";
    let (map, known) = c.keyed(path, v, &["device", "memory"], example)?;
    let device = c.value(&format!("{path}.device"), map.get("device"), device);
    let memory = c.value(&format!("{path}.memory"), map.get("memory"), memory);
    if map.get("memory").is_none() {
        c.error(path, format!("missing `memory`; expected {example}"));
    }
    known.then_some(())?;
    Some(GpuNeed {
        device: device.unwrap_or(0),
        memory: memory?,
    })
}

fn device(v: &Value) -> Result<u32, String> {
    v.as_u64()
        .filter(|n| *n < 1024)
        .map(|n| n as u32)
        .ok_or_else(|| format!("invalid device {}; expected its index, e.g. 0", shown(v)))
}

fn memory(v: &Value) -> Result<u64, String> {
    units::size(v)?
        .ok_or_else(|| format!("invalid memory {}; expected a size like 12GiB", shown(v)))
}

pub(super) fn group_names(v: &Value) -> Result<Vec<String>, String> {
    let one = |item: &Value| match item {
        Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        _ => Err(format!(
            "invalid group {}; expected a name from `groups`",
            shown(item)
        )),
    };
    match v {
        Value::Sequence(items) => items.iter().map(one).collect(),
        _ => one(v).map(|g| vec![g]),
    }
}

pub(super) fn groups(c: &mut Checker, v: &Value) -> Vec<Group> {
    let Some(map) = mapping(c, "groups", v, "{ studio: { exclusive: true } }") else {
        return Vec::new();
    };
    let mut groups = Vec::new();
    for (key, value) in map {
        let Some(name) = key.as_str().map(str::to_string) else {
            c.error("groups", format!("group name {} is not text", shown(key)));
            continue;
        };
        let path = format!("groups.{name}");
        let example = "{ exclusive: true, keep_loaded: false }";
        let Some((g, _)) = c.keyed(&path, value, &["exclusive", "keep_loaded"], example) else {
            continue;
        };
        let exclusive = c.value(
            &format!("{path}.exclusive"),
            g.get("exclusive"),
            units::flag,
        );
        let keep_loaded = c.value(
            &format!("{path}.keep_loaded"),
            g.get("keep_loaded"),
            units::flag,
        );
        groups.push(Group {
            name,
            exclusive: exclusive.unwrap_or(false),
            keep_loaded: keep_loaded.unwrap_or(false),
        });
    }
    groups
}

/// `gpus: { 0: { memory: 24GiB } }`.
pub(super) fn gpus(c: &mut Checker, v: &Value) -> BTreeMap<u32, u64> {
    let mut budgets = BTreeMap::new();
    let Some(map) = mapping(c, "gpus", v, "{ 0: { memory: 24GiB } }") else {
        return budgets;
    };
    for (key, value) in map {
        let Ok(index) = device(key) else {
            c.error(
                "gpus",
                format!("invalid device {}; expected its index, e.g. 0", shown(key)),
            );
            continue;
        };
        let path = format!("gpus.{index}");
        let Some((g, _)) = c.keyed(&path, value, &["memory"], "{ memory: 24GiB }") else {
            continue;
        };
        match g.get("memory") {
            Some(m) => {
                if let Some(bytes) = c.value(&format!("{path}.memory"), Some(m), memory) {
                    budgets.insert(index, bytes);
                }
            }
            None => c.error(&path, "missing `memory`; expected e.g. memory: 24GiB"),
        }
    }
    budgets
}

/// An app's declared memory within its device's budget.
pub(super) fn within_budget(c: &mut Checker, path: &str, need: GpuNeed, gpus: &BTreeMap<u32, u64>) {
    match gpus.get(&need.device) {
        None => c.error(
            &format!("{path}.device"),
            format!(
                "device {0} has no budget: add gpus: {{ {0}: {{ memory: 24GiB }} }}",
                need.device
            ),
        ),
        Some(&budget) if need.memory > budget => c.error(
            &format!("{path}.memory"),
            format!(
                "{} is more than device {}'s whole budget ({}): the app could never start",
                units::bytes_shown(need.memory),
                need.device,
                units::bytes_shown(budget)
            ),
        ),
        Some(_) => {}
    }
}

/// A warning when a device's `keep_loaded` apps cannot all run at once.
pub(super) fn keep_loaded_fit(
    c: &mut Checker,
    apps: &[App],
    groups: &[Group],
    gpus: &BTreeMap<u32, u64>,
) {
    let kept = |app: &&App| {
        app.groups
            .iter()
            .any(|name| groups.iter().any(|g| &g.name == name && g.keep_loaded))
    };
    for (device, budget) in gpus {
        let declared: u64 = apps
            .iter()
            .filter(kept)
            .filter_map(|a| a.gpu.filter(|g| g.device == *device))
            .map(|g| g.memory)
            .sum();
        if declared > *budget {
            c.warn(
                &format!("gpus.{device}"),
                "the keep_loaded apps on this device need more than its budget together: once some run, the others cannot start",
            );
        }
    }
}
