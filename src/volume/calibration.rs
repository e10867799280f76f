//! HU → mass density (kg/dm³) by a piecewise-linear curve (SPEC §2).
//!
//! The curve is a list of (HU, density) points, extended linearly beyond its end points by its
//! first and last segments, then clipped to [0, max_density]. It loads from JSON
//! (`{"points": [[hu, density], ...], "max_density": 6.714}`) or from a text file of
//! "HU density" lines (`#` starts a comment), and is written into every run's report.

use std::path::Path;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::volume::Volume;

/// Density of the densest metal the curve may give (kg/dm³).
pub const METAL_DENSITY: f64 = 6.714;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// (HU, density kg/dm³), strictly increasing in HU, at least two points.
    pub points: Vec<[f64; 2]>,
    pub max_density: f64,
}

impl Default for Calibration {
    /// density = 1 + HU/1000 for HU ≤ 0 and 1 + 0.00061·HU above.
    fn default() -> Self {
        Calibration { points: vec![[-1000.0, 0.0], [0.0, 1.0], [1000.0, 1.61]], max_density: METAL_DENSITY }
    }
}

impl Calibration {
    pub fn new(points: Vec<[f64; 2]>, max_density: f64) -> Result<Self> {
        if points.len() < 2 {
            return Err(Error::Invalid("a calibration curve needs at least two points".into()));
        }
        if points.iter().flatten().any(|v| !v.is_finite()) || max_density.is_nan() || max_density <= 0.0 {
            return Err(Error::Invalid("calibration values must be finite and max_density positive".into()));
        }
        if points.windows(2).any(|w| w[1][0] <= w[0][0]) {
            return Err(Error::Invalid("calibration HU values must increase strictly".into()));
        }
        Ok(Calibration { points, max_density })
    }

    /// Reads a curve from JSON (".json") or from "HU density" text lines.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let parsed = if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) {
            let raw: Calibration = serde_json::from_str(&text)
                .map_err(|e| Error::bad_input(path, format!("not a calibration JSON file: {e}")))?;
            Calibration::new(raw.points, raw.max_density)
        } else {
            let mut points = Vec::new();
            for (number, line) in text.lines().enumerate() {
                let line = line.split('#').next().unwrap_or("").trim();
                if line.is_empty() {
                    continue;
                }
                let values: Vec<f64> = line
                    .split(|c: char| c.is_whitespace() || c == ',' || c == ';')
                    .filter(|s| !s.is_empty())
                    .map(str::parse)
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|_| Error::bad_input(path, format!("line {} is not two numbers: {line:?}", number + 1)))?;
                let [hu, density] = values[..] else {
                    return Err(Error::bad_input(path, format!("line {} is not two numbers: {line:?}", number + 1)));
                };
                points.push([hu, density]);
            }
            Calibration::new(points, METAL_DENSITY)
        };
        parsed.map_err(|e| Error::bad_input(path, e.to_string()))
    }

    /// Density (kg/dm³) of one HU value.
    pub fn density(&self, hu: f64) -> f64 {
        let p = &self.points;
        let segment = p.windows(2).position(|w| hu <= w[1][0]).unwrap_or(p.len() - 2);
        let ([h0, d0], [h1, d1]) = (p[segment], p[segment + 1]);
        let density = d0 + (hu - h0) * (d1 - d0) / (h1 - h0);
        density.clamp(0.0, self.max_density)
    }

    /// A density volume from a HU volume (same grid). Non-finite HU stay non-finite.
    pub fn apply(&self, hu: &Volume) -> Volume {
        let voxels = hu.voxels.par_iter().map(|&v| self.density(v as f64) as f32).collect();
        Volume { geometry: hu.geometry.clone(), voxels }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_curve_matches_the_spec_formula() {
        let c = Calibration::default();
        for hu in [-1000.0, -500.0, -1.0, 0.0, 1.0, 40.0, 1000.0, 3000.0] {
            let expected = if hu <= 0.0 { 1.0 + hu / 1000.0 } else { 1.0 + 0.00061 * hu };
            assert!((c.density(hu) - expected).abs() < 1e-12, "HU {hu}");
        }
        assert_eq!(c.density(-3024.0), 0.0);
        assert_eq!(c.density(30000.0), METAL_DENSITY);
    }

    #[test]
    fn loads_text_and_json() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("curve.txt");
        std::fs::write(&text, "# HU density\n-1000 0\n0 1.0\n2000, 2.0\n").unwrap();
        let c = Calibration::load(&text).unwrap();
        assert!((c.density(1000.0) - 1.5).abs() < 1e-12);
        let json = dir.path().join("curve.json");
        std::fs::write(&json, serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(Calibration::load(&json).unwrap(), c);
        std::fs::write(&text, "0 1\n-5 2\n").unwrap();
        let message = Calibration::load(&text).unwrap_err().to_string();
        assert!(message.contains("curve.txt") && message.contains("increase"), "{message}");
    }
}
