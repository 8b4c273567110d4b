//! The simulated world: entities, background traffic, fraud episodes, labels, postures and
//! the rendering of events into producer envelopes (with injected bad input).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::json::{Obj, TsFormatter};
use super::{WorldConfig, WorldStats, BAD_KINDS};
use tidemark_operators::hashing::{sha256_hex, stable_hash};

/// Ground-truth fraud pattern of a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    /// Many small transactions on one card at many merchants within minutes.
    CardTesting,
    /// New device login, profile change, then high-value transactions.
    AccountTakeover,
    /// Devices and emails shared across many cards.
    FraudRing,
}

impl Pattern {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Pattern::CardTesting => "card_testing",
            Pattern::AccountTakeover => "account_takeover",
            Pattern::FraudRing => "fraud_ring",
        }
    }
}

const MCCS: [&str; 8] = [
    "5411", "5812", "5999", "4111", "5732", "7995", "5968", "4829",
];
const COUNTRIES: [&str; 6] = ["US", "GB", "DE", "FR", "NL", "ES"];
const FOREIGN: [&str; 4] = ["RU", "NG", "BR", "VN"];
const FRAUD_BASE: u64 = 10_000_000;

#[derive(Clone, Debug)]
struct Account {
    cards: Vec<u64>,
    devices: Vec<u64>,
    country: usize,
    ip: u64,
}

#[derive(Clone, Debug)]
struct Ring {
    devices: [u64; 2],
    emails: [u64; 2],
    ip: u64,
}

/// An event to render.
#[derive(Clone, Debug)]
pub(crate) enum Kind {
    Txn {
        account: u64,
        card: u64,
        device: u64,
        ip: u64,
        /// Email id; `>= FRAUD_BASE` means an attacker email.
        email: u64,
        merchant: u64,
        amount: i64,
        ecom: bool,
        country: &'static str,
        fraud: Option<Pattern>,
    },
    Login {
        account: u64,
        device: u64,
        ip: u64,
        success: bool,
    },
    ProfileChange {
        account: u64,
        device: u64,
        email: Option<u64>,
    },
    Label {
        subject: u64,
        account: u64,
        fraud: bool,
        effective_ms: u64,
    },
    Posture {
        posture: &'static str,
    },
}

/// An event at a simulated time.
#[derive(Clone, Debug)]
pub(crate) struct Ev {
    pub(crate) at: u64,
    pub(crate) kind: Kind,
}

/// A scheduled event (min-heap by time, then insertion order).
pub(crate) struct Pending {
    pub(crate) at: u64,
    seq: u64,
    pub(crate) event: Ev,
}
impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// Where one rendered record goes.
pub(crate) struct Rendered {
    pub(crate) partition: u32,
    /// The record key: `acct-<a>`, or the event type for events without an account.
    pub(crate) key: Vec<u8>,
    pub(crate) record_ts: u64,
    /// The producer the record names (`""` when it names none): a signing sink signs with
    /// that producer's key.
    pub(crate) producer: &'static str,
    /// Record timestamp of an identical resend (injected DUPLICATE).
    pub(crate) resend: Option<u64>,
}

/// The world's entities and counters.
pub(crate) struct World {
    accounts: Vec<Account>,
    merchants: u64,
    rings: Vec<Ring>,
    next_fraud_id: u64,
    pending_seq: u64,
    fingerprint: String,
    seed_tag: String,
    ts: TsFormatter,
    degraded: bool,
    /// Simulated time of the event being generated or rendered (follow-ups are scheduled
    /// relative to it).
    clock: u64,
    /// [`WorldConfig::follow_up_scale`].
    follow_up_scale: f64,
}

fn ip_str(buf: &mut Vec<u8>, ip: u64) {
    let b = ip.to_be_bytes();
    buf.push(b'"');
    for (i, octet) in [10u8, b[5], b[6], b[7]].iter().enumerate() {
        if i > 0 {
            buf.push(b'.');
        }
        buf.extend_from_slice(itoa::Buffer::new().format(*octet).as_bytes());
    }
    buf.push(b'"');
}

