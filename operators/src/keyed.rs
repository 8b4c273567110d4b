//! [`KeyedWindows`]: point-in-time sliding-window lookups with incrementally maintained state
//! digests.
//!
//! Windows are laid out in groups ([`WindowSpec::slots`]): every window kept under the same key
//! (e.g. all features keyed by `card_id`) is one group, and one [`GroupInput`] per (event,
//! group) carries all of that event's contributions to the group's slots and, for a decision
//! event, one query of all of them. Keys are fixed-width [`KeyId`]s. Inputs are routed to the
//! worker owning the (group, key), buffered, and processed in logical-time order once the
//! frontier has passed their time. At time `t`, per key: evict contributions older than
//! `t - window`, answer every query at `t` (so a query sees exactly the contributions with
//! `t - window <= s < t`), then add the contributions at `t`. Each query is answered once, at
//! its own time, with one [`GroupAnswer`] holding every slot: a half-join against the window
//! state, never re-emitted when the state changes later.
//!
//! State is bounded by the windows: each contribution is queued for expiry at the first time
//! it is out of its window, and a key whose windows all emptied is dropped then.
//!
//! Every `snapshot_ms` of logical time, once the frontier reaches a multiple `T`, each worker
//! reports the digest of its state as of `T` in a [`SnapshotPart`]: the wrapping sum of a
//! 128-bit digest per non-empty (group, slot, key, state) and their count. The sum is kept
//! incrementally: at a boundary only the keys changed since the previous one (by a
//! contribution or an expiry) are digested again. Sums combine across workers in any order, so
//! the combined digest does not depend on the worker count.

use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;

use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

use crate::pending::Pending;
use crate::time::LogicalTime;
use crate::window::{Agg, Value, WindowState};

/// Folds broadcast maxima (from [`global_max`]) into `acc`.
pub fn fold_max<'a>(
    acc: &mut Option<LogicalTime>,
    data: impl Iterator<Item = &'a mut Vec<LogicalTime>>,
) {
    for m in data.flat_map(|batch| batch.drain(..)) {
        *acc = Some(acc.map_or(m, |g| g.max(m)));
    }
}

/// Trails a capability behind the input frontier `frontier_min`, but never past a snapshot
/// boundary still to be reported (`next_boundary`), so boundary outputs can carry exactly
/// their boundary's time. Once the input is `complete`, boundaries above `global_max` are
/// never reported and the capability is released.
pub fn trail_boundaries(
    trailing: &mut Option<Capability<LogicalTime>>,
    frontier_min: Option<LogicalTime>,
    next_boundary: Option<LogicalTime>,
    complete: bool,
    global_max: Option<LogicalTime>,
) {
    let Some(c) = trailing.as_mut() else { return };
    let hold = match (frontier_min, next_boundary) {
        (Some(f), Some(s)) => Some(f.min(s)),
        (Some(f), None) => Some(f),
        (None, Some(s)) if !complete || global_max.is_some_and(|m| s <= m) => Some(s),
        (None, _) => None,
    };
    match hold {
        Some(h) if h > *c.time() => c.downgrade(&h),
        Some(_) => {}
        None => *trailing = None,
    }
}

/// A key of keyed window state: a [`key_id`](crate::hashing::key_id) (fixed width, no String).
pub type KeyId = u128;

/// One event's contributions to, and point-in-time query of, one key of one window group.
///
/// A group is a set of windows kept under the same key (e.g. every feature keyed by
/// `card_id`): one message per (event, group) carries all its contributions, and one state
/// lookup serves them all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInput<Q> {
    /// The group (an index into [`WindowSpec::slots`]).
    pub group: u16,
    /// The key.
    pub key: KeyId,
    /// Logical time of the event.
    pub time: LogicalTime,
    /// Contributions at `time`: (slot within the group, value).
    pub adds: Vec<(u16, Value)>,
    /// A query of every slot as of `time` (strictly before), answered with this tag.
    pub query: Option<Q>,
}

/// An answered query: the value of every slot of the group as of `time`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupAnswer<Q> {
    /// The query's tag.
    pub tag: Q,
    /// The query's time.
    pub time: LogicalTime,
    /// The group.
    pub group: u16,
    /// One value per slot (`None` for min/max/last_gap of nothing).
    pub values: Vec<Option<i64>>,
}

