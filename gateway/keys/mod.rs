//! API keys for programs (issue 30, docs/access.md): issued by `gateway key new`
//! (`issue`), stored as SHA-256 digests only, presented by requests in one of three
//! places (`present`), verified against the configuration's table (`table`), which also
//! holds each key's rate limiter and its count of requests in progress.

pub mod issue;
pub mod present;
mod seen;
mod table;

pub use table::{Key, Keys, Refusal, RouteKeys, Slot};
