//! Helpers shared by the integration tests: reference data made by other tools through
//! `tests/reference/refs.py`, and raw arrays.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Python interpreter that has the reference tools (see scripts/install-test-tools.sh).
pub fn python() -> String {
    std::env::var("DIFFEOREG_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Runs `refs.py COMMAND ARGS…`; panics with the tool's output when it fails.
pub fn run_reference(command: &str, args: &[&Path]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/refs.py");
    let output = Command::new(python())
        .arg(&script)
        .arg(command)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e}); run scripts/install-test-tools.sh", python()));
    assert!(
        output.status.success(),
        "refs.py {command} failed (run scripts/install-test-tools.sh?):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A folder of reference data made once per test binary by `refs.py COMMAND DIR`.
pub fn reference_folder(command: &str) -> PathBuf {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static MADE: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut made = MADE.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    made.entry(command.to_string())
        .or_insert_with(|| {
            let dir = tempfile::Builder::new().prefix("diffeoreg-ref-").tempdir().unwrap().keep();
            let folder = dir.join(command);
            run_reference(command, &[&folder]);
            folder
        })
        .clone()
}

pub fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// A 4×4 matrix from JSON rows.
pub fn matrix4(value: &serde_json::Value) -> [[f64; 4]; 4] {
    std::array::from_fn(|r| std::array::from_fn(|c| value[r][c].as_f64().unwrap()))
}

/// Applies a RAS affine to an index and returns the LPS point.
pub fn ras_affine_to_lps_point(affine_ras: &[[f64; 4]; 4], index: [f64; 3]) -> [f64; 3] {
    let ras: [f64; 3] =
        std::array::from_fn(|r| (0..3).map(|c| affine_ras[r][c] * index[c]).sum::<f64>() + affine_ras[r][3]);
    [-ras[0], -ras[1], ras[2]]
}

/// Path of the built `diffeoreg` binary.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_diffeoreg"))
}

/// The real head CT (Cranium.inv3 of Debian's `invesalius-examples`, fetched by
/// `scripts/fetch-real-ct.sh`), or `DIFFEOREG_REAL_CT`.
pub fn real_ct_path() -> PathBuf {
    let path = std::env::var("DIFFEOREG_REAL_CT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/real-ct/Cranium.inv3"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/fetch-real-ct.sh (or scripts/install-test-tools.sh)",
        path.display()
    );
    path
}

/// The real head CT resampled onto `spacing_mm` voxels over the same box: small enough for CI.
pub fn real_ct_at(spacing_mm: f64) -> diffeoreg::volume::Volume {
    use diffeoreg::volume::resample::{Interpolation, resample};
    let ct = diffeoreg::io::load_volume(
        &real_ct_path(),
        &diffeoreg::io::SeriesChoice::LargestCt,
        &diffeoreg::progress::Silent,
    )
    .unwrap()
    .volume;
    let g = &ct.geometry;
    let extent = g.extent_mm();
    let shape = std::array::from_fn(|d| (extent[d] / spacing_mm).round() as usize + 1);
    let grid = diffeoreg::volume::Geometry::new(shape, [spacing_mm; 3], g.origin_mm, g.direction).unwrap();
    resample(&ct, &grid, Interpolation::Linear, -1024.0)
}

/// Checks that every voxel of `reference` has a voxel of `ours` at the same world point with
/// the same value (within `tolerance`); returns how many were compared.
pub fn assert_same_voxels_at_same_points(
    ours: &diffeoreg::volume::Volume,
    reference: &diffeoreg::volume::Volume,
    tolerance: f32,
    what: &str,
) -> usize {
    let g = &reference.geometry;
    let mut compared = 0;
    for k in 0..g.shape[2] {
        for j in 0..g.shape[1] {
            for i in 0..g.shape[0] {
                let world = g.index_to_world([i as f64, j as f64, k as f64]);
                let p = ours.geometry.world_to_index(world);
                let rounded = p.map(|v| v.round());
                assert!(
                    (0..3).all(|d| (p[d] - rounded[d]).abs() < 1e-2),
                    "{what}: voxel ({i},{j},{k}) of the reference lies at index {p:?} of ours, between voxels"
                );
                assert!(
                    (0..3).all(|d| rounded[d] >= 0.0 && (rounded[d] as usize) < ours.geometry.shape[d]),
                    "{what}: outside"
                );
                let [a, b, c] = rounded.map(|v| v as usize);
                let (mine, theirs) = (ours.at(a, b, c), reference.at(i, j, k));
                assert!(
                    (mine - theirs).abs() <= tolerance,
                    "{what}: value at reference voxel ({i},{j},{k}): {mine} vs {theirs}"
                );
                compared += 1;
            }
        }
    }
    compared
}
