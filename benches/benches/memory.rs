//! Memory bounded by windows: peak RSS of the online run (IG + all stages, file log, -w1) with
//! every window, TTL, dedup window, snapshot and file interval set to 10 minutes, over the same
//! world at 250k and at 1M records (4× the stream at the same rate). Each size runs in its own
//! child process (this benchmark re-executed), so each peak is that run's alone; the target is
//! a ratio ≤ 1.3. `TIDEMARK_BENCH_EVENTS` sets the large size (the small one is a quarter).

use std::process::Command;

use anyhow::{bail, Result};
use tidemark_benches::measure;
use tidemark_jobs::config::load;
use tidemark_jobs::run::{run, Ingress};
use tidemark_jobs::world::{generate, FileLogSink, WorldConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CHILD: &str = "TIDEMARK_MEMORY_CHILD";

/// The local profile with every window, TTL and interval at 10 minutes.
fn ten_minutes() -> Result<tidemark_jobs::config::Profile> {
    let mut p = load("local")?;
    let ten = std::time::Duration::from_secs(600);
    for f in &mut p.features {
        f.window = ten;
    }
    p.graph.edge_ttl = ten;
    p.ig.dedup_window = ten;
    p.ofp.snapshot_interval = ten;
    p.archive.interval = ten;
    p.dla.audit_interval = ten;
    p.wiring.commit_interval = ten;
    Ok(p)
}

/// One run over the file log at `ingress`, in this (child) process; prints
/// `records cpu_s wall_s peak_rss_mib`.
fn child(ingress: &std::path::Path) -> Result<()> {
    let profile = ten_minutes()?;
    let tmp = tempfile::tempdir()?;
    let (wall, cpu, out) = measure(|| {
        run(
            &profile,
            &Ingress::File(ingress.to_path_buf()),
            tmp.path().join("d"),
            1,
        )
    });
    let n = out?.manifest()?.totals.total();
    println!(
        "{n} {:.3} {:.3} {:.1}",
        cpu.as_secs_f64(),
        wall.as_secs_f64(),
        tidemark_benches::peak_rss_mib()
    );
    Ok(())
}

fn main() -> Result<()> {
    tidemark_jobs::tune_memory();
    if let Ok(dir) = std::env::var(CHILD) {
        return child(std::path::Path::new(&dir));
    }
    let large: u64 = tidemark_benches::env_or("TIDEMARK_BENCH_EVENTS", 1_000_000);
    let exe = std::env::current_exe()?;
    let tmp = tempfile::tempdir()?;
    let mut peaks = Vec::new();
    for events in [large / 4, large] {
        // The world is generated here, so the child's peak is the run's alone.
        let ingress = tmp.path().join(format!("in-{events}"));
        let cfg = WorldConfig {
            events,
            ..Default::default()
        };
        let mut sink = FileLogSink::create(&ingress, cfg.partitions)?;
        generate(&cfg, &mut sink, &mut |_, _| {})?;
        drop(sink);
        let out = Command::new(&exe).env(CHILD, &ingress).output()?;
        if !out.status.success() {
            bail!("child run failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let line = String::from_utf8_lossy(&out.stdout);
        let f: Vec<f64> = line
            .lines()
            .last()
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        let [n, cpu, wall, peak] = f[..] else {
            bail!("unexpected child output {line:?}");
        };
        println!(
            "run -w1, 10m windows/TTL/intervals, {events} records: {:.0} records/CPU-s, {wall:.1}s wall, peak RSS {peak:.0} MiB",
            n / cpu
        );
        peaks.push(peak);
    }
    println!(
        "peak RSS ratio, 4× the stream: {:.2} (target ≤ 1.3)",
        peaks[1] / peaks[0]
    );
    Ok(())
}