/// One worker's digest of the window state as of `time`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPart {
    /// The snapshot boundary.
    pub time: LogicalTime,
    /// Wrapping sum of per-(group, slot, key, state) digests.
    pub digest: u128,
    /// (key, slot) pairs with a non-empty window.
    pub keys: u64,
    /// Largest contribution time this worker has seen (bounds which boundaries are reported).
    pub max_seen: LogicalTime,
}

/// Output of [`KeyedWindows::keyed_windows`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WindowOutput<Q> {
    /// An answered query.
    Answer(GroupAnswer<Q>),
    /// A state digest part.
    Snapshot(SnapshotPart),
}

/// The window layout: the slots (aggregation, window in ms) of every group, and the digest of
/// one slot's state.
pub trait WindowSpec: Clone + 'static {
    /// Aggregation and window (ms) of each slot of `group` (empty for an unknown group).
    fn slots(&self, group: u16) -> &[(Agg, u64)];
    /// 128-bit digest of `(group, slot, key, state)` for state snapshots, where `state` is
    /// [`WindowState::state`].
    fn digest(&self, group: u16, slot: u16, key: KeyId, state: i64) -> u128;
}

/// Extension trait for keyed sliding-window lookups.
pub trait KeyedWindows<'scope, Q> {
    /// See the module docs. `snapshot_ms == 0` disables snapshots. `bound` carries the
    /// largest logical time of the whole input (see [`global_max`]): once every input is
    /// complete, only boundaries up to it are reported.
    fn keyed_windows<S: WindowSpec>(
        self,
        spec: S,
        snapshot_ms: u64,
        bound: StreamVec<'scope, LogicalTime, LogicalTime>,
    ) -> StreamVec<'scope, LogicalTime, WindowOutput<Q>>;
}

/// The largest logical time of a stream, broadcast to every worker when the stream
/// completes. Its capability trails the input frontier, so it never holds anything back.
pub fn global_max<'scope>(
    times: StreamVec<'scope, LogicalTime, LogicalTime>,
) -> StreamVec<'scope, LogicalTime, LogicalTime> {
    use timely::dataflow::operators::vec::Broadcast;
    times
        .unary_frontier(
            timely::dataflow::channels::pact::Pipeline,
            "GlobalMax",
            |cap, _| {
                let mut cap = Some(cap);
                let mut max: Option<LogicalTime> = None;
                move |(input, frontier), output| {
                    input.for_each_stamp(|_c, data| {
                        for batch in data {
                            for t in batch.drain(..) {
                                max = Some(max.map_or(t, |m: LogicalTime| m.max(t)));
                            }
                        }
                    });
                    if let Some(c) = cap.as_mut() {
                        match frontier.frontier().iter().min() {
                            Some(f) if f > c.time() => c.downgrade(f),
                            Some(_) => {}
                            None => {
                                if let Some(m) = max {
                                    output.session(&*c).give(m);
                                }
                                cap = None;
                            }
                        }
                    }
                }
            },
        )
        .broadcast()
}

