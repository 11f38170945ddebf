//! The `RateLimit-Policy` and `RateLimit` response headers, in the structured-field form
//! of draft-ietf-httpapi-ratelimit-headers.
//!
//! What must hold: a `RateLimit` item never claims more than its policy's quota
//! (`r <= q`) nor a reset beyond its policy's window (`t <= w`).

use super::{Decision, Tier};

/// `RateLimit-Policy` for a tier.
pub fn policy_header(tier: &Tier) -> String {
    let mut out = format!("\"requests\";q={};w={}", tier.requests, tier.window_seconds);
    if tier.bytes > 0 {
        out.push_str(&format!(
            ", \"bytes\";q={};qu=\"content-bytes\";w={}",
            tier.bytes, tier.window_seconds
        ));
    }
    if tier.credits > 0 {
        out.push_str(&format!(
            ", \"credits\";q={};w={}",
            tier.credits, tier.window_seconds
        ));
    }
    out
}

/// `RateLimit` for a decision.
pub fn state_header(tier: &Tier, decision: &Decision) -> String {
    let mut out = format!(
        "\"requests\";r={};t={}",
        decision.requests.0, decision.requests.1
    );
    if tier.bytes > 0 {
        out.push_str(&format!(
            ", \"bytes\";r={};t={}",
            decision.bytes_left, decision.window_reset
        ));
    }
    if tier.credits > 0 {
        out.push_str(&format!(
            ", \"credits\";r={};t={}",
            decision.credits_left, decision.window_reset
        ));
    }
    out
}
