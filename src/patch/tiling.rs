//! Prediction tiling (SPEC §3): cover a volume with patches, keep each patch's centre (a margin
//! is discarded on every side, where the network saw too little context) except where the
//! patch touches the volume's border, and assemble the kept parts into one volume. Every voxel
//! comes from exactly one patch.

use rayon::prelude::*;

/// Patch and margin sizes, voxels (the same on every axis).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiling {
    pub patch: usize,
    pub margin: usize,
}

impl Tiling {
    /// The thesis' prediction: 48³ patches, 12 voxels discarded per side, so 24³ kept.
    pub const THESIS: Tiling = Tiling { patch: 48, margin: 12 };

    /// The kept centre's width.
    pub fn centre(&self) -> usize {
        self.patch - 2 * self.margin
    }
}

/// One patch along one axis: where it starts and which voxels of the volume it supplies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AxisTile {
    pub start: usize,
    pub keep_from: usize,
    pub keep_to: usize,
}

/// The patches along an axis of `n` voxels. Interior patches supply their centre; the first and
/// last also supply their outer margin, which no other patch covers. An axis shorter than a
/// patch gets one patch (the volume is padded up to the patch size when extracted).
pub fn axis_tiles(n: usize, tiling: Tiling) -> Vec<AxisTile> {
    let Tiling { patch, margin } = tiling;
    assert!(patch > 2 * margin, "a patch must be wider than its two margins");
    if n <= patch {
        return vec![AxisTile { start: 0, keep_from: 0, keep_to: n }];
    }
    let mut tiles = Vec::new();
    let (mut start, mut kept) = (0, 0);
    loop {
        let keep_to = if start + patch >= n { n } else { start + patch - margin };
        tiles.push(AxisTile { start, keep_from: kept, keep_to });
        if keep_to == n {
            return tiles;
        }
        kept = keep_to;
        // The next patch's centre begins where this one's ended; the last patch ends at the border.
        start = (keep_to - margin).min(n - patch);
    }
}

/// A patch of the volume: its start and the box it supplies, per axis (x, y, z).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tile {
    pub start: [usize; 3],
    pub keep_from: [usize; 3],
    pub keep_to: [usize; 3],
}

/// Every patch of a volume of `shape`, x varying fastest.
pub fn tiles(shape: [usize; 3], tiling: Tiling) -> Vec<Tile> {
    let [tx, ty, tz] = shape.map(|n| axis_tiles(n, tiling));
    let mut all = Vec::with_capacity(tx.len() * ty.len() * tz.len());
    for z in &tz {
        for y in &ty {
            for x in &tx {
                all.push(Tile {
                    start: [x.start, y.start, z.start],
                    keep_from: [x.keep_from, y.keep_from, z.keep_from],
                    keep_to: [x.keep_to, y.keep_to, z.keep_to],
                });
            }
        }
    }
    all
}

/// The channels of a patch of `size`³ voxels starting at `start`, from channels of a volume of
/// `shape` (x fastest); voxels past the volume's end repeat its last voxel.
pub fn extract(channels: &[&[f32]], shape: [usize; 3], start: [usize; 3], size: usize) -> Vec<f32> {
    let mut patch = vec![0.0f32; channels.len() * size * size * size];
    for (c, data) in channels.iter().enumerate() {
        let out = &mut patch[c * size * size * size..(c + 1) * size * size * size];
        for k in 0..size {
            let z = (start[2] + k).min(shape[2] - 1);
            for j in 0..size {
                let y = (start[1] + j).min(shape[1] - 1);
                let row = shape[0] * (y + shape[1] * z);
                for i in 0..size {
                    let x = (start[0] + i).min(shape[0] - 1);
                    out[i + size * (j + size * k)] = data[row + x];
                }
            }
        }
    }
    patch
}

