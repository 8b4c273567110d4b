//! Declared backfills (SPEC §10, docs/datasets.md): a new feature revision computed over
//! history into a derived, dataset-shaped version under `ofs/backfills/<id>/`, never over a
//! primary truth.
//!
//! Lifecycle: `backfill declare` resolves a declaration file (scope, purpose, basis, outputs)
//! into a self-contained `backfill.declared` fact under `gov/backfills/<id>/` (the feature
//! definitions inline, the basis as archive manifest digests); `backfill run` computes it with
//! the dataset builder and records a `backfill.completed` receipt beside it. Both facts are
//! published on `fp.bus.control.v1` when a broker is given. Declaring the same thing again, or
//! running a completed backfill again, changes nothing; a different declaration under an
//! existing id is refused.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use tidemark_dataflows::ofp::{FeatureDef, OfpPolicy};
use tidemark_sinks::WriteOnceStore;

use crate::config::{self, Profile};
use crate::dataset::manifest::BasisRef;
use crate::dataset::{build, inputs, Built, DatasetRequest, Target};
use crate::demo::parse_time;
use crate::gov::{self, GovFact, GovKind, Recorded};

/// Where derived backfill versions are written.
pub const BACKFILLS_PREFIX: &str = "ofs/backfills";

/// A declaration file (TOML), as a data engineer writes it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclarationFile {
    /// The backfill id (letters, digits, `-`, `_`).
    pub id: String,
    /// Why it is run.
    pub purpose: String,
    /// First logical time of the scope (RFC 3339 or epoch ms).
    pub from: TimeSpec,
    /// End of the scope, exclusive.
    pub to: TimeSpec,
    /// The feature revision to compute: a profile name or file whose `[ofp]` and
    /// `[[features]]` are used (a relative path is relative to the declaration file).
    pub features: String,
    /// Labels as known at this time in the derived rows (default: the end of the scope).
    #[serde(default)]
    pub labels_as_of: Option<TimeSpec>,
    /// Archive basis ids it reads (default: every archive manifest of the root). Must be
    /// exactly the root's manifests when it runs.
    #[serde(default)]
    pub basis: Option<Vec<String>>,
}

/// A time in a declaration: epoch milliseconds or an RFC 3339 string.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum TimeSpec {
    /// Epoch milliseconds.
    Ms(u64),
    /// RFC 3339 (or epoch milliseconds as a string).
    Text(String),
}

impl TimeSpec {
    fn ms(&self) -> Result<u64> {
        match self {
            TimeSpec::Ms(ms) => Ok(*ms),
            TimeSpec::Text(s) => parse_time(s),
        }
    }
}

/// The resolved declaration: the `detail` of the `backfill.declared` fact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declaration {
    /// Backfill id.
    pub backfill_id: String,
    /// Purpose.
    pub purpose: String,
    /// Scope `[from, to)` in logical ms.
    pub scope: Scope,
    /// The archive manifests it reads, with their digests.
    pub basis: Vec<BasisRef>,
    /// What it computes.
    pub outputs: Outputs,
    /// The base profile (graph, DF, bundle and the rest come from it).
    pub base_profile: String,
    /// Where the derived version is written.
    pub target: String,
}

/// A time range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// Inclusive start (ms).
    pub from: u64,
    /// Exclusive end (ms).
    pub to: u64,
}

/// The outputs of a backfill: a feature revision, inline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outputs {
    /// `features@<rev>:<digest>`.
    pub feature_rev: String,
    /// OFP section.
    pub ofp: OfpPolicy,
    /// Every feature definition of the revision.
    pub features: Vec<FeatureDef>,
    /// Labels as known at (ms).
    pub labels_as_of: u64,
}

fn check_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("backfill id {id:?}: use 1 to 64 letters, digits, '-' or '_'");
    }
    Ok(())
}

/// `gov/backfills/<id>/declaration.json`.
pub fn declaration_path(id: &str) -> String {
    format!("gov/backfills/{id}/declaration.json")
}

/// `gov/backfills/<id>/receipt.json`.
pub fn receipt_path(id: &str) -> String {
    format!("gov/backfills/{id}/receipt.json")
}

fn profile_of(base: &Profile, d: &Declaration) -> Result<Profile> {
    let mut p = base.clone();
    p.ofp = d.outputs.ofp.clone();
    p.features = d.outputs.features.clone();
    config::validate(&p)?;
    Ok(p)
}

