//! The shape of routes.yaml as written. Every scalar stays a `serde_yaml::Value` so that a
//! wrong value becomes a diagnostic with its position (collected with all the others)
//! instead of stopping the parse. Unknown keys are refused here, by serde.

use serde::Deserialize;
use serde_yaml::{Mapping, Value};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: Option<RawListen>,
    pub tls: Option<RawTls>,
    pub defaults: Option<RawDefaults>,
    pub routes: Option<Vec<RawRoute>>,
    pub shutdown_timeout: Option<Value>,
    pub threads: Option<Value>,
    pub acme_webroot: Option<Value>,
    pub trusted_proxies: Option<Value>,
    pub access_log: Option<Value>,
    pub upgrade_grace: Option<Value>,
    pub upgrade_sock: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    pub http: Option<Value>,
    pub https: Option<Value>,
    pub metrics: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: Option<Value>,
    pub key: Option<Value>,
    pub min_version: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    pub max_body: Option<Value>,
    pub connect_timeout: Option<Value>,
    pub read_timeout: Option<Value>,
    pub write_timeout: Option<Value>,
    pub headers: Option<Mapping>,
    pub rate_limit: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub host: Option<Value>,
    pub name: Option<Value>,
    pub upstream: Option<Value>,
    pub max_body: Option<Value>,
    pub connect_timeout: Option<Value>,
    pub read_timeout: Option<Value>,
    pub write_timeout: Option<Value>,
    pub headers: Option<Mapping>,
    pub tls: Option<RawCert>,
    pub rate_limit: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCert {
    pub cert: Option<Value>,
    pub key: Option<Value>,
}
