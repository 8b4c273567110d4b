//! Hostile input at the Ingestion Gate (SPEC §3, §5): thousands of records per class —
//! duplicate JSON keys, every `BAD_VALUE` rule, event times far behind or ahead of the record
//! timestamp, and records that try to drag a partition's watermark forward — each get exactly
//! one receipt with the expected reason, their raw bytes are kept in quarantine, and the
//! valid records interleaved with them are all admitted on time.
//!
//! Record timestamps here play the broker's append time (an honest clock the producer does not
//! choose), as on an ingress topic with `message.timestamp.type = LogAppendTime`.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use tidemark_jobs::config::Profile;
use tidemark_operators::ingest::ReceiptStatus;
use tidemark_tests::{read_archive, read_receipts, read_tree, run_ig, write_log};

const T0: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const FP: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A valid transaction envelope.
fn txn(id: &str, event_ms: u64) -> Value {
    json!({
        "event_id": id,
        "event_type": "txn.authorization.v1",
        "ts_utc": tidemark_operators::time::fmt_rfc3339_millis(event_ms),
        "manifest_fingerprint": FP,
        "schema_version": 1,
        "producer": "card-switch",
        "payload": {
            "txn_id": format!("t-{id}"), "account_id": "acct-1", "card_id": "card-1",
            "merchant_id": "m-1", "device_id": "dev-1", "ip": "10.0.0.1",
            "email": "user1", "amount_minor": 1250, "currency": "EUR", "mcc": "5411",
            "channel": "pos", "country": "NL"
        }
    })
}

/// One class of hostile record: a builder from (sequence number, record timestamp) to raw
/// bytes and the reason IG must give (`None`: admitted).
struct Class {
    name: &'static str,
    reason: Option<&'static str>,
    make: Box<dyn Fn(u64, u64) -> Vec<u8>>,
}

fn with(mut v: Value, path: &[&str], value: Value) -> Vec<u8> {
    let mut at = &mut v;
    for k in &path[..path.len() - 1] {
        at = &mut at[*k];
    }
    at[path[path.len() - 1]] = value;
    serde_json::to_vec(&v).expect("json")
}

