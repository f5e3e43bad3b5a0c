//! Planning: which partitions a run has and where their bounds lie.
//!
//! Pure logic, no I/O, so it can be tested exhaustively. The store feeds it
//! numbers read in one pass over the source and persists what it returns:
//!
//! 1. [`allocate`] spreads the requested partition count over the run's
//!    scopes (in the demo, one scope per product whose version changed) in
//!    proportion to their eligible row counts.
//! 2. [`cut_positions`] says which rows, by 1-based position in `(order, key)`
//!    order, start each partition after the first: the row-count quantiles.
//!    Real data is skewed, so splitting `min..max` evenly would not balance.
//! 3. [`range_partitions`] turns the rows found at those positions into
//!    half-open [`KeyRange`]s. Because the cut points are `(order, key)`
//!    tuples and keys are unique, a cut can fall between two rows that share
//!    one timestamp: ties never make a partition empty or make two overlap.
//!
//! The high-water mark (the last eligible row at planning time) caps the whole
//! run, so rows committed later are left for the next run instead of being
//! picked up by whichever partition happens to still be open.

use crate::model::{Cursor, KeyRange};

/// One range partition as planned, before it is persisted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedRange {
    /// The slice of the keyset it covers.
    pub range: KeyRange,
    /// Rows in it at planning time.
    pub rows_planned: u64,
}

/// Spreads `total` partitions over scopes with the given eligible row counts.
///
/// Every non-empty scope gets at least one partition, an empty scope none,
/// and no scope more partitions than rows; the rest follow the largest
/// remainder of each scope's proportional share.
pub fn allocate(counts: &[u64], total: u32) -> Vec<u32> {
    let non_empty = counts.iter().filter(|&&c| c > 0).count() as u64;
    let rows: u64 = counts.iter().sum();
    if non_empty == 0 {
        return vec![0; counts.len()];
    }
    let target = u64::from(total).max(non_empty).min(rows);
    // Exact share of each scope, scaled by `rows` to stay in integers.
    let exact: Vec<u128> = counts
        .iter()
        .map(|&c| u128::from(target) * u128::from(c))
        .collect();
    let scale = u128::from(rows);
    let mut out: Vec<u64> = counts
        .iter()
        .zip(&exact)
        .map(|(&c, &e)| {
            if c == 0 {
                0
            } else {
                ((e / scale) as u64).clamp(1, c)
            }
        })
        .collect();
    // How far a scope is below (positive) or above its exact share.
    let gap = |i: usize, n: u64| exact[i] as i128 - (u128::from(n) * scale) as i128;
    let mut sum: u64 = out.iter().sum();
    while sum < target {
        let i = (0..counts.len())
            .filter(|&i| out[i] < counts[i])
            .max_by_key(|&i| (gap(i, out[i]), std::cmp::Reverse(i)))
            .expect("target <= rows leaves room");
        out[i] += 1;
        sum += 1;
    }
    while sum > target {
        let i = (0..counts.len())
            .filter(|&i| out[i] > 1)
            .min_by_key(|&i| (gap(i, out[i]), i))
            .expect("target >= non-empty scopes leaves a scope above one");
        out[i] -= 1;
        sum -= 1;
    }
    out.into_iter().map(|n| n as u32).collect()
}

/// 1-based positions of the rows that start partitions `2..=p` when `count`
/// rows are split into `partitions` parts of (almost) equal row count.
///
/// Returns at most `count - 1` positions: never more partitions than rows.
pub fn cut_positions(count: u64, partitions: u32) -> Vec<u64> {
    let p = u64::from(partitions).min(count);
    (1..p).map(|i| 1 + i * count / p).collect()
}

