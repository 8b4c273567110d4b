//! One test per IG reason code, plus the dedup window boundaries and partition keys.

use serde_json::{json, Value};

use tidemark_dataflows::ig::LatePolicy;
use tidemark_jobs::config::Profile;
use tidemark_operators::ingest::{Receipt, ReceiptStatus};
use tidemark_tests::{read_receipts, read_tree, run_ig, write_log};

const T0: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn ts(ms: u64) -> String {
    tidemark_operators::time::fmt_rfc3339_millis(ms)
}

fn txn(id: &str, at: u64) -> Value {
    json!({
        "event_id": id, "event_type": "txn.authorization.v1", "ts_utc": ts(at),
        "manifest_fingerprint": "ab".repeat(32), "schema_version": 1, "producer": "card-switch",
        "payload": {
            "txn_id": "t1", "account_id": "acct-1", "card_id": "card-1", "merchant_id": "m-1",
            "device_id": "dev-1", "ip": "10.0.0.1", "email": "u1", "amount_minor": 1234,
            "currency": "EUR", "mcc": "5411", "channel": "pos", "country": "NL"
        }
    })
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// Runs one partition of records (record_ts = event time unless given) and returns receipts.
fn run_records(
    profile: &Profile,
    partitions: Vec<Vec<(u64, Vec<u8>)>>,
) -> (Vec<Receipt>, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    write_log(&tmp.path().join("in"), &partitions);
    run_ig(profile, &tmp.path().join("in"), &tmp.path().join("data"), 2);
    let r = read_receipts(&tmp.path().join("data"));
    (r, tmp)
}

/// A good record at T0 followed by `bad` (record_ts T0 + 1s); returns the bad record's receipt.
fn second(profile: &Profile, bad: Vec<u8>) -> Receipt {
    let good = bytes(&txn("good", T0));
    let (r, _tmp) = run_records(profile, vec![vec![(T0, good), (T0 + 1_000, bad)]]);
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].status, ReceiptStatus::Admitted);
    r[1].clone()
}

fn assert_reason(r: &Receipt, code: &str) {
    assert_eq!(r.status, ReceiptStatus::Quarantined, "{r:?}");
    assert_eq!(r.reason.map(|c| c.as_str()), Some(code), "{r:?}");
    assert!(r.raw.is_none(), "receipts do not carry raw bytes");
}

fn edit(f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v = txn("bad", T0 + 500);
    f(&mut v);
    bytes(&v)
}

#[test]
fn malformed_json() {
    assert_reason(
        &second(&Profile::default(), b"{\"event_id\": \"x\", ".to_vec()),
        "MALFORMED_JSON",
    );
    assert_reason(
        &second(&Profile::default(), b"[1,2,3]".to_vec()),
        "MALFORMED_JSON",
    );
}

#[test]
fn missing_field() {
    let r = second(
        &Profile::default(),
        edit(|v| {
            v.as_object_mut().unwrap().remove("producer");
        }),
    );
    assert_reason(&r, "MISSING_FIELD");
    assert_eq!(r.detail, "producer");
    let r = second(
        &Profile::default(),
        edit(|v| {
            v["payload"].as_object_mut().unwrap().remove("card_id");
        }),
    );
    assert_reason(&r, "MISSING_FIELD");
    assert_eq!(r.detail, "payload.card_id");
}

#[test]
fn bad_type() {
    assert_reason(
        &second(
            &Profile::default(),
            edit(|v| v["payload"]["amount_minor"] = json!("12.50")),
        ),
        "BAD_TYPE",
    );
    assert_reason(
        &second(
            &Profile::default(),
            edit(|v| v["ts_utc"] = json!("yesterday")),
        ),
        "BAD_TYPE",
    );
    assert_reason(
        &second(
            &Profile::default(),
            edit(|v| v["manifest_fingerprint"] = json!("abc")),
        ),
        "BAD_TYPE",
    );
    assert_reason(
        &second(&Profile::default(), edit(|v| v["logical_time"] = json!(5))),
        "BAD_TYPE",
    );
}

