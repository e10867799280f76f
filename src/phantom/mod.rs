//! Digital phantoms with a known answer (SPEC §4, AAPM TG-132 type I): a CT deformed by a
//! random smooth diffeomorphism and a small rigid offset, given a pseudo-CT appearance and
//! resampled onto another grid, with the true displacement fields both ways.

pub mod appearance;
pub mod head;
pub mod random;

use serde::{Deserialize, Serialize};

use crate::diffeo::VectorField;
use crate::diffeo::integrate::{DEFAULT_STEPS, exp};
use crate::diffeo::smooth::{SmoothParams, Smoother};
use crate::error::{Error, Result};
use crate::phantom::appearance::PseudoCtAppearance;
use crate::phantom::random::SeededRng;
use crate::volume::affine::AffineTransform;
use crate::volume::geometry::{Vec3, add, mat_vec, sub};
use crate::volume::resample::{Interpolation, sample as sample_volume};
use crate::volume::{DisplacementField, Geometry, Volume};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhantomParams {
    /// Largest velocity magnitude of the deformation, mm (the displacement peaks near it).
    pub max_mm: f64,
    pub seed: u64,
    /// Largest rotation about each axis, degrees.
    pub max_rotation_deg: f64,
    /// Largest translation along each axis, mm.
    pub max_translation_mm: f64,
    /// Spacing of the random control grid the deformation is drawn on, mm.
    pub control_spacing_mm: f64,
    /// Finer scales added to the deformation: control spacings, mm, each drawn as strong as the
    /// first before the sum is scaled to `max_mm`.
    #[serde(default)]
    pub detail_control_spacings_mm: Vec<f64>,
    /// The pseudo-CT in an unrelated world frame (another scanner): its grid is placed by a
    /// further rotation of up to this about each axis, degrees…
    #[serde(default)]
    pub frame_rotation_deg: f64,
    /// …and a translation of up to this along each axis, mm.
    #[serde(default)]
    pub frame_translation_mm: f64,
    /// Moving-grid spacing relative to the fixed grid's, per axis.
    pub moving_spacing_factor: [f64; 3],
    pub appearance: PseudoCtAppearance,
}

impl Default for PhantomParams {
    fn default() -> Self {
        PhantomParams {
            max_mm: 7.0,
            seed: 1,
            max_rotation_deg: 3.0,
            max_translation_mm: 5.0,
            control_spacing_mm: 30.0,
            detail_control_spacings_mm: Vec::new(),
            frame_rotation_deg: 0.0,
            frame_translation_mm: 0.0,
            moving_spacing_factor: [1.1, 1.1, 1.25],
            appearance: PseudoCtAppearance::default(),
        }
    }
}

/// How far another scanner's frame lies from the CT's in `--unrelated-frame` pairs: up to this
/// rotation about each axis (degrees) and translation along each (mm).
pub const UNRELATED_FRAME_ROTATION_DEG: f64 = 30.0;
pub const UNRELATED_FRAME_TRANSLATION_MM: f64 = 200.0;

