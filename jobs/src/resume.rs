//! What a `run` finds in its data root before it starts (SPEC §12): the latest commit to resume
//! from, and the inputs a resumed run needs to continue exactly: dedup state from receipts,
//! decision state from the archive, the idle journal, and the identities of output records
//! already published above the commit's marks. (The lease that makes one run the writer of a
//! root is `tidemark_sinks::lease`.)

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use tidemark_operators::hashing::sha256_hex;
use tidemark_operators::ingest::Candidate;
use tidemark_operators::LogicalTime;
use tidemark_sinks::commit::{CommitRecord, CommitSeed};
use tidemark_sinks::layout::{COMMIT_PREFIX, IDLE_PREFIX, MANIFEST_PREFIX};
use tidemark_sinks::manifest::FileKind;
use tidemark_sinks::parquet::decode_receipts;
use tidemark_sinks::WriteOnceStore;
use tidemark_sources::archive::ArchiveReader;
use tidemark_sources::{IdleEntry, IdleJournal, SourceResume};

/// The state of a data root before a run.
pub struct RootState {
    /// The latest commit, if any.
    pub commit: Option<CommitRecord>,
    /// Manifests present (a completed bounded run sealed the root).
    pub manifests: Vec<String>,
}

impl RootState {
    /// Reads the latest commit and the manifests.
    pub fn load(store: &WriteOnceStore) -> Result<RootState> {
        let manifests = store.list(MANIFEST_PREFIX)?;
        let commits = store.list(COMMIT_PREFIX)?;
        let commit = match commits.last() {
            Some(p) => {
                let bytes = store.get(p)?;
                Some(
                    serde_json::from_slice::<CommitRecord>(&bytes)
                        .with_context(|| format!("unreadable commit {p}"))?,
                )
            }
            None => None,
        };
        Ok(RootState { commit, manifests })
    }
}

/// Everything a resumed run starts from.
pub struct Resume {
    /// The commit.
    pub commit: CommitRecord,
    /// Source state per partition, with the idle journal.
    pub source: SourceResume,
    /// Candidates dedup must have seen (from receipts of closed chunks).
    pub dedup_warm: Vec<Candidate>,
    /// Archive files (interval start, path) feeding decision state, with their digests.
    pub archive_files: Vec<(LogicalTime, String)>,
    /// Reads an archive file, checking its sha256 against the commit.
    pub archive_reader: ArchiveReader,
    /// The coordinator's seed.
    pub seed: CommitSeed,
}

/// Builds the resume inputs from `commit`. `dedup_ms` is the dedup window.
pub fn prepare(
    store: &WriteOnceStore,
    commit: CommitRecord,
    dedup_ms: u64,
    archive_interval_ms: u64,
) -> Result<Resume> {
    let resume_at: BTreeMap<u32, u64> = commit
        .partitions
        .iter()
        .map(|p| (p.partition, p.offset))
        .collect();
    let floor = commit.partitions.iter().map(|p| p.floor).min().unwrap_or(0);
    let warm_from = floor.saturating_sub(dedup_ms);
    let mut dedup_warm = Vec::new();
    for f in commit
        .files
        .iter()
        .filter(|f| f.kind == FileKind::Receipts)
        .filter(|f| f.max_logical_time.is_some_and(|m| m >= warm_from))
    {
        let bytes = store.get(&f.path)?;
        if sha256_hex(&bytes) != f.sha256 {
            bail!(
                "{}: sha256 does not match the commit: the root was altered",
                f.path
            );
        }
        for r in decode_receipts(bytes, &f.path)? {
            let before_resume = resume_at
                .get(&r.coord.partition)
                .is_some_and(|o| r.coord.offset < *o);
            if !before_resume {
                continue;
            }
            let c = Candidate::from_receipt(&r)
                .with_context(|| format!("receipt {:?} in {}", r.coord, f.path))?;
            if let Some(c) = c.filter(|c| c.logical_time >= warm_from) {
                dedup_warm.push(c);
            }
        }
    }
    dedup_warm.sort();
    let (archive_files, archive_reader) =
        crate::replay::archive_inputs(commit.files.iter().map(|f| (f, archive_interval_ms)), store);
    let source = SourceResume {
        partitions: commit
            .partitions
            .iter()
            .map(|p| (p.partition, p.clone()))
            .collect(),
        idle_history: idle_history(store)?,
    };
    let seed = CommitSeed {
        files: commit.files.clone(),
        basis_start: commit.basis_start.clone(),
        boundary: commit.boundary,
    };
    Ok(Resume {
        commit,
        source,
        dedup_warm,
        archive_files,
        archive_reader,
        seed,
    })
}

/// The idle journal: per partition, `(offset, floor)` sorted by offset.
pub fn idle_history(store: &WriteOnceStore) -> Result<BTreeMap<u32, Vec<(u64, LogicalTime)>>> {
    let mut out: BTreeMap<u32, Vec<(u64, LogicalTime)>> = BTreeMap::new();
    for p in store.list(IDLE_PREFIX)? {
        let bytes = store.get(&p)?;
        let entries: Vec<IdleEntry> =
            serde_json::from_slice(&bytes).with_context(|| format!("unreadable idle entry {p}"))?;
        for e in entries {
            out.entry(e.partition)
                .or_default()
                .push((e.offset, e.floor));
        }
    }
    for v in out.values_mut() {
        v.sort_unstable();
    }
    Ok(out)
}

/// A journal writing each batch of idle-floor raises write-once under `ckpt/idle/`.
pub fn idle_journal(store: WriteOnceStore) -> IdleJournal {
    Arc::new(move |entries: &[IdleEntry]| {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        // Named by the whole decision: the same raise re-decided is the same object.
        let path = format!(
            "{IDLE_PREFIX}/f={:016}-p={:05}-o={:012}.json",
            first.floor, first.partition, first.offset
        );
        let bytes = serde_json::to_vec(entries).map_err(|e| e.to_string())?;
        store
            .put_once(&path, bytes)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
}

/// What interrupted runs already published above a commit's marks.
#[derive(Clone, Debug, Default)]
pub struct PublishedTail {
    /// Identities of the records (skipped when regenerated).
    pub ids: Vec<u128>,
    /// The largest logical time among them: until the frontier passes it, new commits keep
    /// the resumed commit's marks (copies of outputs of later boundaries lie above them).
    pub max_time: Option<u64>,
}

/// The output records published at or above `commit`'s marks.
pub fn published_tail(
    config: &rdkafka::config::ClientConfig,
    commit: &CommitRecord,
) -> Result<PublishedTail> {
    let mut out = PublishedTail::default();
    for m in &commit.marks {
        let records = tidemark_sinks::kafka::published_since(
            config,
            &m.topic,
            m.partition,
            m.offset,
            Duration::from_secs(120),
        )
        .with_context(|| format!("reading what {}/{} already holds", m.topic, m.partition))?;
        for (id, ts) in records {
            out.ids.push(id);
            let t = ts.max(0) as u64;
            out.max_time = Some(out.max_time.map_or(t, |m| m.max(t)));
        }
    }
    Ok(out)
}
