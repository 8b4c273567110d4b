//! Sliding-window aggregates over logical time (SPEC §7).
//!
//! A [`WindowState`] holds the contributions `(s, value)` of one key in time order. Queried at
//! `t`, it aggregates exactly the contributions with `t - window <= s < t`: callers evict with
//! [`WindowState::evict_before`] `(t - window)` and query *before* adding contributions at `t`,
//! which is what [`KeyedWindows`](crate::keyed::KeyedWindows) does while processing times in
//! increasing order. All arithmetic is integer; empty windows give 0 for count, sum and
//! distinct_count and `None` for min, max and last_gap.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use serde::{Deserialize, Serialize};

use crate::time::LogicalTime;

/// The aggregation of a feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Agg {
    /// Number of contributions.
    Count,
    /// Sum of integer values.
    Sum,
    /// Minimum integer value.
    Min,
    /// Maximum integer value.
    Max,
    /// Number of distinct values.
    DistinctCount,
    /// `t - max(s)`.
    LastGap,
}

/// A contributed value: integer for sum/min/max, a value id for distinct_count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Value {
    /// No value (count, last_gap).
    Unit,
    /// An integer.
    Int(i64),
    /// The [`key_id`](crate::hashing::key_id) of a value counted by distinct_count.
    Id(u128),
}

/// A contribution as held in a window: 16 bytes with its time. Integers as they are; a
/// distinct_count value id by its low 64 bits (two values of one key's window share them with
/// probability 2⁻⁶⁴ per pair); no value as 0.
fn scalar(v: Value) -> i64 {
    match v {
        Value::Unit => 0,
        Value::Int(x) => x,
        Value::Id(id) => id as u64 as i64,
    }
}

/// Window contents of one key for one aggregation: 80 bytes, so the six windows of a typical
/// group share eight cache lines (the aggregate's own state lives in [`Acc`], one variant per
/// aggregation, instead of a field for every aggregation).
#[derive(Clone, Debug)]
pub struct WindowState {
    entries: VecDeque<(LogicalTime, i64)>,
    // Time of the oldest contribution (`LogicalTime::MAX` when empty): eviction checks it
    // without touching the deque's buffer (a cache miss per window on the hot path).
    oldest: LogicalTime,
    acc: Acc,
}

/// The running aggregate of a window.
#[derive(Clone, Debug)]
enum Acc {
    Count,
    LastGap,
    /// An i128 sum as (low 64 bits, high 64 bits): 8-byte aligned, so the state stays small.
    Sum(u64, i64),
    /// Monotonic deques of (time, value).
    Min(VecDeque<(LogicalTime, i64)>),
    Max(VecDeque<(LogicalTime, i64)>),
    /// Value → contributions held.
    DistinctCount(FxHashMap<i64, u32>),
}

fn join(lo: u64, hi: i64) -> i128 {
    (i128::from(hi) << 64) | i128::from(lo)
}

fn split(x: i128) -> (u64, i64) {
    (x as u64, (x >> 64) as i64)
}

impl WindowState {
    /// An empty window.
    pub fn new(agg: Agg) -> Self {
        let acc = match agg {
            Agg::Count => Acc::Count,
            Agg::LastGap => Acc::LastGap,
            Agg::Sum => Acc::Sum(0, 0),
            Agg::Min => Acc::Min(VecDeque::new()),
            Agg::Max => Acc::Max(VecDeque::new()),
            Agg::DistinctCount => Acc::DistinctCount(FxHashMap::default()),
        };
        WindowState {
            entries: VecDeque::new(),
            oldest: LogicalTime::MAX,
            acc,
        }
    }

    /// Time of the oldest contribution held (`LogicalTime::MAX` when empty).
    pub fn oldest(&self) -> LogicalTime {
        self.oldest
    }

    /// True when no contribution is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes contributions with `s < bound`.
    pub fn evict_before(&mut self, bound: LogicalTime) {
        if self.oldest >= bound {
            return;
        }
        self.evict_slow(bound);
        self.oldest = self.entries.front().map_or(LogicalTime::MAX, |(s, _)| *s);
    }

    fn evict_slow(&mut self, bound: LogicalTime) {
        while let Some((s, _)) = self.entries.front() {
            if *s >= bound {
                break;
            }
            let Some((s, v)) = self.entries.pop_front() else {
                break;
            };
            match &mut self.acc {
                Acc::Sum(lo, hi) => (*lo, *hi) = split(join(*lo, *hi) - i128::from(v)),
                Acc::DistinctCount(distinct) => {
                    if let Some(c) = distinct.get_mut(&v) {
                        *c -= 1;
                        if *c == 0 {
                            distinct.remove(&v);
                        }
                    }
                }
                Acc::Min(mono) | Acc::Max(mono) => {
                    while mono.front().is_some_and(|(ms, _)| *ms <= s) {
                        mono.pop_front();
                    }
                }
                Acc::Count | Acc::LastGap => {}
            }
        }
    }

