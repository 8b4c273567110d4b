//! The `tidemark backfill` and `tidemark gov` subcommands.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

use crate::backfill::{self, RunResult};
use crate::config;
use crate::dataset::cli::print_built;
use crate::dataset::open_store;
use crate::gov::{self, Recorded};
use tidemark_sinks::Root;

/// `tidemark backfill …`.
#[derive(Subcommand)]
pub enum BackfillCmd {
    /// Declare a backfill from a declaration file (TOML: id, purpose, from, to, features,
    /// optional labels_as_of and basis); recorded under gov/backfills/<id>/.
    Declare {
        /// Data root: a directory, `file://DIR` or `s3://BUCKET/PREFIX` (default:
        /// `TIDEMARK__WIRING__OBJECT_STORE`).
        #[arg(long)]
        data: Option<Root>,
        /// Base profile (default: the one recorded in DATA's run records).
        #[arg(long)]
        profile: Option<String>,
        /// Publish the fact on fp.bus.control.v1 of this Kafka cluster.
        #[arg(long)]
        brokers: Option<String>,
        /// The declaration file.
        file: PathBuf,
    },
    /// Run a declared backfill into ofs/backfills/<id>/ (a no-op once complete).
    Run {
        /// Data root: a directory, `file://DIR` or `s3://BUCKET/PREFIX` (default:
        /// `TIDEMARK__WIRING__OBJECT_STORE`).
        #[arg(long)]
        data: Option<Root>,
        /// Worker threads (the output does not depend on it).
        #[arg(short = 'w', long, default_value_t = 1)]
        workers: usize,
        /// Publish the receipt on fp.bus.control.v1 of this Kafka cluster.
        #[arg(long)]
        brokers: Option<String>,
        /// Backfill id.
        id: String,
    },
}

/// `tidemark gov …`.
#[derive(Subcommand)]
pub enum GovCmd {
    /// Print the governance facts of a data root in order.
    List {
        /// Data root: a directory, `file://DIR` or `s3://BUCKET/PREFIX` (default:
        /// `TIDEMARK__WIRING__OBJECT_STORE`).
        #[arg(long)]
        data: Option<Root>,
    },
}

/// A connection to `brokers` with the Kafka security settings of the environment
/// (`TIDEMARK__WIRING__KAFKA__…`, `TIDEMARK_KAFKA_…`).
fn conn(brokers: Option<String>) -> Result<Option<tidemark_sources::KafkaConn>> {
    match brokers {
        Some(b) => Ok(Some(config::load("local")?.kafka_conn(Some(&b)))),
        None => Ok(None),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?)
}

/// Runs a `backfill` subcommand.
pub fn backfill(cmd: BackfillCmd) -> Result<()> {
    let rt = runtime()?;
    match cmd {
        BackfillCmd::Declare {
            data,
            profile,
            brokers,
            file,
        } => {
            let data = config::data_root_from_env(data)?;
            let store = open_store(&data, &rt)?;
            let base = match profile {
                Some(p) => p,
                None => crate::replay::recorded_profile(&data)?,
            };
            let (d, rec) = backfill::declare(&store, &file, &base, conn(brokers)?.as_ref())?;
            let what = match rec {
                Recorded::Written => "declared",
                Recorded::Existing => "already declared (identical): nothing written",
            };
            println!(
                "backfill {}: {what} — {} over [{}, {}), basis {}, into {}",
                d.backfill_id,
                d.outputs.feature_rev,
                d.scope.from,
                d.scope.to,
                d.basis
                    .iter()
                    .map(|b| b.basis_id.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                d.target
            );
            Ok(())
        }
        BackfillCmd::Run {
            data,
            workers,
            brokers,
            id,
        } => {
            let data = config::data_root_from_env(data)?;
            let store = open_store(&data, &rt)?;
            match backfill::run(&store, &id, workers, conn(brokers)?.as_ref())? {
                RunResult::AlreadyComplete(r) => println!(
                    "backfill {id}: already complete (receipt recorded {}): nothing computed",
                    r.recorded_at
                ),
                RunResult::Completed(built, _) => {
                    print_built(&built, &data);
                    println!(
                        "backfill {id}: complete; receipt {}",
                        backfill::receipt_path(&id)
                    );
                }
            }
            Ok(())
        }
    }
}

/// Runs a `gov` subcommand.
pub fn gov(cmd: GovCmd) -> Result<()> {
    let rt = runtime()?;
    match cmd {
        GovCmd::List { data } => {
            let store = open_store(config::data_root_from_env(data)?, &rt)?;
            let facts = gov::list(&store)?;
            for (path, f) in &facts {
                println!(
                    "{}  {:<18}  {}  {}",
                    f.recorded_at,
                    f.kind.as_str(),
                    f.subject,
                    path
                );
            }
            println!("{} facts", facts.len());
            Ok(())
        }
    }
}
