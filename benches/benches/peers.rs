//! tidemark against DuckDB on the same per-card micro-workload: five 1h features of each card
//! transaction (count, sum of amounts, distinct merchants, max amount, time since the last
//! transaction), over the transactions strictly before it (SPEC §7).
//!
//! One world (`TIDEMARK_BENCH_EVENTS`, default 1M records) goes through the online run with
//! the `benches/profiles/micro.toml` profile (graph off); then, in the same session:
//! - tidemark: `replay -w1` over the archive, events per CPU-second;
//! - DuckDB (pip `duckdb==2.0.0`, installed here if missing, `threads=2`): the same windows
//!   as one SQL window query (`RANGE BETWEEN 3600000 PRECEDING AND 1 PRECEDING` per card)
//!   over the archive's transactions, rows per CPU-second of the query (loading the CSV is
//!   not counted);
//!
//! and checks that every transaction's five values agree row for row (the run fails loudly
//! otherwise), then prints the ratio.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use tidemark_benches::measure;
use tidemark_jobs::config::load;
use tidemark_jobs::replay::{read_audit, replay};
use tidemark_jobs::run::{run, Ingress};
use tidemark_jobs::world::{generate, FileLogSink, WorldConfig};
use tidemark_sinks::parquet::decode_archive;
use tidemark_sinks::WriteOnceStore;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const FEATURES: [&str; 5] = [
    "card_txn_count_1h",
    "card_amount_sum_1h",
    "card_distinct_merchants_1h",
    "card_max_amount_1h",
    "card_last_txn_gap_1h",
];

type Values = [Option<i64>; 5];

/// The archive's transactions as CSV for DuckDB: event_id, t, card_id, amount_minor,
/// merchant_id. Returns the number of rows.
fn export_txns(data: &Path, csv: &Path, store: &WriteOnceStore) -> Result<u64> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(csv)?);
    writeln!(out, "event_id,t,card_id,amount_minor,merchant_id")?;
    let mut n = 0;
    for path in store.list("archive")? {
        if !path.ends_with(".parquet") {
            continue;
        }
        for a in decode_archive(store.get(&path)?, &path)? {
            if a.event_type != tidemark_operators::ingest::EventType::Authorization {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(&a.envelope)?;
            let p = &v["payload"];
            let s = |k: &str| p[k].as_str().map(str::to_owned);
            let (Some(card), Some(amount), Some(merchant)) =
                (s("card_id"), p["amount_minor"].as_i64(), s("merchant_id"))
            else {
                bail!(
                    "transaction {} in {} lacks a field",
                    a.event_id,
                    data.display()
                );
            };
            writeln!(
                out,
                "{},{},{card},{amount},{merchant}",
                a.event_id, a.logical_time
            )?;
            n += 1;
        }
    }
    out.flush()?;
    Ok(n)
}

fn tidemark_values(replay_out: &Path, store: &WriteOnceStore) -> Result<BTreeMap<String, Values>> {
    let mut out = BTreeMap::new();
    for rows in read_audit(store)?.into_values() {
        for r in rows {
            let pairs: Vec<(String, Option<i64>)> = serde_json::from_str(&r.features)
                .with_context(|| {
                    format!("features of {} in {}", r.event_id, replay_out.display())
                })?;
            let mut v: Values = [None; 5];
            for (name, value) in pairs {
                if let Some(i) = FEATURES.iter().position(|f| *f == name) {
                    v[i] = value;
                }
            }
            out.insert(r.event_id, v);
        }
    }
    Ok(out)
}

fn duckdb_values(csv: &Path) -> Result<BTreeMap<String, Values>> {
    let mut out = BTreeMap::new();
    let text = std::fs::read_to_string(csv)?;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 6 {
            bail!("unexpected DuckDB output line {line:?}");
        }
        let n = |s: &str| -> Result<Option<i64>> {
            Ok(if s.is_empty() { None } else { Some(s.parse()?) })
        };
        out.insert(
            f[0].to_owned(),
            [n(f[1])?, n(f[2])?, n(f[3])?, n(f[4])?, n(f[5])?],
        );
    }
    Ok(out)
}