impl PhantomParams {
    /// A pair drawn from `seed` across the ranges a real patient's pseudo-CT shows: deformations
    /// of 4–11 mm peak at one or two scales (control spacings 25–40 mm, and 10–18 mm for the
    /// finer one), rigid offsets up to 8° and 10 mm, the pseudo-CT on a grid 0.8–1.5× the CT's
    /// spacing, blurred to 1–2.5 mm FWHM, bone scaled by 0.7–1.3 (under- or over-estimated),
    /// soft tissue offset by ±20 HU, a bias field of up to ±8 %, air cavities filled in 2 seeds
    /// of 5, noise 5–20 HU, nothing outside the patient (no couch or head rest). With `unrelated_frame` the pseudo-CT also lies in another scanner's
    /// frame: up to 30° about each axis and 200 mm along each.
    pub fn varied(seed: u64, unrelated_frame: bool) -> PhantomParams {
        let mut draw = SeededRng::new(seed ^ 0x7661_7269_6564);
        let fwhm_to_sigma = 1.0 / (8.0 * std::f64::consts::LN_2).sqrt();
        let base = draw.range(25.0, 40.0);
        let detail = (draw.uniform() < 0.6).then(|| draw.range(10.0, 18.0));
        let max_mm = draw.range(4.0, 11.0);
        let moving_spacing_factor = std::array::from_fn(|_| draw.range(0.8, 1.5));
        let appearance = PseudoCtAppearance {
            bone_scale: draw.range(0.7, 1.3) as f32,
            bone_threshold_hu: 200.0,
            soft_tissue_offset_hu: draw.range(-20.0, 20.0) as f32,
            blur_sigma_voxels: 0.0,
            blur_sigma_mm: (draw.range(1.0, 2.5) * fwhm_to_sigma) as f32,
            noise_hu: draw.range(5.0, 20.0) as f32,
            bias_amplitude: draw.range(0.0, 0.08) as f32,
            bias_length_mm: 80.0,
            fill_air_cavities: draw.uniform() < 0.4,
            cavity_fill_hu: draw.range(0.0, 50.0) as f32,
            body_only: true,
        };
        PhantomParams {
            max_mm,
            seed,
            max_rotation_deg: 8.0,
            max_translation_mm: 10.0,
            control_spacing_mm: base,
            detail_control_spacings_mm: detail.into_iter().collect(),
            frame_rotation_deg: if unrelated_frame { UNRELATED_FRAME_ROTATION_DEG } else { 0.0 },
            frame_translation_mm: if unrelated_frame { UNRELATED_FRAME_TRANSLATION_MM } else { 0.0 },
            moving_spacing_factor,
            appearance,
        }
    }
}

pub struct Phantom {
    /// The CT as given.
    pub fixed: Volume,
    /// The pseudo-CT on its own grid.
    pub moving: Volume,
    /// On the fixed grid: fixed point x maps to moving point x + u(x).
    pub truth_fwd: DisplacementField,
    /// On the moving grid: moving point y maps to fixed point y + u(y).
    pub truth_inv: DisplacementField,
    /// The rigid part: maps moving-space points to fixed-space points before the deformation.
    pub rigid: AffineTransform,
    /// Largest length of `truth_fwd` minus its rigid part, mm.
    pub max_deformation_mm: f64,
}

/// The built-in demo's grid (the `phantom` command's default head).
pub const DEMO_SHAPE: [usize; 3] = [128, 128, 128];
pub const DEMO_SPACING_MM: [f64; 3] = [1.6, 1.9, 1.8];

/// The built-in demo case: the synthetic head and its default pseudo-CT phantom.
pub fn demo_phantom(shape: [usize; 3], spacing_mm: [f64; 3]) -> Result<Phantom> {
    make_phantom(&head::synthetic_head(shape, spacing_mm), &PhantomParams::default())
}

/// A phantom of a random synthetic head (`HeadVariation::random(seed)`) deformed with the
/// default parameters and `seed`: what `train --synthetic` trains on (seeds from 1000 by
/// default) and what the accuracy checks hold out (other seeds).
pub fn synthetic_phantom(seed: u64, shape: [usize; 3], spacing_mm: [f64; 3], max_mm: f64) -> Result<Phantom> {
    let head = head::varied_head(shape, spacing_mm, &head::HeadVariation::random(seed));
    make_phantom(&head, &PhantomParams { seed, max_mm, ..PhantomParams::default() })
}