/// Turns the rows found at [`cut_positions`] into half-open ranges.
///
/// `cuts[i]` is the row at `positions[i]`. The first range starts at the
/// beginning of the keyset and the last one is open-ended (the run's
/// high-water mark caps it).
pub fn range_partitions(count: u64, positions: &[u64], cuts: &[Cursor]) -> Vec<PlannedRange> {
    assert_eq!(positions.len(), cuts.len(), "one cut row per position");
    if count == 0 {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut lower = None;
    let mut start = 1u64;
    for (&pos, &cut) in positions.iter().zip(cuts) {
        out.push(PlannedRange {
            range: KeyRange {
                lower,
                upper: Some(cut),
            },
            rows_planned: pos - start,
        });
        lower = Some(cut);
        start = pos;
    }
    out.push(PlannedRange {
        range: KeyRange { lower, upper: None },
        rows_planned: count + 1 - start,
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Plans over an in-memory, sorted, key-unique row set the way the store
    /// does over a table.
    fn plan_rows(rows: &[Cursor], partitions: u32) -> Vec<PlannedRange> {
        let positions = cut_positions(rows.len() as u64, partitions);
        let cuts: Vec<Cursor> = positions.iter().map(|&p| rows[p as usize - 1]).collect();
        range_partitions(rows.len() as u64, &positions, &cuts)
    }

    fn sorted_rows(orders: Vec<i64>) -> Vec<Cursor> {
        let mut rows: Vec<Cursor> = orders
            .into_iter()
            .enumerate()
            .map(|(k, o)| Cursor::new(o, k as i64))
            .collect();
        rows.sort();
        rows
    }

    #[test]
    fn empty_input_plans_nothing() {
        assert!(plan_rows(&[], 8).is_empty());
        assert_eq!(allocate(&[0, 0], 8), vec![0, 0]);
    }

    #[test]
    fn one_row_is_one_partition() {
        let plan = plan_rows(&[Cursor::new(5, 1)], 8);
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].rows_planned, 1);
        assert_eq!(
            plan[0].range,
            KeyRange {
                lower: None,
                upper: None
            }
        );
    }

    #[test]
    fn all_rows_sharing_one_timestamp_still_split_evenly() {
        let rows = sorted_rows(vec![42; 10_000]);
        let plan = plan_rows(&rows, 4);
        assert_eq!(plan.len(), 4);
        assert!(plan.iter().all(|p| p.rows_planned == 2_500));
    }

    #[test]
    fn allocation_follows_counts() {
        assert_eq!(allocate(&[900, 100], 10), vec![9, 1]);
        assert_eq!(allocate(&[1, 1_000_000], 4), vec![1, 3]);
        assert_eq!(allocate(&[2, 0, 3], 100), vec![2, 0, 3]);
        assert_eq!(allocate(&[5, 5, 5], 1), vec![1, 1, 1]);
    }

    proptest! {
        /// Every row lands in exactly one partition, the sizes the planner
        /// reports are the real ones and differ by at most one row.
        #[test]
        fn ranges_cover_every_row_exactly_once(
            orders in prop::collection::vec(
                prop_oneof![3 => 0i64..5, 1 => 0i64..1_000_000, 1 => Just(i64::MAX), 1 => Just(i64::MIN)],
                0..400),
            partitions in 1u32..40,
        ) {
            let rows = sorted_rows(orders);
            let plan = plan_rows(&rows, partitions);
            prop_assert_eq!(plan.len(), (partitions as usize).min(rows.len()));
            for w in plan.windows(2) {
                prop_assert_eq!(w[0].range.upper, w[1].range.lower, "gap-free, in order");
            }
            let mut sizes = Vec::new();
            for p in &plan {
                let n = rows.iter().filter(|r| p.range.contains(**r)).count() as u64;
                prop_assert_eq!(n, p.rows_planned);
                sizes.push(n);
            }
            for r in &rows {
                prop_assert_eq!(plan.iter().filter(|p| p.range.contains(*r)).count(), 1);
            }
            if let (Some(min), Some(max)) = (sizes.iter().min(), sizes.iter().max()) {
                prop_assert!(max - min <= 1, "balanced by row count: {:?}", sizes);
            }
        }

        #[test]
        fn allocation_is_exact_and_fair(
            counts in prop::collection::vec(prop_oneof![1 => Just(0u64), 3 => 0u64..10_000], 0..12),
            total in 0u32..200,
        ) {
            let out = allocate(&counts, total);
            let non_empty = counts.iter().filter(|&&c| c > 0).count() as u64;
            let rows: u64 = counts.iter().sum();
            let expected = u64::from(total).max(non_empty).min(rows);
            prop_assert_eq!(out.iter().map(|&x| u64::from(x)).sum::<u64>(), expected);
            for (c, n) in counts.iter().zip(&out) {
                prop_assert_eq!(*c == 0, *n == 0);
                prop_assert!(u64::from(*n) <= *c);
            }
        }
    }
}
