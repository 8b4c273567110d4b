//! `tidemark dataset build | verify`: training datasets from the archive (SPEC §10,
//! docs/datasets.md).
//!
//! A build reruns the decision dataflow — the same `decide` the online run uses — over the
//! archive for `[from, to)` (warm-up from `from - max_window`), joins each decision with its
//! label as known at `labels_as_of` ([`LabelBook`]), and writes the rows once, sorted, into
//! fixed buckets under `ofs/datasets/<dataset_id>/` with a [`DatasetManifest`]. It then reads
//! the files back in row order to compute the dataset hash and statistics and to compare every
//! row with the online audit record of the same decision (the zero-skew certificate).

pub mod check;
pub mod cli;
pub mod manifest;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use timely::dataflow::operators::vec::{Filter, Map};
use timely::dataflow::operators::Inspect;

use tidemark_dataflows::labels::{LabelBook, LABEL_TYPE};
use tidemark_dataflows::pipeline::{decide, needed_from};
use tidemark_operators::dataset::{DatasetRow, Split};
use tidemark_operators::hashing::{bucket_of, sha256_hex};
use tidemark_operators::{CloseIntervals, Failures};
use tidemark_sinks::dataset::DatasetLayout;
use tidemark_sinks::layout::MANIFEST_PREFIX;
use tidemark_sinks::manifest::{FileEntry, FileKind};
use tidemark_sinks::parquet::archive_rows_of_type;
use tidemark_sinks::writers::{write_closed, ClosedFormat};
use tidemark_sinks::{Root, WriteOnceStore};
use tidemark_sources::archive::archive_source;

use crate::config::{digest, Profile};
use crate::progress::Progress;
use crate::replay::{archive_inputs, manifests};
use crate::run::decision_config;
use check::{check_rows, AuditRows, MergedRows};
use manifest::{
    BasisRef, ColumnType, DatasetFile, DatasetInputs, DatasetManifest, DATASET_BUCKETS,
    DATASET_FORMAT,
};

/// The prefix of training datasets.
pub const DATASETS_PREFIX: &str = "ofs/datasets";

/// What to build.
#[derive(Clone, Debug)]
pub struct DatasetRequest {
    /// First logical time (inclusive, ms).
    pub from: u64,
    /// End logical time (exclusive, ms).
    pub to: u64,
    /// Labels as known at this time (inclusive, epoch ms).
    pub labels_as_of: u64,
    /// Time split point.
    pub split_at: Option<u64>,
    /// Worker threads.
    pub workers: usize,
}

/// Where a dataset is written and what it is called there.
#[derive(Clone, Debug)]
pub struct Target {
    /// The root the files are written under (the data root unless `--out`).
    pub root: WriteOnceStore,
    /// The directory under the root (`ofs/datasets/<id>` or `ofs/backfills/<id>`); `None`:
    /// `ofs/datasets/<dataset_id>`.
    pub dir: Option<String>,
}

/// The outcome of a build.
#[derive(Clone, Debug)]
pub struct Built {
    /// The manifest.
    pub manifest: DatasetManifest,
    /// Its path under the target root.
    pub manifest_path: String,
    /// True when the dataset already existed (a rerun: nothing was written).
    pub existed: bool,
    /// Wall seconds.
    pub wall_secs: f64,
}

/// Applies a feature revision (`--features PROFILE_OR_FILE`): its `[ofp]` and `[[features]]`
/// replace the profile's; everything else (IG, archive, graph, DF, DLA, bundle) stays.
pub fn with_features(mut profile: Profile, features: &Profile) -> Profile {
    profile.ofp = features.ofp.clone();
    profile.features = features.features.clone();
    profile
}

