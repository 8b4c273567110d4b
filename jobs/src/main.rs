//! The `tidemark` command line.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use tidemark_jobs::config;
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
            let out = run(&p, &Ingress::File(world), &data, workers)?;
            print_run(&out);
            verify_cmd(&data)?;
            println!("demo: outputs in {}", root.display());
            if root == tmp.path() {
                println!("demo: (temporary directory removed on exit; pass --dir to keep it)");
            }
            Ok(())
        }
    }
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
