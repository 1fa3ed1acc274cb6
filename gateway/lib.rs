//! gateway: one HTTPS front door for many local AI web apps, on Pingora.
//!
//! Dependencies point one way:
//! `config` ← `router`, `tls` ← `state` ← `proxy`, `redirect` ← `server` ← `main`.

pub mod config;
pub mod lifecycle;
pub mod limits;
pub mod proxy;
pub mod redirect;
pub mod router;
pub mod server;
pub mod state;
pub mod tls;
