//! An independent sequential model of IG (a plain loop per partition in offset order, written
//! here without reusing the dataflow code) agrees with the dataflow's receipts on seeded random
//! worlds with late, clamped, skewed, duplicate and cross-partition duplicate records.

use std::collections::{BTreeMap, HashMap};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use tidemark_dataflows::ig::{IgPolicy, LatePolicy};
use tidemark_jobs::config::Profile;
use tidemark_jobs::world::WorldConfig;
use tidemark_operators::ingest::ReceiptStatus;
use tidemark_tests::{make_world, read_archive, read_log, read_receipts, run_ig, write_log};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Expect {
    status: &'static str,
    reason: Option<&'static str>,
    logical_time: Option<u64>,
    clamped: bool,
}

fn ms(s: &str) -> Option<u64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .and_then(|d| u64::try_from(d.timestamp_millis()).ok())
}

/// Whether some JSON object in `text` (already known to parse) repeats a key: a scan of the
/// text's tokens with one key set per open object.
fn has_duplicate_key(text: &[u8]) -> bool {
    let mut stack: Vec<Option<std::collections::HashSet<String>>> = Vec::new();
    let mut expect_key = false;
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'{' => {
                stack.push(Some(Default::default()));
                expect_key = true;
            }
            b'[' => stack.push(None),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => expect_key = matches!(stack.last(), Some(Some(_))),
            b'"' => {
                let start = i;
                i += 1;
                while text[i] != b'"' {
                    i += if text[i] == b'\\' { 2 } else { 1 };
                }
                if expect_key {
                    let key: String = serde_json::from_slice(&text[start..=i]).expect("a string");
                    if let Some(Some(keys)) = stack.last_mut() {
                        if !keys.insert(key) {
                            return true;
                        }
                    }
                    expect_key = false;
                }
            }
            _ => {}
        }
        i += 1;
    }
    false
}

/// The `BAD_VALUE` rules of SPEC §5, re-derived: ids 1..128 bytes without control or bidi
/// characters, amounts in [0, max], ISO-4217 currency, ISO-3166 alpha-2 country, an IP.
fn value_ok(rule: &str, v: &Value, pol: &IgPolicy) -> bool {
    let s = v.as_str().unwrap_or_default();
    match rule {
        "id" => {
            (1..=128).contains(&s.len())
                && !s.chars().any(|c| {
                    c.is_control()
                        || ('\u{202A}'..='\u{202E}').contains(&c)
                        || ('\u{2066}'..='\u{2069}').contains(&c)
                        || ['\u{200E}', '\u{200F}', '\u{061C}'].contains(&c)
                })
        }
        "amount" => v
            .as_i64()
            .is_some_and(|a| a >= 0 && a <= pol.max_amount_minor),
        "currency" => iso_currency::Currency::from_code(s).is_some(),
        "country" => {
            s.len() == 2
                && s.bytes().all(|b| b.is_ascii_uppercase())
                && isocountry::CountryCode::for_alpha2(s).is_ok()
        }
        "ip" => s.parse::<std::net::IpAddr>().is_ok(),
        _ => true,
    }
}

