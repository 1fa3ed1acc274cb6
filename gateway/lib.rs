//! gateway: one HTTPS front door for many local AI web apps, on Pingora.
//!
//! Dependencies point one way:
//! `config` ← `router`, `tls`, `limits_store` ← `limits`, `auth` ← `state` ← `proxy`,
//! `redirect` ← `server` ← `main`.

pub mod access_log;
pub mod acme;
pub mod admin;
pub mod admission;
pub mod apps;
pub mod auth;
pub mod background;
pub mod client;
pub mod compress;
pub mod config;
pub mod conn;
pub mod deadline;
pub mod exit;
pub mod exposure;
pub mod keys;
pub mod lifecycle;
pub mod limits;
pub mod limits_store;
pub mod listener;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod pool;
pub mod prefix;
pub mod proxy;
pub mod redirect;
pub mod reload;
pub mod router;
pub mod server;
pub mod state;
pub mod tls;
