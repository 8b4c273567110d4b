//! Declared backfills and governance facts (SPEC §10, §11), over a real tansu broker: an
//! online run records and publishes its policy activation; a backfill adds a 7-day
//! distinct-merchants feature over the archive into `ofs/backfills/<id>/` without touching a
//! primary truth, its values agree with a scan of the archive, its declaration and receipt are
//! under `gov/` and on `fp.bus.control.v1` exactly once, and repeating it changes nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tidemark_dataflows::ofp::{FeatureDef, OfpPolicy};
use tidemark_jobs::backfill::{self, RunResult};
use tidemark_jobs::dataset::check::MergedRows;
use tidemark_jobs::gov::{self, GovKind, Recorded};
use tidemark_jobs::kafka::read_topic;
use tidemark_jobs::world::WorldConfig;
use tidemark_operators::hashing::sha256_hex;
use tidemark_operators::window::Agg;
use tidemark_sinks::WriteOnceStore;
use tidemark_tests::{read_archive, read_tree, KafkaFixture, TRUTH_TREES};

const START: u64 = 1_767_225_600_000;
const MIN: u64 = 60_000;
const NEW: &str = "card_distinct_merchants_7d";

#[derive(Serialize)]
struct FeatureFile<'a> {
    ofp: &'a OfpPolicy,
    features: &'a [FeatureDef],
}

fn truths(data: &std::path::Path) -> BTreeMap<String, String> {
    TRUTH_TREES
        .iter()
        .flat_map(|t| {
            read_tree(data, t)
                .into_iter()
                .map(|(p, b)| (p, sha256_hex(&b)))
        })
        .collect()
}

/// Governance facts on the control topic: (kind, subject) of each.
fn published_facts(k: &KafkaFixture) -> Vec<(String, String)> {
    read_topic(&k.conn, "fp.bus.control.v1")
        .unwrap()
        .into_iter()
        .filter_map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.bytes).ok()?;
            (v["event_type"] == "gov.fact.v1" && v["producer"] == "governance").then(|| {
                (
                    v["payload"]["kind"].as_str().unwrap_or("").to_owned(),
                    v["payload"]["detail"]["subject"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned(),
                )
            })
        })
        .collect()
}

