//! Slice views: which plane of the fixed grid a view shows, how screen points map to voxel
//! indices and back, the orientation letters at its edges, and window/level.
//!
//! Everything the app draws lives on the fixed image's grid, so a view is a plane of that grid's
//! index space, shown with its physical aspect (spacing in mm) in radiological convention:
//! the patient's left on the screen's right in axial and coronal views, anterior on the left in
//! sagittal views, superior (or anterior, axially) up.

use crate::volume::Geometry;
use crate::volume::geometry::direction_letter;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Orientation {
    Axial,
    Coronal,
    Sagittal,
}

impl Orientation {
    pub const ALL: [Orientation; 3] = [Orientation::Axial, Orientation::Coronal, Orientation::Sagittal];

    pub fn name(self) -> &'static str {
        match self {
            Orientation::Axial => "axial",
            Orientation::Coronal => "coronal",
            Orientation::Sagittal => "sagittal",
        }
    }

    /// World (LPS) axes shown along the screen's x and y, and the sign of the world direction that
    /// screen-right and screen-down point to.
    fn screen_world_axes(self) -> [(usize, f64); 2] {
        match self {
            Orientation::Axial => [(0, 1.0), (1, 1.0)],     // right → L, down → P
            Orientation::Coronal => [(0, 1.0), (2, -1.0)],  // right → L, down → I
            Orientation::Sagittal => [(1, 1.0), (2, -1.0)], // right → P, down → I
        }
    }
}

/// How a view's screen axes run through the index space of a grid.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Plane {
    /// Index axis along screen x and along screen y, and the one through the slices.
    pub horizontal: usize,
    pub vertical: usize,
    pub normal: usize,
    /// Whether the index decreases towards screen-right / screen-down.
    pub flip_horizontal: bool,
    pub flip_vertical: bool,
}

/// For each world axis (L, P, S), the index axis that runs most nearly along it.
fn index_axis_per_world_axis(direction: &[[f64; 3]; 3]) -> [usize; 3] {
    // Greedy on the largest cosine first, so an oblique grid still gets a permutation.
    let mut pairs: Vec<(f64, usize, usize)> = Vec::with_capacity(9);
    for world in 0..3 {
        for index in 0..3 {
            pairs.push((direction[world][index].abs(), world, index));
        }
    }
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut assigned, mut used_world, mut used_index) = ([0; 3], [false; 3], [false; 3]);
    for (_, world, index) in pairs {
        if !used_world[world] && !used_index[index] {
            assigned[world] = index;
            used_world[world] = true;
            used_index[index] = true;
        }
    }
    assigned
}

impl Plane {
    pub fn new(orientation: Orientation, geometry: &Geometry) -> Plane {
        let axes = index_axis_per_world_axis(&geometry.direction);
        let [(world_h, sign_h), (world_v, sign_v)] = orientation.screen_world_axes();
        let (horizontal, vertical) = (axes[world_h], axes[world_v]);
        let normal = 3 - horizontal - vertical;
        Plane {
            horizontal,
            vertical,
            normal,
            flip_horizontal: geometry.direction[world_h][horizontal] * sign_h < 0.0,
            flip_vertical: geometry.direction[world_v][vertical] * sign_v < 0.0,
        }
    }
}

/// Zoom and pan of one orientation, shared by the rows that show it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Camera {
    /// 1: the plane fits the view.
    pub zoom: f32,
    /// Offset of the plane's centre from the view's centre, in mm.
    pub pan_mm: [f32; 2],
}

impl Default for Camera {
    fn default() -> Self {
        Camera { zoom: 1.0, pan_mm: [0.0, 0.0] }
    }
}

/// One view on screen: a plane through the grid at a slice, a camera and a screen rectangle
/// (in any units: egui points or pixels).
#[derive(Clone, Copy, Debug)]
pub struct SliceView {
    pub plane: Plane,
    pub shape: [usize; 3],
    pub spacing_mm: [f64; 3],
    /// Continuous index along the plane's normal.
    pub slice: f32,
    pub camera: Camera,
    /// Left, top, width, height.
    pub rect: [f32; 4],
}

