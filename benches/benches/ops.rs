//! The cost of operating features, measured in the same process:
//! 1. the online run (IG + all stages, file log) with metrics off and on, alternating, in
//!    records per CPU-second;
//! 2. producer signature verification (HMAC-SHA256 over each record's bytes) against IG's
//!    stateless checks of the same records, in records per CPU-second.
//!
//! `TIDEMARK_BENCH_EVENTS` sets the world size (default 300,000), `TIDEMARK_BENCH_ROUNDS` the
//! alternating rounds of (1) (default 3).

use std::time::Duration;

use tidemark_benches::measure;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use tidemark_dataflows::envelope::validate;
use tidemark_dataflows::ig::signing::{key_env_var, SigningPolicy};
use tidemark_dataflows::ig::Keyring;
use tidemark_jobs::config::Profile;
use tidemark_jobs::metrics::{Metrics, Thresholds};
use tidemark_jobs::run::{run_with, Ingress, RunOptions};
use tidemark_jobs::world::{generate, FileLogSink, WorldConfig};
use tidemark_operators::RawRecord;
use tidemark_sources::{FileLog, PartitionedSource, ReadStatus};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    tidemark_jobs::tune_memory();
    let events: u64 = tidemark_benches::env_or("TIDEMARK_BENCH_EVENTS", 300_000);
    let rounds: usize = tidemark_benches::env_or("TIDEMARK_BENCH_ROUNDS", 3);
    let cfg = WorldConfig {
        events,
        ..Default::default()
    };
    let tmp = tempfile::tempdir()?;
    let ingress = tmp.path().join("in");
    generate(
        &cfg,
        &mut FileLogSink::create(&ingress, cfg.partitions)?,
        &mut |_, _| {},
    )?;
    let profile = Profile::default();

    // 1. Metrics off / on, alternating so drift on a noisy machine hits both alike.
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for with in [false, true] {
            let data = tmp.path().join(format!("data-{round}-{with}"));
            let metrics = with.then(|| {
                Metrics::new(Thresholds {
                    max_lag: 100_000,
                    max_watermark_age: Duration::from_secs(300),
                })
            });
            let opts = RunOptions {
                metrics: metrics.clone(),
                ..RunOptions::threads(1)
            };
            let (wall, cpu, out) =
                measure(|| run_with(&profile, &Ingress::File(ingress.clone()), &data, &opts));
            let n = out?
                .ok_or_else(|| anyhow::anyhow!("no outcome"))?
                .manifest()?
                .totals
                .total();
            let rate = n as f64 / cpu.as_secs_f64();
            if let Some(m) = &metrics {
                // The run filled them: one scrape's worth of encoding.
                let text = m.encode()?;
                anyhow::ensure!(text.contains("tidemark_ingress_records_total"));
            }
            println!(
                "online run -w1, metrics {}: {n} records, {rate:.0} records/CPU-s ({:.2}s wall, {:.2}s CPU)",
                if with { "on " } else { "off" },
                wall.as_secs_f64(),
                cpu.as_secs_f64()
            );
            if with { &mut on } else { &mut off }.push(rate);
            std::fs::remove_dir_all(&data)?;
        }
    }
    println!(
        "metrics on/off, records per CPU-s (median of {rounds}): {:.3}",
        median(on) / median(off)
    );

    // 2. Signature verification vs IG's stateless checks, over the same records.
    let mut records: Vec<RawRecord> = Vec::new();
    let log = FileLog::open(&ingress)?;
    for p in log.partitions()? {
        let mut r = log.open(p)?;
        while r.poll(4096, &mut records)? != ReadStatus::End {}
    }
    let policy = SigningPolicy {
        required: true,
        keys: [("card-switch-1".to_owned(), "card-switch".to_owned())].into(),
        ..Default::default()
    };
    let secret = "bench-key-0123456789abcdef-0123456789abcdef";
    let ring = Keyring::load(&policy, |v| {
        (v == key_env_var("card-switch-1")).then(|| secret.into())
    })?;
    for r in &mut records {
        r.headers = ring.sign("card-switch", r.record_ts, &r.bytes)?;
    }
    let n = records.len() as f64;
    let ig = profile.ig.clone();
    let (_, cpu_validate, ok) = measure(|| {
        records
            .iter()
            .filter(|r| validate(&r.bytes, &ig).is_ok())
            .count()
    });
    let (_, cpu_verify, verified) = measure(|| {
        records
            .iter()
            .filter(|r| ring.verify(r, 300_000).is_ok())
            .count()
    });
    anyhow::ensure!(verified == records.len(), "every record verifies");
    let bytes: usize = records.iter().map(|r| r.bytes.len()).sum();
    println!(
        "IG stateless checks: {n:.0} records ({ok} valid), {:.0} records/CPU-s",
        n / cpu_validate.as_secs_f64()
    );
    println!(
        "signature verification: {n:.0} records ({:.0} bytes avg), {:.0} records/CPU-s, {:.2} µs/record",
        bytes as f64 / n,
        n / cpu_verify.as_secs_f64(),
        cpu_verify.as_secs_f64() * 1e6 / n
    );
    println!(
        "verification adds {:.1}% to IG's stateless checks per record",
        100.0 * cpu_verify.as_secs_f64() / cpu_validate.as_secs_f64()
    );
    Ok(())
}
