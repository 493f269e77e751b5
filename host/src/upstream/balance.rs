//! Endpoint selection: the step of the request path that turns "send this to
//! upstream X" into "send it to endpoint i". The proxy builds one [`Balancer`]
//! per endpoint set and calls [`Balancer::pick`] for every attempt; a retry
//! passes the endpoints it already tried so it lands somewhere else.
//!
//! Endpoint health (active checks, outlier ejection, breakers) lives outside:
//! the balancer only asks each [`Candidate`] whether it is available.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::config::Balance;

/// Where a host's [`Candidate::latency_cost`] usually comes from.
pub use self::peak_ewma::PeakEwma;

mod peak_ewma;

/// What a balancer needs to know about an endpoint.
pub trait Candidate {
    /// At least 1.
    fn weight(&self) -> u32;
    /// Healthy, not ejected, breaker not open.
    fn available(&self) -> bool;
    /// Requests outstanding now.
    fn in_flight(&self) -> u32;
    /// Peak-EWMA latency in seconds (0.0 when unknown).
    fn latency_cost(&self) -> f64;
}

/// Maglev table sizes: primes, so every endpoint's permutation visits every
/// slot. The smallest one with at least 100 slots per endpoint is used, which
/// keeps each endpoint's share within about 1% of its weight — and at least
/// 65 537 (Envoy's default), so the size stays the same while endpoints come
/// and go (up to 655 of them): a table of another size moves every key.
const TABLE_SIZES: [usize; 5] = [65_537, 131_071, 262_139, 524_287, 1_048_573];

/// Weighted draws tried before scanning for a qualifying endpoint: with most
/// endpoints up, one or two draws suffice and a pick stays O(log n).
const DRAWS: usize = 4;

const EMPTY: u32 = u32::MAX;

/// Endpoint selection for one endpoint set, built when the set changes.
///
/// `endpoints` given to [`pick`](Self::pick) must be that set, in the order
/// of the `weights` the balancer was built with; indices past `weights` are
/// never picked.
#[derive(Debug)]
pub struct Balancer {
    kind: Balance,
    weights: Box<[u32]>,
    /// Round-robin position, also the fallback for keyless consistent hashing.
    next: AtomicUsize,
    /// Smooth weighted round-robin's running weights (empty for other kinds).
    current: Mutex<Box<[i64]>>,
    /// Running sums of `weights`, to draw an endpoint in proportion to its
    /// weight by binary search (empty unless power of two choices).
    cumulative: Box<[u64]>,
    /// Maglev lookup table of endpoint indices (empty unless consistent hash).
    table: Box<[u32]>,
}

impl Balancer {
    /// Whether picks read the endpoints' latency ([`PeakEwma`]): only then
    /// is it worth recording.
    pub fn uses_latency(&self) -> bool {
        self.kind == Balance::PeakEwma
    }

    /// Whether picks weigh the requests in flight: only then is a request
    /// counted until its response body ends, not only its head.
    pub fn weighs_load(&self) -> bool {
        matches!(self.kind, Balance::LeastRequest | Balance::PeakEwma)
    }

    /// `weights[i]` is endpoint i's weight (0 is read as 1), `names[i]` its
    /// address. The Maglev table for consistent hashing is built here, once,
    /// from the names: an endpoint keeps its slots wherever it is in the
    /// list, and only the keys of one that leaves move.
    pub fn new(kind: Balance, weights: &[u32], names: &[&str]) -> Self {
        let weights: Box<[u32]> = weights.iter().map(|w| (*w).max(1)).collect();
        let current = match kind {
            Balance::WeightedRoundRobin => vec![0; weights.len()].into_boxed_slice(),
            _ => Box::default(),
        };
        let cumulative = match kind {
            Balance::LeastRequest | Balance::PeakEwma => weights
                .iter()
                .scan(0u64, |sum, w| {
                    *sum += u64::from(*w);
                    Some(*sum)
                })
                .collect(),
            _ => Box::default(),
        };
        let table = match kind {
            Balance::ConsistentHash => maglev_table(&weights, names),
            _ => Box::default(),
        };
        Self { kind, weights, next: AtomicUsize::new(0), current: Mutex::new(current), cumulative, table }
    }