/// The inputs that determine a dataset over `data` with `profile`.
pub fn inputs(
    store: &WriteOnceStore,
    profile: &Profile,
    req: &DatasetRequest,
) -> Result<DatasetInputs> {
    if req.from >= req.to {
        bail!(
            "dataset range is empty: --from {} is not before --to {}",
            req.from,
            req.to
        );
    }
    let bundle = profile.load_bundle()?;
    let mut basis = Vec::new();
    for p in store.list(MANIFEST_PREFIX)? {
        let bytes = store.get(&p)?;
        let m: tidemark_sinks::Manifest =
            serde_json::from_slice(&bytes).with_context(|| format!("unreadable manifest {p}"))?;
        basis.push(BasisRef {
            basis_id: m.basis_id,
            manifest_sha256: sha256_hex(&bytes),
        });
    }
    if basis.is_empty() {
        bail!(
            "no archive manifest under {MANIFEST_PREFIX}/ in {}: a dataset reads a sealed archive (a bounded run writes the manifest)",
            store.description()
        );
    }
    basis.sort();
    Ok(DatasetInputs {
        format: DATASET_FORMAT.to_owned(),
        basis,
        feature_rev: profile.feature_rev(),
        feature_digest: digest(&(&profile.ofp, &profile.features)),
        bundle_digest: bundle.digest.clone(),
        policy_rev: profile.decision_policy_rev(&bundle),
        from: req.from,
        to: req.to,
        labels_as_of: req.labels_as_of,
        split_at: req.split_at,
    })
}

/// The logical-time range `[first, last]` of a sealed archive's rows (from its manifests'
/// file entries), or `None` when it holds no row.
pub fn archive_range(store: &WriteOnceStore) -> Result<Option<(u64, u64)>> {
    let (mut lo, mut hi) = (u64::MAX, 0u64);
    for m in manifests(store)? {
        for f in m.files.iter().filter(|f| f.kind == FileKind::Archive) {
            lo = lo.min(f.min_logical_time.unwrap_or(u64::MAX));
            hi = hi.max(f.max_logical_time.unwrap_or(0));
        }
    }
    Ok((lo <= hi).then_some((lo, hi)))
}

/// Reads every label assertion of the archive (whatever its logical time: a label may be
/// archived long after its event) into a [`LabelBook`] for `labels_as_of`. Each file's sha256
/// is checked against its manifest entry; only label rows are decoded.
fn label_book(
    store: &WriteOnceStore,
    files: &[(String, String)],
    labels_as_of: u64,
    progress: &Progress,
) -> Result<LabelBook> {
    let mut book = LabelBook::new(labels_as_of);
    for (path, sha) in files {
        let bytes = store.get(path)?;
        if sha256_hex(&bytes) != *sha {
            bail!(
                "archive {path}: sha256 does not match its manifest entry: the archive was altered"
            );
        }
        for a in archive_rows_of_type(bytes, path, LABEL_TYPE)? {
            book.offer(&a).map_err(|e| anyhow!("archive {path}: {e}"))?;
        }
        progress.inc();
    }
    Ok(book)
}

