//! The `tidemark` command line.

/// mimalloc: the dataflow allocates many small records; the system allocator spent a third of
/// the run's CPU in malloc/free.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use tidemark_jobs::config;
use tidemark_jobs::replay::{find_audit, replay};
use tidemark_jobs::run::{run, Ingress};
use tidemark_jobs::verify::verify;
use tidemark_jobs::world::{generate, FileLogSink, WorldConfig};
use tidemark_sinks::WriteOnceStore;

#[derive(Parser)]
#[command(
    name = "tidemark",
    version,
    about = "Deterministic stream processing for real-time fraud decisioning"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate a deterministic world as a partitioned ingress log.
    World {
        /// Number of ingress records.
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// RNG seed.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Ingress partitions.
        #[arg(long, default_value_t = 4)]
        partitions: u32,
        /// Fraction of injected bad input (spread over every reason code).
        #[arg(long, default_value_t = 0.01)]
        bad_rate: f64,
        /// Output directory (must not already hold partition files).
        #[arg(long)]
        out: PathBuf,
    },
    /// Run the pipeline (IG → archive) over an ingress log.
    Run {
        /// Profile name (local, dev, prod) or path to a profile TOML.
        #[arg(long, default_value = "local")]
        profile: String,
        /// Ingress: file:DIR.
        #[arg(long)]
        ingress: String,
        /// Data root (local object store).
        #[arg(long)]
        data: PathBuf,
        /// Worker threads (overrides the profile's wiring.workers).
        #[arg(short = 'w', long)]
        workers: Option<usize>,
    },
    /// Rerun IEG..DLA over the archive of DATA into OUT and compare with the recorded run.
    Replay {
        /// Profile name or path.
        #[arg(long, default_value = "local")]
        profile: String,
        /// Data root of the recorded run.
        #[arg(long)]
        data: PathBuf,
        /// Output root (must be new or empty).
        #[arg(long)]
        out: PathBuf,
        /// Start of the range (logical ms or RFC 3339).
        #[arg(long)]
        from: Option<String>,
        /// End of the range, exclusive (logical ms or RFC 3339).
        #[arg(long)]
        to: Option<String>,
        /// Worker threads.
        #[arg(short = 'w', long, default_value_t = 1)]
        workers: usize,
    },
    /// Print the audit record of an event id or decision id, with its provenance.
    Audit {
        /// Data root.
        #[arg(long)]
        data: PathBuf,
        /// Event id or decision id.
        id: String,
    },
    /// Verify archive completeness against its manifests.
    Verify {
        /// Data root.
        #[arg(long)]
        data: PathBuf,
    },
    /// world → run → verify in a temporary (or given) directory, with a summary.
    Demo {
        /// Number of ingress records.
        #[arg(long, default_value_t = 200_000)]
        events: u64,
        /// Worker threads.
        #[arg(short = 'w', long, default_value_t = 2)]
        workers: usize,
        /// Keep outputs here instead of a temporary directory.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = real_main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn world_cmd(cfg: &WorldConfig, out: &Path) -> Result<()> {
    let t0 = Instant::now();
    let mut sink = FileLogSink::create(out, cfg.partitions)
        .with_context(|| format!("cannot create world in {}", out.display()))?;
    let mut truth = std::io::BufWriter::new(std::fs::File::create(out.join("truth.csv"))?);
    use std::io::Write;
    writeln!(truth, "event_id,pattern")?;
    let mut err = None;
    let stats = generate(cfg, &mut sink, &mut |id, p| {
        if let Err(e) = writeln!(truth, "{id},{}", p.as_str()) {
            err = Some(e);
        }
    })?;
    if let Some(e) = err {
        return Err(e.into());
    }
    truth.flush()?;
    std::fs::write(
        out.join("world.json"),
        serde_json::to_vec_pretty(&(cfg, &stats))?,
    )?;
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "world: {} records ({} txns, {} fraud txns, {} labels, {} postures) in {} partitions -> {} ({:.0} records/s)",
        stats.records, stats.txns, stats.fraud_txns, stats.labels, stats.postures, cfg.partitions, out.display(),
        stats.records as f64 / secs.max(1e-9)
    );
    Ok(())
}

