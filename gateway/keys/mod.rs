//! API keys for programs (issue 30, docs/access.md): issued by `gateway key new`
//! (`issue`), stored as SHA-256 digests only. So far: issuing.

pub mod issue;