#[test]
fn malformed_json_duplicate_keys() {
    // A second `producer` key: plain JSON parsers keep the last one (a spoofing path).
    let body = String::from_utf8(edit(|_| {})).unwrap();
    let dup = format!(r#"{{"producer":"degrade-ladder",{}"#, &body[1..]);
    let r = second(&Profile::default(), dup.into_bytes());
    assert_reason(&r, "MALFORMED_JSON");
    assert!(r.detail.contains("duplicate key"), "{r:?}");
    let nested = body.replacen(
        r#""currency":"EUR""#,
        r#""currency":"EUR","currency":"EUR""#,
        1,
    );
    assert_reason(
        &second(&Profile::default(), nested.into_bytes()),
        "MALFORMED_JSON",
    );
}

#[test]
fn bad_value() {
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "payload.amount_minor",
            Box::new(|v| v["payload"]["amount_minor"] = json!(-5)),
        ),
        (
            "payload.amount_minor",
            Box::new(|v| v["payload"]["amount_minor"] = json!(10_000_000_001i64)),
        ),
        (
            "payload.currency",
            Box::new(|v| v["payload"]["currency"] = json!("NOTACURRENCY")),
        ),
        (
            "payload.country",
            Box::new(|v| v["payload"]["country"] = json!("")),
        ),
        (
            "payload.ip",
            Box::new(|v| v["payload"]["ip"] = json!("999.999.1.1")),
        ),
        (
            "payload.account_id",
            Box::new(|v| v["payload"]["account_id"] = json!("a".repeat(129))),
        ),
        (
            "payload.card_id",
            Box::new(|v| v["payload"]["card_id"] = json!("c\u{0}1")),
        ),
        (
            "payload.device_id",
            Box::new(|v| v["payload"]["device_id"] = json!("d\u{202E}1")),
        ),
        ("event_id", Box::new(|v| v["event_id"] = json!(""))),
        (
            "trace_id",
            Box::new(|v| v["trace_id"] = json!("x".repeat(200))),
        ),
    ];
    for (field, f) in cases {
        let r = second(&Profile::default(), edit(f));
        assert_reason(&r, "BAD_VALUE");
        assert!(r.detail.starts_with(field), "{field}: {r:?}");
    }
    // The policy maximum is a setting; the boundary itself is admitted.
    // (The first, good record of `second` has amount 1234.)
    let mut p = Profile::default();
    p.ig.max_amount_minor = 1_234;
    assert_reason(
        &second(&p, edit(|v| v["payload"]["amount_minor"] = json!(1_235))),
        "BAD_VALUE",
    );
    let ok = second(&p, edit(|v| v["payload"]["amount_minor"] = json!(1_234)));
    assert_eq!(ok.status, ReceiptStatus::Admitted, "{ok:?}");
}

#[test]
fn unknown_event_type() {
    assert_reason(
        &second(
            &Profile::default(),
            edit(|v| v["event_type"] = json!("txn.refund.v9")),
        ),
        "UNKNOWN_EVENT_TYPE",
    );
}

#[test]
fn unsupported_schema_version() {
    assert_reason(
        &second(
            &Profile::default(),
            edit(|v| v["schema_version"] = json!(7)),
        ),
        "UNSUPPORTED_SCHEMA_VERSION",
    );
}

#[test]
fn producer_not_allowed() {
    assert_reason(
        &second(
            &Profile::default(),
            edit(|v| v["producer"] = json!("rogue")),
        ),
        "PRODUCER_NOT_ALLOWED",
    );
}

#[test]
fn payload_too_large() {
    let r = second(
        &Profile::default(),
        edit(|v| v["payload"]["notes"] = json!("x".repeat(20_000))),
    );
    assert_reason(&r, "PAYLOAD_TOO_LARGE");
}

#[test]
fn late_event_quarantined_or_clamped() {
    let late = bytes(&txn("late", T0 - 60_000));
    let r = second(&Profile::default(), late.clone());
    assert_reason(&r, "LATE_EVENT");
    let mut clamp = Profile::default();
    clamp.ig.late_policy = LatePolicy::Clamp;
    let r = second(&clamp, late);
    assert_eq!(r.status, ReceiptStatus::Admitted);
    assert!(r.late_clamped);
    // Clamped to W_p = max_p - allowed_lateness = T0 - 5s.
    assert_eq!(r.logical_time, Some(T0 - 5_000));
}

#[test]
fn clock_skew() {
    // Event time 10 minutes after its record timestamp (max_future_skew = 5m).
    let skewed = bytes(&txn("skew", T0 + 1_000 + 600_000));
    assert_reason(&second(&Profile::default(), skewed), "CLOCK_SKEW");
    // Two hours before its record timestamp (max_past_skew = 1h).
    let behind = bytes(&txn("behind", T0 + 1_000 - 7_200_000));
    let r = second(&Profile::default(), behind);
    assert_reason(&r, "CLOCK_SKEW");
    assert!(r.detail.contains("behind"), "{r:?}");
}