    /// Index of the endpoint to use, skipping unavailable ones and those in
    /// `exclude` (already tried by this request: retries go to a different
    /// endpoint). `hash` is the request's key hash for consistent hashing
    /// (`None` falls back to round-robin). `None` when no endpoint qualifies.
    pub fn pick<C: Candidate>(&self, endpoints: &[C], hash: Option<u64>, exclude: &[usize]) -> Option<usize> {
        match self.kind {
            Balance::RoundRobin => self.round_robin(endpoints, exclude),
            Balance::WeightedRoundRobin => self.smooth_weighted(endpoints, exclude),
            Balance::LeastRequest => self.two_choices(endpoints, exclude, least_loaded),
            Balance::PeakEwma => self.two_choices(endpoints, exclude, fastest),
            Balance::ConsistentHash => match hash {
                Some(hash) => self.maglev(endpoints, hash, exclude),
                None => self.round_robin(endpoints, exclude),
            },
        }
    }

    fn qualifies<C: Candidate>(&self, endpoints: &[C], exclude: &[usize], i: usize) -> bool {
        i < self.weights.len() && !exclude.contains(&i) && endpoints.get(i).is_some_and(C::available)
    }

    fn len<C>(&self, endpoints: &[C]) -> usize {
        endpoints.len().min(self.weights.len())
    }

    fn round_robin<C: Candidate>(&self, endpoints: &[C], exclude: &[usize]) -> Option<usize> {
        let n = self.len(endpoints);
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        (0..n).map(|k| (start + k) % n).find(|&i| self.qualifies(endpoints, exclude, i))
    }

    /// nginx's smooth weighted round-robin: over a cycle of total-weight
    /// picks each endpoint gets exactly its weight, interleaved rather than
    /// in runs. Unavailable endpoints sit out and their share is spread.
    fn smooth_weighted<C: Candidate>(&self, endpoints: &[C], exclude: &[usize]) -> Option<usize> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let mut total = 0i64;
        let mut best: Option<(usize, i64)> = None;
        for (i, (running, weight)) in current.iter_mut().zip(self.weights.iter()).enumerate() {
            if !self.qualifies(endpoints, exclude, i) {
                continue;
            }
            *running += i64::from(*weight);
            total += i64::from(*weight);
            if best.is_none_or(|(_, top)| *running > top) {
                best = Some((i, *running));
            }
        }
        let (chosen, _) = best?;
        if let Some(running) = current.get_mut(chosen) {
            *running -= total;
        }
        Some(chosen)
    }

    /// The power of two random choices: draw two distinct qualifying
    /// endpoints in proportion to their weights and keep the better. Drawing
    /// by weight is what honours weights when loads tie (an idle upstream).
    fn two_choices<C: Candidate>(
        &self,
        endpoints: &[C],
        exclude: &[usize],
        better: fn(&C, &C) -> bool,
    ) -> Option<usize> {
        let first = self.draw(endpoints, exclude, None)?;
        let Some(second) = self.draw(endpoints, exclude, Some(first)) else { return Some(first) };
        match (endpoints.get(first), endpoints.get(second)) {
            (Some(a), Some(b)) if better(b, a) => Some(second),
            _ => Some(first),
        }
    }

    /// A qualifying endpoint other than `not`, with probability proportional
    /// to its weight.
    fn draw<C: Candidate>(&self, endpoints: &[C], exclude: &[usize], not: Option<usize>) -> Option<usize> {
        let total = self.cumulative.last().copied().unwrap_or(0);
        if total == 0 {
            return None;
        }
        for _ in 0..DRAWS {
            let point = fastrand::u64(0..total);
            let i = self.cumulative.partition_point(|&sum| sum <= point);
            if Some(i) != not && self.qualifies(endpoints, exclude, i) {
                return Some(i);
            }
        }
        // Many endpoints are out: an exact weighted draw over those that
        // qualify, so the distribution stays proportional either way.
        let eligible = |i: &usize| Some(*i) != not && self.qualifies(endpoints, exclude, *i);
        let weight = |i: usize| u64::from(self.weights.get(i).copied().unwrap_or(1));
        let open: u64 = (0..self.len(endpoints)).filter(eligible).map(weight).sum();
        if open == 0 {
            return None;
        }
        let mut point = fastrand::u64(0..open);
        (0..self.len(endpoints)).filter(eligible).find(|&i| {
            let w = weight(i);
            if point < w {
                return true;
            }
            point -= w;
            false
        })
    }

    fn maglev<C: Candidate>(&self, endpoints: &[C], hash: u64, exclude: &[usize]) -> Option<usize> {
        let size = self.table.len();
        if size == 0 || !(0..self.len(endpoints)).any(|i| self.qualifies(endpoints, exclude, i)) {
            return None;
        }
        // Walking forward from the key's slot moves only the keys whose
        // endpoint is out, and spreads them like the table itself.
        let start = (hash % size as u64) as usize;
        (0..size).map(|k| self.table[(start + k) % size] as usize).find(|&i| self.qualifies(endpoints, exclude, i))
    }
}

