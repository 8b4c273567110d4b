//! End-to-end offline replay (IEG → OFP → DF → DLA over the archive) in events per CPU-second
//! for 1 and 2 workers, the same with IEG disabled, and peak RSS. The archive comes from one
//! online run (IG + decisions) over a generated world, whose rate is reported too.
//! `TIDEMARK_BENCH_EVENTS` overrides the world size (default 1M).

use tidemark_benches::measure;
use tidemark_jobs::config::load;
use tidemark_jobs::replay::replay;
use tidemark_jobs::run::{run, Ingress};
use tidemark_jobs::world::{generate, FileLogSink, WorldConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    tidemark_jobs::tune_memory();
    let events: u64 = tidemark_benches::env_or("TIDEMARK_BENCH_EVENTS", 1_000_000);
    let cfg = WorldConfig {
        events,
        ..Default::default()
    };
    let tmp = tempfile::tempdir()?;
    let ingress = tmp.path().join("in");
    let mut sink = FileLogSink::create(&ingress, cfg.partitions)?;
    generate(&cfg, &mut sink, &mut |_, _| {})?;
    let profile = load("local")?;
    let data = tmp.path().join("data");
    let (wall, cpu, out) = measure(|| run(&profile, &Ingress::File(ingress.clone()), &data, 2));
    let out = out?;
    let n = out.manifest()?.totals.admitted;
    println!(
        "online run (IG + IEG/OFP/DF/DLA) -w 2: {} ingress records, {:.0} records/CPU-s, {:.0} records/s wall",
        out.manifest()?.totals.total(),
        out.manifest()?.totals.total() as f64 / cpu.as_secs_f64(),
        out.manifest()?.totals.total() as f64 / wall.as_secs_f64()
    );
    let mut rates = Vec::new();
    let mut walls = Vec::new();
    for (label, graph, workers) in [
        ("replay", true, 1usize),
        ("replay", true, 2),
        ("replay, IEG disabled", false, 1),
        ("replay, IEG disabled", false, 2),
    ] {
        let mut p = profile.clone();
        p.graph.enabled = graph;
        let dir = tmp.path().join(format!("replay-{graph}-{workers}"));
        let (wall, cpu, r) = measure(|| replay(&p, &data, &dir, 0, None, workers));
        let r = r?;
        let per_cpu = n as f64 / cpu.as_secs_f64();
        rates.push(per_cpu);
        walls.push(wall.as_secs_f64());
        println!(
            "{label:<22} -w {workers}: {n} events, {:.0} events/CPU-s, {:.0} events/s wall ({:.1}s CPU), {}",
            per_cpu,
            n as f64 / wall.as_secs_f64(),
            cpu.as_secs_f64(),
            if r.divergence.is_none() { "MATCH".to_owned() } else if graph { "DIVERGED".to_owned() } else { "differs (expected: graph features null)".to_owned() }
        );
    }
    println!(
        "ratios (per CPU-s): -w2/-w1 {:.2}; IEG disabled / enabled (-w1) {:.2}",
        rates[1] / rates[0],
        rates[2] / rates[0]
    );
    println!(
        "wall speed-up of 2 workers over 1: {:.2} (IEG disabled: {:.2})",
        walls[0] / walls[1],
        walls[2] / walls[3]
    );
    println!("peak RSS: {:.0} MiB", tidemark_benches::peak_rss_mib());
    Ok(())
}
