//! The continuous service's costs, measured in one process on a generated file log:
//! - throughput with commits on (`commit_interval` 1m) vs effectively off (only the genesis
//!   commit), alternated twice, in records per CPU-second;
//! - restart cost against window length: a run is stopped (the graceful-stop flag, set once
//!   80% of the commits a full run writes exist), then a second `run`
//!   resumes from its commit and finishes the log; reported for every window/TTL/dedup window
//!   at 10m and at the shipped 24h, next to a full run from scratch.
//!
//! `TIDEMARK_BENCH_EVENTS` sets the world size (default 200k records at 100/s: 33 minutes of
//! event time, 1-minute files and commits).

use std::sync::atomic::Ordering;
use std::time::Duration;

use tidemark_benches::{env_or, measure};
use tidemark_jobs::config::{load, Profile};
use tidemark_jobs::run::{run_with, Ingress, RunOptions};
use tidemark_jobs::world::{generate, FileLogSink, WorldConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PROFILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/profiles/service.toml"
);

fn short_windows(p: &Profile) -> Profile {
    let mut p = p.clone();
    let ten = Duration::from_secs(600);
    for f in &mut p.features {
        f.window = ten;
    }
    p.graph.edge_ttl = ten;
    p.ig.dedup_window = ten;
    p
}

fn main() -> anyhow::Result<()> {
    let events: u64 = env_or("TIDEMARK_BENCH_EVENTS", 200_000);
    let cfg = WorldConfig {
        events,
        ..Default::default()
    };
    let tmp = tempfile::tempdir()?;
    let log = tmp.path().join("in");
    let mut sink = FileLogSink::create(&log, cfg.partitions)?;
    generate(&cfg, &mut sink, &mut |_, _| {})?;
    let ingress = Ingress::File(log);
    let base = load(PROFILE)?;
    let opts = RunOptions::threads(2);

    // Commits on vs off.
    let rate = |label: &str, p: &Profile, i: usize| -> anyhow::Result<f64> {
        let data = tmp.path().join(format!("{label}-{i}"));
        let (wall, cpu, out) = measure(|| run_with(p, &ingress, &data, &opts));
        out?;
        let commits = std::fs::read_dir(data.join("ckpt/commits"))?.count();
        let r = events as f64 / cpu.as_secs_f64();
        println!(
            "commits {label:<3} -w2: {events} records, {r:.0} records/CPU-s, {:.2}s wall, {commits} commit files",
            wall.as_secs_f64()
        );
        Ok(r)
    };
    let mut off = base.clone();
    off.wiring.commit_interval = Duration::from_secs(3600 * 24 * 365);
    let mut ratios = Vec::new();
    for i in 0..2 {
        let on = rate("on", &base, i)?;
        let of = rate("off", &off, i)?;
        ratios.push(on / of);
    }
    println!(
        "commits on / off (records per CPU-s): {:.3}, {:.3}",
        ratios[0], ratios[1]
    );

    // Restart cost against window length.
    for (label, p) in [
        ("10m windows", short_windows(&base)),
        ("24h windows", base.clone()),
    ] {
        let full = tmp.path().join(format!("full-{label}"));
        let (full_wall, full_cpu, out) = measure(|| run_with(&p, &ingress, &full, &opts));
        out?;
        let stop_at = (std::fs::read_dir(full.join("ckpt/commits"))?.count() * 8 / 10).max(2);
        let data = tmp.path().join(format!("restart-{label}"));
        let stop = opts.stop.clone();
        stop.store(false, Ordering::Relaxed);
        let watch = {
            let (stop, dir) = (stop.clone(), data.join("ckpt/commits"));
            std::thread::spawn(move || {
                let t0 = std::time::Instant::now();
                while std::fs::read_dir(&dir).map_or(0, |d| d.count()) < stop_at {
                    if t0.elapsed() > Duration::from_secs(600) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                stop.store(true, Ordering::Relaxed);
            })
        };
        let first = run_with(&p, &ingress, &data, &opts)?;
        stop.store(true, Ordering::Relaxed);
        let _ = watch.join();
        if first.as_ref().is_some_and(|o| o.manifest.is_some()) {
            anyhow::bail!("the first run finished before the stop: lower the stop point");
        }
        stop.store(false, Ordering::Relaxed);
        let stopped_at = first.as_ref().and_then(|o| o.last_commit);
        let (wall, cpu, out) = measure(|| run_with(&p, &ingress, &data, &opts));
        let out = out?.ok_or_else(|| anyhow::anyhow!("no outcome"))?;
        println!(
            "restart, {label}: stopped at commit {stopped_at:?}; resume + finish {:.2}s wall, {:.2} CPU-s (resumed from {:?}); full run {:.2}s wall, {:.2} CPU-s",
            wall.as_secs_f64(),
            cpu.as_secs_f64(),
            out.resumed_from,
            full_wall.as_secs_f64(),
            full_cpu.as_secs_f64()
        );
    }
    Ok(())
}