#[test]
fn a_record_ahead_of_its_record_timestamp_cannot_make_later_records_late() {
    // Admitted at its event time (4m50s ahead, within max_future_skew), but the watermark
    // only follows it as far as its record timestamp: the next valid record is on time.
    let ahead = bytes(&txn("ahead", T0 + 290_000));
    let next = bytes(&txn("next", T0 + 500));
    let (r, _tmp) = run_records(
        &Profile::default(),
        vec![vec![(T0, ahead), (T0 + 1_000, next)]],
    );
    assert_eq!(r[0].status, ReceiptStatus::Admitted, "{:?}", r[0]);
    assert_eq!(r[0].logical_time, Some(T0 + 290_000));
    assert_eq!(r[1].status, ReceiptStatus::Admitted, "{:?}", r[1]);
}

#[test]
fn duplicate_and_window_boundaries() {
    let mut p = Profile::default();
    p.ig.dedup_window = std::time::Duration::from_secs(10);
    let rec = |id: &str, at: u64| (at, bytes(&txn(id, at)));
    let (r, _tmp) = run_records(
        &p,
        vec![
            vec![
                rec("a", T0),
                rec("a", T0 + 9_999),
                rec("b", T0 + 20_000),
                rec("a", T0 + 19_998),
                rec("a", T0 + 20_000),
            ],
            vec![
                rec("a", T0 + 9_999),
                rec("b", T0 + 20_000),
                rec("c", T0 + 20_000),
            ],
        ],
    );
    let status: Vec<(u32, u64, &str)> = r
        .iter()
        .map(|r| (r.coord.partition, r.coord.offset, r.status.as_str()))
        .collect();
    assert_eq!(
        status,
        vec![
            (0, 0, "ADMITTED"),
            (0, 1, "DUPLICATE"), // 9.999s after a seen "a"
            (0, 2, "ADMITTED"),  // "b" at T0+20s, lowest (partition, offset)
            (0, 3, "DUPLICATE"), // "a" at T0+19.998s: the one at T0+9.999s is within 10s
            (0, 4, "DUPLICATE"), // "a" at T0+20s: T0+19.998s is within 10s
            (1, 0, "DUPLICATE"), // same time as (0,1) with a higher partition, and (0,0) within 10s
            (1, 1, "DUPLICATE"), // same time as (0,2), higher partition
            (1, 2, "ADMITTED"),
        ]
    );
    assert_eq!(r[1].reason.map(|c| c.as_str()), Some("DUPLICATE"));
    // Exactly `window` apart is not a duplicate (t - window < s is strict).
    let (r, _tmp) = run_records(&p, vec![vec![rec("a", T0), rec("a", T0 + 10_000)]]);
    assert!(
        r.iter().all(|r| r.status == ReceiptStatus::Admitted),
        "{r:?}"
    );
}

#[test]
fn quarantine_keeps_raw_bytes_and_partition_key_is_stamped() {
    let tmp = tempfile::tempdir().unwrap();
    let posture = json!({
        "event_id": "p1", "event_type": "dl.posture.v1", "ts_utc": ts(T0 + 10),
        "manifest_fingerprint": "ab".repeat(32), "schema_version": 1, "producer": "degrade-ladder",
        "payload": {"posture": "DEGRADED", "reason": "drill"}
    });
    write_log(
        &tmp.path().join("in"),
        &[vec![
            (T0, bytes(&txn("ok", T0))),
            (T0 + 10, bytes(&posture)),
            (T0 + 20, b"not json".to_vec()),
        ]],
    );
    let data = tmp.path().join("data");
    run_ig(&Profile::default(), &tmp.path().join("in"), &data, 1);
    let q = read_tree(&data, "ig/quarantine");
    assert_eq!(q.len(), 1);
    let (path, bytes_) = q.into_iter().next().unwrap();
    let rows = tidemark_sinks::parquet::decode_receipts(bytes_.into(), &path).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].raw.as_deref(), Some(&b"not json"[..]));
    let archive = read_tree(&data, "archive");
    let mut envelopes = Vec::new();
    for (path, b) in archive.iter().filter(|(p, _)| p.ends_with(".parquet")) {
        envelopes.extend(tidemark_sinks::parquet::decode_archive(b.clone().into(), path).unwrap());
    }
    envelopes.sort();
    assert_eq!(envelopes.len(), 2);
    assert_eq!(envelopes[0].partition_key, "acct-1");
    assert_eq!(envelopes[1].partition_key, "dl.posture.v1");
    let env: Value = serde_json::from_str(&envelopes[1].envelope).unwrap();
    assert_eq!(env["logical_time"], json!(T0 + 10));
    assert_eq!(env["source"], json!({"partition": 0, "offset": 1}));
    assert!(env["policy_rev"].as_str().unwrap().starts_with("ig@1:"));
}