impl World {
    pub(crate) fn new(cfg: &WorldConfig, rng: &mut ChaCha8Rng) -> Self {
        // About two events per account per simulated hour, bounded for tiny worlds.
        let n_accounts = ((cfg.rate_per_sec * 1800.0) as u64)
            .min(cfg.events / 4)
            .max(200);
        let mut next_card = 0u64;
        let mut next_device = 0u64;
        let accounts = (0..n_accounts)
            .map(|a| {
                let nc = rng.random_range(1..=3);
                let nd = rng.random_range(1..=2);
                let cards = (0..nc)
                    .map(|_| {
                        next_card += 1;
                        next_card
                    })
                    .collect();
                let devices = (0..nd)
                    .map(|_| {
                        next_device += 1;
                        next_device
                    })
                    .collect();
                Account {
                    cards,
                    devices,
                    country: rng.random_range(0..COUNTRIES.len()),
                    ip: a * 7 + 1,
                }
            })
            .collect();
        let mut next_fraud_id = FRAUD_BASE;
        let rings = (0..5)
            .map(|_| {
                next_fraud_id += 3;
                Ring {
                    devices: [next_fraud_id, next_fraud_id + 1],
                    emails: [next_fraud_id, next_fraud_id + 1],
                    ip: next_fraud_id + 2,
                }
            })
            .collect();
        World {
            accounts,
            merchants: (cfg.events / 400).max(50),
            rings,
            next_fraud_id: next_fraud_id + 3,
            pending_seq: 0,
            fingerprint: sha256_hex(format!("tidemark-world:{}", cfg.seed).as_bytes()),
            seed_tag: format!("world-{}", cfg.seed),
            ts: TsFormatter::new(),
            degraded: false,
            clock: cfg.start_ms,
            follow_up_scale: cfg.follow_up_scale,
        }
    }

    fn schedule(&mut self, pending: &mut BinaryHeap<Pending>, at: u64, kind: Kind) {
        // Compress (or stretch) the delay; exactly the identity at the default scale 1.0.
        #[allow(clippy::float_cmp)]
        let at = if self.follow_up_scale == 1.0 || at <= self.clock {
            at
        } else {
            self.clock + ((at - self.clock) as f64 * self.follow_up_scale.max(0.0)) as u64
        };
        self.pending_seq += 1;
        pending.push(Pending {
            at,
            seq: self.pending_seq,
            event: Ev { at, kind },
        });
    }

    fn fresh_id(&mut self) -> u64 {
        self.next_fraud_id += 1;
        self.next_fraud_id
    }

    fn amount(rng: &mut ChaCha8Rng) -> i64 {
        // Log-normal with median ~ 35.00 in minor units (Box-Muller).
        let u1: f64 = rng.random::<f64>().max(1e-12);
        let u2: f64 = rng.random();
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        ((3500.0f64.ln() + 0.9 * z).exp() as i64).clamp(50, 2_000_000)
    }

    /// One background step: either returns an event at `t` or schedules an episode.
    pub(crate) fn background(
        &mut self,
        rng: &mut ChaCha8Rng,
        t: u64,
        pending: &mut BinaryHeap<Pending>,
        cfg: &WorldConfig,
    ) -> Option<Ev> {
        self.clock = t;
        let r: f64 = rng.random();
        let a = rng.random_range(0..self.accounts.len() as u64);
        if r < cfg.fraud_rate {
            self.episode(rng, t, a, pending);
            return None;
        }
        if r < cfg.fraud_rate + 0.000_01 && !self.degraded {
            // A short degrade episode: DEGRADED (sometimes SAFE) for 1-5 minutes, then NORMAL.
            self.degraded = true;
            let posture = if rng.random_bool(0.2) {
                "SAFE"
            } else {
                "DEGRADED"
            };
            let back = t + rng.random_range(60_000..300_000);
            self.schedule(pending, back, Kind::Posture { posture: "NORMAL" });
            return Some(Ev {
                at: t,
                kind: Kind::Posture { posture },
            });
        }
        let acc = &self.accounts[a as usize];
        let device = acc.devices[rng.random_range(0..acc.devices.len())];
        let kind = if r < 0.84 {
            Kind::Txn {
                account: a,
                card: acc.cards[rng.random_range(0..acc.cards.len())],
                device,
                ip: acc.ip,
                email: a,
                merchant: rng.random_range(0..self.merchants),
                amount: Self::amount(rng),
                ecom: rng.random_bool(0.4),
                country: COUNTRIES[acc.country],
                fraud: None,
            }
        } else if r < 0.985 {
            Kind::Login {
                account: a,
                device,
                ip: acc.ip,
                success: rng.random_bool(0.97),
            }
        } else {
            Kind::ProfileChange {
                account: a,
                device,
                email: None,
            }
        };
        Some(Ev { at: t, kind })
    }

