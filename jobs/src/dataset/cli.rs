//! The `tidemark dataset` subcommands.

use anyhow::{bail, Result};
use clap::Subcommand;

use super::{build, dataset_dir, open_store, verify, with_features, Built, DatasetRequest, Target};
use crate::config;
use crate::demo::parse_time;
use tidemark_sinks::Root;

/// `tidemark dataset …`.
#[derive(Subcommand)]
pub enum DatasetCmd {
    /// Build a training dataset: one row per decision event in [FROM, TO), computed by the
    /// decision dataflow over the archive, with labels as known at LABELS_AS_OF.
    Build {
        /// Data root: a directory, `file://DIR` or `s3://BUCKET/PREFIX` (default:
        /// `TIDEMARK__WIRING__OBJECT_STORE`).
        #[arg(long)]
        data: Option<Root>,
        /// First logical time (epoch ms or RFC 3339).
        #[arg(long)]
        from: String,
        /// End logical time, exclusive (epoch ms or RFC 3339).
        #[arg(long)]
        to: String,
        /// Labels as known at this time (epoch ms or RFC 3339, inclusive).
        #[arg(long)]
        labels_as_of: String,
        /// The feature revision: a profile name or file whose `[ofp]` and `[[features]]` are
        /// used (default: the base profile's).
        #[arg(long)]
        features: Option<String>,
        /// Base profile (default: the one recorded in DATA's run records).
        #[arg(long)]
        profile: Option<String>,
        /// Add a `split` column: train before this time, test from it.
        #[arg(long)]
        split_at: Option<String>,
        /// Worker threads (the files do not depend on it).
        #[arg(short = 'w', long, default_value_t = 1)]
        workers: usize,
        /// Write under this root instead of DATA (`<OUT>/ofs/datasets/<id>/`).
        #[arg(long)]
        out: Option<Root>,
    },
    /// Check a dataset's files against its manifest and every row against the online audit
    /// records; prints `rows=N mismatches=M`.
    Verify {
        /// Data root: a directory, `file://DIR` or `s3://BUCKET/PREFIX` (default:
        /// `TIDEMARK__WIRING__OBJECT_STORE`).
        #[arg(long)]
        data: Option<Root>,
        /// The root the dataset was written under, if not DATA.
        #[arg(long)]
        out: Option<Root>,
        /// Dataset id.
        dataset_id: String,
    },
}

/// The profile of a data root with an optional feature revision applied.
pub fn profile_for(
    data: &Root,
    profile: Option<String>,
    features: Option<&str>,
) -> Result<config::Profile> {
    let base = match profile {
        Some(p) => p,
        None => crate::replay::recorded_profile(data)?,
    };
    let mut p = config::load(&base)?;
    if let Some(f) = features {
        p = with_features(p, &config::load(f)?);
        config::validate(&p)?;
    }
    Ok(p)
}

/// Prints what a build produced.
pub fn print_built(b: &Built, root: &Root) {
    let m = &b.manifest;
    let l = &m.stats.labels;
    println!(
        "dataset {}: {} rows (labels: fraud {}, legit {}, unknown {}) in {} files under {}/{}{}",
        m.dataset_id,
        m.rows,
        l.fraud,
        l.legit,
        l.unknown,
        m.files.len(),
        root,
        b.manifest_path.trim_end_matches("/manifest.json"),
        if b.existed {
            " (already built: nothing written)"
        } else {
            ""
        }
    );
    println!("dataset hash {}", m.dataset_hash);
    match &m.certificate {
        Some(c) if c.same_feature_revision => println!(
            "zero-skew certificate: {} (every row against the online audit)",
            c.summary()
        ),
        Some(c) => println!(
            "against the online audit (a different feature revision: shared features, score and decision compared): {}",
            c.summary()
        ),
        None => println!("no online audit for the range: no zero-skew check"),
    }
    if let Some(d) = m
        .certificate
        .as_ref()
        .and_then(|c| c.first_difference.as_ref())
    {
        println!("first difference: {d}");
    }
}

/// Runs a `dataset` subcommand.
pub fn execute(cmd: DatasetCmd) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    match cmd {
        DatasetCmd::Build {
            data,
            from,
            to,
            labels_as_of,
            features,
            profile,
            split_at,
            workers,
            out,
        } => {
            let data = config::data_root_from_env(data)?;
            let p = profile_for(&data, profile, features.as_deref())?;
            let req = DatasetRequest {
                from: parse_time(&from)?,
                to: parse_time(&to)?,
                labels_as_of: parse_time(&labels_as_of)?,
                split_at: split_at.as_deref().map(parse_time).transpose()?,
                workers,
            };
            let store = open_store(&data, &rt)?;
            let root_path = out.unwrap_or_else(|| data.clone());
            let target = Target {
                root: open_store(&root_path, &rt)?,
                dir: None,
            };
            let built = build(&p, &store, &target, &req)?;
            print_built(&built, &root_path);
            Ok(())
        }
        DatasetCmd::Verify {
            data,
            out,
            dataset_id,
        } => {
            let data = config::data_root_from_env(data)?;
            let store = open_store(&data, &rt)?;
            let root = match &out {
                Some(o) => open_store(o, &rt)?,
                None => store.clone(),
            };
            let v = verify(&store, &root, &dataset_dir(&dataset_id)?)?;
            for p in &v.problems {
                eprintln!("dataset verify: {p}");
            }
            match &v.certificate {
                Some(c) => {
                    println!("{}", c.summary());
                    if let Some(d) = &c.first_difference {
                        println!("first difference: {d}");
                    }
                    if !c.same_feature_revision {
                        println!("(feature revision differs from the online run's: shared features, score and decision compared)");
                    }
                }
                None if v.problems.is_empty() => {
                    println!("rows={} (no online audit for the range)", v.rows)
                }
                None => {}
            }
            if !v.ok() {
                bail!("dataset {dataset_id} failed verification");
            }
            println!("dataset {dataset_id}: OK");
            Ok(())
        }
    }
}