/// In-flight requests per unit of weight, compared without division.
fn least_loaded<C: Candidate>(b: &C, a: &C) -> bool {
    let load = |c: &C, other: &C| u64::from(c.in_flight()) * u64::from(other.weight().max(1));
    load(b, a) < load(a, b)
}

/// Linkerd/Finagle's cost: expected latency × (requests queued ahead + 1),
/// divided by weight so a weighted endpoint is expected to absorb more.
/// While either latency is unknown, fall back to in-flight load: treating
/// "unknown" as zero cost would send everything to a new endpoint until its
/// first response comes back.
fn fastest<C: Candidate>(b: &C, a: &C) -> bool {
    let (la, lb) = (a.latency_cost(), b.latency_cost());
    if !(la > 0.0 && lb > 0.0) {
        return least_loaded(b, a);
    }
    let cost = |c: &C, latency: f64| latency * (f64::from(c.in_flight()) + 1.0) / f64::from(c.weight().max(1));
    cost(b, lb) < cost(a, la)
}

/// Maglev (Eisenbud et al., NSDI 2016), weighted as Envoy does it: in each
/// round an endpoint claims its next preferred free slot only once its
/// weight has paid for it, so slot counts follow weights.
/// Each endpoint's walk through the table is seeded by its name, and the
/// endpoints take their turns in the order of their names' hashes: the
/// table is the same whatever order the list is in.
fn maglev_table(weights: &[u32], names: &[&str]) -> Box<[u32]> {
    let n = weights.len();
    if n == 0 {
        return Box::default();
    }
    let size = TABLE_SIZES.iter().copied().find(|s| *s >= n.saturating_mul(100)).unwrap_or(1_048_573);
    let heaviest = weights.iter().copied().max().map_or(1, u64::from);
    let mut cursors: Vec<Cursor> = (0..n)
        .map(|i| {
            let name = names.get(i).map_or(&[][..], |n| n.as_bytes());
            Cursor {
                index: i as u32,
                id: hash_key(name),
                slot: (seeded(b'o', name) % size as u64) as usize,
                skip: (seeded(b's', name) % (size as u64 - 1)) as usize + 1,
                weight: weights.get(i).copied().map_or(1, u64::from),
                due: 0,
            }
        })
        .collect();
    cursors.sort_unstable_by_key(|c| (c.id, c.index));
    let mut table = vec![EMPTY; size];
    let mut filled = 0;
    let mut round = 0u64;
    // Terminates: the heaviest endpoint claims a slot every round, and a
    // prime size makes each cursor's walk reach every free slot.
    while filled < size {
        for cursor in &mut cursors {
            if round * cursor.weight < cursor.due {
                continue;
            }
            cursor.due += heaviest;
            while table[cursor.slot] != EMPTY {
                cursor.slot = (cursor.slot + cursor.skip) % size;
            }
            table[cursor.slot] = cursor.index;
            cursor.slot = (cursor.slot + cursor.skip) % size;
            filled += 1;
            if filled == size {
                break;
            }
        }
        round += 1;
    }
    table.into_boxed_slice()
}

