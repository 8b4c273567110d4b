//! Training-dataset build (docs/datasets.md) in rows per CPU-second with 1 and 2 workers, next
//! to a replay of the same archive in the same session (the build is a replay plus the label
//! pass, the typed rows and the read-back: hash, statistics and the zero-skew check of every
//! row). The archive comes from one online run over a generated world (default profile);
//! `TIDEMARK_BENCH_EVENTS` sets its size (default 1M), `TIDEMARK_BENCH_DATA` reuses an
//! existing sealed data root instead.

use tidemark_benches::measure;
use tidemark_jobs::config::load;
use tidemark_jobs::dataset::{archive_range, build, open_store, DatasetRequest, Target};
use tidemark_jobs::replay::replay;
use tidemark_jobs::run::{run, Ingress};
use tidemark_jobs::world::{generate, FileLogSink, WorldConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    tidemark_jobs::tune_memory();
    let tmp = tempfile::tempdir()?;
    let profile = load("local")?;
    let data = match std::env::var("TIDEMARK_BENCH_DATA") {
        Ok(d) => std::path::PathBuf::from(d),
        Err(_) => {
            let events: u64 = tidemark_benches::env_or("TIDEMARK_BENCH_EVENTS", 1_000_000);
            let cfg = WorldConfig {
                events,
                ..Default::default()
            };
            let ingress = tmp.path().join("in");
            let mut sink = FileLogSink::create(&ingress, cfg.partitions)?;
            generate(&cfg, &mut sink, &mut |_, _| {})?;
            let data = tmp.path().join("data");
            run(&profile, &Ingress::File(ingress), &data, 2)?;
            data
        }
    };
    let rt = tokio::runtime::Runtime::new()?;
    let store = open_store(&data, &rt)?;
    let (lo, hi) = archive_range(&store)?.ok_or_else(|| anyhow::anyhow!("empty archive"))?;
    let (wall, cpu, r) = measure(|| replay(&profile, &data, tmp.path().join("replay"), 0, None, 1));
    let r = r?;
    let replay_rate = r.compared as f64 / cpu.as_secs_f64();
    println!(
        "replay -w 1: {} decisions, {:.0} decisions/CPU-s, {:.1}s wall",
        r.compared,
        replay_rate,
        wall.as_secs_f64()
    );
    let mut rates = Vec::new();
    for workers in [1usize, 2] {
        let req = DatasetRequest {
            from: lo,
            to: hi + 1,
            labels_as_of: hi,
            split_at: Some(lo + (hi - lo) / 2),
            workers,
        };
        let target = Target {
            root: open_store(tmp.path().join(format!("ds-{workers}")), &rt)?,
            dir: None,
        };
        let (wall, cpu, b) = measure(|| build(&profile, &store, &target, &req));
        let m = b?.manifest;
        let rate = m.rows as f64 / cpu.as_secs_f64();
        rates.push((rate, wall.as_secs_f64()));
        println!(
            "dataset build -w {workers}: {} rows, {:.0} rows/CPU-s, {:.0} rows/s wall ({:.1}s CPU, {:.1}s wall), {}",
            m.rows,
            rate,
            m.rows as f64 / wall.as_secs_f64(),
            cpu.as_secs_f64(),
            wall.as_secs_f64(),
            m.certificate.map(|c| c.summary()).unwrap_or_default()
        );
    }
    println!(
        "ratios: dataset -w1 / replay -w1 per CPU-s {:.2}; dataset wall -w1/-w2 {:.2}",
        rates[0].0 / replay_rate,
        rates[0].1 / rates[1].1
    );
    println!("peak RSS: {:.0} MiB", tidemark_benches::peak_rss_mib());
    Ok(())
}
