//! The `tidemark` command line.

/// mimalloc: the dataflow allocates many small records; the system allocator spent a third of
/// the run's CPU in malloc/free.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use tidemark_jobs::broker::{detach, ensure_topics, stop_pid, topic_layout, LocalBroker, Storage};
use tidemark_jobs::config;
use tidemark_jobs::demo::{
    demo_root, file_demo, kafka_demo, parse_time, print_replay, print_run, verify_cmd,
    world_to_file,
};
use tidemark_jobs::kafka::produce_world;
use tidemark_jobs::replay::{find_audit, replay};
use tidemark_jobs::run::{run_with, Cluster, Ingress, RunOptions};
use tidemark_jobs::world::WorldConfig;
use tidemark_sinks::{Root, WriteOnceStore};
use tidemark_sources::kafka::parse_offsets;
use tidemark_sources::{KafkaEnd, KafkaStart};

#[derive(Parser)]
#[command(
    name = "tidemark",
    version,
    about = "Deterministic stream processing for real-time fraud decisioning"
)]
struct Cli {
    /// Log format on stderr: `text` or `json` (one JSON object per line). The level comes from
    /// `RUST_LOG`, default `warn` (e.g. `RUST_LOG=tidemark=debug` for a line per decision and
    /// quarantine).
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
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
        /// Output directory of a file log (must not already hold partition files).
        #[arg(long, conflicts_with = "to")]
        out: Option<PathBuf>,
        /// Destination: `file:DIR` or `kafka` (the profile's brokers, topic fp.bus.ingress.v1).
        #[arg(long)]
        to: Option<String>,
        /// Profile (brokers for `--to kafka`).
        #[arg(long, default_value = "local")]
        profile: String,
        /// Kafka bootstrap servers (overrides the profile).
        #[arg(long)]
        brokers: Option<String>,
        /// Live traffic: start the world now and send each record at its timestamp, at this
        /// mean rate (records/s).
        #[arg(long)]
        live: Option<f64>,
    },
    /// Training datasets from the archive (build, verify).
    Dataset {
        #[command(subcommand)]
        cmd: tidemark_jobs::dataset::cli::DatasetCmd,
    },
    /// Declared backfills: a new feature revision over history into ofs/backfills/<id>/.
    Backfill {
        #[command(subcommand)]
        cmd: tidemark_jobs::govcli::BackfillCmd,
    },
    /// Governance facts (policy activations, backfill declarations and receipts).
    Gov {
        #[command(subcommand)]
        cmd: tidemark_jobs::govcli::GovCmd,
    },
    /// The local Kafka-protocol broker (tansu on loopback) and topic creation.
    Broker {
        #[command(subcommand)]
        cmd: BrokerCmd,
    },
    /// Run the online pipeline (IG → IEG → OFP → DF → DLA) over Kafka or a file log.
    Run {
        /// Profile name (local, dev, prod) or path to a profile TOML.
        #[arg(long, default_value = "local")]
        profile: String,
        /// Ingress: `kafka` (the profile's brokers, fp.bus.ingress.v1) or `file:DIR`.
        #[arg(long, default_value = "kafka")]
        ingress: String,
        /// Data root: a directory, `file://DIR` or `s3://BUCKET/PREFIX` (default: the
        /// profile's `wiring.object_store`).
        #[arg(long)]
        data: Option<Root>,
        /// Kafka bootstrap servers (overrides the profile).
        #[arg(long)]
        brokers: Option<String>,
        /// Kafka start: `beginning` or `P:OFFSET,…` (a previous basis end).
        #[arg(long, default_value = "beginning")]
        from: String,
        /// Kafka end: `none` (run forever), `latest` (high watermarks at start) or
        /// `P:OFFSET,…` (exclusive).
        #[arg(long, default_value = "none")]
        until: String,
        /// Do not publish to the output topics (traffic, control, decisions, audit).
        #[arg(long)]
        no_publish: bool,
        /// With `--from` on a root without commits: decide from cold state (no window, graph
        /// or dedup history before those offsets). Refused without this flag.
        #[arg(long)]
        cold_start: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Rerun IEG..DLA over the archive of DATA into OUT and compare with the recorded run.
    Replay {
        /// Profile name or path (default: the profile recorded in DATA's run records).
        #[arg(long)]
        profile: Option<String>,
        /// Data root of the recorded run: a directory, `file://DIR` or `s3://BUCKET/PREFIX`
        /// (default: `TIDEMARK__WIRING__OBJECT_STORE`).
        #[arg(long)]
        data: Option<Root>,
        /// Output root, a directory or `s3://BUCKET/PREFIX` (must be new or empty).
        #[arg(long)]
        out: Root,
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
        /// Data root: a directory, `file://DIR` or `s3://BUCKET/PREFIX` (default:
        /// `TIDEMARK__WIRING__OBJECT_STORE`).
        #[arg(long)]
        data: Option<Root>,
        /// Event id or decision id.
        id: String,
    },
    /// Verify archive completeness against its manifests.
    Verify {
        /// Data root: a directory, `file://DIR` or `s3://BUCKET/PREFIX` (default:
        /// `TIDEMARK__WIRING__OBJECT_STORE`).
        #[arg(long)]
        data: Option<Root>,
    },
    /// Local broker → live world → online run over Kafka → verify → replay, with a summary.
    Demo {
        /// Number of ingress records.
        #[arg(long, default_value_t = 30_000)]
        events: u64,
        /// Offered load of the live world (records/s).
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// Use a file log instead of the broker (no latency figures).
        #[arg(long)]
        file: bool,
        /// Profile (name or path). The default, `lowlatency` (allowed_lateness 0), decides
        /// within milliseconds; `local` waits 5 s for stragglers.
        #[arg(long, default_value = "lowlatency")]
        profile: String,
        /// Worker threads.
        #[arg(short = 'w', long, default_value_t = 2)]
        workers: usize,
        /// Keep outputs here instead of a temporary directory.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// Timely cluster options: one process per node.
#[derive(clap::Args, Clone, Debug)]
struct ClusterArgs {
    /// Worker threads per process (default: the profile's wiring.workers).
    #[arg(short = 'w', long)]
    workers: Option<usize>,
    /// Number of processes.
    #[arg(short = 'n', long, default_value_t = 1)]
    processes: usize,
    /// This process's index (0-based).
    #[arg(short = 'p', long, default_value_t = 0)]
    process: usize,
    /// File with one `host:port` per process (default: localhost:2101, 2102, …).
    #[arg(long)]
    hostfile: Option<PathBuf>,
}

impl ClusterArgs {
    fn cluster(&self, default_workers: usize) -> Result<Cluster> {
        let threads = self.workers.unwrap_or(default_workers).max(1);
        if self.processes == 0 || self.process >= self.processes {
            bail!(
                "-p {} is not a process of -n {}",
                self.process,
                self.processes
            );
        }
        let addresses = if self.processes > 1 {
            match &self.hostfile {
                Some(f) => {
                    let text = std::fs::read_to_string(f)
                        .with_context(|| format!("cannot read hostfile {}", f.display()))?;
                    let a: Vec<String> = text
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(str::to_owned)
                        .take(self.processes)
                        .collect();
                    if a.len() < self.processes {
                        bail!(
                            "hostfile {} lists {} addresses, -n is {}",
                            f.display(),
                            a.len(),
                            self.processes
                        );
                    }
                    a
                }
                None => (0..self.processes)
                    .map(|i| format!("localhost:{}", 2101 + i))
                    .collect(),
            }
        } else {
            Vec::new()
        };
        Ok(Cluster {
            threads,
            process: self.process,
            addresses,
        })
    }
}

#[derive(Subcommand)]
enum BrokerCmd {
    /// Start tansu on loopback in the background, wait until it answers, create the topics.
    Start {
        /// Profile (topic partition counts).
        #[arg(long, default_value = "local")]
        profile: String,
        /// Port.
        #[arg(long, default_value_t = 9092)]
        port: u16,
        /// `memory` or `sqlite` (durable, in STATE/tansu.db).
        #[arg(long, default_value = "sqlite")]
        storage: String,
        /// State directory (pid file, log, SQLite file).
        #[arg(long, default_value = ".tidemark/broker")]
        state: PathBuf,
    },
    /// Stop the broker started with `broker start`.
    Stop {
        /// State directory.
        #[arg(long, default_value = ".tidemark/broker")]
        state: PathBuf,
    },
    /// Create the profile's topics on its (or the given) cluster; existing topics are kept.
    Topics {
        /// Profile.
        #[arg(long, default_value = "local")]
        profile: String,
        /// Bootstrap servers (overrides the profile).
        #[arg(long)]
        brokers: Option<String>,
    },
}

fn main() {
    tidemark_jobs::tune_memory();
    // A closed stdout (`tidemark … | head`) ends the program quietly, as for any Unix tool,
    // instead of a panic on the next print.
    // SAFETY: resetting a signal disposition to its default before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tidemark_jobs::log_filter())
        .with_writer(std::io::stderr);
    let json = cli.log_format == "json";
    if json {
        logs.json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    } else {
        logs.init();
    }
    if let Err(e) = real_main(cli) {
        if json {
            tracing::error!(error = %format!("{e:#}"), "failed");
        } else {
            eprintln!("error: {e:#}");
        }
        std::process::exit(1);
    }
}

fn real_main(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::World {
            events,
            seed,
            partitions,
            bad_rate,
            out,
            to,
            profile,
            brokers,
            live,
        } => {
            if partitions == 0 {
                bail!("--partitions must be at least 1");
            }
            let mut cfg = WorldConfig {
                events,
                seed,
                partitions,
                bad_rate,
                ..Default::default()
            };
            let to = match (out, to) {
                (Some(dir), None) => format!("file:{}", dir.display()),
                (None, Some(t)) => t,
                _ => bail!("give --to kafka|file:DIR (or --out DIR)"),
            };
            if to == "kafka" {
                let p = config::load(&profile)?;
                let conn = p.kafka_conn(brokers.as_deref());
                if let Some(rate) = live {
                    cfg.start_ms = tidemark_jobs::kafka::live_start_ms();
                    cfg.rate_per_sec = rate;
                    cfg.jitter_ms = 0;
                    cfg.follow_up_scale = 0.01;
                }
                let t0 = Instant::now();
                let keys = config::signing_keys(&p)?;
                let stats = produce_world(&conn, &cfg, live.is_some(), keys, &mut |_, _| {})?;
                println!(
                    "world: {} records into {} at {} ({:.0} records/s)",
                    stats.records,
                    tidemark_jobs::broker::topics::INGRESS,
                    conn.brokers,
                    stats.records as f64 / t0.elapsed().as_secs_f64().max(1e-9)
                );
                Ok(())
            } else if let Some(dir) = to.strip_prefix("file:") {
                if live.is_some() {
                    bail!("--live needs --to kafka");
                }
                world_to_file(&cfg, Path::new(dir))
            } else {
                bail!("unsupported --to {to:?}: expected kafka or file:DIR")
            }
        }
        Cmd::Broker { cmd } => broker_cmd(cmd),
        Cmd::Run {
            profile,
            ingress,
            data,
            brokers,
            from,
            until,
            no_publish,
            cold_start,
            cluster,
        } => {
            let p = config::load(&profile)?;
            let data = config::data_root(data, &p.wiring.object_store)?;
            let cluster = cluster.cluster(p.wiring.workers)?;
            let (ingress, publish) = if ingress == "kafka" {
                let conn = p.kafka_conn(brokers.as_deref());
                let start = match from.as_str() {
                    "beginning" => KafkaStart::Beginning,
                    o => KafkaStart::Offsets(parse_offsets(o).map_err(anyhow::Error::msg)?),
                };
                let end = match until.as_str() {
                    "none" => KafkaEnd::Unbounded,
                    "latest" => KafkaEnd::Latest,
                    o => KafkaEnd::Offsets(parse_offsets(o).map_err(anyhow::Error::msg)?),
                };
                let ingress = Ingress::Kafka {
                    conn: conn.clone(),
                    topic: tidemark_jobs::broker::topics::INGRESS.to_owned(),
                    start,
                    end,
                };
                (ingress, (!no_publish).then_some(conn))
            } else {
                (Ingress::parse(&ingress)?, None)
            };
            // SIGTERM / SIGINT: stop reading, make outputs durable, commit, exit 0.
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                signal_hook::flag::register(sig, stop.clone())
                    .context("cannot install the signal handler")?;
            }
            let served = tidemark_jobs::metrics::start(&p, cluster.process, &ingress)?;
            if let Some((_, endpoint)) = &served {
                eprintln!(
                    "run: metrics on http://{}/metrics (health: /healthz, /readyz)",
                    endpoint.addr
                );
            }
            let opts = RunOptions {
                cluster,
                decisions: true,
                publish,
                stop,
                cold_start,
                metrics: served.as_ref().map(|(m, _)| m.clone()),
                ..RunOptions::threads(1)
            };
            match run_with(&p, &ingress, &data, &opts)? {
                Some(out) => print_run(&out),
                None => println!("run: process {} finished", opts.cluster.process),
            }
            Ok(())
        }
        Cmd::Verify { data } => verify_cmd(&config::data_root_from_env(data)?),
        Cmd::Dataset { cmd } => tidemark_jobs::dataset::cli::execute(cmd),
        Cmd::Backfill { cmd } => tidemark_jobs::govcli::backfill(cmd),
        Cmd::Gov { cmd } => tidemark_jobs::govcli::gov(cmd),
        Cmd::Replay {
            profile,
            data,
            out,
            from,
            to,
            workers,
        } => {
            let data = config::data_root_from_env(data)?;
            let profile = match profile {
                Some(p) => p,
                None => tidemark_jobs::replay::recorded_profile(&data)?,
            };
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
            let data = config::data_root_from_env(data)?;
            let rt = tokio::runtime::Runtime::new()?;
            let store = WriteOnceStore::open(&data, rt.handle().clone())?;
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
                None => bail!("no audit record for {id} under {data}"),
            }
        }
        Cmd::Demo {
            events,
            rate,
            file,
            profile,
            workers,
            dir,
        } => {
            let (root, tmp) = demo_root(dir)?;
            if file {
                file_demo(events, workers, &root, &profile)?;
            } else {
                kafka_demo(events, rate, workers, &root, &profile)?;
            }
            println!("demo: outputs in {}", root.display());
            if tmp.is_some() {
                println!("demo: (temporary directory removed on exit; pass --dir to keep it)");
            }
            Ok(())
        }
    }
}

