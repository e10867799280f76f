//! Parallel sums that come out the same on every run. Rayon splits work as idle threads steal
//! it, so a plain parallel `sum` or `reduce` of floats adds in an order that changes from run to
//! run, and the same pair could get a report (or an optimiser step) that differs in its last
//! digits. Here the work is cut into fixed chunks; each chunk is summed in order, and the
//! chunks' results are combined in order.

use rayon::prelude::*;
use std::ops::Range;

/// Indices per chunk.
pub const CHUNK: usize = 1 << 16;

/// `part` of each fixed chunk of `0..len` (in parallel), combined from the first chunk to the
/// last starting with `identity`.
pub fn fold_chunks<A: Send>(
    len: usize,
    part: impl Fn(Range<usize>) -> A + Sync,
    identity: A,
    combine: impl Fn(A, A) -> A,
) -> A {
    let parts: Vec<A> =
        (0..len.div_ceil(CHUNK)).into_par_iter().map(|c| part(c * CHUNK..((c + 1) * CHUNK).min(len))).collect();
    parts.into_iter().fold(identity, combine)
}

/// The sum of a parallel iterator's values in the iterator's order (for few, large items: rows,
/// planes, chunks).
pub fn ordered_sum(values: impl IndexedParallelIterator<Item = f64>) -> f64 {
    values.collect::<Vec<f64>>().into_iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(len: usize, value: impl Fn(usize) -> f64 + Sync) -> f64 {
        fold_chunks(len, |range| range.map(&value).sum::<f64>(), 0.0, |a, b| a + b)
    }

    #[test]
    fn sums_agree_with_a_plain_loop_and_repeat_to_the_bit() {
        let len = 5 * CHUNK + 123;
        let value = |n: usize| ((n as f64) * 0.37).sin() * 1e3 + 1e-7 * n as f64;
        let plain: f64 = (0..len).map(value).sum();
        let first = sum(len, value);
        assert!((first - plain).abs() <= 1e-9 * plain.abs().max(1.0), "{first} against {plain}");
        for _ in 0..20 {
            assert_eq!(sum(len, value).to_bits(), first.to_bits());
        }
        assert_eq!(sum(0, value), 0.0);
        let ordered = ordered_sum((0..1000).into_par_iter().map(|n| value(n * 977)));
        assert_eq!(ordered.to_bits(), (0..1000).map(|n| value(n * 977)).sum::<f64>().to_bits());
        let (count, total) =
            fold_chunks(len, |r| (r.len(), r.map(value).sum::<f64>()), (0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
        assert_eq!((count, total.to_bits()), (len, first.to_bits()));
    }
}