/// Builds (or finds) the dataset of `req` over the data root `data` with `profile`.
pub fn build(
    profile: &Profile,
    data: &WriteOnceStore,
    target: &Target,
    req: &DatasetRequest,
) -> Result<Built> {
    let t0 = Instant::now();
    let inputs = inputs(data, profile, req)?;
    let id = inputs.id();
    let dir = target
        .dir
        .clone()
        .unwrap_or_else(|| format!("{DATASETS_PREFIX}/{id}"));
    let manifest_path = format!("{dir}/manifest.json");
    if let Ok(bytes) = target.root.get(&manifest_path) {
        let m: DatasetManifest = serde_json::from_slice(&bytes)
            .with_context(|| format!("unreadable dataset manifest {manifest_path}"))?;
        if m.inputs != inputs {
            bail!(
                "{manifest_path} exists for other inputs (dataset {}): a dataset is written once",
                m.dataset_id
            );
        }
        return Ok(Built {
            manifest: m,
            manifest_path,
            existed: true,
            wall_secs: t0.elapsed().as_secs_f64(),
        });
    }
    let mut dcfg = decision_config(profile, req.from, Some(req.to))?;
    dcfg.details = true;
    let layout = DatasetLayout {
        key_fields: dcfg.key_fields(),
        features: dcfg.features.iter().map(|f| f.name.clone()).collect(),
        split: req.split_at.is_some(),
    };
    layout.check().map_err(|e| anyhow!(e))?;

    let ms = manifests(data)?;
    let (files, reader) = archive_inputs(
        ms.iter()
            .flat_map(|m| m.files.iter().map(|f| (f, m.archive_interval_ms))),
        data,
    );
    // Labels first (every archive file), then the decisions (files up to `to`).
    let reading = files.iter().filter(|(t, _)| *t < req.to).count() as u64;
    let progress = Progress::new("dataset: archive files read", files.len() as u64 + reading);
    let archive: Vec<(String, String)> = ms
        .iter()
        .flat_map(|m| m.files.iter())
        .filter(|f| f.kind == FileKind::Archive)
        .map(|f| (f.path.clone(), f.sha256.clone()))
        .collect();
    let labels = Arc::new(label_book(data, &archive, req.labels_as_of, &progress)?);
    let counting = {
        let (reader, progress) = (reader.clone(), progress.clone());
        let r: tidemark_sources::archive::ArchiveReader = Arc::new(move |p: &str| {
            progress.inc();
            reader(p)
        });
        r
    };

    let dcfg = Arc::new(dcfg);
    let warm = req.from.saturating_sub(dcfg.max_window_ms());
    let failures = Failures::default();
    let entries: Arc<Mutex<Vec<FileEntry>>> = Arc::default();
    {
        let (failures, entries, root) = (failures.clone(), entries.clone(), target.root.clone());
        let (layout, dir, split_at, to) = (layout.clone(), dir.clone(), req.split_at, req.to);
        let guards = timely::execute(timely::Config::process(req.workers.max(1)), move |worker| {
            let (files, reader, dcfg) = (files.clone(), counting.clone(), dcfg.clone());
            let (labels, entries, dir) = (labels.clone(), entries.clone(), dir.clone());
            worker.dataflow::<u64, _, _>(|scope| {
                let rows = archive_source(scope, files, reader, 0, Some(to), failures.clone())
                    .filter(move |a| needed_from(a, warm));
                let outs = decide(rows, dcfg, failures.clone());
                let chunks = outs
                    .details
                    .map(move |detail| DatasetRow {
                        label: labels.get(&detail.event_id).cloned(),
                        split: split_at.map(|s| Split::of(detail.logical_time, s)),
                        detail,
                    })
                    .close_intervals("CloseDataset", u64::MAX, |r: &DatasetRow| {
                        (
                            r.detail.logical_time,
                            bucket_of(&r.detail.event_id, DATASET_BUCKETS),
                        )
                    });
                let format = ClosedFormat {
                    name: "WriteDataset",
                    kind: FileKind::Dataset,
                    path: Box::new(move |_, bucket| format!("{dir}/bucket={bucket:03}.parquet")),
                    schema: layout.schema(),
                    columns: layout.columns(),
                    time: |r: &DatasetRow| r.detail.logical_time,
                };
                write_closed(chunks, format, root.clone(), failures.clone()).inspect(move |f| {
                    if let Ok(mut e) = entries.lock() {
                        e.push(f.clone());
                    }
                });
            });
        })
        .map_err(|e| anyhow!("cannot start timely workers: {e}"))?;
        for r in guards.join() {
            r.map_err(|e| anyhow!("worker failed: {e}"))?;
        }
    }
    progress.finish();
    let errors = failures.take_sorted();
    if !errors.is_empty() {
        bail!("dataset build failed:\n  {}", errors.join("\n  "));
    }
    let mut files: Vec<DatasetFile> = entries
        .lock()
        .map_err(|_| anyhow!("bug: dataset file list poisoned"))?
        .iter()
        .map(|f| DatasetFile {
            path: f
                .path
                .strip_prefix(&format!("{dir}/"))
                .unwrap_or(&f.path)
                .to_owned(),
            sha256: f.sha256.clone(),
            bytes: f.bytes,
            rows: f.rows,
        })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));

    // Read back in row order: hash, statistics, and the zero-skew check against the audit.
    let paths: Vec<String> = files.iter().map(|f| format!("{dir}/{}", f.path)).collect();
    let rows = MergedRows::open(&target.root, &paths, &layout)?;
    let audit = AuditRows::open(data, req.from, req.to)?;
    let audit = (!audit.is_empty()).then_some(audit);
    let check = check_rows(
        rows,
        &layout,
        audit,
        &inputs.policy_rev,
        &inputs.feature_rev,
    )?;
    let schema = layout.schema();
    let manifest = DatasetManifest {
        format: DATASET_FORMAT.to_owned(),
        dataset_id: id,
        inputs,
        columns: schema
            .fields()
            .iter()
            .map(|f| ColumnType {
                name: f.name().clone(),
                r#type: f.data_type().to_string(),
                nullable: f.is_nullable(),
            })
            .collect(),
        layout,
        buckets: DATASET_BUCKETS,
        row_group_rows: tidemark_sinks::parquet::ROW_GROUP_ROWS,
        rows: check.rows,
        files,
        dataset_hash: check.hash,
        stats: check.stats,
        certificate: check.certificate,
    };
    target.root.put_once(&manifest_path, manifest.to_bytes())?;
    Ok(Built {
        manifest,
        manifest_path,
        existed: false,
        wall_secs: t0.elapsed().as_secs_f64(),
    })
}