/// The stateless checks, re-derived from SPEC §4/§5 and docs/reason-codes.md.
fn oracle_validate(bytes: &[u8], pol: &IgPolicy) -> Result<(String, u64), &'static str> {
    if bytes.len() > pol.max_record_bytes {
        return Err("PAYLOAD_TOO_LARGE");
    }
    let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(bytes) else {
        return Err("MALFORMED_JSON");
    };
    if has_duplicate_key(bytes) {
        return Err("MALFORMED_JSON");
    }
    let present =
        |o: &serde_json::Map<String, Value>, k: &str| o.get(k).is_some_and(|v| !v.is_null());
    for k in [
        "event_id",
        "event_type",
        "ts_utc",
        "manifest_fingerprint",
        "schema_version",
        "producer",
        "payload",
    ] {
        if !present(&o, k) {
            return Err("MISSING_FIELD");
        }
    }
    let s = |k: &str| o.get(k).and_then(Value::as_str);
    let id_ok = s("event_id").is_some();
    let fp_ok = s("manifest_fingerprint")
        .is_some_and(|v| v.len() == 64 && v.chars().all(|c| c.is_ascii_hexdigit()));
    let optional_ids = [
        "parameter_hash",
        "scenario_id",
        "run_id",
        "trace_id",
        "span_id",
        "parent_event_id",
    ];
    let opt_str_ok = optional_ids
        .iter()
        .all(|k| o.get(*k).is_none_or(|v| v.is_null() || v.is_string()));
    if !id_ok
        || s("event_type").is_none()
        || s("ts_utc").and_then(ms).is_none()
        || !fp_ok
        || !o["schema_version"].is_i64()
        || s("producer").is_none()
        || !o["payload"].is_object()
        || !opt_str_ok
        || o.get("seed").is_some_and(|v| !v.is_null() && !v.is_i64())
    {
        return Err("BAD_TYPE");
    }
    if ["event_id", "producer"]
        .iter()
        .chain(&optional_ids)
        .filter_map(|k| o.get(*k).filter(|v| !v.is_null()))
        .any(|v| !value_ok("id", v, pol))
    {
        return Err("BAD_VALUE");
    }
    if [
        "logical_time",
        "late_clamped",
        "partition_key",
        "source",
        "policy_rev",
    ]
    .iter()
    .any(|k| o.contains_key(*k))
    {
        return Err("BAD_TYPE");
    }
    let et = s("event_type").unwrap_or_default();
    let fields: &[(&str, &str, bool)] = match et {
        "txn.authorization.v1" => &[
            ("txn_id", "id", true),
            ("account_id", "id", true),
            ("card_id", "id", true),
            ("merchant_id", "id", true),
            ("device_id", "id", true),
            ("ip", "ip", true),
            ("email", "id", true),
            ("amount_minor", "amount", true),
            ("currency", "currency", true),
            ("mcc", "id", true),
            ("channel", "id", true),
            ("country", "country", true),
        ],
        "account.login.v1" => &[
            ("account_id", "id", true),
            ("device_id", "id", true),
            ("ip", "ip", true),
            ("success", "b", true),
        ],
        "account.profile_change.v1" => &[
            ("account_id", "id", true),
            ("device_id", "id", true),
            ("field", "s", true),
            ("email", "id", false),
            ("phone", "id", false),
        ],
        "label.assertion.v1" => &[
            ("subject_event_id", "id", true),
            ("account_id", "id", true),
            ("label", "fl", true),
            ("effective_ts", "t", true),
            ("observed_ts", "t", true),
            ("source", "s", true),
        ],
        "dl.posture.v1" => &[("posture", "p", true), ("reason", "s", true)],
        "gov.fact.v1" => &[("kind", "s", true), ("detail", "o", false)],
        _ => return Err("UNKNOWN_EVENT_TYPE"),
    };
    if !pol
        .schema_versions
        .contains(&o["schema_version"].as_i64().unwrap_or(-1))
    {
        return Err("UNSUPPORTED_SCHEMA_VERSION");
    }
    let p = o["payload"].as_object().expect("checked");
    for (k, _, req) in fields {
        if *req && !present(p, k) {
            return Err("MISSING_FIELD");
        }
    }
    for (k, kind, _) in fields {
        let Some(v) = p.get(*k).filter(|v| !v.is_null()) else {
            continue;
        };
        let ok = match *kind {
            "s" | "id" | "ip" | "currency" | "country" => v.is_string(),
            "i" | "amount" => v.is_i64(),
            "b" => v.is_boolean(),
            "o" => v.is_object(),
            "t" => v.as_str().and_then(ms).is_some(),
            "fl" => matches!(v.as_str(), Some("fraud" | "legit")),
            "p" => matches!(v.as_str(), Some("NORMAL" | "DEGRADED" | "SAFE")),
            _ => unreachable!(),
        };
        if !ok {
            return Err("BAD_TYPE");
        }
    }
    for (k, rule, _) in fields {
        if p.get(*k)
            .is_some_and(|v| !v.is_null() && !value_ok(rule, v, pol))
        {
            return Err("BAD_VALUE");
        }
    }
    let producer = s("producer").unwrap_or_default();
    if !pol
        .producers
        .get(et)
        .is_some_and(|ps| ps.iter().any(|x| x == producer))
    {
        return Err("PRODUCER_NOT_ALLOWED");
    }
    Ok((
        s("event_id").unwrap_or_default().to_owned(),
        s("ts_utc").and_then(ms).unwrap_or(0),
    ))
}

