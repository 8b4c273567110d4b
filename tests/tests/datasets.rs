//! Training datasets (SPEC §10): labels as of a cut-off against an independent oracle, every
//! row against the online audit (zero skew), byte-identical files across 1/2/4 workers and
//! reruns, tampering and changed definitions reported, and third-party readers (pyarrow,
//! DuckDB, polars) reading the files as-is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tidemark_jobs::config::{load, Profile};
use tidemark_jobs::dataset::check::MergedRows;
use tidemark_jobs::dataset::manifest::DatasetManifest;
use tidemark_jobs::dataset::{build, dataset_dir, verify, Built, DatasetRequest, Target};
use tidemark_jobs::world::WorldConfig;
use tidemark_operators::dataset::{DatasetRow, LabelValue, Split};
use tidemark_sinks::WriteOnceStore;
use tidemark_tests::{make_world, read_archive, read_audit, read_tree, run_ig};

const START: u64 = 1_767_225_600_000;
const MIN: u64 = 60_000;

fn profile() -> Profile {
    let mut p = load("local").unwrap();
    p.dla.audit_interval = Duration::from_secs(300);
    p.ofp.snapshot_interval = Duration::from_secs(120);
    p
}

/// A world with many fraud episodes and compressed follow-ups, so labels, reversals and
/// re-assertions all happen within its ~11 minutes; run online (file log, 2 workers).
fn setup(tmp: &Path, events: u64) -> (PathBuf, Profile) {
    let ingress = tmp.join("in");
    let cfg = WorldConfig {
        events,
        seed: 11,
        bad_rate: 0.01,
        fraud_rate: 0.03,
        rate_per_sec: 30.0,
        follow_up_scale: 0.05,
        ..Default::default()
    };
    make_world(&ingress, &cfg);
    let data = tmp.join("data");
    let p = profile();
    run_ig(&p, &ingress, &data, 2);
    (data, p)
}

struct Roots {
    _rt: tokio::runtime::Runtime,
    data: WriteOnceStore,
}

fn roots(data: &Path) -> Roots {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = WriteOnceStore::local(data, rt.handle().clone()).unwrap();
    Roots {
        _rt: rt,
        data: store,
    }
}

fn target(r: &Roots, root: &Path) -> Target {
    Target {
        root: WriteOnceStore::local(root, r._rt.handle().clone()).unwrap(),
        dir: None,
    }
}

