//! IG throughput: the generator's own rate, then IG (stamp, dedup, archive, receipts, manifest)
//! over a 1M-record world with 1 and 2 workers, in records per CPU-second and per wall-second.
//! `TIDEMARK_BENCH_EVENTS` overrides the world size.

use tidemark_benches::measure;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use tidemark_jobs::config::Profile;
use tidemark_jobs::run::{run_stages, Ingress};
use tidemark_jobs::world::sink::NullSink;
use tidemark_jobs::world::{generate, FileLogSink, WorldConfig};

fn main() -> anyhow::Result<()> {
    tidemark_jobs::tune_memory();
    let events: u64 = tidemark_benches::env_or("TIDEMARK_BENCH_EVENTS", 1_000_000);
    let cfg = WorldConfig {
        events,
        ..Default::default()
    };
    let tmp = tempfile::tempdir()?;

    let (wall, cpu, bytes) = measure(|| {
        let mut sink = NullSink(0);
        generate(&cfg, &mut sink, &mut |_, _| {}).map(|_| sink.0)
    });
    let bytes = bytes?;
    println!(
        "generator (in memory):   {events} records, {:.0} MB, {:.0} records/CPU-s, {:.0} records/s",
        bytes as f64 / 1e6,
        events as f64 / cpu.as_secs_f64(),
        events as f64 / wall.as_secs_f64()
    );
    let ingress = tmp.path().join("in");
    let (wall, cpu, r) = measure(|| {
        let mut sink = FileLogSink::create(&ingress, cfg.partitions)?;
        generate(&cfg, &mut sink, &mut |_, _| {})
    });
    r?;
    println!(
        "generator (file log):    {events} records, {:.0} records/CPU-s, {:.0} records/s",
        events as f64 / cpu.as_secs_f64(),
        events as f64 / wall.as_secs_f64()
    );
    let profile = Profile::default();
    let mut rates = Vec::new();
    for workers in [1usize, 2] {
        let data = tmp.path().join(format!("data-w{workers}"));
        let (wall, cpu, out) = measure(|| {
            run_stages(
                &profile,
                &Ingress::File(ingress.clone()),
                &data,
                workers,
                false,
            )
        });
        let out = out?;
        let n = out.manifest()?.totals.total();
        let per_cpu = n as f64 / cpu.as_secs_f64();
        rates.push(per_cpu);
        println!(
            "IG -w {workers}:                {n} records, {:.0} records/CPU-s, {:.0} records/s wall ({:.2}s wall, {:.2}s CPU)",
            per_cpu,
            n as f64 / wall.as_secs_f64(),
            wall.as_secs_f64(),
            cpu.as_secs_f64()
        );
    }
    println!(
        "ratio IG per-CPU-second -w2/-w1: {:.2}",
        rates[1] / rates[0]
    );
    println!("peak RSS: {:.0} MiB", tidemark_benches::peak_rss_mib());
    Ok(())
}