fn oracle(log: &[Vec<(u64, Vec<u8>)>], pol: &IgPolicy) -> BTreeMap<(u32, u64), Expect> {
    let lateness = pol.allowed_lateness.as_millis() as u64;
    let skew = pol.max_future_skew.as_millis() as u64;
    let past = pol.max_past_skew.as_millis() as u64;
    let window = pol.dedup_window.as_millis() as u64;
    let mut out = BTreeMap::new();
    let mut cands: HashMap<String, Vec<(u64, u32, u64)>> = HashMap::new();
    for (p, recs) in log.iter().enumerate() {
        let mut max: Option<u64> = None;
        for (o, (record_ts, bytes)) in recs.iter().enumerate() {
            let key = (p as u32, o as u64);
            let q = |r| Expect {
                status: "QUARANTINED",
                reason: Some(r),
                logical_time: None,
                clamped: false,
            };
            let (id, e) = match oracle_validate(bytes, pol) {
                Ok(v) => v,
                Err(r) => {
                    out.insert(key, q(r));
                    continue;
                }
            };
            if e > record_ts + skew || e + past < *record_ts {
                out.insert(key, q("CLOCK_SKEW"));
                continue;
            }
            let w = max.map_or(0, |m| m.saturating_sub(lateness));
            let (t, clamped) = if e >= w {
                // The watermark follows min(event time, record timestamp).
                let bounded = e.min(*record_ts);
                max = Some(max.map_or(bounded, |m| m.max(bounded)));
                (e, false)
            } else if pol.late_policy == LatePolicy::Clamp {
                (w, true)
            } else {
                out.insert(key, q("LATE_EVENT"));
                continue;
            };
            cands.entry(id).or_default().push((t, key.0, key.1));
            out.insert(
                key,
                Expect {
                    status: "ADMITTED",
                    reason: None,
                    logical_time: Some(t),
                    clamped,
                },
            );
        }
    }
    for list in cands.values() {
        for &(t, p, o) in list {
            let dup = list
                .iter()
                .any(|&(s, p2, o2)| (s < t && s + window > t) || (s == t && (p2, o2) < (p, o)));
            if dup {
                let e = out.get_mut(&(p, o)).expect("candidate");
                e.status = "DUPLICATE";
                e.reason = Some("DUPLICATE");
            }
        }
    }
    out
}

/// Copies ~1% of records into another partition near the same position (cross-partition
/// duplicates, often at the same logical time).
fn cross_dups(log: &mut [Vec<(u64, Vec<u8>)>], rng: &mut ChaCha8Rng) {
    let n = log.len();
    if n < 2 {
        return;
    }
    for p in 0..n {
        let picks: Vec<usize> = (0..log[p].len())
            .filter(|_| rng.random_bool(0.01))
            .collect();
        for i in picks {
            let rec = log[p][i].clone();
            let q = (p + rng.random_range(1..n)) % n;
            let at = (i * log[q].len() / log[p].len().max(1)).min(log[q].len());
            log[q].insert(at, rec);
        }
    }
}