    /// Adds a contribution at time `s` (must not be below any held contribution's time).
    pub fn push(&mut self, s: LogicalTime, v: Value) {
        // What eviction takes back out: a sum only ever holds integers.
        let held = match (&self.acc, v) {
            (Acc::Sum(..), Value::Int(x)) => x,
            (Acc::Sum(..), _) => 0,
            _ => scalar(v),
        };
        match (&mut self.acc, v) {
            (Acc::Sum(lo, hi), Value::Int(x)) => (*lo, *hi) = split(join(*lo, *hi) + i128::from(x)),
            (Acc::DistinctCount(distinct), _) => *distinct.entry(held).or_default() += 1,
            (Acc::Min(mono), Value::Int(x)) => {
                while mono.back().is_some_and(|(_, b)| *b >= x) {
                    mono.pop_back();
                }
                mono.push_back((s, x));
            }
            (Acc::Max(mono), Value::Int(x)) => {
                while mono.back().is_some_and(|(_, b)| *b <= x) {
                    mono.pop_back();
                }
                mono.push_back((s, x));
            }
            _ => {}
        }
        if self.entries.is_empty() {
            self.oldest = s;
        }
        self.entries.push_back((s, held));
    }

    /// The aggregate at query time `t` over what is held (caller has evicted and not yet added
    /// contributions at `t`).
    pub fn value(&self, t: LogicalTime) -> Option<i64> {
        match &self.acc {
            Acc::Count => Some(self.entries.len() as i64),
            Acc::Sum(lo, hi) => {
                let sum = join(*lo, *hi);
                Some(i64::try_from(sum).unwrap_or(if sum > 0 { i64::MAX } else { i64::MIN }))
            }
            Acc::DistinctCount(distinct) => Some(distinct.len() as i64),
            Acc::Min(mono) | Acc::Max(mono) => mono.front().map(|(_, v)| *v),
            Acc::LastGap => self.entries.back().map(|(s, _)| (t - s) as i64),
        }
    }

    /// The state digested in snapshots: the aggregate, except for last_gap, whose state is the
    /// latest contribution time (its value `t - s` changes with every `t`, its state does not).
    /// `None` when nothing is held.
    pub fn state(&self) -> Option<i64> {
        if self.entries.is_empty() {
            return None;
        }
        match self.acc {
            Acc::LastGap => self.entries.back().map(|(s, _)| *s as i64),
            _ => self.value(0),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Oracle: scan all contributions (shared with the keyed-window tests).
    pub(crate) fn scan(agg: Agg, all: &[(u64, i64)], t: u64, w: u64) -> Option<i64> {
        let xs: Vec<(u64, i64)> = all
            .iter()
            .copied()
            .filter(|(s, _)| *s < t && t.saturating_sub(w) <= *s)
            .collect();
        match agg {
            Agg::Count => Some(xs.len() as i64),
            Agg::Sum => Some(xs.iter().map(|x| x.1).sum()),
            Agg::Min => xs.iter().map(|x| x.1).min(),
            Agg::Max => xs.iter().map(|x| x.1).max(),
            Agg::DistinctCount => Some(
                xs.iter()
                    .map(|x| x.1)
                    .collect::<std::collections::BTreeSet<_>>()
                    .len() as i64,
            ),
            Agg::LastGap => xs.iter().map(|x| x.0).max().map(|s| (t - s) as i64),
        }
    }

    /// The size the layout is chosen for (see [`WindowState`]).
    #[test]
    fn window_state_is_80_bytes() {
        assert_eq!(std::mem::size_of::<WindowState>(), 80);
    }

    /// A sum past i64 saturates in its value and comes back exactly when contributions leave.
    #[test]
    fn sum_saturates_and_recovers() {
        let mut w = WindowState::new(Agg::Sum);
        w.push(0, Value::Int(i64::MAX));
        w.push(1, Value::Int(i64::MAX));
        assert_eq!(w.value(2), Some(i64::MAX));
        w.push(2, Value::Int(-5));
        w.evict_before(2);
        assert_eq!(w.value(3), Some(-5));
        let mut w = WindowState::new(Agg::Sum);
        w.push(0, Value::Int(i64::MIN));
        w.push(0, Value::Int(i64::MIN));
        assert_eq!(w.value(1), Some(i64::MIN));
    }

    #[test]
    fn matches_scanning_oracle_on_random_input() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for agg in [
            Agg::Count,
            Agg::Sum,
            Agg::Min,
            Agg::Max,
            Agg::DistinctCount,
            Agg::LastGap,
        ] {
            for _ in 0..50 {
                let w = rng.random_range(0..50u64);
                let mut all = Vec::new();
                let mut st = WindowState::new(agg);
                let mut t = 0u64;
                let mut last_query = None;
                for _ in 0..200 {
                    t += rng.random_range(0..5u64);
                    st.evict_before(t.saturating_sub(w));
                    // Queries at t come before contributions at t (as KeyedWindows does).
                    if last_query != Some(t) {
                        assert_eq!(st.value(t), scan(agg, &all, t, w), "{agg:?} w={w} t={t}");
                        last_query = Some(t);
                    }
                    let v = rng.random_range(-20..20i64);
                    let val = if agg == Agg::DistinctCount {
                        Value::Id(v as u128)
                    } else {
                        Value::Int(v)
                    };
                    st.push(t, val);
                    all.push((t, v));
                }
            }
        }
    }
}
