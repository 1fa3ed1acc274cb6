//! API keys for programs (issue 30, docs/access.md): issued by `gateway key new`
//! (`issue`), stored as SHA-256 digests only, presented by requests in one of three
//! places (`present`). So far: issuing, and finding and removing a presented key (not
//! wired into the proxy yet).

pub mod issue;
pub mod present;