/// Runs `predict` (input channels of one patch → output channels of that patch, both
/// [C, size, size, size] flattened x fastest) over every patch and assembles the kept parts
/// into `out_channels` volumes of `shape`.
pub fn predict_tiled(
    inputs: &[&[f32]],
    shape: [usize; 3],
    tiling: Tiling,
    out_channels: usize,
    mut predict: impl FnMut(&[f32]) -> Vec<f32>,
) -> Vec<Vec<f32>> {
    let n = shape.iter().product::<usize>();
    let mut output = vec![vec![0.0f32; n]; out_channels];
    let size = tiling.patch;
    let voxels = size * size * size;
    for tile in tiles(shape, tiling) {
        let patch_out = predict(&extract(inputs, shape, tile.start, size));
        assert_eq!(patch_out.len(), out_channels * voxels, "the predictor returned the wrong number of values");
        for (c, volume) in output.iter_mut().enumerate() {
            let source = &patch_out[c * voxels..(c + 1) * voxels];
            for z in tile.keep_from[2]..tile.keep_to[2] {
                for y in tile.keep_from[1]..tile.keep_to[1] {
                    let (k, j) = (z - tile.start[2], y - tile.start[1]);
                    let from = size * (j + size * k) + tile.keep_from[0] - tile.start[0];
                    let to = tile.keep_from[0] + shape[0] * (y + shape[1] * z);
                    let width = tile.keep_to[0] - tile.keep_from[0];
                    volume[to..to + width].copy_from_slice(&source[from..from + width]);
                }
            }
        }
    }
    output
}

/// How many patches supply each voxel (1 everywhere for a valid tiling): for tests and checks.
pub fn coverage(shape: [usize; 3], tiling: Tiling) -> Vec<u32> {
    let mut count = vec![0u32; shape.iter().product()];
    for tile in tiles(shape, tiling) {
        for z in tile.keep_from[2]..tile.keep_to[2] {
            count[shape[0] * shape[1] * z..shape[0] * shape[1] * (z + 1)]
                .par_chunks_mut(shape[0])
                .enumerate()
                .for_each(|(y, row)| {
                    if (tile.keep_from[1]..tile.keep_to[1]).contains(&y) {
                        for value in &mut row[tile.keep_from[0]..tile.keep_to[0]] {
                            *value += 1;
                        }
                    }
                });
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_voxel_comes_from_exactly_one_patch_centre_or_a_border() {
        let tiling = Tiling::THESIS;
        for n in [1, 20, 47, 48, 49, 60, 71, 72, 73, 100, 257] {
            let tiles = axis_tiles(n, tiling);
            let mut count = vec![0; n];
            for t in &tiles {
                assert!(t.start + tiling.patch >= t.keep_to && t.keep_from >= t.start, "{n}: {t:?}");
                for c in &mut count[t.keep_from..t.keep_to] {
                    *c += 1;
                }
                // Kept voxels are in the centre, unless they lie in a margin at the volume's border.
                for x in t.keep_from..t.keep_to {
                    let in_centre = x >= t.start + tiling.margin && x < t.start + tiling.patch - tiling.margin;
                    let at_border = x < tiling.margin || x >= n.saturating_sub(tiling.margin);
                    assert!(in_centre || at_border || n <= tiling.patch, "{n}: voxel {x} from the margin of {t:?}");
                }
            }
            assert!(count.iter().all(|&c| c == 1), "{n}: {count:?}");
        }
        let shape = [101, 57, 30];
        assert!(coverage(shape, tiling).iter().all(|&c| c == 1));
    }

    #[test]
    fn a_network_returning_its_x_coordinate_assembles_a_seamless_ramp() {
        let shape = [101, 57, 30];
        let n: usize = shape.iter().product();
        let x_coordinate: Vec<f32> = (0..n).map(|v| (v % shape[0]) as f32).collect();
        let other: Vec<f32> = vec![0.5; n];
        for tiling in [Tiling::THESIS, Tiling { patch: 64, margin: 8 }] {
            // The "network": output channel c = input channel 0 (the x coordinate) + c.
            let assembled = predict_tiled(&[&x_coordinate, &other], shape, tiling, 3, |patch| {
                let voxels = tiling.patch.pow(3);
                (0..3).flat_map(|c| patch[..voxels].iter().map(move |v| v + c as f32)).collect()
            });
            for (c, channel) in assembled.iter().enumerate() {
                for (v, value) in channel.iter().enumerate() {
                    assert_eq!(*value, (v % shape[0]) as f32 + c as f32, "voxel {v} of channel {c}");
                }
            }
        }
    }
}