fn main() -> Result<()> {
    tidemark_jobs::tune_memory();
    let events: u64 = tidemark_benches::env_or("TIDEMARK_BENCH_EVENTS", 1_000_000);
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = here.join("peers/duckdb_micro.py");
    if !Command::new("python3")
        .args(["-c", "import duckdb"])
        .status()?
        .success()
    {
        let ok = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "duckdb==2.0.0",
            ])
            .status()?
            .success();
        if !ok {
            bail!("cannot install duckdb from PyPI");
        }
    }
    let profile = load(&here.join("profiles/micro.toml").display().to_string())?;
    let tmp = tempfile::tempdir()?;
    let ingress = tmp.path().join("in");
    let cfg = WorldConfig {
        events,
        ..Default::default()
    };
    let mut sink = FileLogSink::create(&ingress, cfg.partitions)?;
    generate(&cfg, &mut sink, &mut |_, _| {})?;
    let data = tmp.path().join("data");
    run(&profile, &Ingress::File(ingress.clone()), &data, 1)?;
    let rt = tokio::runtime::Runtime::new()?;
    let store = WriteOnceStore::local(&data, rt.handle().clone())?;

    let out = tmp.path().join("replay");
    let (wall, cpu, r) = measure(|| replay(&profile, &data, &out, 0, None, 1));
    let r = r?;
    if r.divergence.is_some() {
        bail!("replay diverged: {:?}", r.divergence);
    }
    let admitted: u64 = tidemark_jobs::replay::manifests(&store)?
        .iter()
        .map(|m| m.totals.admitted)
        .sum();
    let tm_rate = admitted as f64 / cpu.as_secs_f64();
    println!(
        "tidemark replay -w1 (micro profile): {admitted} events, {:.2}s CPU, {:.2}s wall: {tm_rate:.0} events/CPU-s, peak RSS so far {:.0} MiB",
        cpu.as_secs_f64(),
        wall.as_secs_f64(),
        tidemark_benches::peak_rss_mib()
    );

    let csv = tmp.path().join("txns.csv");
    let txns = export_txns(&data, &csv, &store)?;
    let result = tmp.path().join("duckdb.csv");
    let py = Command::new("python3")
        .arg(&script)
        .arg(&csv)
        .arg(&result)
        .arg("2")
        .output()?;
    if !py.status.success() {
        bail!(
            "DuckDB script failed: {}",
            String::from_utf8_lossy(&py.stderr)
        );
    }
    let report: serde_json::Value = serde_json::from_slice(&py.stdout)?;
    let dcpu = report["cpu_s"].as_f64().unwrap_or(f64::NAN);
    let dd_rate = txns as f64 / dcpu;
    println!(
        "DuckDB {} threads=2: {txns} transactions, query {dcpu:.2}s CPU, {:.2}s wall: {dd_rate:.0} rows/CPU-s",
        report["version"].as_str().unwrap_or("?"),
        report["wall_s"].as_f64().unwrap_or(f64::NAN)
    );

    let ours = tidemark_values(&out, &WriteOnceStore::local(&out, rt.handle().clone())?)?;
    let theirs = duckdb_values(&result)?;
    if ours.len() != theirs.len() {
        bail!(
            "tidemark decided {} transactions, DuckDB computed {}",
            ours.len(),
            theirs.len()
        );
    }
    for (id, v) in &ours {
        match theirs.get(id) {
            Some(w) if w == v => {}
            other => bail!("event {id}: tidemark {v:?}, DuckDB {other:?} ({FEATURES:?})"),
        }
    }
    println!(
        "values: all {} transactions agree on all five features",
        ours.len()
    );
    println!(
        "ratio (events per CPU-s, tidemark replay / DuckDB query): {:.2}",
        tm_rate / dd_rate
    );
    Ok(())
}
