//! The wall clock, in the few places tidemark reads it: pacing a live world, measuring decision
//! latency, and run records under `runs/`. Nothing read here reaches a primary truth.

/// Wall clock in epoch ms (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Wall clock as RFC 3339 with milliseconds (run records).
pub fn now_rfc3339() -> String {
    tidemark_operators::time::fmt_rfc3339_millis(now_ms())
}