    fn episode(&mut self, rng: &mut ChaCha8Rng, t: u64, a: u64, pending: &mut BinaryHeap<Pending>) {
        let acc = self.accounts[a as usize].clone();
        let card = acc.cards[rng.random_range(0..acc.cards.len())];
        match rng.random_range(0..3) {
            0 => {
                let (device, ip) = (self.fresh_id(), self.fresh_id());
                let country = FOREIGN[rng.random_range(0..FOREIGN.len())];
                let mut at = t;
                for _ in 0..rng.random_range(8..20) {
                    at += rng.random_range(2_000..15_000);
                    let kind = Kind::Txn {
                        account: a,
                        card,
                        device,
                        ip,
                        email: a,
                        merchant: rng.random_range(0..self.merchants),
                        amount: rng.random_range(100..600),
                        ecom: true,
                        country,
                        fraud: Some(Pattern::CardTesting),
                    };
                    self.schedule(pending, at, kind);
                }
            }
            1 => {
                let (device, ip, email) = (self.fresh_id(), self.fresh_id(), self.fresh_id());
                let mut at = t;
                for success in [false, false, true] {
                    at += rng.random_range(5_000..40_000);
                    self.schedule(
                        pending,
                        at,
                        Kind::Login {
                            account: a,
                            device,
                            ip,
                            success,
                        },
                    );
                }
                at += rng.random_range(60_000..300_000);
                self.schedule(
                    pending,
                    at,
                    Kind::ProfileChange {
                        account: a,
                        device,
                        email: Some(email),
                    },
                );
                for _ in 0..rng.random_range(2..6) {
                    at += rng.random_range(60_000..900_000);
                    let kind = Kind::Txn {
                        account: a,
                        card,
                        device,
                        ip,
                        email,
                        merchant: rng.random_range(0..self.merchants),
                        amount: rng.random_range(30_000..250_000),
                        ecom: true,
                        country: COUNTRIES[acc.country],
                        fraud: Some(Pattern::AccountTakeover),
                    };
                    self.schedule(pending, at, kind);
                }
            }
            _ => {
                let ring = self.rings[rng.random_range(0..self.rings.len())].clone();
                let mut at = t;
                for _ in 0..rng.random_range(4..10) {
                    at += rng.random_range(30_000..600_000);
                    let victim = rng.random_range(0..self.accounts.len() as u64);
                    let vacc = &self.accounts[victim as usize];
                    let kind = Kind::Txn {
                        account: victim,
                        card: vacc.cards[rng.random_range(0..vacc.cards.len())],
                        device: ring.devices[rng.random_range(0..2)],
                        ip: ring.ip,
                        email: ring.emails[rng.random_range(0..2)],
                        merchant: rng.random_range(0..self.merchants),
                        amount: rng.random_range(20_000..120_000),
                        ecom: true,
                        country: COUNTRIES[vacc.country],
                        fraud: Some(Pattern::FraudRing),
                    };
                    self.schedule(pending, at, kind);
                }
            }
        }
    }

