//! The training sampler (SPEC §3): an epoch visits the pairs in random order, four volumes'
//! worth at a time (what fits in memory with the network), draws random 48³ patches from those,
//! shuffles them and cuts them into batches of 12. Samples that leave a patch are masked by the
//! energy itself (`diffeo::tensor::energy` works on each patch as its own grid).

use serde::{Deserialize, Serialize};

use crate::patch::tiling::extract;
use crate::phantom::random::SeededRng;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SamplerParams {
    pub patch: usize,
    pub batch: usize,
    /// Pairs whose patches are mixed in the batches of one group.
    pub pairs_at_a_time: usize,
    pub patches_per_pair: usize,
}

impl Default for SamplerParams {
    fn default() -> Self {
        SamplerParams { patch: 48, batch: 12, pairs_at_a_time: 4, patches_per_pair: 24 }
    }
}

/// Where one patch of a batch comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchRef {
    pub pair: usize,
    pub start: [usize; 3],
}

/// The batches of one epoch over pairs of the given grid shapes, drawn from `rng`. Each batch
/// holds patches of at most `pairs_at_a_time` pairs; every pair gives `patches_per_pair` patches.
pub fn epoch_batches(shapes: &[[usize; 3]], params: &SamplerParams, rng: &mut SeededRng) -> Vec<Vec<PatchRef>> {
    let mut order: Vec<usize> = (0..shapes.len()).collect();
    rng.shuffle(&mut order);
    let mut batches = Vec::new();
    for group in order.chunks(params.pairs_at_a_time.max(1)) {
        let mut patches: Vec<PatchRef> = Vec::with_capacity(group.len() * params.patches_per_pair);
        for &pair in group {
            for _ in 0..params.patches_per_pair {
                // Patches lie inside the volume; an axis shorter than a patch starts at 0 (padded).
                let start = shapes[pair].map(|n| if n > params.patch { rng.below(n - params.patch + 1) } else { 0 });
                patches.push(PatchRef { pair, start });
            }
        }
        rng.shuffle(&mut patches);
        batches.extend(patches.chunks(params.batch.max(1)).map(<[PatchRef]>::to_vec));
    }
    batches
}

/// A pair's input channels on one grid (fixed density, moving density, then any pooled force)
/// and that grid's shape.
pub type PairChannels<'a> = (Vec<&'a [f32]>, [usize; 3]);

/// The network input of a batch, [B, C, P, P, P] flattened: each patch's channels in order,
/// patches from `pairs[PatchRef::pair]`.
pub fn batch_input(batch: &[PatchRef], pairs: &[PairChannels], patch: usize) -> Vec<f32> {
    batch
        .iter()
        .flat_map(|r| {
            let (channels, shape) = &pairs[r.pair];
            extract(channels, *shape, r.start, patch)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_group_pairs_fill_batches_and_repeat_from_a_seed() {
        let shapes = vec![[100, 90, 60], [64, 64, 64], [50, 120, 40], [48, 48, 48], [130, 70, 44], [60, 60, 60]];
        let params = SamplerParams { patch: 48, batch: 12, pairs_at_a_time: 4, patches_per_pair: 9 };
        let batches = epoch_batches(&shapes, &params, &mut SeededRng::new(5));
        let all: Vec<PatchRef> = batches.iter().flatten().copied().collect();
        assert_eq!(all.len(), shapes.len() * 9);
        for pair in 0..shapes.len() {
            assert_eq!(all.iter().filter(|r| r.pair == pair).count(), 9);
        }
        for batch in &batches {
            assert!(batch.len() <= 12);
            let mut pairs: Vec<usize> = batch.iter().map(|r| r.pair).collect();
            pairs.sort_unstable();
            pairs.dedup();
            assert!(pairs.len() <= 4, "a batch mixes more than four pairs: {pairs:?}");
        }
        for r in &all {
            for d in 0..3 {
                let n = shapes[r.pair][d];
                assert!(r.start[d] + 48 <= n.max(48), "{r:?} leaves a volume of {:?}", shapes[r.pair]);
            }
        }
        // Patches vary, and the same seed gives the same epoch.
        assert!(all.iter().map(|r| r.start).collect::<std::collections::HashSet<_>>().len() > 30);
        assert_eq!(batches, epoch_batches(&shapes, &params, &mut SeededRng::new(5)));
        assert_ne!(batches, epoch_batches(&shapes, &params, &mut SeededRng::new(6)));
    }

    #[test]
    fn a_batch_input_holds_each_patch_fixed_then_moving() {
        let shape = [10, 9, 8];
        let n: usize = shape.iter().product();
        let fixed: Vec<f32> = (0..n).map(|v| v as f32).collect();
        let moving: Vec<f32> = (0..n).map(|v| -(v as f32)).collect();
        let batch = [PatchRef { pair: 0, start: [2, 3, 1] }, PatchRef { pair: 0, start: [0, 0, 0] }];
        let input = batch_input(&batch, &[(vec![&fixed, &moving], shape)], 4);
        assert_eq!(input.len(), 2 * 2 * 64);
        let first_voxel = 2 + 10 * (3 + 9);
        assert_eq!(input[0], first_voxel as f32);
        assert_eq!(input[64], -(first_voxel as f32));
        assert_eq!(input[128], 0.0);
        assert_eq!(input[128 + 1 + 4 * (1 + 4)], (1 + 10 * (1 + 9)) as f32);
    }
}
