//! The `RateLimit-Policy` and `RateLimit` response headers, in the structured-field form
//! of draft-ietf-httpapi-ratelimit-headers.
//!
//! The request rate is a GCRA with a burst: what a client can spend at once is the
//! burst, and an empty burst is full again after `burst` emission periods. So the
//! `requests` policy advertises exactly that (`q` = burst, `w` = the time to refill it),
//! and `RateLimit` reports the burst left (`r`) and the seconds until it is full (`t`).
//! Bytes and credits are fixed windows: `q` per `w`, `r` left, `t` until the window ends.
//!
//! What must hold: a `RateLimit` item never claims more than its policy's quota
//! (`r <= q`) nor a reset beyond its policy's window (`t <= w`), and after n requests
//! from a full burst `q - r = n` (the units spent are the units advertised).

use super::{Decision, Tier};

/// The `requests` policy of a tier: its burst, over the seconds an empty burst takes to
/// fill (`burst * window / requests`, rounded up).
pub fn request_policy(tier: &Tier) -> (u32, u64) {
    let w =
        (u64::from(tier.burst) * u64::from(tier.window_seconds)).div_ceil(u64::from(tier.requests));
    (tier.burst, w.max(1))
}

/// `RateLimit-Policy` for a tier.
pub fn policy_header(tier: &Tier) -> String {
    let (q, w) = request_policy(tier);
    let mut out = format!("\"requests\";q={q};w={w}");
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
    let (q, w) = request_policy(tier);
    let mut out = format!(
        "\"requests\";r={};t={}",
        decision.requests.0.min(u64::from(q)),
        decision.requests.1.min(w)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tier(requests: u32, burst: u32, window_seconds: u32) -> Tier {
        Tier {
            requests,
            burst,
            window_seconds,
            bytes: 0,
            credits: 0,
        }
    }

    #[test]
    fn the_request_policy_is_the_burst_and_its_refill() {
        // 3600 an hour with a burst of 100: 100 at once, full again after 100 s.
        assert_eq!(
            policy_header(&tier(3600, 100, 3600)),
            "\"requests\";q=100;w=100"
        );
        assert_eq!(policy_header(&tier(6, 6, 60)), "\"requests\";q=6;w=60");
        assert_eq!(request_policy(&tier(7, 1, 60)), (1, 9));
        assert_eq!(request_policy(&tier(1000, 1, 1)), (1, 1));
    }
}
