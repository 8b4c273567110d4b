//! Authenticated producers (SPEC §5 `BAD_SIGNATURE`) over the real broker: with the IG policy
//! requiring signatures, a third-party kafka-python producer's correctly signed records are
//! admitted and 1,000 mutated ones (bit flips in payload or signature, a wrong key, the key of
//! another producer, an unknown key id, no signature, a stale signature, replays) are all
//! quarantined with the right reason; and a world produced by `tidemark` with the same keys
//! admits exactly what the unsigned world admits with signing off.
//!
//! Its own test binary: it sets the key variables in the process environment.

use std::collections::BTreeMap;

use tidemark_jobs::world::WorldConfig;
use tidemark_operators::ingest::ReceiptStatus;
use tidemark_operators::ReasonCode;
use tidemark_tests::{kafka_client, make_world, read_receipts, run_ig, KafkaFixture};

const CARD_KEY: &str = "card-switch-secret-0123456789abcdef-XYZ";
const AUTH_KEY: &str = "auth-service-secret-0123456789abcdef-XYZ";

/// Requires signatures, with one key per producer of the default allowlist (`<producer>-1`).
fn signing_profile(k: &mut KafkaFixture) {
    static ENV: std::sync::Once = std::sync::Once::new();
    let s = &mut k.profile.ig.signing;
    s.required = true;
    for producer in k.profile.ig.producers.values().flatten() {
        s.keys.insert(format!("{producer}-1"), producer.clone());
    }
    // The key variables are set once, before either test of this binary reads them.
    ENV.call_once(|| {
        for (id, producer) in &s.keys {
            let secret = match producer.as_str() {
                "card-switch" => CARD_KEY.to_owned(),
                "auth-service" => AUTH_KEY.to_owned(),
                p => format!("{p}-secret-0123456789abcdef-0123456789"),
            };
            std::env::set_var(tidemark_dataflows::ig::signing::key_env_var(id), secret);
        }
    });
}

fn python_signed(addr: &str, count: usize) -> Vec<(u32, u64, Option<String>)> {
    let v = kafka_client(&["signed", addr, &count.to_string()]);
    serde_json::from_value(v["records"].clone()).expect("records")
}

#[test]
fn signed_producers_are_admitted_and_every_forgery_is_quarantined() {
    let mut k = KafkaFixture::start();
    signing_profile(&mut k);
    let sent = python_signed(&k.broker.addr(), 400);
    assert_eq!(sent.len(), 1_400);
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("signed");
    k.run(&data, 2, false);
    let receipts: BTreeMap<(u32, u64), _> = read_receipts(&data)
        .into_iter()
        .map(|r| ((r.coord.partition, r.coord.offset), r))
        .collect();
    assert_eq!(receipts.len(), sent.len(), "one receipt per record");
    let mut by_reason: BTreeMap<String, usize> = BTreeMap::new();
    for (p, o, expect) in &sent {
        let r = &receipts[&(*p, *o)];
        match expect.as_deref() {
            None => assert_eq!(r.status, ReceiptStatus::Admitted, "{r:?}"),
            Some(code) => {
                assert_ne!(r.status, ReceiptStatus::Admitted, "forgery admitted: {r:?}");
                assert_eq!(r.reason.map(ReasonCode::as_str), Some(code), "{r:?}");
                *by_reason.entry(code.to_owned()).or_default() += 1;
            }
        }
    }
    assert_eq!(by_reason["BAD_SIGNATURE"], 875, "{by_reason:?}");
    assert_eq!(by_reason["DUPLICATE"], 125, "{by_reason:?}");
    // The details say why, and no key material leaks into them.
    let details: Vec<&str> = receipts.values().map(|r| r.detail.as_str()).collect();
    for needle in [
        "missing signature",
        "unknown key id",
        "does not verify",
        "stale",
        "auth-service",
    ] {
        assert!(details.iter().any(|d| d.contains(needle)), "{needle}");
    }
    assert!(!details
        .iter()
        .any(|d| d.contains(CARD_KEY) || d.contains(AUTH_KEY)));

    // The same records with signing off: everything the policy then allows is admitted, so
    // the quarantines above came from the signature checks alone.
    let mut open = k.profile.clone();
    open.ig.signing.required = false;
    let data_off = tmp.path().join("unsigned");
    tidemark_jobs::run::run_with(
        &open,
        &k.ingress(tidemark_sources::KafkaEnd::Latest),
        &data_off,
        &tidemark_jobs::run::RunOptions::threads(1),
    )
    .expect("run")
    .expect("outcome");
    let admitted_off = read_receipts(&data_off)
        .iter()
        .filter(|r| r.status == ReceiptStatus::Admitted)
        .count();
    assert!(admitted_off > 400, "{admitted_off}");
}

#[test]
fn a_signed_world_admits_what_the_unsigned_world_admits() {
    let mut k = KafkaFixture::start();
    signing_profile(&mut k);
    let cfg = WorldConfig {
        events: 3_000,
        seed: 77,
        partitions: k.profile.wiring.ingress_partitions,
        bad_rate: 0.05,
        ..Default::default()
    };
    let keys = tidemark_jobs::config::signing_keys(&k.profile).expect("keys");
    assert!(keys.is_some());
    tidemark_jobs::kafka::produce_world(&k.conn, &cfg, false, keys, &mut |_, _| {})
        .expect("produce");
    let tmp = tempfile::tempdir().expect("tmp");
    let signed = tmp.path().join("signed");
    k.run(&signed, 1, false);

    let log = tmp.path().join("log");
    make_world(&log, &cfg);
    let mut open = k.profile.clone();
    open.ig.signing.required = false;
    let plain = tmp.path().join("plain");
    run_ig(&open, &log, &plain, 1);

    let outcome =
        |dir: &std::path::Path| -> BTreeMap<(u32, u64), (ReceiptStatus, Option<ReasonCode>)> {
            read_receipts(dir)
                .into_iter()
                .map(|r| ((r.coord.partition, r.coord.offset), (r.status, r.reason)))
                .collect()
        };
    let (a, b) = (outcome(&signed), outcome(&plain));
    assert_eq!(a.len(), b.len());
    let mut unsigned = 0;
    for (coord, got) in &a {
        let want = &b[coord];
        if got.1 == Some(ReasonCode::BadSignature) {
            // Only records naming no producer, or one without a key, go out unsigned.
            assert!(
                matches!(
                    want.1,
                    Some(ReasonCode::ProducerNotAllowed | ReasonCode::MissingField)
                ),
                "{coord:?}: {want:?}"
            );
            unsigned += 1;
        } else {
            assert_eq!(got, want, "{coord:?}");
        }
    }
    assert!(unsigned > 0, "the world's rogue producers are unsigned");
}
