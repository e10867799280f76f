//! The trilinear kernel on a grid of values (x fastest): the cell around a continuous index,
//! its weights, value and slope, with the border clamped or masked. Volumes, displacement fields
//! and the spatial transformer (`diffeo::warp`) all sample through it.

/// How a sample outside the grid is treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outside {
    /// The sample is 0 and masked out.
    Mask,
    /// The point is clamped to the grid (the border value extends outwards); used for fields.
    Clamp,
}

/// The trilinear cell around a continuous index: the flat index of its lower corner, the
/// strides to its upper neighbours (0 along an axis of size 1), the fractional position, and
/// per axis whether the point was inside (1) or clamped onto the border (0).
pub(crate) struct Cell {
    origin: usize,
    strides: [usize; 3],
    frac: [f32; 3],
    free: [f32; 3],
}

/// The part of `cell` along one axis of `size`: the cell's lower corner, the fractional
/// position, and 1 if the point was inside (0 if clamped onto the border or the axis has one
/// voxel); None outside when `outside` is `Mask`.
#[inline(always)]
pub(crate) fn axis_cell(size: usize, p: f32, outside: Outside) -> Option<(usize, f32, f32)> {
    let last = (size - 1) as f32;
    let mut x = p;
    let mut free = 1f32;
    if !(x >= 0.0 && x <= last) {
        match outside {
            Outside::Mask => return None,
            Outside::Clamp => {
                x = if x.is_nan() { 0.0 } else { x.clamp(0.0, last) };
                free = 0.0;
            }
        }
    }
    // x ≥ 0 here, so truncation is the floor (and much cheaper than a floorf call).
    let b = (x as usize).min(size.saturating_sub(2));
    if size == 1 {
        free = 0.0;
    }
    Some((b, x - b as f32, free))
}

#[inline(always)]
pub(crate) fn cell(shape: [usize; 3], p: [f32; 3], outside: Outside) -> Option<Cell> {
    let axes =
        [axis_cell(shape[0], p[0], outside)?, axis_cell(shape[1], p[1], outside)?, axis_cell(shape[2], p[2], outside)?];
    Some(cell_of_axes(shape, axes))
}

/// The cell whose per-axis parts (`axis_cell`) are `axes`.
#[inline(always)]
pub(crate) fn cell_of_axes(shape: [usize; 3], axes: [(usize, f32, f32); 3]) -> Cell {
    let (nx, nxy) = (shape[0], shape[0] * shape[1]);
    let step = |d: usize, s: usize| if shape[d] > 1 { s } else { 0 };
    Cell {
        origin: axes[0].0 + nx * axes[1].0 + nxy * axes[2].0,
        strides: [step(0, 1), step(1, nx), step(2, nxy)],
        frac: axes.map(|a| a.1),
        free: axes.map(|a| a.2),
    }
}

impl Cell {
    /// The eight corner values, indexed by corner bits (x = bit 0, y = bit 1, z = bit 2).
    #[inline(always)]
    pub(crate) fn corners(&self, data: &[f32]) -> [f32; 8] {
        let [sx, sy, sz] = self.strides;
        std::array::from_fn(|c| data[self.origin + (c & 1) * sx + (c >> 1 & 1) * sy + (c >> 2 & 1) * sz])
    }
}

impl Cell {
    /// The trilinear value of one array, by nested interpolation along x, then y, then z.
    #[inline(always)]
    pub(crate) fn lerp(&self, data: &[f32]) -> f32 {
        let v = self.corners(data);
        let [fx, fy, fz] = self.frac;
        let lerp = |a: f32, b: f32, t: f32| a + (b - a) * t;
        let (c00, c10) = (lerp(v[0], v[1], fx), lerp(v[2], v[3], fx));
        let (c01, c11) = (lerp(v[4], v[5], fx), lerp(v[6], v[7], fx));
        lerp(lerp(c00, c10, fy), lerp(c01, c11, fy), fz)
    }

    /// The trilinear weights of the eight corners, in the order of `corners`.
    #[inline]
    pub(crate) fn weights(&self) -> [f32; 8] {
        let [fx, fy, fz] = self.frac;
        let (gx, gy, gz) = (1.0 - fx, 1.0 - fy, 1.0 - fz);
        [gx * gy * gz, fx * gy * gz, gx * fy * gz, fx * fy * gz, gx * gy * fz, fx * gy * fz, gx * fy * fz, fx * fy * fz]
    }

    #[inline]
    pub(crate) fn offsets(&self) -> [usize; 8] {
        let [sx, sy, sz] = self.strides;
        std::array::from_fn(|c| self.origin + (c & 1) * sx + (c >> 1 & 1) * sy + (c >> 2 & 1) * sz)
    }

    /// Value and derivative with respect to the position, one component.
    #[inline(always)]
    pub(crate) fn value_and_slope(&self, data: &[f32]) -> (f32, [f32; 3]) {
        let [c000, c100, c010, c110, c001, c101, c011, c111] = self.corners(data);
        let [fx, fy, fz] = self.frac;
        let (gx, gy, gz) = (1.0 - fx, 1.0 - fy, 1.0 - fz);
        let value = gz * (gy * (gx * c000 + fx * c100) + fy * (gx * c010 + fx * c110))
            + fz * (gy * (gx * c001 + fx * c101) + fy * (gx * c011 + fx * c111));
        let dx = gz * (gy * (c100 - c000) + fy * (c110 - c010)) + fz * (gy * (c101 - c001) + fy * (c111 - c011));
        let dy = gz * (gx * (c010 - c000) + fx * (c110 - c100)) + fz * (gx * (c011 - c001) + fx * (c111 - c101));
        let dz = gy * (gx * (c001 - c000) + fx * (c101 - c100)) + fy * (gx * (c011 - c010) + fx * (c111 - c110));
        let [a, b, c] = self.free;
        (value, [dx * a, dy * b, dz * c])
    }
}

/// Trilinear value of `data` (x-fastest on `shape`) at continuous index `p`; None outside when
/// `outside` is `Mask`. Always inlined, as the per-voxel loops that call it need.
#[inline(always)]
pub fn sample(data: &[f32], shape: [usize; 3], p: [f32; 3], outside: Outside) -> Option<f32> {
    Some(cell(shape, p, outside)?.lerp(data))
}

/// `sample` of three arrays on one grid (a displacement field's components) at one point,
/// with one cell lookup: the same values as three calls.
#[inline]
pub fn sample3(data: [&[f32]; 3], shape: [usize; 3], p: [f32; 3], outside: Outside) -> Option<[f32; 3]> {
    let cell = cell(shape, p, outside)?;
    Some(data.map(|d| cell.lerp(d)))
}

/// Trilinear value at `p` and its derivative with respect to `p`, with the border handled as
/// `sample` does (a clamped axis has zero derivative).
#[inline(always)]
pub fn sample_with_gradient(data: &[f32], shape: [usize; 3], p: [f32; 3], outside: Outside) -> Option<(f32, [f32; 3])> {
    Some(cell(shape, p, outside)?.value_and_slope(data))
}
