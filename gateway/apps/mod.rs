//! Apps the gateway starts on demand and stops when idle (issue 29). So far: the
//! supervision of one app's process (`process`).

pub mod process;