    /// Renders `ev` into `buf`, possibly corrupted by injected bad input.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn render(
        &mut self,
        rng: &mut ChaCha8Rng,
        ev: &Ev,
        seq: u64,
        cfg: &WorldConfig,
        buf: &mut Vec<u8>,
        stats: &mut WorldStats,
        truth: &mut dyn FnMut(&str, Pattern),
        pending: &mut BinaryHeap<Pending>,
    ) -> Rendered {
        self.clock = ev.at;
        buf.clear();
        let fraudish = matches!(ev.kind, Kind::Txn { fraud: Some(_), .. });
        let injectable = !fraudish && !matches!(ev.kind, Kind::Label { .. } | Kind::Posture { .. });
        let bad = (injectable && rng.random_bool(cfg.bad_rate.clamp(0.0, 1.0)))
            .then(|| rng.random_range(0..BAD_KINDS.len()));
        if let Some(k) = bad {
            stats.bad[k].1 += 1;
        }
        let bad_kind = bad.map(|k| BAD_KINDS[k]);
        let record_ts = ev.at + rng.random_range(0..cfg.jitter_ms.max(1));
        let mut event_ms = if rng.random_bool(0.1) {
            ev.at
                .saturating_sub(rng.random_range(0..cfg.straggler_ms.max(1)))
        } else {
            ev.at
        };
        match bad_kind {
            Some("LATE_EVENT") => {
                event_ms = ev.at.saturating_sub(rng.random_range(60_000..600_000))
            }
            Some("CLOCK_SKEW") if rng.random_bool(0.5) => {
                event_ms = record_ts + rng.random_range(600_000..3_600_000)
            }
            Some("CLOCK_SKEW") => {
                event_ms = record_ts.saturating_sub(rng.random_range(7_200_000..30 * 86_400_000))
            }
            _ => {}
        }
        let (event_type, producer, account) = match &ev.kind {
            Kind::Txn { account, .. } => ("txn.authorization.v1", "card-switch", Some(*account)),
            Kind::Login { account, .. } => ("account.login.v1", "auth-service", Some(*account)),
            Kind::ProfileChange { account, .. } => (
                "account.profile_change.v1",
                "account-service",
                Some(*account),
            ),
            Kind::Label { account, fraud, .. } => (
                "label.assertion.v1",
                if *fraud {
                    "chargeback-feed"
                } else {
                    "case-mgmt"
                },
                Some(*account),
            ),
            Kind::Posture { .. } => ("dl.posture.v1", "degrade-ladder", None),
        };
        let mut event_id = String::with_capacity(24);
        event_id.push_str("ev-");
        event_id.push_str(itoa::Buffer::new().format(cfg.seed));
        event_id.push('-');
        event_id.push_str(itoa::Buffer::new().format(seq));
        let ts = &mut self.ts;
        let mut o = Obj::open(buf);
        o.str("event_id", &event_id);
        o.str(
            "event_type",
            if bad_kind == Some("UNKNOWN_EVENT_TYPE") {
                "txn.refund.v9"
            } else {
                event_type
            },
        );
        o.raw("ts_utc", |b| ts.push(b, event_ms));
        o.str("manifest_fingerprint", &self.fingerprint);
        match bad_kind {
            Some("BAD_TYPE") => o.str("schema_version", "1"),
            Some("UNSUPPORTED_SCHEMA_VERSION") => o.int("schema_version", 7),
            _ => o.int("schema_version", 1),
        };
        let producer = match bad_kind {
            Some("MISSING_FIELD") => "",
            Some("PRODUCER_NOT_ALLOWED") => "rogue-producer",
            _ => producer,
        };
        if !producer.is_empty() {
            o.str("producer", producer);
        }
        o.str("scenario_id", &self.seed_tag);
        o.str("run_id", &self.seed_tag);
        o.id("trace_id", "tr-", seq);
        let notes = bad_kind == Some("PAYLOAD_TOO_LARGE");
        let kind = ev.kind.clone();
        o.raw("payload", |b| {
            let mut p = Obj::open(b);
            match &kind {
                Kind::Txn {
                    account,
                    card,
                    device,
                    ip,
                    email,
                    merchant,
                    amount,
                    ecom,
                    country,
                    ..
                } => {
                    p.id("txn_id", "txn-", seq);
                    p.id("account_id", "acct-", *account);
                    p.id("card_id", "card-", *card);
                    p.id("merchant_id", "m-", *merchant);
                    p.id("device_id", "dev-", *device);
                    p.raw("ip", |b| ip_str(b, *ip));
                    if *email >= FRAUD_BASE {
                        p.id("email", "x", *email);
                    } else {
                        p.id("email", "user", *email);
                    }
                    p.int("amount_minor", *amount);
                    p.str("currency", "EUR");
                    p.str("mcc", MCCS[(*merchant % MCCS.len() as u64) as usize]);
                    p.str("channel", if *ecom { "ecom" } else { "pos" });
                    p.str("country", country);
                }
                Kind::Login {
                    account,
                    device,
                    ip,
                    success,
                } => {
                    p.id("account_id", "acct-", *account);
                    p.id("device_id", "dev-", *device);
                    p.raw("ip", |b| ip_str(b, *ip));
                    p.bool("success", *success);
                }
                Kind::ProfileChange {
                    account,
                    device,
                    email,
                } => {
                    p.id("account_id", "acct-", *account);
                    p.id("device_id", "dev-", *device);
                    match email {
                        Some(e) => {
                            p.str("field", "email");
                            p.id("email", "x", *e);
                        }
                        None => {
                            p.str("field", "phone");
                            p.id("phone", "+3161", *account);
                        }
                    }
                }
                Kind::Label {
                    subject,
                    account,
                    fraud,
                    effective_ms,
                } => {
                    p.raw("subject_event_id", |b| {
                        b.extend_from_slice(b"\"ev-");
                        b.extend_from_slice(itoa::Buffer::new().format(cfg.seed).as_bytes());
                        b.push(b'-');
                        b.extend_from_slice(itoa::Buffer::new().format(*subject).as_bytes());
                        b.push(b'"');
                    });
                    p.id("account_id", "acct-", *account);
                    p.str("label", if *fraud { "fraud" } else { "legit" });
                    p.raw("effective_ts", |b| ts.push(b, *effective_ms));
                    p.raw("observed_ts", |b| ts.push(b, event_ms));
                    p.str("source", if *fraud { "chargeback" } else { "analyst" });
                }
                Kind::Posture { posture } => {
                    p.str("posture", posture);
                    p.str("reason", "load-shed drill");
                }
            }
            if notes {
                p.raw("notes", |b| {
                    b.push(b'"');
                    b.resize(b.len() + 20_000, b'x');
                    b.push(b'"');
                });
            }
            p.close();
        });
        o.close();
        match bad_kind {
            Some("BAD_VALUE") => break_a_value(rng, &ev.kind, buf),
            // The spoofing shape: a second `producer` key that plain JSON parsers resolve to
            // whichever comes last.
            Some("MALFORMED_JSON") if rng.random_bool(0.5) => {
                buf.splice(1..1, br#""producer":"degrade-ladder","#.iter().copied());
            }
            Some("MALFORMED_JSON") => {
                let cut = buf.len() / 2;
                buf.truncate(cut);
            }
            _ => {}
        }
        // Bookkeeping: truth, labels.
        match &ev.kind {
            Kind::Txn { account, fraud, .. } => {
                stats.txns += 1;
                if let Some(p) = fraud {
                    stats.fraud_txns += 1;
                    truth(&event_id, *p);
                    if rng.random_bool(0.9) {
                        let delay = rng.random_range(300_000..2 * 3_600_000);
                        let kind = Kind::Label {
                            subject: seq,
                            account: *account,
                            fraud: true,
                            effective_ms: ev.at,
                        };
                        self.schedule(pending, ev.at + delay, kind);
                    }
                } else if bad.is_none() && rng.random_bool(0.003) {
                    let delay = rng.random_range(600_000..4 * 3_600_000);
                    let kind = Kind::Label {
                        subject: seq,
                        account: *account,
                        fraud: false,
                        effective_ms: ev.at,
                    };
                    self.schedule(pending, ev.at + delay, kind);
                }
            }
            Kind::Label {
                subject,
                account,
                fraud,
                effective_ms,
            } => {
                stats.labels += 1;
                // Label dynamics: a chargeback may be reversed after review (fraud → legit),
                // and any label may be asserted again later by another review; datasets pick
                // the label as known at their cut-off.
                let again = if *fraud && rng.random_bool(0.12) {
                    Some((false, rng.random_range(1_800_000..6 * 3_600_000)))
                } else if rng.random_bool(0.05) {
                    Some((*fraud, rng.random_range(600_000..2 * 3_600_000)))
                } else {
                    None
                };
                if let Some((fraud, delay)) = again {
                    let kind = Kind::Label {
                        subject: *subject,
                        account: *account,
                        fraud,
                        effective_ms: *effective_ms,
                    };
                    self.schedule(pending, ev.at + delay, kind);
                }
            }
            Kind::Posture { posture } => {
                stats.postures += 1;
                if *posture == "NORMAL" {
                    self.degraded = false;
                }
            }
            _ => {}
        }
        let key = match account {
            Some(a) => {
                let mut s = [0u8; 24];
                format_account(a, &mut s).to_vec()
            }
            None => event_type.as_bytes().to_vec(),
        };
        let key_hash = stable_hash(&key);
        Rendered {
            key,
            partition: (key_hash % u64::from(cfg.partitions.max(1))) as u32,
            record_ts,
            producer,
            resend: (bad_kind == Some("DUPLICATE")).then(|| record_ts + rng.random_range(1..5_000)),
        }
    }
}

