//! ITK text transform files (`#Insight Transform File V1.0`), mapping fixed-space points to
//! moving-space points as ITK registration results do.
//!
//! We write `AffineTransform_double_3_3`; we read that, `Euler3DTransform`,
//! `VersorRigid3DTransform`, `TranslationTransform`, and composites of them.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};
use crate::io::atomic::write_atomically;
use crate::volume::affine::AffineTransform;
use crate::volume::geometry::{IDENTITY, Mat3, mat_mul};

pub fn write_transform(path: &Path, transform: &AffineTransform) -> Result<()> {
    let m = &transform.matrix;
    let t = &transform.translation_mm;
    let c = &transform.center_mm;
    let text = format!(
        "#Insight Transform File V1.0\n#Transform 0\nTransform: AffineTransform_double_3_3\n\
         Parameters: {} {} {} {} {} {} {} {} {} {} {} {}\nFixedParameters: {} {} {}\n",
        m[0][0],
        m[0][1],
        m[0][2],
        m[1][0],
        m[1][1],
        m[1][2],
        m[2][0],
        m[2][1],
        m[2][2],
        t[0],
        t[1],
        t[2],
        c[0],
        c[1],
        c[2]
    );
    write_atomically(path, |out: &mut dyn Write| out.write_all(text.as_bytes()).map_err(|e| Error::io(path, e)))
}

pub fn read_transform(path: &Path) -> Result<AffineTransform> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_transform(&text).map_err(|problem| Error::bad_input(path, problem))
}

struct Entry {
    kind: String,
    parameters: Vec<f64>,
    fixed: Vec<f64>,
}

fn parse_transform(text: &str) -> std::result::Result<AffineTransform, String> {
    if !text.trim_start().starts_with("#Insight Transform File") {
        return Err("is not an ITK transform file (no '#Insight Transform File' header)".into());
    }
    let mut entries: Vec<Entry> = Vec::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else { continue };
        let numbers = || -> std::result::Result<Vec<f64>, String> {
            value
                .split_whitespace()
                .map(|s| s.parse::<f64>().map_err(|_| format!("{key} has a value that is not a number: {s:?}")))
                .collect()
        };
        match key.trim() {
            "Transform" => {
                entries.push(Entry { kind: value.trim().to_string(), parameters: Vec::new(), fixed: Vec::new() })
            }
            "Parameters" => entries.last_mut().ok_or("Parameters before any Transform line")?.parameters = numbers()?,
            "FixedParameters" => {
                entries.last_mut().ok_or("FixedParameters before any Transform line")?.fixed = numbers()?
            }
            _ => {}
        }
    }
    let entries: Vec<&Entry> = entries.iter().filter(|e| !e.kind.starts_with("CompositeTransform")).collect();
    if entries.is_empty() {
        return Err("holds no transform".into());
    }
    // A composite applies its last transform first: T(x) = T1(T2(… Tn(x))).
    let mut composed = AffineTransform::identity();
    for entry in entries.iter().rev() {
        let next = entry_to_affine(entry)?;
        composed = compose(&next, &composed);
    }
    Ok(composed)
}

/// outer ∘ inner as one affine transform (centre zero).
fn compose(outer: &AffineTransform, inner: &AffineTransform) -> AffineTransform {
    let origin_image = outer.apply(inner.apply([0.0; 3]));
    AffineTransform { matrix: mat_mul(&outer.matrix, &inner.matrix), translation_mm: origin_image, center_mm: [0.0; 3] }
}