/// Builds a phantom from a CT in HU.
pub fn make_phantom(ct: &Volume, params: &PhantomParams) -> Result<Phantom> {
    if !(params.max_mm.is_finite() && params.max_mm >= 0.0) {
        return Err(Error::Invalid(format!("max_mm must be a non-negative number, not {}", params.max_mm)));
    }
    let mut rng = SeededRng::new(params.seed);
    let fixed_grid = &ct.geometry;

    let velocity_mm = random_velocity_mm(fixed_grid, params, &mut rng);
    let velocity_voxels = VectorField::from_displacement_mm(&velocity_mm);
    let deform_mm = exp(&velocity_voxels, DEFAULT_STEPS).to_displacement_mm(fixed_grid);
    let undeform_mm = exp(&velocity_voxels.scaled(-1.0), DEFAULT_STEPS).to_displacement_mm(fixed_grid);

    let (low, high) = fixed_grid.bounding_box();
    let centre: Vec3 = std::array::from_fn(|d| 0.5 * (low[d] + high[d]));
    let angle = |rng: &mut SeededRng| rng.range(-1.0, 1.0) * params.max_rotation_deg.to_radians();
    let angles = [angle(&mut rng), angle(&mut rng), angle(&mut rng)];
    let translation = std::array::from_fn(|_| rng.range(-1.0, 1.0) * params.max_translation_mm);
    let mut rigid = AffineTransform::from_euler(angles, translation, centre);
    let mut moving_grid = moving_geometry(fixed_grid, params.moving_spacing_factor)?;
    if params.frame_rotation_deg > 0.0 || params.frame_translation_mm > 0.0 {
        // Another scanner's frame F: the moving grid and its content move together, so a point y
        // of the new grid is F⁻¹(y) in the old one.
        let angles = std::array::from_fn(|_| rng.range(-1.0, 1.0) * params.frame_rotation_deg.to_radians());
        let translation = std::array::from_fn(|_| rng.range(-1.0, 1.0) * params.frame_translation_mm);
        let frame = AffineTransform::from_euler(angles, translation, centre);
        moving_grid = frame.move_geometry(&moving_grid)?;
        rigid = frame.inverse().then(&rigid);
    }
    let rigid_inverse = rigid.inverse();

    // ψ(y) = φ(R(y)): where moving point y came from in the CT.
    let deform_at = deform_mm.world_sampler();
    let source_of = |y: Vec3| -> Vec3 {
        let r = rigid.apply(y);
        add(r, deform_at(r))
    };
    let truth_inv_field = DisplacementField::from_fn(moving_grid.clone(), |y| sub(source_of(y), y));
    let mut moving = Volume::filled(moving_grid.clone(), 0.0);
    {
        let fixed_to_index = fixed_grid.world_to_index_map();
        use rayon::prelude::*;
        moving.voxels.par_iter_mut().enumerate().for_each(|(n, value)| {
            let p = fixed_to_index.apply(source_of(moving_grid.world_of(n)));
            *value = sample_volume(ct, p, Interpolation::Linear, -1000.0);
        });
    }
    params.appearance.apply(&mut moving, &mut rng);

    // T(x) = R⁻¹(φ⁻¹(x)): where fixed point x lies in the moving image.
    let undeform_at = undeform_mm.world_sampler();
    let truth_fwd = DisplacementField::from_fn(fixed_grid.clone(), |x| {
        let undeformed = add(x, undeform_at(x));
        sub(rigid_inverse.apply(undeformed), x)
    });
    let max_deformation_mm = deform_mm.max_norm_mm();
    Ok(Phantom { fixed: ct.clone(), moving, truth_fwd, truth_inv: truth_inv_field, rigid, max_deformation_mm })
}

/// A smooth random velocity in mm on `grid`: `smooth_noise` at the control spacing, plus each
/// finer scale drawn as strong, scaled so its largest vector is `max_mm` long.
fn random_velocity_mm(grid: &Geometry, params: &PhantomParams, rng: &mut SeededRng) -> DisplacementField {
    let mut velocity = smooth_noise(grid, params.control_spacing_mm, rng);
    for &spacing_mm in &params.detail_control_spacings_mm {
        let detail = smooth_noise(grid, spacing_mm, rng);
        let weight = (velocity.max_norm_mm() / detail.max_norm_mm().max(f64::MIN_POSITIVE)) as f32;
        for (total, add) in velocity.components_mm.iter_mut().zip(&detail.components_mm) {
            total.iter_mut().zip(add).for_each(|(t, a)| *t += weight * a);
        }
    }
    let peak = velocity.max_norm_mm();
    let scale = if peak > 0.0 { (params.max_mm / peak) as f32 } else { 0.0 };
    let components = velocity.components_mm.map(|c| c.into_iter().map(|v| v * scale).collect());
    DisplacementField { geometry: velocity.geometry, components_mm: components }
}