fn classes() -> Vec<Class> {
    let id = |n: u64| format!("ev-h-{n}");
    let mut out: Vec<Class> = Vec::new();
    // Duplicate keys: the second `producer` would win in a plain parser (a spoofing path).
    out.push(Class {
        name: "duplicate producer key",
        reason: Some("MALFORMED_JSON"),
        make: Box::new(move |n, ts| {
            let body = serde_json::to_string(&txn(&id(n), ts)).expect("json");
            format!(r#"{{"producer":"degrade-ladder",{}"#, &body[1..]).into_bytes()
        }),
    });
    out.push(Class {
        name: "duplicate nested key",
        reason: Some("MALFORMED_JSON"),
        make: Box::new(move |n, ts| {
            let body = serde_json::to_string(&txn(&id(n), ts)).expect("json");
            body.replacen(
                r#""amount_minor":1250"#,
                r#""amount_minor":1,"amount_minor":1250"#,
                1,
            )
            .into_bytes()
        }),
    });
    let bad_values: Vec<(&'static str, &'static [&'static str], Value)> = vec![
        ("negative amount", &["payload", "amount_minor"], json!(-5)),
        (
            "huge amount",
            &["payload", "amount_minor"],
            json!(5_000_000_000_000_000_000i64),
        ),
        (
            "i64::MIN amount",
            &["payload", "amount_minor"],
            json!(i64::MIN),
        ),
        (
            "unknown currency",
            &["payload", "currency"],
            json!("NOTACURRENCY"),
        ),
        (
            "lower-case currency",
            &["payload", "currency"],
            json!("eur"),
        ),
        ("empty country", &["payload", "country"], json!("")),
        ("unknown country", &["payload", "country"], json!("XX")),
        ("bad IP", &["payload", "ip"], json!("999.999.1.1")),
        (
            "14 KB account id",
            &["payload", "account_id"],
            json!("a".repeat(14 * 1024)),
        ),
        (
            "NUL in card id",
            &["payload", "card_id"],
            json!("card\u{0}1"),
        ),
        (
            "RTL override in merchant id",
            &["payload", "merchant_id"],
            json!("m-\u{202E}1"),
        ),
        ("empty device id", &["payload", "device_id"], json!("")),
        (
            "control character in producer",
            &["producer"],
            json!("card-switch\n"),
        ),
    ];
    for (name, path, value) in bad_values {
        out.push(Class {
            name,
            reason: Some("BAD_VALUE"),
            make: Box::new(move |n, ts| with(txn(&id(n), ts), path, value.clone())),
        });
    }
    // Not a BAD_VALUE: ±2^63 is not an i64 at all.
    out.push(Class {
        name: "2^63 amount",
        reason: Some("BAD_TYPE"),
        make: Box::new(move |n, ts| {
            with(
                txn(&id(n), ts),
                &["payload", "amount_minor"],
                json!(1u64 << 63),
            )
        }),
    });
    out.push(Class {
        name: "event time in 1970",
        reason: Some("CLOCK_SKEW"),
        make: Box::new(move |n, _| serde_json::to_vec(&txn(&id(n), n)).expect("json")),
    });
    out.push(Class {
        name: "event time 2 h behind the record timestamp",
        reason: Some("CLOCK_SKEW"),
        make: Box::new(move |n, ts| {
            serde_json::to_vec(&txn(&id(n), ts - 2 * 3_600_000)).expect("json")
        }),
    });
    out.push(Class {
        name: "event time in year 9999",
        reason: Some("CLOCK_SKEW"),
        make: Box::new(move |n, _| {
            serde_json::to_vec(&txn(&id(n), 253_402_300_799_000)).expect("json")
        }),
    });
    // Inside max_future_skew: admitted at its event time, but it must not make the valid
    // records after it late.
    out.push(Class {
        name: "event time 4m50s ahead",
        reason: None,
        make: Box::new(move |n, ts| serde_json::to_vec(&txn(&id(n), ts + 290_000)).expect("json")),
    });
    out
}

#[test]
fn every_hostile_class_is_quarantined_with_its_reason_and_nothing_is_lost() {
    let classes = classes();
    let per_class = 1_000u64;
    let partitions = 2usize;
    // Interleave: hostile record, then a valid one, round robin over the classes, so every
    // hostile record is followed by valid traffic in its partition. Record timestamps advance
    // 10 ms per record (the broker's clock); valid records are stamped 1 s before it.
    let mut log: Vec<Vec<(u64, Vec<u8>)>> = vec![Vec::new(); partitions];
    let mut expect: Vec<Vec<(&str, Option<&str>)>> = vec![Vec::new(); partitions];
    let mut n = 0u64;
    // The very first record of partition 0 is a 1970 one: it must not start the partition's
    // clock in 1970.
    let first_1970 = classes
        .iter()
        .position(|c| c.name == "event time in 1970")
        .expect("class");
    let order = std::iter::once(first_1970)
        .chain((0..per_class as usize * classes.len()).map(|i| i % classes.len()))
        .take(per_class as usize * classes.len());
    for c in order {
        let p = (n % partitions as u64) as usize;
        let ts = T0 + n * 10;
        log[p].push((ts, (classes[c].make)(n, ts)));
        expect[p].push((classes[c].name, classes[c].reason));
        n += 1;
        let valid = serde_json::to_vec(&txn(&format!("ev-ok-{n}"), ts - 1_000)).expect("json");
        log[p].push((ts, valid));
        expect[p].push(("valid", None));
        n += 1;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let ingress = tmp.path().join("in");
    write_log(&ingress, &log);
    let data = tmp.path().join("data");
    let profile = Profile::default();
    run_ig(&profile, &ingress, &data, 2);

    let receipts = read_receipts(&data);
    let total: usize = log.iter().map(Vec::len).sum();
    assert_eq!(receipts.len(), total, "one receipt per record");
    let mut seen: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
    for r in &receipts {
        let (class, want) = expect[r.coord.partition as usize][r.coord.offset as usize];
        let got = match r.status {
            ReceiptStatus::Admitted => None,
            _ => r.reason.map(|x| x.as_str()),
        };
        assert_eq!(
            got,
            want,
            "{class} at {:?}: {} {:?}",
            r.coord,
            r.status.as_str(),
            r.detail
        );
        if want == Some("BAD_VALUE") {
            assert!(
                r.detail.contains("payload.") || r.detail.starts_with("producer"),
                "{r:?}"
            );
        }
        *seen
            .entry(class)
            .or_default()
            .entry(got.unwrap_or("ADMITTED").to_owned())
            .or_default() += 1;
    }
    for c in &classes {
        let n = seen.get(c.name).map_or(0, |m| m.values().sum::<usize>());
        assert!(n >= per_class as usize - 1, "{}: {n} records", c.name);
    }

    // Nothing lost: every quarantined record's raw bytes are kept, byte for byte.
    let mut kept = 0;
    for (path, bytes) in read_tree(&data, "ig/quarantine") {
        for q in tidemark_sinks::parquet::decode_receipts(bytes.into(), &path).expect("decode") {
            let raw = q.raw.as_deref().expect("raw bytes");
            assert_eq!(
                raw, log[q.coord.partition as usize][q.coord.offset as usize].1,
                "{:?}",
                q.coord
            );
            kept += 1;
        }
    }
    let quarantined = receipts
        .iter()
        .filter(|r| r.status == ReceiptStatus::Quarantined)
        .count();
    assert_eq!(kept, quarantined);
    let admitted = expect.iter().flatten().filter(|(_, r)| r.is_none()).count();
    assert_eq!(read_archive(&data).len(), admitted, "admitted = archived");
}
