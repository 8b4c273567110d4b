//! Crash points for restart tests, compiled in only with the `failpoints` feature (the README
//! test command enables it; release builds never have it).
//!
//! `TIDEMARK_FAILPOINT=NAME:N` aborts the process (no unwinding, no cleanup: like `kill -9`)
//! the `N`th time the point `NAME` is reached in this process (`N` defaults to 1). Points:
//! `after-file-write` (a primary-truth file written, before the commit that lists it),
//! `after-produce` (a record handed to the producer, before its acknowledgement),
//! `after-token` (one worker's commit token sent, the others' not yet),
//! `during-recovery` (a resumed run reading its warm-up state).

/// Aborts here if `TIDEMARK_FAILPOINT` names this point and its count is reached.
#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    use std::sync::Mutex;
    static COUNTS: Mutex<Vec<(String, u64)>> = Mutex::new(Vec::new());
    let Ok(spec) = std::env::var("TIDEMARK_FAILPOINT") else {
        return;
    };
    let (point, n) = match spec.split_once(':') {
        Some((p, n)) => (p.to_owned(), n.parse().unwrap_or(1)),
        None => (spec.clone(), 1),
    };
    if point != name {
        return;
    }
    let mut counts = COUNTS.lock().unwrap_or_else(|e| e.into_inner());
    let c = match counts.iter_mut().find(|(p, _)| *p == point) {
        Some((_, c)) => c,
        None => {
            counts.push((point, 0));
            &mut counts.last_mut().expect("just pushed").1
        }
    };
    *c += 1;
    if *c == n {
        eprintln!("failpoint {name}: aborting (hit {n})");
        std::process::abort();
    }
}

/// Without the `failpoints` feature a crash point is nothing.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}