#[test]
fn dataflow_receipts_match_sequential_oracle_on_random_worlds() {
    for seed in 0..6u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let tmp = tempfile::tempdir().unwrap();
        let gen_dir = tmp.path().join("gen");
        let cfg = WorldConfig {
            events: rng.random_range(3_000..12_000),
            seed: 100 + seed,
            partitions: rng.random_range(1..5),
            bad_rate: 0.12,
            rate_per_sec: [20.0, 100.0, 1000.0][rng.random_range(0..3)],
            ..Default::default()
        };
        make_world(&gen_dir, &cfg);
        let mut log = read_log(&gen_dir);
        cross_dups(&mut log, &mut rng);
        let ingress = tmp.path().join("in");
        write_log(&ingress, &log);

        let mut profile = Profile::default();
        profile.ig.late_policy = if rng.random_bool(0.5) {
            LatePolicy::Clamp
        } else {
            LatePolicy::Quarantine
        };
        profile.ig.allowed_lateness =
            std::time::Duration::from_millis([0, 1_000, 5_000, 120_000][rng.random_range(0..4)]);
        profile.ig.dedup_window =
            std::time::Duration::from_millis([0, 1, 60_000, 86_400_000][rng.random_range(0..4)]);
        // A wide future skew admits the generator's far-ahead records: they must not move the
        // watermark past their record timestamp.
        profile.ig.max_future_skew =
            std::time::Duration::from_secs([300, 3_600][rng.random_range(0..2)]);
        let workers = rng.random_range(1..4);
        let data = tmp.path().join("data");
        run_ig(&profile, &ingress, &data, workers);

        let expected = oracle(&log, &profile.ig);
        let receipts = read_receipts(&data);
        assert_eq!(
            receipts.len(),
            expected.len(),
            "seed {seed}: one receipt per record"
        );
        let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &receipts {
            let e = &expected[&(r.coord.partition, r.coord.offset)];
            let got = Expect {
                status: r.status.as_str(),
                reason: r.reason.map(|x| x.as_str()),
                logical_time: if r.status == ReceiptStatus::Quarantined {
                    None
                } else {
                    r.logical_time
                },
                clamped: r.late_clamped,
            };
            assert_eq!(
                &got, e,
                "seed {seed}: receipt for {:?} (policy {:?})",
                r.coord, profile.ig
            );
            *reasons.entry(e.reason.unwrap_or("ADMITTED")).or_default() += 1;
        }
        // Every admitted envelope is the input's JSON with IG's fields added, rendered as
        // serde_json renders a `Value` (sorted keys, no whitespace): an independent canonical
        // form of the same bytes.
        let archive = read_archive(&data);
        assert!(!archive.is_empty(), "seed {seed}: nothing admitted");
        for a in &archive {
            let raw = &log[a.coord.partition as usize][a.coord.offset as usize].1;
            let mut v: Value = serde_json::from_slice(raw).expect("admitted records parse");
            let obj = v.as_object_mut().expect("an object");
            let policy_rev = serde_json::from_str::<Value>(&a.envelope).unwrap()["policy_rev"]
                .as_str()
                .expect("policy_rev")
                .to_owned();
            assert!(!policy_rev.is_empty());
            obj.insert("logical_time".into(), a.logical_time.into());
            obj.insert("late_clamped".into(), a.late_clamped.into());
            obj.insert("partition_key".into(), a.partition_key.clone().into());
            obj.insert(
                "source".into(),
                serde_json::json!({"partition": a.coord.partition, "offset": a.coord.offset}),
            );
            obj.insert("policy_rev".into(), policy_rev.into());
            assert_eq!(a.envelope, v.to_string(), "seed {seed}: {:?}", a.coord);
        }
        // The random worlds must actually exercise the interesting paths.
        assert!(
            reasons.get("DUPLICATE").copied().unwrap_or(0) > 0,
            "seed {seed}: {reasons:?}"
        );
        for reason in ["CLOCK_SKEW", "BAD_VALUE", "MALFORMED_JSON"] {
            assert!(
                reasons.get(reason).copied().unwrap_or(0) > 0,
                "seed {seed}: {reason}: {reasons:?}"
            );
        }
    }
}
