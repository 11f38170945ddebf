//! The limiter's Lua scripts (`*.lua` beside this file), loaded at compile time.
//!
//! What must hold: each script is one atomic step on Redis's own clock over the keys of
//! one client (both keys share a Cluster hash tag), and writes nothing without a TTL.
//! The callers in `mod.rs`, `leases.rs` and `streams.rs` pass the arguments each
//! script's header lists, in that order. Decisions (`decide_many.lua`) are sent by
//! `batch`, which owns that script.

use redis::Script;

/// The scripts, prepared once (EVALSHA, with a fallback to EVAL on NOSCRIPT).
pub(super) struct Scripts {
    /// Records what a hot client's lease admitted.
    pub consume: Script,
    /// Adds response bytes to the byte quota and returns the window's total.
    pub record_bytes: Script,
    /// Registers or keeps alive an open stream, within the client's cap.
    pub open_stream: Script,
    /// Unregisters an open stream.
    pub close_stream: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Self {
            consume: Script::new(include_str!("consume.lua")),
            record_bytes: Script::new(include_str!("record_bytes.lua")),
            open_stream: Script::new(include_str!("open_stream.lua")),
            close_stream: Script::new(include_str!("close_stream.lua")),
        }
    }
}