fn rows_of(root: &WriteOnceStore, m: &DatasetManifest, dir: &str) -> Vec<DatasetRow> {
    let paths: Vec<String> = m
        .files
        .iter()
        .map(|f| format!("{dir}/{}", f.path))
        .collect();
    MergedRows::open(root, &paths, &m.layout)
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

fn ms(s: &str) -> u64 {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap()
        .timestamp_millis() as u64
}

/// The oracle: a plain loop over every label assertion in the archive. Per subject, the
/// assertion with the greatest (observed_ts, effective_ts, assertion id) among those observed
/// at or before the cut-off.
fn oracle_labels(data: &Path, as_of: u64) -> BTreeMap<String, (String, u64, u64, String)> {
    let mut best: BTreeMap<String, (String, u64, u64, String)> = BTreeMap::new();
    for a in read_archive(data) {
        if a.event_type.as_str() != "label.assertion.v1" {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&a.envelope).unwrap();
        let p = &v["payload"];
        let observed = ms(p["observed_ts"].as_str().unwrap());
        if observed > as_of {
            continue;
        }
        let cand = (
            p["label"].as_str().unwrap().to_owned(),
            ms(p["effective_ts"].as_str().unwrap()),
            observed,
            a.event_id.clone(),
        );
        let subject = p["subject_event_id"].as_str().unwrap().to_owned();
        let rank = |c: &(String, u64, u64, String)| (c.2, c.1, c.3.clone());
        match best.get(&subject) {
            Some(cur) if rank(cur) >= rank(&cand) => {}
            _ => {
                best.insert(subject, cand);
            }
        }
    }
    best
}

#[test]
fn rows_carry_labels_as_of_the_cutoff_and_equal_the_online_audit() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, p) = setup(tmp.path(), 20_000);
    let r = roots(&data);
    let (from, to, as_of, split_at) = (
        START + MIN,
        START + 6 * MIN,
        START + 8 * MIN,
        START + 4 * MIN,
    );
    let req = DatasetRequest {
        from,
        to,
        labels_as_of: as_of,
        split_at: Some(split_at),
        workers: 2,
    };
    let out = tmp.path().join("out");
    let built = build(&p, &r.data, &target(&r, &out), &req).unwrap();
    assert!(!built.existed);
    let m = &built.manifest;
    let dir = dataset_dir(&m.dataset_id).unwrap();
    let store = target(&r, &out).root;
    let rows = rows_of(&store, m, &dir);

    // One row per decision event in [from, to): exactly the online run's decisions there.
    let audit: Vec<_> = read_audit(&data)
        .into_iter()
        .filter(|a| a.logical_time >= from && a.logical_time < to)
        .collect();
    assert!(audit.len() > 2_000, "{} decisions in range", audit.len());
    assert_eq!(rows.len(), audit.len());
    assert_eq!(m.rows as usize, rows.len());

    // Every row equals the audit record of the same decision: features, score, decision.
    for (row, a) in rows.iter().zip(&audit) {
        let d = &row.detail;
        assert_eq!(
            (d.logical_time, d.event_id.as_str()),
            (a.logical_time, a.event_id.as_str())
        );
        assert_eq!(d.decision_id, a.decision_id);
        assert_eq!(d.decision, a.decision);
        assert_eq!(d.score.to_bits(), a.score.to_bits());
        assert_eq!(d.posture, a.posture);
        let used: Vec<(String, Option<i64>)> = serde_json::from_str(&a.features).unwrap();
        for (name, v) in used {
            let got = match name.as_str() {
                "cluster_size" => d.cluster_size,
                "cluster_cards" => d.cluster_cards,
                _ => {
                    let i = m.layout.features.iter().position(|f| *f == name).unwrap();
                    d.features[i]
                }
            };
            assert_eq!(got, v, "{name} of {}", d.event_id);
        }
        assert_eq!(row.split, Some(Split::of(d.logical_time, split_at)));
    }
    let cert = m
        .certificate
        .as_ref()
        .expect("an online audit to compare with");
    assert!(cert.same_feature_revision);
    assert_eq!(
        (cert.rows, cert.mismatches),
        (rows.len() as u64, 0),
        "{cert:?}"
    );
    assert_eq!(cert.audit_rows, audit.len() as u64);

    // Labels: the oracle agrees with every row's label columns.
    let oracle = oracle_labels(&data, as_of);
    let full = oracle_labels(&data, u64::MAX);
    for row in &rows {
        let got = row.label.as_ref().map(|l| {
            (
                l.label.as_str().to_owned(),
                l.effective_ms,
                l.observed_ms,
                l.assertion_id.clone(),
            )
        });
        assert_eq!(
            got.as_ref(),
            oracle.get(&row.detail.event_id),
            "label of {}",
            row.detail.event_id
        );
    }
    // The world exercised what the rule is about.
    let mut per_subject: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for a in read_archive(&data) {
        if a.event_type.as_str() == "label.assertion.v1" {
            let v: serde_json::Value = serde_json::from_str(&a.envelope).unwrap();
            per_subject
                .entry(
                    v["payload"]["subject_event_id"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                )
                .or_default()
                .push(v["payload"]["label"].as_str().unwrap().to_owned());
        }
    }
    let in_range: std::collections::BTreeSet<&str> =
        rows.iter().map(|r| r.detail.event_id.as_str()).collect();
    assert!(
        per_subject.values().any(|l| l.len() >= 2),
        "several assertions per event"
    );
    let flipped: Vec<&String> = per_subject
        .iter()
        .filter(|(_, l)| l.contains(&"fraud".to_owned()) && l.contains(&"legit".to_owned()))
        .map(|(s, _)| s)
        .collect();
    assert!(!flipped.is_empty(), "a fraud → legit reversal");

    assert!(
        rows.iter().any(
            |r| r.label.as_ref().map(|l| l.label) == Some(LabelValue::Legit)
                && flipped.contains(&&r.detail.event_id)
        ),
        "a reversed label observed before the cut-off reads legit"
    );
    assert!(
        rows.iter()
            .any(|r| oracle.get(&r.detail.event_id) != full.get(&r.detail.event_id)),
        "assertions observed after the cut-off change some rows' labels"
    );
    assert!(
        per_subject.keys().any(|s| !in_range.contains(s.as_str())),
        "labels for events outside [from, to)"
    );
    let counts = &m.stats.labels;
    assert_eq!(counts.fraud + counts.legit + counts.unknown, m.rows);
    assert!(counts.fraud > 0 && counts.legit > 0);

    // `dataset verify` agrees; the Python readers read the files as-is.
    let v = verify(&r.data, &store, &dir).unwrap();
    assert!(v.ok(), "{:?}", v.problems);
    assert_eq!(v.certificate.as_ref().map(|c| c.mismatches), Some(0));
    let status = std::process::Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("python/check_dataset.py"))
        .arg(out.join(&dir))
        .status()
        .expect("python3 runs (scripts/test.sh installs pyarrow, duckdb and polars)");
    assert!(status.success(), "pyarrow / DuckDB / polars check failed");
}

fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    read_tree(root, "ofs")
}

#[test]
fn files_are_identical_across_workers_and_reruns_and_tampering_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, p) = setup(tmp.path(), 12_000);
    let r = roots(&data);
    let req = |w: usize, as_of: u64| DatasetRequest {
        from: START + MIN,
        to: START + 6 * MIN,
        labels_as_of: as_of,
        split_at: None,
        workers: w,
    };
    let mut first: Option<(Built, BTreeMap<String, Vec<u8>>)> = None;
    for w in [1, 2, 4] {
        let out = tmp.path().join(format!("w{w}"));
        let b = build(&p, &r.data, &target(&r, &out), &req(w, START + 5 * MIN)).unwrap();
        let files = tree(&out);
        assert!(
            files.len() >= 3,
            "bucket files and a manifest: {:?}",
            files.keys()
        );
        match &first {
            None => first = Some((b, files)),
            Some((b1, f1)) => {
                assert_eq!(b.manifest.dataset_id, b1.manifest.dataset_id, "-w{w}");
                assert_eq!(&files, f1, "-w{w}: byte-identical files and manifest");
            }
        }
    }
    let (b1, f1) = first.unwrap();
    // A rerun finds the dataset and writes nothing.
    let again = build(
        &p,
        &r.data,
        &target(&r, &tmp.path().join("w1")),
        &req(2, START + 5 * MIN),
    )
    .unwrap();
    assert!(again.existed);
    assert_eq!(tree(&tmp.path().join("w1")), f1);
    // Another cut-off is another dataset.
    let later = build(
        &p,
        &r.data,
        &target(&r, &tmp.path().join("w1")),
        &req(1, START + 9 * MIN),
    )
    .unwrap();
    assert_ne!(later.manifest.dataset_id, b1.manifest.dataset_id);

    // An altered file is reported, never passed.
    let out = tmp.path().join("w2");
    let store = target(&r, &out).root;
    let dir = dataset_dir(&b1.manifest.dataset_id).unwrap();
    assert!(verify(&r.data, &store, &dir).unwrap().ok());
    let victim = out.join(&dir).join(&b1.manifest.files[0].path);
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&victim, bytes).unwrap();
    let v = verify(&r.data, &store, &dir).unwrap();
    assert!(!v.ok());
    assert!(
        v.problems.iter().any(|p| p.contains("sha256")),
        "{:?}",
        v.problems
    );

    // A changed definition of a feature the model uses (same name, another window) is
    // reported as skew.
    let mut changed = p.clone();
    let f = changed
        .features
        .iter_mut()
        .find(|f| f.name == "card_txn_count_10m")
        .unwrap();
    f.window = Duration::from_secs(60);
    let out = tmp.path().join("changed");
    let b = build(
        &changed,
        &r.data,
        &target(&r, &out),
        &req(1, START + 5 * MIN),
    )
    .unwrap();
    let cert = b.manifest.certificate.clone().unwrap();
    assert!(!cert.same_feature_revision);
    assert!(cert.mismatches > 0, "{cert:?}");
    assert!(
        cert.first_difference
            .as_deref()
            .is_some_and(|d| d.contains("card_txn_count_10m")),
        "{cert:?}"
    );
    let v = verify(
        &r.data,
        &target(&r, &out).root,
        &dataset_dir(&b.manifest.dataset_id).unwrap(),
    )
    .unwrap();
    assert!(!v.ok());
}