/// Three smooth random scalar fields on `grid` (as a vector field, unscaled): white noise on a
/// control grid of `control_spacing_mm`, smoothed by K⁻¹ there, interpolated by cubic
/// B-splines (so the field has no kinks at the control points, as a trilinear one would).
pub(crate) fn smooth_noise(grid: &Geometry, control_spacing_mm: f64, rng: &mut SeededRng) -> DisplacementField {
    let extent = grid.extent_mm();
    let coarse: [usize; 3] = std::array::from_fn(|d| (extent[d] / control_spacing_mm).ceil() as usize + 2);
    let mut noise = VectorField::zeros(coarse);
    for component in &mut noise.components {
        component.iter_mut().for_each(|v| *v = rng.normal() as f32);
    }
    let smooth =
        Smoother::new(coarse, &SmoothParams { alpha: 1.0, gamma: 1.0, pad: 2, spacing_mm: None }).apply(&noise);
    DisplacementField::from_fn_indexed(grid.clone(), |n, _| {
        let index = grid.index_of(n);
        let p: [f32; 3] =
            std::array::from_fn(|d| (index[d] / (grid.shape[d].max(2) - 1) as f64 * (coarse[d] - 1) as f64) as f32);
        std::array::from_fn(|d| cubic_bspline(&smooth.components[d], coarse, p))
    })
}

/// Cubic B-spline interpolation of control values `data` on `shape` at continuous index `p`
/// (indices clamped at the border): C² smooth everywhere.
fn cubic_bspline(data: &[f32], shape: [usize; 3], p: [f32; 3]) -> f64 {
    let weights = |t: f64| {
        let s = 1.0 - t;
        [
            s * s * s / 6.0,
            (3.0 * t * t * t - 6.0 * t * t + 4.0) / 6.0,
            (-3.0 * t * t * t + 3.0 * t * t + 3.0 * t + 1.0) / 6.0,
            t * t * t / 6.0,
        ]
    };
    let base: [i64; 3] = std::array::from_fn(|d| (p[d] as f64).floor() as i64);
    let w: [[f64; 4]; 3] = std::array::from_fn(|d| weights(p[d] as f64 - base[d] as f64));
    let index = |d: usize, o: i64| (base[d] + o - 1).clamp(0, shape[d] as i64 - 1) as usize;
    let mut total = 0.0;
    for c in 0..4 {
        for b in 0..4 {
            for a in 0..4 {
                let n = index(0, a as i64) + shape[0] * (index(1, b as i64) + shape[1] * index(2, c as i64));
                total += w[0][a] * w[1][b] * w[2][c] * data[n] as f64;
            }
        }
    }
    total
}

/// A grid with the fixed grid's direction and centre, coarser by `factor`, covering it.
fn moving_geometry(fixed: &Geometry, factor: [f64; 3]) -> Result<Geometry> {
    let spacing: Vec3 = std::array::from_fn(|d| fixed.spacing_mm[d] * factor[d]);
    let extent = fixed.extent_mm();
    let shape: [usize; 3] = std::array::from_fn(|d| (extent[d] / spacing[d]).ceil() as usize + 1);
    let centre = fixed.index_to_world(fixed.shape.map(|n| (n - 1) as f64 / 2.0));
    let half: Vec3 = std::array::from_fn(|d| (shape[d] - 1) as f64 * spacing[d] / 2.0);
    let offset = mat_vec(&fixed.direction, half);
    let origin = sub(centre, offset);
    Geometry::new(shape, spacing, origin, fixed.direction)
}