/// What `dataset verify` found.
#[derive(Clone, Debug)]
pub struct Verified {
    /// Problems with the files (empty: the files are the manifest's).
    pub problems: Vec<String>,
    /// The fresh comparison with the online audit, when the root has one for the range.
    pub certificate: Option<manifest::Certificate>,
    /// Rows read.
    pub rows: u64,
}

impl Verified {
    /// True when the files match and no row differs from the online audit.
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.certificate.as_ref().is_none_or(|c| c.mismatches == 0)
    }
}

/// Checks the dataset at `dir` (under `root`) against its manifest, the archive basis in
/// `data`, and the online audit in `data`.
pub fn verify(data: &WriteOnceStore, root: &WriteOnceStore, dir: &str) -> Result<Verified> {
    let manifest_path = format!("{dir}/manifest.json");
    let bytes = root
        .get(&manifest_path)
        .with_context(|| format!("no dataset manifest at {manifest_path}"))?;
    let m: DatasetManifest = serde_json::from_slice(&bytes)
        .with_context(|| format!("unreadable dataset manifest {manifest_path}"))?;
    let mut problems = Vec::new();
    if m.inputs.id() != m.dataset_id {
        problems.push(format!(
            "dataset_id {} is not the hash of the manifest's inputs ({})",
            m.dataset_id,
            m.inputs.id()
        ));
    }
    // The archive the dataset was built from is still the one under `data`.
    for b in &m.inputs.basis {
        let p = tidemark_sinks::layout::manifest_file(&b.basis_id);
        match data.get(&p) {
            Ok(bytes) if sha256_hex(&bytes) == b.manifest_sha256 => {}
            Ok(_) => problems.push(format!("archive manifest {p} changed since the build")),
            Err(_) => problems.push(format!("archive manifest {p} is missing")),
        }
    }
    let listed: Vec<String> = m
        .files
        .iter()
        .map(|f| format!("{dir}/{}", f.path))
        .collect();
    for p in root.list(dir)? {
        if p != manifest_path && !listed.contains(&p) {
            problems.push(format!("{p} is not listed in the manifest"));
        }
    }
    for (f, p) in m.files.iter().zip(&listed) {
        match root.get(p) {
            Ok(bytes) => {
                let sha = sha256_hex(&bytes);
                if sha != f.sha256 || bytes.len() as u64 != f.bytes {
                    problems.push(format!(
                        "{p}: sha256 {sha} ({} bytes), manifest says {} ({} bytes)",
                        bytes.len(),
                        f.sha256,
                        f.bytes
                    ));
                }
            }
            Err(e) => problems.push(format!("{p}: {e}")),
        }
    }
    if !problems.is_empty() {
        return Ok(Verified {
            problems,
            certificate: None,
            rows: 0,
        });
    }
    let rows = MergedRows::open(root, &listed, &m.layout)?;
    let audit = AuditRows::open(data, m.inputs.from, m.inputs.to)?;
    let audit = (!audit.is_empty()).then_some(audit);
    let check = check_rows(
        rows,
        &m.layout,
        audit,
        &m.inputs.policy_rev,
        &m.inputs.feature_rev,
    )?;
    if check.rows != m.rows {
        problems.push(format!("{} rows, manifest says {}", check.rows, m.rows));
    }
    if check.hash != m.dataset_hash {
        problems.push(format!(
            "dataset hash {} differs from the manifest's {}",
            check.hash, m.dataset_hash
        ));
    }
    if check.stats != m.stats {
        problems.push("statistics differ from the manifest's".into());
    }
    Ok(Verified {
        problems,
        rows: check.rows,
        certificate: check.certificate,
    })
}

/// Where `verify` looks for a dataset id: `ofs/datasets/<id>`.
pub fn dataset_dir(id: &str) -> Result<String> {
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("{id:?} is not a dataset id");
    }
    Ok(format!("{DATASETS_PREFIX}/{id}"))
}

/// Opens a data root (a local directory or an S3 prefix).
pub fn open_store(root: impl Into<Root>, rt: &tokio::runtime::Runtime) -> Result<WriteOnceStore> {
    Ok(WriteOnceStore::open(&root.into(), rt.handle().clone())?)
}