/// The route of a (group, key) pair: the key's low 64 bits mixed with the group.
pub fn route(group: u16, key: KeyId) -> u64 {
    (key as u64) ^ u64::from(group).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The windows of one (group, key) with its contribution to the running digest.
struct GroupState {
    group: u16,
    key: KeyId,
    windows: Vec<WindowState>,
    /// The first time at which some window holds a contribution out of its window
    /// (`LogicalTime::MAX` when all are empty): eviction at any earlier time is a no-op and
    /// touches none of the windows (one compare instead of a cache line per window).
    due: LogicalTime,
    /// This key's share of the worker digest as of the last boundary it was digested at.
    digest: u128,
    /// Its non-empty slots at that boundary.
    live: u64,
    /// The boundary epoch at which it was last put on the dirty list by a change
    /// (contributions), so a key changed many times between boundaries is listed once.
    marked: u32,
    /// The boundary epoch at which it was last digested (the dirty list may name it twice:
    /// once for a change, once per expiry).
    digested: u32,
}

/// Empty windows for every slot of `group`.
fn fresh<S: WindowSpec>(spec: &S, group: u16) -> Vec<WindowState> {
    spec.slots(group)
        .iter()
        .map(|(agg, _)| WindowState::new(*agg))
        .collect()
}

/// A window length and its (due time, state slot) queue.
type ExpiryQueue = (u64, VecDeque<(LogicalTime, u32)>);

/// The window state of one worker: every live (group, key), the running digest, and the
/// expiry queues that evict state as soon as it falls out of every window.
///
/// States live in a slab (`states`, reused through `free`), found by (group, key) through
/// `index`; the expiry queues and the dirty list name slab slots, so settling them needs no
/// hash lookup. A queue entry may outlive its key (the key was dropped, its slot perhaps
/// reused by another): it then evicts or digests whatever the slot holds, which changes
/// nothing, since eviction and digesting are idempotent.
///
/// With snapshots on, expiry is settled at snapshot boundaries only: the queue entries due by
/// a boundary put their slots on the dirty list, and [`Self::digest_at`] evicts, digests and
/// drops each listed key once. Between boundaries a key is evicted lazily when it is touched
/// (answers and contributions evict first), so answers are the same; state that left every
/// window is dropped at the next boundary instead of at once. Without snapshots,
/// [`Self::expire`] evicts and drops at every processed time.
struct WindowStore<S: WindowSpec> {
    spec: S,
    index: HashMap<(u16, KeyId), u32>,
    states: Vec<Option<GroupState>>,
    free: Vec<u32>,
    /// Per group: its distinct windows, each with a queue of (first time a contribution is
    /// out of that window, slot), in time order (contributions arrive in time order).
    expiry: Vec<Vec<ExpiryQueue>>,
    /// Per group, per slot: the index of its window in `expiry[group]`.
    slot_window: Vec<Vec<usize>>,
    /// States changed or expired since the last boundary (only kept when snapshots are on;
    /// may repeat a slot).
    dirty: Vec<u32>,
    track_dirty: bool,
    /// Boundaries digested so far (+1): the epoch of changes since the last one.
    epoch: u32,
    digest: u128,
    live: u64,
}

impl<S: WindowSpec> WindowStore<S> {
    fn new(spec: S, track_dirty: bool) -> Self {
        WindowStore {
            spec,
            index: HashMap::default(),
            states: Vec::new(),
            free: Vec::new(),
            expiry: Vec::new(),
            slot_window: Vec::new(),
            dirty: Vec::new(),
            track_dirty,
            epoch: 1,
            digest: 0,
            live: 0,
        }
    }

    /// True when no key holds state.
    fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn layout(&mut self, group: u16) {
        let g = group as usize;
        while self.expiry.len() <= g {
            let slots = self.spec.slots(self.expiry.len() as u16);
            let mut windows: Vec<ExpiryQueue> = Vec::new();
            let mut index = Vec::with_capacity(slots.len());
            for (_, w) in slots {
                match windows.iter().position(|(x, _)| x == w) {
                    Some(i) => index.push(i),
                    None => {
                        index.push(windows.len());
                        windows.push((*w, VecDeque::new()));
                    }
                }
            }
            self.expiry.push(windows);
            self.slot_window.push(index);
        }
    }

    /// Evicts what is out of its window at `t` (nothing to do before `st.due`) and brings
    /// `st.due` up to date.
    fn evict(spec: &S, st: &mut GroupState, t: LogicalTime) {
        if t < st.due {
            return;
        }
        let slots = spec.slots(st.group);
        for (ws, (_, w)) in st.windows.iter_mut().zip(slots) {
            ws.evict_before(t.saturating_sub(*w));
        }
        st.due = st
            .windows
            .iter()
            .zip(slots)
            .map(|(ws, (_, w))| ws.oldest().saturating_add(*w).saturating_add(1))
            .min()
            .unwrap_or(LogicalTime::MAX);
    }

    /// Drops the state in slot `n`.
    fn drop_state(&mut self, n: u32) {
        if let Some(st) = self.states.get_mut(n as usize).and_then(Option::take) {
            self.index.remove(&(st.group, st.key));
            self.free.push(n);
        }
    }

    /// Evicts, at every processed time, each key with a contribution that left a window at or
    /// before `t`, dropping keys left empty; with snapshots on this is left to the next
    /// boundary ([`Self::digest_at`]), and this is a no-op.
    fn expire(&mut self, t: LogicalTime) {
        if self.track_dirty {
            return;
        }
        // The dirty list is unused without snapshots: it serves as the scratch buffer.
        let mut due = std::mem::take(&mut self.dirty);
        self.pop_due(t, &mut due);
        for n in due.drain(..) {
            let Some(Some(st)) = self.states.get_mut(n as usize) else {
                continue;
            };
            Self::evict(&self.spec, st, t);
            if st.due == LogicalTime::MAX {
                self.drop_state(n);
            }
        }
        self.dirty = due;
    }

    /// Takes every expiry queue entry due by `t`, appending its slot to `out`.
    fn pop_due(&mut self, t: LogicalTime, out: &mut Vec<u32>) {
        for windows in self.expiry.iter_mut() {
            for (_, queue) in windows.iter_mut() {
                while let Some(&(due, n)) = queue.front() {
                    if due > t {
                        break;
                    }
                    queue.pop_front();
                    out.push(n);
                }
            }
        }
    }

    fn answer(&mut self, group: u16, key: KeyId, t: LogicalTime) -> Vec<Option<i64>> {
        let state = self
            .index
            .get(&(group, key))
            .and_then(|n| self.states.get_mut(*n as usize))
            .and_then(Option::as_mut);
        match state {
            Some(st) => {
                Self::evict(&self.spec, st, t);
                st.windows.iter().map(|w| w.value(t)).collect()
            }
            // An unknown key: the values of empty windows.
            None => self
                .spec
                .slots(group)
                .iter()
                .map(|(agg, _)| WindowState::new(*agg).value(t))
                .collect(),
        }
    }

    /// The slab slot of (group, key), created empty if absent.
    fn slot(&mut self, group: u16, key: KeyId) -> u32 {
        if let Some(n) = self.index.get(&(group, key)) {
            return *n;
        }
        let st = GroupState {
            group,
            key,
            windows: fresh(&self.spec, group),
            due: LogicalTime::MAX,
            digest: 0,
            live: 0,
            marked: 0,
            digested: 0,
        };
        let n = match self.free.pop() {
            Some(n) => {
                self.states[n as usize] = Some(st);
                n
            }
            None => {
                self.states.push(Some(st));
                (self.states.len() - 1) as u32
            }
        };
        self.index.insert((group, key), n);
        n
    }

    fn add(&mut self, group: u16, key: KeyId, t: LogicalTime, adds: Vec<(u16, Value)>) {
        self.layout(group);
        let g = group as usize;
        let n = self.slot(group, key);
        let Some(Some(st)) = self.states.get_mut(n as usize) else {
            return;
        };
        Self::evict(&self.spec, st, t);
        let mut queued = 0u64;
        for (slot, value) in adds {
            let Some(ws) = st.windows.get_mut(slot as usize) else {
                continue;
            };
            ws.push(t, value);
            let wi = self.slot_window[g][slot as usize];
            if wi >= 64 || queued & (1 << wi) == 0 {
                queued |= 1u64.checked_shl(wi as u32).unwrap_or(0);
                let (w, q) = &mut self.expiry[g][wi];
                let due = t.saturating_add(*w).saturating_add(1);
                st.due = st.due.min(due);
                q.push_back((due, n));
            }
        }
        if self.track_dirty && st.marked != self.epoch {
            st.marked = self.epoch;
            self.dirty.push(n);
        }
    }

    /// Brings the digest up to date as of boundary `t`: lists the slots with expiry due by
    /// `t`, then digests again only the keys changed or expired since the last boundary,
    /// dropping those left empty.
    fn digest_at(&mut self, t: LogicalTime) -> (u128, u64) {
        let mut dirty = std::mem::take(&mut self.dirty);
        self.pop_due(t, &mut dirty);
        let epoch = self.epoch;
        for n in dirty.drain(..) {
            let Some(Some(st)) = self.states.get_mut(n as usize) else {
                continue;
            };
            if st.digested == epoch {
                continue;
            }
            st.digested = epoch;
            Self::evict(&self.spec, st, t);
            let (mut d, mut live) = (0u128, 0u64);
            for (slot, ws) in st.windows.iter().enumerate() {
                if let Some(s) = ws.state() {
                    d = d.wrapping_add(self.spec.digest(st.group, slot as u16, st.key, s));
                    live += 1;
                }
            }
            self.digest = self.digest.wrapping_sub(st.digest).wrapping_add(d);
            self.live = self.live - st.live + live;
            st.digest = d;
            st.live = live;
            if live == 0 {
                self.drop_state(n);
            }
        }
        // Keep the buffer's capacity for the next interval.
        self.dirty = dirty;
        self.epoch += 1;
        (self.digest, self.live)
    }
}

impl<'scope, Q> KeyedWindows<'scope, Q> for StreamVec<'scope, LogicalTime, GroupInput<Q>>
where
    Q: timely::ExchangeData,
{
    fn keyed_windows<S: WindowSpec>(
        self,
        spec: S,
        snapshot_ms: u64,
        bound: StreamVec<'scope, LogicalTime, LogicalTime>,
    ) -> StreamVec<'scope, LogicalTime, WindowOutput<Q>> {
        let pact = Exchange::new(|i: &GroupInput<Q>| route(i.group, i.key));
        self.binary_frontier(bound, pact, Pipeline, "KeyedWindows", move |cap, _info| {
            let mut global_max: Option<LogicalTime> = None;
            let mut trailing: Option<Capability<LogicalTime>> = Some(cap);
            let mut pending: Pending<GroupInput<Q>> = Pending::new();
            let mut store = WindowStore::new(spec, snapshot_ms > 0);
            let mut next_snapshot: Option<LogicalTime> = None;
            let mut max_seen: LogicalTime = 0;
            move |(input, frontier), (bound_in, bound_frontier), output| {
                bound_in.for_each_stamp(|_c, data| fold_max(&mut global_max, data));
                let complete =
                    frontier.frontier().is_empty() && bound_frontier.frontier().is_empty();
                input.for_each_stamp(|cap, data| {
                    let Some(cap) = cap.retain_least(output.output_index()) else {
                        return;
                    };
                    pending.stash_all(&cap, data, |i| i.time);
                });
                let out_cap = pending.capability().cloned();
                let mut out: Vec<WindowOutput<Q>> = Vec::new();
                loop {
                    let next_input = pending.first_time().filter(|t| !frontier.less_equal(t));
                    // Boundaries are due once the frontier reaches them (state as of T needs
                    // only contributions before T).
                    let snap = next_snapshot.filter(|t| {
                        !frontier.less_than(t)
                            && !bound_frontier.less_than(t)
                            && (!complete || global_max.is_some_and(|m| *t <= m))
                    });
                    match (snap, next_input) {
                        (Some(ts), ni) if ni.is_none_or(|ti| ts <= ti) => {
                            let (digest, keys) = store.digest_at(ts);
                            if keys > 0 {
                                if let Some(c) = trailing.as_ref() {
                                    let at = if *c.time() <= ts {
                                        c.delayed(&ts)
                                    } else {
                                        c.clone()
                                    };
                                    output.session(&at).give(WindowOutput::Snapshot(
                                        SnapshotPart {
                                            time: ts,
                                            digest,
                                            keys,
                                            max_seen,
                                        },
                                    ));
                                }
                            }
                            next_snapshot = if store.is_empty() {
                                None
                            } else {
                                Some(ts + snapshot_ms)
                            };
                        }
                        (_, Some(t)) if next_snapshot.is_none_or(|ts| t < ts) => {
                            let Some((_, items)) = pending.pop_if(|_| true) else {
                                break;
                            };
                            if snapshot_ms > 0 && next_snapshot.is_none() {
                                next_snapshot = Some((t / snapshot_ms + 1) * snapshot_ms);
                            }
                            store.expire(t);
                            // Queries first (strictly before t), then contributions at t.
                            let mut adds = Vec::with_capacity(items.len());
                            for item in items {
                                if let Some(tag) = item.query {
                                    let values = store.answer(item.group, item.key, t);
                                    out.push(WindowOutput::Answer(GroupAnswer {
                                        tag,
                                        time: t,
                                        group: item.group,
                                        values,
                                    }));
                                }
                                if !item.adds.is_empty() {
                                    adds.push((item.group, item.key, item.adds));
                                }
                            }
                            for (group, key, a) in adds {
                                max_seen = max_seen.max(t);
                                store.add(group, key, t, a);
                            }
                        }
                        _ => break,
                    }
                }
                pending.settle();
                // One message per activation, not one per logical time: the capability of the
                // earliest time processed is valid for every later one.
                if let Some(c) = out_cap.filter(|_| !out.is_empty()) {
                    output.session(&c).give_iterator(out.drain(..));
                }
                trail_boundaries(
                    &mut trailing,
                    frontier.frontier().iter().min().copied(),
                    next_snapshot,
                    complete,
                    global_max,
                );
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::state_digest;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeMap;

    #[derive(Clone)]
    struct Spec(Vec<Vec<(Agg, u64)>>);

    impl WindowSpec for Spec {
        fn slots(&self, group: u16) -> &[(Agg, u64)] {
            self.0.get(group as usize).map_or(&[], |g| g.as_slice())
        }
        fn digest(&self, group: u16, slot: u16, key: KeyId, state: i64) -> u128 {
            state_digest(u128::from(group) << 16 | u128::from(slot), key, state)
        }
    }

    /// Oracle: the value and the snapshot state of one slot over every contribution, by scan.
    fn scan(agg: Agg, w: u64, all: &[(u64, i64)], t: u64) -> (Option<i64>, Option<i64>) {
        let value = crate::window::tests::scan(agg, all, t, w);
        let live = all
            .iter()
            .filter(|(s, _)| *s < t && t.saturating_sub(w) <= *s);
        let state = match agg {
            Agg::LastGap => live.map(|x| x.0 as i64).max(),
            _ if live.count() == 0 => None,
            _ => value,
        };
        (value, state)
    }

    /// Answers, the incrementally kept digest and the dropping of empty keys agree with a
    /// scanning oracle and a from-scratch digest on seeded random input.
    #[test]
    fn window_store_matches_scanning_oracle_and_full_digest() {
        let spec = Spec(vec![
            vec![
                (Agg::Count, 50),
                (Agg::Sum, 20),
                (Agg::DistinctCount, 30),
                (Agg::LastGap, 50),
            ],
            vec![(Agg::Max, 10), (Agg::Min, 40)],
        ]);
        // With snapshots (digests, expiry settled at boundaries) and without (expiry at every
        // time).
        for (seed, track) in (0..20u64).flat_map(|s| [(s, true), (s, false)]) {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut store = WindowStore::new(spec.clone(), track);
            // (group, key, slot) -> contributions (time, value).
            let mut all: BTreeMap<(u16, KeyId, u16), Vec<(u64, i64)>> = BTreeMap::new();
            let (mut t, snapshot) = (0u64, 25u64);
            let mut next_boundary = snapshot;
            for _ in 0..600 {
                // Strictly increasing: all queries at t come before the contributions at t.
                t += rng.random_range(1..6u64);
                while track && next_boundary <= t {
                    let b = next_boundary;
                    store.expire(b);
                    let (digest, live) = store.digest_at(b);
                    let (mut want, mut want_live) = (0u128, 0u64);
                    for ((g, k, slot), xs) in &all {
                        let (agg, w) = spec.0[*g as usize][*slot as usize];
                        if let (_, Some(s)) = scan(agg, w, xs, b) {
                            want = want.wrapping_add(spec.digest(*g, *slot, *k, s));
                            want_live += 1;
                        }
                    }
                    assert_eq!(
                        (digest, live),
                        (want, want_live),
                        "seed {seed} boundary {b}"
                    );
                    // Keys whose windows are all empty are gone.
                    for st in store.states.iter().flatten() {
                        assert!(
                            st.windows.iter().any(|w| !w.is_empty()),
                            "{} {} kept empty",
                            st.group,
                            st.key
                        );
                    }
                    assert_eq!(store.index.len(), store.states.iter().flatten().count());
                    next_boundary += snapshot;
                }
                store.expire(t);
                if !track {
                    // Keys whose every contribution is out of its window by t are gone.
                    for st in store.states.iter().flatten() {
                        assert!(st.due > t, "seed {seed}: {} kept past its windows", st.key);
                    }
                }
                for _ in 0..rng.random_range(0..3) {
                    let (g, k) = (rng.random_range(0..2u16), rng.random_range(0..6u128));
                    let got = store.answer(g, k, t);
                    let want: Vec<Option<i64>> = spec.0[g as usize]
                        .iter()
                        .enumerate()
                        .map(|(slot, (agg, w))| {
                            let xs = all.get(&(g, k, slot as u16)).map_or(&[][..], |v| v);
                            scan(*agg, *w, xs, t).0
                        })
                        .collect();
                    assert_eq!(got, want, "seed {seed} t {t} group {g} key {k}");
                }
                for _ in 0..rng.random_range(0..3) {
                    let (g, k) = (rng.random_range(0..2u16), rng.random_range(0..6u128));
                    let mut adds = Vec::new();
                    for slot in 0..spec.0[g as usize].len() as u16 {
                        if rng.random_bool(0.7) {
                            let v = rng.random_range(-9..9i64);
                            let value = match spec.0[g as usize][slot as usize].0 {
                                Agg::Count | Agg::LastGap => Value::Unit,
                                Agg::DistinctCount => Value::Id(v as u128),
                                _ => Value::Int(v),
                            };
                            adds.push((slot, value));
                            all.entry((g, k, slot)).or_default().push((t, v));
                        }
                    }
                    store.add(g, k, t, adds);
                }
            }
        }
    }
}