fn verify_cmd(data: &Path) -> Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    if !data.is_dir() {
        bail!("data directory {} does not exist", data.display());
    }
    let store = WriteOnceStore::local(data, rt.handle().clone())?;
    let report = verify(&store)?;
    if report.ok() {
        println!(
            "verify: OK — {} manifest(s), {} files, {} archive rows, {} receipts",
            report.manifests, report.files, report.archive_rows, report.receipts
        );
        Ok(())
    } else {
        for p in &report.problems {
            eprintln!("verify: {p}");
        }
        bail!("verify failed: {} problem(s)", report.problems.len())
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::World {
            events,
            seed,
            partitions,
            bad_rate,
            out,
        } => {
            if partitions == 0 {
                bail!("--partitions must be at least 1");
            }
            let cfg = WorldConfig {
                events,
                seed,
                partitions,
                bad_rate,
                ..Default::default()
            };
            world_cmd(&cfg, &out)
        }
        Cmd::Run {
            profile,
            ingress,
            data,
            workers,
        } => {
            let p = config::load(&profile)?;
            let w = workers.unwrap_or(p.wiring.workers);
            let ingress = Ingress::parse(&ingress)?;
            let out = run(&p, &ingress, &data, w)?;
            print_run(&out);
            Ok(())
        }
        Cmd::Verify { data } => verify_cmd(&data),
        Cmd::Replay {
            profile,
            data,
            out,
            from,
            to,
            workers,
        } => {
            let p = config::load(&profile)?;
            let from = from.as_deref().map(parse_time).transpose()?.unwrap_or(0);
            let to = to.as_deref().map(parse_time).transpose()?;
            let r = replay(&p, &data, &out, from, to, workers)?;
            print_replay(&r);
            if r.divergence.is_some() {
                std::process::exit(2);
            }
            Ok(())
        }
        Cmd::Audit { data, id } => {
            let rt = tokio::runtime::Runtime::new()?;
            let store = WriteOnceStore::local(&data, rt.handle().clone())?;
            match find_audit(&store, &id)? {
                Some(r) => {
                    let mut v = serde_json::to_value(&r)?;
                    for k in ["reasons", "features", "degrade_mask", "action_intents"] {
                        if let Some(text) = v.get(k).and_then(|x| x.as_str()).map(str::to_owned) {
                            v[k] = serde_json::from_str(&text)
                                .unwrap_or(serde_json::Value::String(text));
                        }
                    }
                    println!("{}", serde_json::to_string_pretty(&v)?);
                    Ok(())
                }
                None => bail!("no audit record for {id} under {}", data.display()),
            }
        }
        Cmd::Demo {
            events,
            workers,
            dir,
        } => {
            let tmp = tempfile::tempdir()?;
            let root = dir.unwrap_or_else(|| tmp.path().to_path_buf());
            let world = root.join("ingress");
            let data = root.join("data");
            let cfg = WorldConfig {
                events,
                ..Default::default()
            };
            world_cmd(&cfg, &world)?;
            let p = config::load("local")?;
            let out = run(&p, &Ingress::File(world.clone()), &data, workers)?;
            print_run(&out);
            verify_cmd(&data)?;
            summary(&data, &world)?;
            let r = replay(&p, &data, &root.join("replay"), 0, None, workers)?;
            print_replay(&r);
            if r.divergence.is_some() {
                bail!("replay diverged from the online run");
            }
            println!("demo: outputs in {}", root.display());
            if root == tmp.path() {
                println!("demo: (temporary directory removed on exit; pass --dir to keep it)");
            }
            Ok(())
        }
    }
}

fn parse_time(s: &str) -> Result<u64> {
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    tidemark_dataflows::envelope::parse_rfc3339_millis(s)
        .ok_or_else(|| anyhow::anyhow!("not a time (ms or RFC 3339): {s}"))
}

fn print_replay(r: &tidemark_jobs::replay::ReplayOutcome) {
    println!(
        "replay: {} decisions {:?}, {} snapshots in {:.2}s; compared {} decisions: {}",
        r.decisions.values().sum::<u64>(),
        r.decisions,
        r.snapshots,
        r.wall_secs,
        r.compared,
        match &r.divergence {
            None => "MATCH".to_owned(),
            Some(d) => format!("DIVERGED: {d}"),
        }
    );
}

/// Prints quarantine by reason and the confusion matrix of decisions vs. the world's truth.
fn summary(data: &Path, world: &Path) -> Result<()> {
    use std::collections::{BTreeMap, BTreeSet};
    let rt = tokio::runtime::Runtime::new()?;
    let store = WriteOnceStore::local(data, rt.handle().clone())?;
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    for p in store.list("ig/receipts")? {
        for r in tidemark_sinks::parquet::decode_receipts(store.get(&p)?, &p)? {
            if let Some(code) = r.reason {
                *reasons.entry(code.as_str().to_owned()).or_default() += 1;
            }
        }
    }
    println!("quarantine/duplicates by reason: {reasons:?}");
    let truth: BTreeSet<String> = std::fs::read_to_string(world.join("truth.csv"))?
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').next().map(str::to_owned))
        .collect();
    let mut matrix: BTreeMap<(&str, String), u64> = BTreeMap::new();
    for p in store.list("dla/audit")? {
        for r in tidemark_sinks::audit::decode_audit(store.get(&p)?, &p)? {
            let label = if truth.contains(&r.event_id) {
                "fraud"
            } else {
                "legit"
            };
            *matrix.entry((label, r.decision)).or_default() += 1;
        }
    }
    println!("confusion matrix (truth x decision):");
    for label in ["fraud", "legit"] {
        let row: Vec<String> = ["ALLOW", "REVIEW", "BLOCK"]
            .iter()
            .map(|d| {
                format!(
                    "{d}={}",
                    matrix.get(&(label, (*d).to_owned())).copied().unwrap_or(0)
                )
            })
            .collect();
        println!("  {label:<5} {}", row.join(" "));
    }
    Ok(())
}

fn print_run(out: &tidemark_jobs::run::RunOutcome) {
    let m = &out.manifest;
    let ingress = m.totals.total();
    println!(
        "run: {} ingress records in {:.2}s ({:.0} records/s) — admitted {}, quarantined {}, duplicate {}",
        ingress, out.wall_secs, ingress as f64 / out.wall_secs.max(1e-9),
        m.totals.admitted, m.totals.quarantined, m.totals.duplicate
    );
    println!(
        "run: policy_rev {} basis {} — {} files; run record {}",
        m.policy_rev,
        m.basis_id,
        m.files.len(),
        out.run_record
    );
}