/// An endpoint's walk through the Maglev table while it is built.
struct Cursor {
    /// Its place in the endpoint list.
    index: u32,
    /// Its name's hash: the order of turns.
    id: u64,
    slot: usize,
    skip: usize,
    weight: u64,
    /// Weight paid so far; the endpoint claims a slot when its rounds × weight reach it.
    due: u64,
}

/// Per-endpoint permutation parameters, derived from its name alone so two
/// gateways with the same endpoints build the same table.
fn seeded(tag: u8, name: &[u8]) -> u64 {
    fmix64(fnv1a(name) ^ u64::from(tag))
}

/// A stable, well-mixed 64-bit hash of a request key: FNV-1a, then
/// MurmurHash3's finaliser because FNV alone mixes short keys poorly into
/// the low bits that pick a table slot. Fixed constants and no per-process
/// seed, so every gateway maps a key to the same endpoint.
pub fn hash_key(bytes: &[u8]) -> u64 {
    fmix64(fnv1a(bytes))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Endpoints named `e0`, `e1`, ... with these weights.
    fn balancer(kind: Balance, weights: &[u32]) -> Balancer {
        let names: Vec<String> = (0..weights.len()).map(|i| format!("e{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        Balancer::new(kind, weights, &names)
    }

    fn table_for(weights: &[u32]) -> Box<[u32]> {
        balancer(Balance::ConsistentHash, weights).table
    }

    #[derive(Debug, Clone)]
    struct Ep {
        weight: u32,
        up: bool,
        in_flight: u32,
        latency: f64,
    }

    impl Candidate for Ep {
        fn weight(&self) -> u32 {
            self.weight
        }
        fn available(&self) -> bool {
            self.up
        }
        fn in_flight(&self) -> u32 {
            self.in_flight
        }
        fn latency_cost(&self) -> f64 {
            self.latency
        }
    }

    const ALL: [Balance; 5] = [
        Balance::RoundRobin,
        Balance::WeightedRoundRobin,
        Balance::LeastRequest,
        Balance::PeakEwma,
        Balance::ConsistentHash,
    ];

    fn eps(weights: &[u32]) -> Vec<Ep> {
        weights.iter().map(|&weight| Ep { weight, up: true, in_flight: 0, latency: 0.0 }).collect()
    }

    fn tally(b: &Balancer, eps: &[Ep], picks: usize) -> Vec<usize> {
        let mut counts = vec![0; eps.len()];
        for _ in 0..picks {
            counts[b.pick(eps, None, &[]).unwrap()] += 1;
        }
        counts
    }

    fn key(n: u64) -> u64 {
        hash_key(&n.to_le_bytes())
    }

    /// Asserts each endpoint's share is within `tolerance` (absolute) of its weight share.
    fn assert_shares(counts: &[usize], weights: &[u32], tolerance: f64) {
        let picks: usize = counts.iter().sum();
        let total: u32 = weights.iter().sum();
        for (count, weight) in counts.iter().zip(weights) {
            let share = *count as f64 / picks as f64;
            let expected = f64::from(*weight) / f64::from(total);
            assert!((share - expected).abs() <= tolerance, "share {share:.4} vs {expected:.4} in {counts:?}");
        }
    }

    #[test]
    fn round_robin_is_even() {
        let b = balancer(Balance::RoundRobin, &[1, 1, 1]);
        assert_eq!(tally(&b, &eps(&[1, 1, 1]), 9_999), [3_333, 3_333, 3_333]);
    }

    #[test]
    fn smooth_weighted_round_robin_is_exact_over_whole_cycles() {
        let b = balancer(Balance::WeightedRoundRobin, &[1, 2, 7]);
        let counts = tally(&b, &eps(&[1, 2, 7]), 10_000);
        assert_eq!(counts, [1_000, 2_000, 7_000]);
        assert_shares(&counts, &[1, 2, 7], 0.02);
    }

    #[test]
    fn smooth_weighted_round_robin_interleaves_like_nginx() {
        let b = balancer(Balance::WeightedRoundRobin, &[5, 1, 1]);
        let e = eps(&[5, 1, 1]);
        let order: Vec<usize> = (0..7).map(|_| b.pick(&e, None, &[]).unwrap()).collect();
        assert_eq!(order, [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn smooth_weighted_round_robin_shares_out_a_down_endpoint() {
        let b = balancer(Balance::WeightedRoundRobin, &[1, 2, 7]);
        let mut e = eps(&[1, 2, 7]);
        e[2].up = false;
        assert_eq!(tally(&b, &e, 3_000), [1_000, 2_000, 0]);
    }

    #[test]
    fn least_request_follows_weights_when_idle() {
        fastrand::seed(1);
        let b = balancer(Balance::LeastRequest, &[1, 2, 7]);
        assert_shares(&tally(&b, &eps(&[1, 2, 7]), 10_000), &[1, 2, 7], 0.05);
    }

    #[test]
    fn least_request_follows_weights_under_equal_load() {
        // Every request takes the same time: it completes 50 picks after it
        // was sent, so ~50 are outstanding and in_flight tracks each pick.
        fastrand::seed(2);
        let weights = [1, 2, 7];
        let b = balancer(Balance::LeastRequest, &weights);
        let mut e = eps(&weights);
        let mut outstanding = std::collections::VecDeque::new();
        let mut counts = [0usize; 3];
        for _ in 0..10_000 {
            let i = b.pick(&e, None, &[]).unwrap();
            counts[i] += 1;
            e[i].in_flight += 1;
            outstanding.push_back(i);
            if outstanding.len() > 50 {
                let done = outstanding.pop_front().unwrap();
                e[done].in_flight -= 1;
            }
        }
        assert_shares(&counts, &weights, 0.05);
    }

    #[test]
    fn least_request_avoids_the_busiest_endpoint() {
        fastrand::seed(3);
        let b = balancer(Balance::LeastRequest, &[1, 1, 1]);
        let mut e = eps(&[1, 1, 1]);
        e[1].in_flight = 5;
        // Two distinct draws out of three always include a less loaded endpoint.
        assert_eq!(tally(&b, &e, 2_000)[1], 0);
        // Per unit of weight: 6 in flight on weight 3 beats 3 on weight 1.
        let b = balancer(Balance::LeastRequest, &[3, 1]);
        let mut e = eps(&[3, 1]);
        e[0].in_flight = 5;
        e[1].in_flight = 2;
        assert_eq!(tally(&b, &e, 200), [200, 0]);
    }

    #[test]
    fn peak_ewma_prefers_the_faster_endpoint() {
        fastrand::seed(4);
        let b = balancer(Balance::PeakEwma, &[1, 1, 1]);
        let mut e = eps(&[1, 1, 1]);
        for (ep, latency) in e.iter_mut().zip([0.05, 0.01, 0.2]) {
            ep.latency = latency;
        }
        let counts = tally(&b, &e, 3_000);
        assert_eq!(counts[2], 0, "the slowest never wins a comparison");
        assert!(counts[1] > counts[0] * 3 / 2, "{counts:?}");
        // Load counts: 10 ms with 20 queued costs more than 100 ms idle.
        let b = balancer(Balance::PeakEwma, &[1, 1]);
        let mut e = eps(&[1, 1]);
        e[0].latency = 0.01;
        e[0].in_flight = 20;
        e[1].latency = 0.1;
        assert_eq!(tally(&b, &e, 100), [0, 100]);
    }

    #[test]
    fn peak_ewma_falls_back_to_load_while_latency_is_unknown() {
        fastrand::seed(5);
        let b = balancer(Balance::PeakEwma, &[1, 1]);
        let mut e = eps(&[1, 1]);
        e[0].in_flight = 5;
        e[1].latency = 0.1;
        assert_eq!(tally(&b, &e, 100), [0, 100]);
    }

    #[test]
    fn unavailable_and_excluded_endpoints_are_never_picked() {
        fastrand::seed(6);
        for kind in ALL {
            let b = balancer(kind, &[1, 2, 3, 4, 5]);
            let mut e = eps(&[1, 2, 3, 4, 5]);
            e[1].up = false;
            for n in 0..2_000 {
                let picked = b.pick(&e, Some(key(n)), &[3]).unwrap();
                assert!(picked != 1 && picked != 3, "{kind:?} picked {picked}");
            }
        }
    }

    #[test]
    fn none_when_no_endpoint_qualifies() {
        for kind in ALL {
            let b = balancer(kind, &[1, 1, 1]);
            let mut e = eps(&[1, 1, 1]);
            e[0].up = false;
            e[2].up = false;
            assert_eq!(b.pick(&e, Some(key(1)), &[1]), None, "{kind:?}");
            assert_eq!(b.pick(&e, None, &[1]), None, "{kind:?}");
            let empty: [Ep; 0] = [];
            assert_eq!(balancer(kind, &[]).pick(&empty, Some(1), &[]), None, "{kind:?}");
            // Endpoints beyond the weights the balancer was built with are not its own.
            assert_eq!(balancer(kind, &[1]).pick(&eps(&[1, 1])[1..], Some(1), &[0]), None, "{kind:?}");
        }
    }

    #[test]
    fn a_retry_skips_every_endpoint_already_tried() {
        fastrand::seed(7);
        for kind in ALL {
            let b = balancer(kind, &[1, 1, 1]);
            let e = eps(&[1, 1, 1]);
            let mut tried = Vec::new();
            while let Some(i) = b.pick(&e, Some(key(9)), &tried) {
                assert!(!tried.contains(&i), "{kind:?}");
                tried.push(i);
            }
            tried.sort_unstable();
            assert_eq!(tried, [0, 1, 2], "{kind:?}");
        }
    }

    #[test]
    fn maglev_maps_a_key_to_the_same_endpoint_everywhere() {
        let weights = [1, 1, 1, 1, 1];
        let (one, two) = (balancer(Balance::ConsistentHash, &weights), balancer(Balance::ConsistentHash, &weights));
        assert_eq!(one.table, two.table, "built deterministically, as in another gateway");
        let e = eps(&weights);
        for n in 0..1_000 {
            let first = one.pick(&e, Some(key(n)), &[]);
            assert_eq!(one.pick(&e, Some(key(n)), &[]), first);
            assert_eq!(two.pick(&e, Some(key(n)), &[]), first);
        }
    }

    #[test]
    fn maglev_spreads_random_keys_evenly() {
        fastrand::seed(8);
        let b = balancer(Balance::ConsistentHash, &[1, 1, 1]);
        let e = eps(&[1, 1, 1]);
        let mut counts = [0usize; 3];
        for _ in 0..30_000 {
            counts[b.pick(&e, Some(hash_key(&fastrand::u64(..).to_le_bytes())), &[]).unwrap()] += 1;
        }
        assert_shares(&counts, &[1, 1, 1], 0.03);
    }

    #[test]
    fn maglev_gives_heavier_endpoints_more_slots() {
        let b = balancer(Balance::ConsistentHash, &[1, 2, 7]);
        let mut slots = [0usize; 3];
        for i in &b.table {
            slots[*i as usize] += 1;
        }
        assert_eq!(b.table.len(), 65_537);
        assert_shares(&slots, &[1, 2, 7], 0.01);
        let e = eps(&[1, 2, 7]);
        let mut counts = [0usize; 3];
        for n in 0..30_000 {
            counts[b.pick(&e, Some(key(n)), &[]).unwrap()] += 1;
        }
        assert_shares(&counts, &[1, 2, 7], 0.02);
    }

    #[test]
    fn maglev_moves_only_the_keys_of_a_down_endpoint() {
        let b = balancer(Balance::ConsistentHash, &[1; 5]);
        let mut e = eps(&[1; 5]);
        let before: Vec<usize> = (0..10_000).map(|n| b.pick(&e, Some(key(n)), &[]).unwrap()).collect();
        e[2].up = false;
        let after: Vec<usize> = (0..10_000).map(|n| b.pick(&e, Some(key(n)), &[]).unwrap()).collect();
        let mut moved = 0;
        for (was, is) in before.iter().zip(&after) {
            if *was == 2 {
                assert_ne!(*is, 2);
                moved += 1;
            } else {
                assert_eq!(was, is, "a key of a healthy endpoint moved");
            }
        }
        assert!(moved < 2_500, "{moved} of 10 000 keys moved");
        e[2].up = true;
        let back: Vec<usize> = (0..10_000).map(|n| b.pick(&e, Some(key(n)), &[]).unwrap()).collect();
        assert_eq!(back, before, "keys return when the endpoint does");
    }

    /// Where each of 20 000 keys goes with these endpoints.
    fn placed(names: &[&str]) -> Vec<String> {
        let weights = vec![1; names.len()];
        let b = Balancer::new(Balance::ConsistentHash, &weights, names);
        let e = eps(&weights);
        (0..20_000).map(|n| names[b.pick(&e, Some(key(n)), &[]).unwrap()].to_owned()).collect()
    }

    fn moved(before: &[String], after: &[String]) -> usize {
        before.iter().zip(after).filter(|(was, is)| was != is).count()
    }

    #[test]
    fn maglev_moves_few_keys_when_endpoints_come_and_go() {
        let five = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80", "10.0.0.5:80"];
        let before = placed(&five);
        // The same endpoints in another order: the same table.
        let shuffled = [five[3], five[0], five[4], five[2], five[1]];
        assert_eq!(placed(&shuffled), before, "the list's order does not matter");
        // About the share the change must move, plus Maglev's small
        // disruption: when the seeds were the list's indices and the
        // table's size followed its length, these moved 83–100% of keys.
        // One leaves (the first: every index after it shifts): its fifth.
        let after = placed(&five[1..]);
        assert!(moved(&before, &after) < 20_000 / 5 + 400, "{} moved when one of five left", moved(&before, &after));
        // One replaced: its fifth, and the newcomer's fifth of the rest.
        let replaced = ["10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80", "10.0.0.5:80", "10.0.0.9:80"];
        let after = placed(&replaced);
        assert!(
            moved(&before, &after) < 20_000 * 2 / 5 + 400,
            "{} moved when one was replaced",
            moved(&before, &after)
        );
        // One joins: a sixth.
        let six = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80", "10.0.0.5:80", "10.0.0.6:80"];
        let after = placed(&six);
        assert!(moved(&before, &after) < 20_000 / 6 + 400, "{} moved when a sixth joined", moved(&before, &after));
    }

    #[test]
    fn maglev_without_a_key_round_robins() {
        let b = balancer(Balance::ConsistentHash, &[1, 1, 1]);
        assert_eq!(tally(&b, &eps(&[1, 1, 1]), 300), [100, 100, 100]);
    }

    #[test]
    fn table_sizes_are_primes_with_100_slots_per_endpoint() {
        let prime = |n: usize| n > 1 && (2..).take_while(|d| d * d <= n).all(|d| !n.is_multiple_of(d));
        assert!(TABLE_SIZES.iter().all(|s| prime(*s)));
        assert!(TABLE_SIZES.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(table_for(&[1; 655]).len(), 65_537);
        assert_eq!(table_for(&[1; 656]).len(), 131_071);
        let table = table_for(&[1; 100]);
        assert!(table.iter().all(|i| (*i as usize) < 100), "every slot filled");
    }

    #[test]
    fn hash_key_is_stable_across_processes() {
        // Published FNV-1a 64 test vectors, then a value computed outside Rust
        // (Python) for the mix: changing either would remap every key in a
        // running fleet.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(hash_key(b"user-42"), 0xa395_32c7_ab05_1e8d);
        assert_ne!(hash_key(b"user-42"), hash_key(b"user-43"));
    }

    #[test]
    fn shared_across_workers() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Balancer>();
    }
}