fn entry_to_affine(entry: &Entry) -> std::result::Result<AffineTransform, String> {
    let kind = entry.kind.as_str();
    let p = &entry.parameters;
    let need = |n: usize, what: &str| {
        if p.len() == n { Ok(()) } else { Err(format!("{kind} needs {n} parameters ({what}), found {}", p.len())) }
    };
    let center = || -> [f64; 3] {
        if entry.fixed.len() >= 3 { [entry.fixed[0], entry.fixed[1], entry.fixed[2]] } else { [0.0; 3] }
    };
    let base = kind.split('_').next().unwrap_or("");
    let transform = match base {
        "AffineTransform" | "MatrixOffsetTransformBase" | "ScalableAffineTransform" => {
            need(12, "matrix row by row, then translation")?;
            AffineTransform {
                matrix: [[p[0], p[1], p[2]], [p[3], p[4], p[5]], [p[6], p[7], p[8]]],
                translation_mm: [p[9], p[10], p[11]],
                center_mm: center(),
            }
        }
        "Euler3DTransform" => {
            need(6, "three angles, then translation")?;
            let mut t = AffineTransform::from_euler([p[0], p[1], p[2]], [p[3], p[4], p[5]], center());
            // The optional fourth fixed parameter selects the Z·Y·X rotation order.
            if entry.fixed.get(3).is_some_and(|&flag| flag != 0.0) {
                let r = |axis: usize, angle: f64| axis_rotation(axis, angle);
                t.matrix = mat_mul(&r(2, p[2]), &mat_mul(&r(1, p[1]), &r(0, p[0])));
            }
            t
        }
        "VersorRigid3DTransform" => {
            need(6, "versor x, y, z, then translation")?;
            AffineTransform {
                matrix: versor_matrix(p[0], p[1], p[2])?,
                translation_mm: [p[3], p[4], p[5]],
                center_mm: center(),
            }
        }
        "TranslationTransform" => {
            need(3, "translation")?;
            AffineTransform { matrix: IDENTITY, translation_mm: [p[0], p[1], p[2]], center_mm: [0.0; 3] }
        }
        _ => return Err(format!("holds a {kind}, which is not a supported linear transform")),
    };
    if transform.matrix.iter().flatten().chain(&transform.translation_mm).any(|v| !v.is_finite()) {
        return Err(format!("{kind} has non-finite parameters"));
    }
    Ok(transform)
}

fn axis_rotation(axis: usize, angle: f64) -> Mat3 {
    let (c, s) = (angle.cos(), angle.sin());
    match axis {
        0 => [[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]],
        1 => [[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]],
        _ => [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]],
    }
}

/// Rotation of a unit versor (x, y, z; w = sqrt(1 − x² − y² − z²)).
fn versor_matrix(x: f64, y: f64, z: f64) -> std::result::Result<Mat3, String> {
    let norm2 = x * x + y * y + z * z;
    if norm2 > 1.0 + 1e-9 {
        return Err(format!("versor ({x}, {y}, {z}) has length above 1"));
    }
    let w = (1.0 - norm2).max(0.0).sqrt();
    Ok([
        [1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y - z * w), 2.0 * (x * z + y * w)],
        [2.0 * (x * y + z * w), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z - x * w)],
        [2.0 * (x * z - y * w), 2.0 * (y * z + x * w), 1.0 - 2.0 * (x * x + y * y)],
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::geometry::{mat_vec, norm, sub};

    #[test]
    fn write_then_read_maps_points_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rigid.tfm");
        let t = AffineTransform::from_euler([0.1, -0.2, 0.3], [4.0, -5.0, 6.5], [10.0, 20.0, -30.0]);
        write_transform(&path, &t).unwrap();
        let back = read_transform(&path).unwrap();
        for p in [[0.0, 0.0, 0.0], [100.0, -50.0, 25.0]] {
            assert!(norm(sub(t.apply(p), back.apply(p))) < 1e-9);
        }
    }

    #[test]
    fn composite_applies_the_last_transform_first() {
        let text = "#Insight Transform File V1.0\n#Transform 0\nTransform: CompositeTransform_double_3_3\n\
            #Transform 1\nTransform: TranslationTransform_double_3_3\nParameters: 1 0 0\nFixedParameters:\n\
            #Transform 2\nTransform: AffineTransform_double_3_3\nParameters: 2 0 0 0 2 0 0 0 2 0 0 0\nFixedParameters: 0 0 0\n";
        let t = parse_transform(text).unwrap();
        assert_eq!(mat_vec(&t.matrix, [0.0; 3]), [0.0; 3]);
        assert!(norm(sub(t.apply([1.0, 1.0, 1.0]), [3.0, 2.0, 2.0])) < 1e-12);
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        assert!(parse_transform("hello").unwrap_err().contains("not an ITK transform"));
        let bspline = "#Insight Transform File V1.0\nTransform: BSplineTransform_double_3_3\nParameters: 1\n";
        assert!(parse_transform(bspline).unwrap_err().contains("BSplineTransform"));
        let short = "#Insight Transform File V1.0\nTransform: AffineTransform_double_3_3\nParameters: 1 2\n";
        assert!(parse_transform(short).unwrap_err().contains("12 parameters"));
    }
}