/// Resolves a declaration file against the data root.
pub fn resolve(
    file: &Path,
    store: &WriteOnceStore,
    base_profile: &str,
) -> Result<(Declaration, Profile)> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading declaration {}", file.display()))?;
    let f: DeclarationFile =
        toml::from_str(&text).with_context(|| format!("invalid declaration {}", file.display()))?;
    check_id(&f.id)?;
    let base = config::load(base_profile)?;
    let features_src = if f.features.contains('/') || f.features.ends_with(".toml") {
        let p = PathBuf::from(&f.features);
        let p = if p.is_relative() {
            file.parent().unwrap_or(Path::new(".")).join(p)
        } else {
            p
        };
        p.to_string_lossy().into_owned()
    } else {
        f.features.clone()
    };
    let fp = config::load(&features_src)?;
    let (from, to) = (f.from.ms()?, f.to.ms()?);
    let labels_as_of = f
        .labels_as_of
        .as_ref()
        .map(TimeSpec::ms)
        .transpose()?
        .unwrap_or(to);
    let mut d = Declaration {
        backfill_id: f.id.clone(),
        purpose: f.purpose,
        scope: Scope { from, to },
        basis: Vec::new(),
        outputs: Outputs {
            feature_rev: fp.feature_rev(),
            ofp: fp.ofp.clone(),
            features: fp.features.clone(),
            labels_as_of,
        },
        base_profile: base_profile.to_owned(),
        target: format!("{BACKFILLS_PREFIX}/{}", f.id),
    };
    let p = profile_of(&base, &d)?;
    let req = request(&d, 1);
    let ins = inputs(store, &p, &req)?;
    if let Some(ids) = &f.basis {
        let mut want = ids.clone();
        want.sort();
        let have: Vec<String> = ins.basis.iter().map(|b| b.basis_id.clone()).collect();
        if want != have {
            bail!("declared basis {want:?} is not the root's archive basis {have:?}");
        }
    }
    d.basis = ins.basis;
    Ok((d, p))
}

fn request(d: &Declaration, workers: usize) -> DatasetRequest {
    DatasetRequest {
        from: d.scope.from,
        to: d.scope.to,
        labels_as_of: d.outputs.labels_as_of,
        split_at: None,
        workers,
    }
}

/// Declares a backfill; publishes the fact through `conn` when given.
pub fn declare(
    store: &WriteOnceStore,
    file: &Path,
    base_profile: &str,
    conn: Option<&tidemark_sources::KafkaConn>,
) -> Result<(Declaration, Recorded)> {
    let (d, _) = resolve(file, store, base_profile)?;
    let fact = GovFact::now(
        GovKind::BackfillDeclared,
        &d.backfill_id,
        serde_json::to_value(&d)?,
    );
    let path = declaration_path(&d.backfill_id);
    let rec = gov::record(store, &path, &fact)?;
    if let (Recorded::Written, Some(c)) = (rec, conn) {
        gov::publish(c, &[&fact])?;
    }
    Ok((d, rec))
}

/// What `backfill run` did.
#[derive(Debug)]
pub enum RunResult {
    /// Already complete: the receipt is there, nothing was computed.
    AlreadyComplete(GovFact),
    /// Computed now.
    Completed(Box<Built>, GovFact),
}

/// Runs a declared backfill.
pub fn run(
    store: &WriteOnceStore,
    id: &str,
    workers: usize,
    conn: Option<&tidemark_sources::KafkaConn>,
) -> Result<RunResult> {
    check_id(id)?;
    let declared = gov::read(store, &declaration_path(id))?.ok_or_else(|| {
        anyhow!("no backfill {id} declared under gov/backfills/ (declare it first)")
    })?;
    if let Some(receipt) = gov::read(store, &receipt_path(id))? {
        return Ok(RunResult::AlreadyComplete(receipt));
    }
    let d: Declaration = serde_json::from_value(declared.detail.clone())
        .with_context(|| format!("unreadable declaration of backfill {id}"))?;
    let p = profile_of(&config::load(&d.base_profile)?, &d)?;
    if p.feature_rev() != d.outputs.feature_rev {
        bail!(
            "backfill {id}: the declared features no longer give revision {}",
            d.outputs.feature_rev
        );
    }
    let req = request(&d, workers);
    let ins = inputs(store, &p, &req)?;
    if ins.basis != d.basis {
        bail!(
            "backfill {id}: the root's archive basis changed since it was declared (declare a new backfill)"
        );
    }
    if !d.target.starts_with(&format!("{BACKFILLS_PREFIX}/")) {
        bail!(
            "backfill {id}: target {} is outside {BACKFILLS_PREFIX}/",
            d.target
        );
    }
    let target = Target {
        root: store.clone(),
        dir: Some(d.target.clone()),
    };
    let built = build(&p, store, &target, &req)?;
    let m = &built.manifest;
    let manifest_bytes = store.get(&built.manifest_path)?;
    let receipt = GovFact::now(
        GovKind::BackfillCompleted,
        id,
        serde_json::json!({
            "declaration_sha256": tidemark_operators::hashing::sha256_hex(&declared.to_bytes()),
            "manifest": built.manifest_path,
            "manifest_sha256": tidemark_operators::hashing::sha256_hex(&manifest_bytes),
            "dataset_id": m.dataset_id,
            "rows": m.rows,
            "dataset_hash": m.dataset_hash,
            "feature_rev": m.inputs.feature_rev,
        }),
    );
    gov::record(store, &receipt_path(id), &receipt)?;
    if let Some(c) = conn {
        gov::publish(c, &[&receipt])?;
    }
    Ok(RunResult::Completed(Box::new(built), receipt))
}
