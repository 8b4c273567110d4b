//! Benchmark helpers: process CPU time and rate formatting. The benchmarks themselves live in
//! `benches/benches/*.rs` and run with `cargo bench -p tidemark-benches`.

use std::time::Duration;

/// User + system CPU time consumed by this process so far.
pub fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we pass and has no other effects.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Peak resident set size of this process in MiB.
pub fn peak_rss_mib() -> f64 {
    // SAFETY: as above.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return 0.0;
    }
    usage.ru_maxrss as f64 / 1024.0
}

/// Measures `f`, returning (wall, cpu) durations and its result.
pub fn measure<R>(f: impl FnOnce() -> R) -> (Duration, Duration, R) {
    let (w0, c0) = (std::time::Instant::now(), cpu_time());
    let r = f();
    (w0.elapsed(), cpu_time().saturating_sub(c0), r)
}

/// A numeric setting from the environment (`TIDEMARK_BENCH_EVENTS=…`), or `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