/// Replaces one value of a rendered record with one that breaks its `BAD_VALUE` rule.
fn break_a_value(rng: &mut ChaCha8Rng, kind: &Kind, buf: &mut Vec<u8>) {
    let long_id = format!("\"{}\"", "a".repeat(200));
    let faults: [(&str, &str); 10] = [
        ("account_id", &long_id),
        ("device_id", r#""dev-\u0000x""#),
        ("account_id", "\"acct-\u{202E}1\""),
        ("ip", r#""999.999.1.1""#),
        ("amount_minor", "-5"),
        ("amount_minor", "-9223372036854775808"),
        ("amount_minor", "10000000001"),
        ("currency", r#""NOTACURRENCY""#),
        ("country", r#""""#),
        ("country", r#""XX""#),
    ];
    // Which faults apply: profile changes have ids only, logins ids and an IP.
    let n = match kind {
        Kind::Txn { .. } => faults.len(),
        Kind::Login { .. } => 4,
        _ => 3,
    };
    let (key, value) = faults[rng.random_range(0..n)];
    replace_value(buf, key, value.as_bytes());
}

/// Replaces the value of the first `"key":` in a generated record (whose values contain no
/// `,` or `}`) with `value`.
fn replace_value(buf: &mut Vec<u8>, key: &str, value: &[u8]) {
    let pat = format!("\"{key}\":");
    let Some(at) = buf.windows(pat.len()).position(|w| w == pat.as_bytes()) else {
        return;
    };
    let start = at + pat.len();
    let len = buf[start..]
        .iter()
        .position(|b| matches!(b, b',' | b'}'))
        .unwrap_or(buf.len() - start);
    buf.splice(start..start + len, value.iter().copied());
}

/// Writes `acct-<a>` into `s` and returns the used slice (the partition key).
fn format_account(a: u64, s: &mut [u8; 24]) -> &[u8] {
    let mut b = itoa::Buffer::new();
    let digits = b.format(a).as_bytes();
    s[..5].copy_from_slice(b"acct-");
    s[5..5 + digits.len()].copy_from_slice(digits);
    &s[..5 + digits.len()]
}