fn broker_cmd(cmd: BrokerCmd) -> Result<()> {
    match cmd {
        BrokerCmd::Start {
            profile,
            port,
            storage,
            state,
        } => {
            let p = config::load(&profile)?;
            std::fs::create_dir_all(&state)
                .with_context(|| format!("cannot create {}", state.display()))?;
            let state = std::fs::canonicalize(&state)?;
            let pidfile = state.join("broker.pid");
            if let Ok(pid) = std::fs::read_to_string(&pidfile) {
                bail!(
                    "a broker may already run (pid {}, {}); stop it with `tidemark broker stop`",
                    pid.trim(),
                    pidfile.display()
                );
            }
            let storage = match storage.as_str() {
                "memory" => Storage::Memory,
                "sqlite" => Storage::Sqlite(state.clone()),
                s => bail!("unknown --storage {s:?}: memory or sqlite"),
            };
            let b = LocalBroker::start(port, storage, &state.join("broker.log"))?;
            let addr = b.addr();
            let conn = p.kafka_conn(Some(&addr));
            if let Err(e) = ensure_topics(&conn, &p) {
                drop(b);
                return Err(e);
            }
            let pid = detach(b).context("broker process vanished")?;
            std::fs::write(&pidfile, format!("{pid}\n"))?;
            println!("broker: tansu pid {pid} on {addr}; topics:");
            for (t, n) in topic_layout(&p) {
                println!("  {t} ({n} partitions)");
            }
            println!(
                "broker: stop with `tidemark broker stop --state {}`",
                state.display()
            );
            Ok(())
        }
        BrokerCmd::Stop { state } => {
            let pidfile = state.join("broker.pid");
            let pid: u32 = std::fs::read_to_string(&pidfile)
                .with_context(|| format!("no broker pid file {}", pidfile.display()))?
                .trim()
                .parse()
                .context("bad pid file")?;
            let r = stop_pid(pid, std::time::Duration::from_secs(10));
            std::fs::remove_file(&pidfile)?;
            r?;
            println!("broker: stopped pid {pid}");
            Ok(())
        }
        BrokerCmd::Topics { profile, brokers } => {
            let p = config::load(&profile)?;
            let conn = p.kafka_conn(brokers.as_deref());
            ensure_topics(&conn, &p)?;
            for (t, n) in topic_layout(&p) {
                println!("{t}: {n} partitions on {}", conn.brokers);
            }
            Ok(())
        }
    }
}