#[test]
fn a_backfill_derives_a_new_feature_without_touching_primary_truths() {
    let k = KafkaFixture::start();
    let tmp = tempfile::tempdir().unwrap();
    k.produce(&WorldConfig {
        events: 12_000,
        seed: 21,
        fraud_rate: 0.02,
        rate_per_sec: 30.0,
        follow_up_scale: 0.05,
        ..Default::default()
    });
    let data = tmp.path().join("data");
    k.run(&data, 1, true);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = WriteOnceStore::local(&data, rt.handle().clone()).unwrap();

    // The run recorded and published its policy activation.
    let facts = gov::list(&store).unwrap();
    assert_eq!(facts.len(), 1, "{facts:?}");
    assert_eq!(facts[0].1.kind, GovKind::PolicyActivated);
    assert_eq!(facts[0].1.detail["before"], serde_json::Value::Null);
    let online_rev = facts[0].1.subject.clone();
    assert_eq!(
        published_facts(&k),
        vec![("policy.activated".to_owned(), online_rev.clone())]
    );
    // A second revision under the same root names the first as `before`.
    let next = gov::activate_policy(&store, "another-rev", "local", |_| Ok(()))
        .unwrap()
        .expect("new revision");
    assert_eq!(next.detail["before"], serde_json::json!(online_rev));
    assert!(
        gov::activate_policy(&store, "another-rev", "local", |_| Ok(()))
            .unwrap()
            .is_none()
    );

    // The new revision: every online feature plus a 7-day distinct-merchants count.
    let mut features = k.profile.features.clone();
    features.push(FeatureDef {
        name: NEW.into(),
        event_types: vec!["txn.authorization.v1".into()],
        key: "card_id".into(),
        agg: Agg::DistinctCount,
        value: Some("merchant_id".into()),
        window: Duration::from_secs(7 * 86_400),
        filter: None,
    });
    let ff = tmp.path().join("v2.toml");
    std::fs::write(
        &ff,
        toml::to_string(&FeatureFile {
            ofp: &k.profile.ofp,
            features: &features,
        })
        .unwrap(),
    )
    .unwrap();
    let decl = |purpose: &str| {
        let p = tmp.path().join(format!("decl-{}.toml", purpose.len()));
        std::fs::write(
            &p,
            format!(
                "id = \"merchants-7d\"\npurpose = \"{purpose}\"\nfrom = \"2026-01-01T00:01:00Z\"\nto = {}\nfeatures = \"v2.toml\"\n",
                START + 6 * MIN
            ),
        )
        .unwrap();
        p
    };
    let before = truths(&data);
    assert!(before.len() > 10);

    let (d, rec) = backfill::declare(
        &store,
        &decl("merchant diversity for model v2"),
        "local",
        Some(&k.conn),
    )
    .unwrap();
    assert_eq!(rec, Recorded::Written);
    assert_eq!((d.scope.from, d.scope.to), (START + MIN, START + 6 * MIN));
    // The same declaration again is a no-op; another one under the same id is refused.
    let (_, again) = backfill::declare(
        &store,
        &decl("merchant diversity for model v2"),
        "local",
        Some(&k.conn),
    )
    .unwrap();
    assert_eq!(again, Recorded::Existing);
    let err = backfill::declare(
        &store,
        &decl("something else entirely"),
        "local",
        Some(&k.conn),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("conflicting"), "{err:#}");

    let built = match backfill::run(&store, "merchants-7d", 2, Some(&k.conn)).unwrap() {
        RunResult::Completed(b, _) => *b,
        other => panic!("expected a computed backfill, got {other:?}"),
    };
    assert!(matches!(
        backfill::run(&store, "merchants-7d", 1, Some(&k.conn)).unwrap(),
        RunResult::AlreadyComplete(_)
    ));

    // Nothing under a primary-truth prefix changed; the derived version and the facts exist.
    assert_eq!(truths(&data), before);
    assert!(built
        .manifest_path
        .starts_with("ofs/backfills/merchants-7d/"));
    assert!(data
        .join("gov/backfills/merchants-7d/declaration.json")
        .is_file());
    assert!(data
        .join("gov/backfills/merchants-7d/receipt.json")
        .is_file());
    let kinds: Vec<GovKind> = gov::list(&store)
        .unwrap()
        .into_iter()
        .map(|(_, f)| f.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            GovKind::PolicyActivated,
            GovKind::PolicyActivated,
            GovKind::BackfillDeclared,
            GovKind::BackfillCompleted
        ]
    );
    let mut published = published_facts(&k);
    published.sort();
    assert_eq!(
        published,
        vec![
            ("backfill.completed".to_owned(), "merchants-7d".to_owned()),
            ("backfill.declared".to_owned(), "merchants-7d".to_owned()),
            ("policy.activated".to_owned(), online_rev),
        ],
        "each fact published exactly once"
    );

    // The derived values agree with a scan of the archive: distinct merchants of the card over
    // [t - 7d, t), strictly before the decision.
    let m = &built.manifest;
    let col = m.layout.features.iter().position(|f| f == NEW).unwrap();
    let card = m
        .layout
        .key_fields
        .iter()
        .position(|f| f == "card_id")
        .unwrap();
    let mut by_card: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for a in read_archive(&data) {
        if a.event_type.as_str() != "txn.authorization.v1" {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&a.envelope).unwrap();
        let p = &v["payload"];
        if let (Some(c), Some(mer)) = (p["card_id"].as_str(), p["merchant_id"].as_str()) {
            by_card
                .entry(c.to_owned())
                .or_default()
                .push((a.logical_time, mer.to_owned()));
        }
    }
    let dir = built.manifest_path.trim_end_matches("/manifest.json");
    let paths: Vec<String> = m
        .files
        .iter()
        .map(|f| format!("{dir}/{}", f.path))
        .collect();
    let (mut rows, mut widest) = (0, 0);
    for r in MergedRows::open(&store, &paths, &m.layout).unwrap() {
        let r = r.unwrap();
        let d = &r.detail;
        let c = d.keys[card].clone().expect("a card");
        let distinct: std::collections::BTreeSet<&str> = by_card[&c]
            .iter()
            .filter(|(t, _)| *t < d.logical_time && *t + 7 * 86_400_000 >= d.logical_time)
            .map(|(_, mer)| mer.as_str())
            .collect();
        // SPEC §7: distinct_count of nothing is 0.
        let expect = Some(distinct.len() as i64);
        assert_eq!(d.features[col], expect, "{NEW} of {}", d.event_id);
        widest = widest.max(distinct.len());
        rows += 1;
    }
    assert_eq!(rows, m.rows);
    assert!(rows > 1_000);
    assert!(widest >= 2, "some card saw several merchants");
    // The features the online model used are unchanged: no skew on them.
    let cert = m.certificate.as_ref().unwrap();
    assert!(!cert.same_feature_revision);
    assert_eq!(cert.mismatches, 0, "{cert:?}");
}