impl SliceView {
    /// Screen units per mm.
    pub fn scale(&self) -> f32 {
        let (h, v) = (self.plane.horizontal, self.plane.vertical);
        let width_mm = (self.shape[h] as f64 * self.spacing_mm[h]) as f32;
        let height_mm = (self.shape[v] as f64 * self.spacing_mm[v]) as f32;
        (self.rect[2] / width_mm).min(self.rect[3] / height_mm) * self.camera.zoom
    }

    /// Continuous voxel index (voxel centres at integers) under a screen point.
    pub fn screen_to_index(&self, x: f32, y: f32) -> [f32; 3] {
        let (p, scale) = (&self.plane, self.scale());
        let centre = [self.rect[0] + self.rect[2] / 2.0, self.rect[1] + self.rect[3] / 2.0];
        let mm = [(x - centre[0]) / scale - self.camera.pan_mm[0], (y - centre[1]) / scale - self.camera.pan_mm[1]];
        let along = |axis: usize, mm: f32, flip: bool| {
            let middle = (self.shape[axis] as f32 - 1.0) / 2.0;
            let step = mm / self.spacing_mm[axis] as f32;
            if flip { middle - step } else { middle + step }
        };
        let mut index = [0.0; 3];
        index[p.horizontal] = along(p.horizontal, mm[0], p.flip_horizontal);
        index[p.vertical] = along(p.vertical, mm[1], p.flip_vertical);
        index[p.normal] = self.slice;
        index
    }

    /// The screen point of a voxel index's in-plane position.
    pub fn index_to_screen(&self, index: [f32; 3]) -> [f32; 2] {
        let (p, scale) = (&self.plane, self.scale());
        let centre = [self.rect[0] + self.rect[2] / 2.0, self.rect[1] + self.rect[3] / 2.0];
        let mm = |axis: usize, flip: bool| {
            let step = index[axis] - (self.shape[axis] as f32 - 1.0) / 2.0;
            let step = if flip { -step } else { step };
            step * self.spacing_mm[axis] as f32
        };
        [
            centre[0] + (mm(p.horizontal, p.flip_horizontal) + self.camera.pan_mm[0]) * scale,
            centre[1] + (mm(p.vertical, p.flip_vertical) + self.camera.pan_mm[1]) * scale,
        ]
    }

    /// The index at the rectangle's top-left corner and the index change across its width and
    /// height: what the slice shader interpolates between.
    pub fn index_frame(&self) -> [[f32; 3]; 3] {
        let [left, top, width, height] = self.rect;
        let origin = self.screen_to_index(left, top);
        let right = self.screen_to_index(left + width, top);
        let bottom = self.screen_to_index(left, top + height);
        [origin, std::array::from_fn(|d| right[d] - origin[d]), std::array::from_fn(|d| bottom[d] - origin[d])]
    }

    /// Letters at the left, right, top and bottom edges.
    pub fn edge_letters(&self, geometry: &Geometry) -> [char; 4] {
        let world_of = |axis: usize, flip: bool| -> [f64; 3] {
            let sign = if flip { -1.0 } else { 1.0 };
            std::array::from_fn(|w| geometry.direction[w][axis] * sign)
        };
        let right = world_of(self.plane.horizontal, self.plane.flip_horizontal);
        let down = world_of(self.plane.vertical, self.plane.flip_vertical);
        let negate = |v: [f64; 3]| v.map(|c| -c);
        [
            direction_letter(negate(right)),
            direction_letter(right),
            direction_letter(negate(down)),
            direction_letter(down),
        ]
    }

    /// Whether a continuous index lies inside the grid (within half a voxel of a centre).
    pub fn contains(&self, index: [f32; 3]) -> bool {
        (0..3).all(|d| index[d] >= -0.5 && index[d] <= self.shape[d] as f32 - 0.5)
    }
}

/// Grey levels from HU: `center` maps to mid-grey, `width` HU span black to white.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowLevel {
    pub center: f32,
    pub width: f32,
}

impl WindowLevel {
    pub const PRESETS: [(&'static str, WindowLevel); 3] = [
        ("bone", WindowLevel { center: 400.0, width: 1800.0 }),
        ("soft tissue", WindowLevel { center: 40.0, width: 400.0 }),
        ("brain", WindowLevel { center: 40.0, width: 80.0 }),
    ];

    /// A mouse drag: right widens the window, down lowers the level (as in most viewers).
    pub fn dragged(self, dx_points: f32, dy_points: f32) -> WindowLevel {
        let rate = (self.width / 200.0).max(0.5);
        WindowLevel { center: self.center - dy_points * rate, width: (self.width + dx_points * rate * 2.0).max(1.0) }
    }

    /// The grey level (0..1) of a value.
    pub fn grey(self, value: f32) -> f32 {
        ((value - (self.center - self.width / 2.0)) / self.width).clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(direction: [[f64; 3]; 3]) -> Geometry {
        Geometry::new([40, 50, 30], [1.0, 2.0, 3.0], [0.0; 3], direction).unwrap()
    }

    fn view(orientation: Orientation, geometry: &Geometry) -> SliceView {
        SliceView {
            plane: Plane::new(orientation, geometry),
            shape: geometry.shape,
            spacing_mm: geometry.spacing_mm,
            slice: 7.0,
            camera: Camera { zoom: 1.7, pan_mm: [3.0, -5.0] },
            rect: [10.0, 20.0, 300.0, 200.0],
        }
    }

    #[test]
    fn screen_and_index_are_inverse() {
        let identity = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        let ras_like = [[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]];
        for direction in [identity, ras_like] {
            let geometry = grid(direction);
            for orientation in Orientation::ALL {
                let v = view(orientation, &geometry);
                let index = v.screen_to_index(123.0, 77.0);
                let back = v.index_to_screen(index);
                assert!((back[0] - 123.0).abs() < 1e-3 && (back[1] - 77.0).abs() < 1e-3, "{orientation:?}");
                assert_eq!(index[v.plane.normal], 7.0);
            }
        }
    }

    #[test]
    fn one_mm_on_screen_is_one_mm_in_the_grid() {
        let geometry = grid([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]);
        let v = view(Orientation::Coronal, &geometry);
        let scale = v.scale();
        let a = v.screen_to_index(100.0, 100.0);
        let b = v.screen_to_index(100.0 + 6.0 * scale, 100.0 + 6.0 * scale);
        // Coronal: x along index 0 (1 mm), down along −z (index 2, 3 mm).
        assert!((b[0] - a[0] - 6.0).abs() < 1e-4);
        assert!((b[2] - a[2] + 2.0).abs() < 1e-4);
    }

    #[test]
    fn radiological_letters_follow_the_grid_direction() {
        let lps = grid([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]);
        assert_eq!(view(Orientation::Axial, &lps).edge_letters(&lps), ['R', 'L', 'A', 'P']);
        assert_eq!(view(Orientation::Coronal, &lps).edge_letters(&lps), ['R', 'L', 'S', 'I']);
        assert_eq!(view(Orientation::Sagittal, &lps).edge_letters(&lps), ['A', 'P', 'S', 'I']);
        // A grid stored RAS-like (index 0 runs to the right, 1 anterior) is flipped on screen
        // so the letters stay where a physicist expects them.
        let ras = grid([[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]]);
        let axial = view(Orientation::Axial, &ras);
        assert!(axial.plane.flip_horizontal && axial.plane.flip_vertical);
        assert_eq!(axial.edge_letters(&ras), ['R', 'L', 'A', 'P']);
        // A permuted grid (slices along y) still shows axial as the L/P plane.
        let permuted = grid([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]);
        let axial = view(Orientation::Axial, &permuted);
        assert_eq!((axial.plane.horizontal, axial.plane.vertical, axial.plane.normal), (0, 2, 1));
        assert_eq!(axial.edge_letters(&permuted), ['R', 'L', 'A', 'P']);
    }

    #[test]
    fn index_frame_spans_the_rectangle() {
        let geometry = grid([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]);
        let v = view(Orientation::Sagittal, &geometry);
        let [origin, across, down] = v.index_frame();
        let centre = v.screen_to_index(160.0, 120.0);
        for d in 0..3 {
            assert!((origin[d] + 0.5 * across[d] + 0.5 * down[d] - centre[d]).abs() < 1e-4);
        }
    }

    #[test]
    fn window_level_maps_the_window_to_black_and_white() {
        let wl = WindowLevel { center: 40.0, width: 400.0 };
        assert_eq!(wl.grey(-160.0), 0.0);
        assert_eq!(wl.grey(240.0), 1.0);
        assert!((wl.grey(40.0) - 0.5).abs() < 1e-6);
        let wider = wl.dragged(10.0, 0.0);
        assert!(wider.width > wl.width && wider.center == wl.center);
    }
}
