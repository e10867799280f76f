//! `evaluate` and `apply` (SPEC §6–7): metrics against numpy, fields written by Greedy, a label
//! map moved by a known translation, and clear errors for wrong inputs.

mod common;

use std::path::Path;
use std::process::Command;

use common::{binary, read_json, run_reference};
use diffeoreg::io::{StoredType, read_field, read_volume, write_field, write_volume};
use diffeoreg::phantom::head::synthetic_head;
use diffeoreg::phantom::{PhantomParams, make_phantom};
use diffeoreg::volume::affine::AffineTransform;
use diffeoreg::volume::resample::{Interpolation, warp_through_field};
use diffeoreg::volume::{DisplacementField, Geometry, Volume};

fn run(args: &[&str]) -> std::process::Output {
    Command::new(binary()).args(args).output().unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs `evaluate` on fixed, moving and a forward field plus `extra` arguments, writing into
/// `out`; returns the forward direction of evaluation.json.
fn evaluate_forward(fixed: &Path, moving: &Path, warp: &Path, extra: &[&str], out: &Path) -> serde_json::Value {
    let mut args = vec!["evaluate", "--fixed", path(fixed), "--moving", path(moving), "--warp", path(warp)];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--out", path(out)]);
    let output = run(&args);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    read_json(&out.join("evaluation.json"))["evaluation"]["forward"].clone()
}

/// A small phantom's fixed image and its moving image brought onto the fixed grid by the
/// true field (so the two differ only by the pseudo-CT appearance and interpolation).
fn pair_on_one_grid(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, Geometry) {
    let ct = synthetic_head([48, 56, 52], [4.0, 4.0, 4.0]);
    let phantom = make_phantom(&ct, &PhantomParams::default()).unwrap();
    let moved = warp_through_field(&phantom.moving, &phantom.truth_fwd, Interpolation::Linear, -1000.0).unwrap();
    let (fixed, moving) = (dir.join("fixed.nii.gz"), dir.join("moving.nii.gz"));
    write_volume(&fixed, &phantom.fixed, StoredType::Float32).unwrap();
    write_volume(&moving, &moved, StoredType::Float32).unwrap();
    (fixed, moving, ct.geometry)
}

#[test]
fn image_metrics_agree_with_numpy() {
    let dir = tempfile::tempdir().unwrap();
    let (fixed, moving, grid) = pair_on_one_grid(dir.path());
    let zero = dir.path().join("zero.nii.gz");
    write_field(&zero, &DisplacementField::zero(grid)).unwrap();
    let forward = evaluate_forward(&fixed, &moving, &zero, &[], &dir.path().join("eval"));
    let ours = &forward["image"];
    let reference = dir.path().join("numpy.json");
    run_reference("metrics", &[&moving, &fixed, &reference]);
    let numpy = read_json(&reference);
    let close = |a: &serde_json::Value, b: &serde_json::Value, tolerance: f64, what: &str| {
        let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
        assert!((a - b).abs() <= tolerance * b.abs().max(1e-12), "{what}: ours {a}, numpy {b}");
    };
    close(&ours["nmi"], &numpy["nmi"], 1e-4, "NMI");
    close(&ours["mse"], &numpy["mse"], 1e-4, "MSE");
    close(&ours["mae"], &numpy["mae"], 1e-4, "MAE");
    assert_eq!(ours["overlap"].as_f64().unwrap(), 1.0);
    for dice in ours["dice"].as_array().unwrap() {
        let name = dice["tissue"].as_str().unwrap();
        close(&dice["dice"], &numpy["dice"][name], 1e-6, name);
    }
    // The pair is not identical, so the numbers are not trivial.
    assert!(numpy["nmi"].as_f64().unwrap() < 1.9 && numpy["mse"].as_f64().unwrap() > 1e-5);
}

#[test]
fn a_field_written_by_greedy_is_judged_like_the_same_field_written_by_us() {
    let dir = tempfile::tempdir().unwrap();
    let (fixed, moving, grid) = pair_on_one_grid(dir.path());
    // A rigid motion as Greedy's RAS matrix (fixed → moving points), and the same map in LPS.
    let transform = AffineTransform::from_euler([0.03, -0.02, 0.05], [2.0, -3.0, 1.5], [0.0, 0.0, 0.0]);
    let m = transform.matrix;
    let t = transform.apply([0.0; 3]);
    let flip = [-1.0, -1.0, 1.0];
    let mut text = String::new();
    for r in 0..3 {
        for c in 0..3 {
            text += &format!("{} ", flip[r] * m[r][c] * flip[c]);
        }
        text += &format!("{}\n", flip[r] * t[r]);
    }
    text += "0 0 0 1\n";
    let matrix = dir.path().join("rigid.mat");
    std::fs::write(&matrix, text).unwrap();
    let greedy = dir.path().join("greedy_field.nii.gz");
    run_reference("greedy-field", &[&fixed, &matrix, &greedy]);
    let truth = DisplacementField::from_fn(grid, |x| {
        let y = transform.apply(x);
        [y[0] - x[0], y[1] - x[1], y[2] - x[2]]
    });
    let truth_path = dir.path().join("truth.nii.gz");
    write_field(&truth_path, &truth).unwrap();
    let ours = dir.path().join("rewritten.nii.gz");
    write_field(&ours, &read_field(&greedy).unwrap()).unwrap();

    let evaluate = |field: &Path, name: &str| {
        evaluate_forward(&fixed, &moving, field, &["--truth", path(&truth_path)], &dir.path().join(name))
    };
    let (theirs, rewritten) = (evaluate(&greedy, "greedy"), evaluate(&ours, "ours"));
    // The same numbers, up to the order of parallel sums.
    for (group, keys) in
        [("image", &["nmi", "mse", "mae", "overlap"][..]), ("endpoint_error", &["mean_mm", "max_mm"][..])]
    {
        for key in keys {
            let (a, b) = (theirs[group][key].as_f64().unwrap(), rewritten[group][key].as_f64().unwrap());
            assert!((a - b).abs() <= 1e-9 * a.abs().max(1e-9), "{group}.{key}: {a} vs {b}");
        }
    }
    assert_eq!(theirs["image"]["dice"], rewritten["image"]["dice"]);
    // Greedy's field is the same map as ours: it reads and writes the ITK convention.
    let epe = theirs["endpoint_error"]["max_mm"].as_f64().unwrap();
    assert!(epe < 1e-3, "Greedy's rigid field differs from ours by up to {epe} mm");
}

#[test]
fn endpoint_error_of_a_known_translation() {
    let dir = tempfile::tempdir().unwrap();
    let (fixed, moving, grid) = pair_on_one_grid(dir.path());
    let (zero, truth) = (dir.path().join("zero.nii.gz"), dir.path().join("truth.nii.gz"));
    write_field(&zero, &DisplacementField::zero(grid.clone())).unwrap();
    write_field(&truth, &DisplacementField::from_fn(grid, |_| [3.0, -4.0, 0.0])).unwrap();
    let forward = evaluate_forward(&fixed, &moving, &zero, &["--truth", path(&truth)], &dir.path().join("eval"));
    let epe = &forward["endpoint_error"];
    for key in ["mean_mm", "p95_mm", "max_mm"] {
        assert!((epe[key].as_f64().unwrap() - 5.0).abs() < 1e-5, "{key}: {epe}");
    }
}

#[test]
fn apply_moves_a_label_map_by_exactly_the_translation() {
    let dir = tempfile::tempdir().unwrap();
    let spacing = [1.5, 2.0, 2.5];
    let grid = Geometry::axis_aligned([20, 18, 16], spacing, [-10.0, 5.0, 2.0]).unwrap();
    let label = |n: usize| ((n * 2_654_435_761) % 7) as f32;
    let labels = Volume::new(grid.clone(), (0..grid.voxel_count()).map(label).collect()).unwrap();
    // x ↦ x + (2, −1, 3) voxels.
    let field = DisplacementField::from_fn(grid.clone(), |_| [2.0 * spacing[0], -spacing[1], 3.0 * spacing[2]]);
    let (labels_path, field_path, out) =
        (dir.path().join("labels.nii.gz"), dir.path().join("warp.nii.gz"), dir.path().join("moved.nii.gz"));
    write_volume(&labels_path, &labels, StoredType::Automatic).unwrap();
    write_field(&field_path, &field).unwrap();
    let output = run(&[
        "apply",
        "--warp",
        path(&field_path),
        "--image",
        path(&labels_path),
        "--reference",
        path(&labels_path),
        "--out",
        path(&out),
        "--labels",
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let moved = read_volume(&out).unwrap();
    assert!(moved.geometry.same_grid(&grid, 1e-4));
    let [nx, ny, nz] = grid.shape;
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let (si, sj, sk) = (i + 2, j as isize - 1, k + 3);
                let expected = if si < nx && sj >= 0 && sk < nz { labels.at(si, sj as usize, sk) } else { 0.0 };
                assert_eq!(moved.at(i, j, k), expected, "voxel {i} {j} {k}");
            }
        }
    }
}

#[test]
fn wrong_fields_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (fixed, moving, grid) = pair_on_one_grid(dir.path());
    let other_grid = Geometry::axis_aligned([30, 30, 30], [4.0, 4.0, 4.0], grid.origin_mm).unwrap();
    let wrong_grid = dir.path().join("wrong_grid.nii.gz");
    write_field(&wrong_grid, &DisplacementField::zero(other_grid)).unwrap();
    let mut with_nan = DisplacementField::zero(grid);
    with_nan.components_mm[1][100] = f32::NAN;
    let nan_field = dir.path().join("nan.nii.gz");
    write_field(&nan_field, &with_nan).unwrap();
    let out = dir.path().join("eval");
    for (field, problem) in [(&wrong_grid, "grid"), (&nan_field, "NaN")] {
        let output = run(&[
            "evaluate",
            "--fixed",
            path(&fixed),
            "--moving",
            path(&moving),
            "--warp",
            path(field),
            "--out",
            path(&out),
        ]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert!(stderr.contains(path(field)) && stderr.contains(problem), "{stderr}");
        let output = run(&[
            "apply",
            "--warp",
            path(field),
            "--image",
            path(&moving),
            "--reference",
            path(&fixed),
            "--out",
            path(&dir.path().join("applied.nii.gz")),
        ]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert!(stderr.contains(path(field)) && stderr.contains(problem), "{stderr}");
    }
    assert!(!out.join("evaluation.json").exists());
    assert!(!dir.path().join("applied.nii.gz").exists());
}

#[test]
fn qa_figures_show_folding_and_agreement() {
    use diffeoreg::diffeo::VectorField;
    use diffeoreg::diffeo::jacobian::determinant;
    use diffeoreg::metrics::Dice;
    use diffeoreg::qa::{QaInputs, write_figures};
    let dir = tempfile::tempdir().unwrap();
    let head = synthetic_head([40, 44, 36], [5.0, 5.0, 5.0]);
    let grid = head.geometry.clone();
    // Mirror a slab of x across its middle: det ∂φ/∂x = −1 there, on every cut through it.
    let field = DisplacementField::from_fn(grid.clone(), |p| {
        let i = (p[0] - grid.origin_mm[0]) / 5.0;
        if (18.0..23.0).contains(&i.round()) {
            [-2.0 * (p[0] - (grid.origin_mm[0] + 20.0 * 5.0)), 0.0, 0.0]
        } else {
            [0.0; 3]
        }
    });
    let dice = vec![Dice { tissue: "bone".into(), dice: 1.0 }];
    let inputs =
        QaInputs { fixed: &head, moving_warped: &head, warp: &field, calibration: &Default::default(), dice: &dice };
    let written = write_figures(dir.path(), &inputs).unwrap();
    for name in ["slices.png", "checkerboard.png", "jacobian.png", "tissues.png", "grid.png"] {
        assert!(written.contains(&dir.path().join(name)), "{name} missing");
    }
    let png = |name: &str| image::open(dir.path().join(name)).unwrap().to_rgb8();
    // Folding voxels are drawn green: exactly the panel pixels that show a voxel with det ≤ 0.
    let det = determinant(&VectorField::from_displacement_mm(&field));
    let [nx, ny, _] = grid.shape;
    let layout = diffeoreg::qa::Layout::new(&grid, 1, 0);
    let jacobian = png("jacobian.png");
    let (mut expected, mut green) = (0, 0);
    for row in 0..3 {
        let (x0, y0, w, h) = layout.panel(0, row);
        for y in 0..h {
            for x in 0..w {
                let [i, j, k] = layout.voxel_at(&grid, row, x, y);
                let folds = det[i + nx * (j + ny * k)] <= 0.0;
                let is_green = jacobian.get_pixel((x0 + x) as u32, (y0 + y) as u32).0 == [0, 255, 0];
                expected += usize::from(folds);
                green += usize::from(folds && is_green);
                assert!(folds || !is_green, "green where nothing folds at panel {row} ({x}, {y})");
            }
        }
    }
    assert!(expected > 100);
    // The orientation letters cover a few pixels of the panels.
    assert!(green as f64 >= 0.97 * expected as f64, "{green} of {expected} folding pixels green");
    // Identical images: the difference panels are white but for their orientation letters.
    let slices = png("slices.png");
    let layout = diffeoreg::qa::Layout::new(&grid, 3, 0);
    for row in 0..3 {
        let (x0, y0, w, h) = layout.panel(2, row);
        let white = (0..h)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .filter(|&(x, y)| slices.get_pixel((x0 + x) as u32, (y0 + y) as u32).0 == [255, 255, 255])
            .count();
        assert!(white as f64 >= 0.97 * (w * h) as f64, "difference panel {row}: {white} of {} white", w * h);
    }
    // Titles and labels are drawn: the title bar holds light text.
    let title_ink = (0..30u32)
        .flat_map(|y| (0..300u32).map(move |x| (x, y)))
        .filter(|&(x, y)| slices.get_pixel(x, y).0[0] > 200)
        .count();
    assert!(title_ink > 100, "the title is drawn");
}

#[test]
fn batch_evaluation_writes_tables_and_box_plots() {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("case,method,fixed,moving,warp,inverse,truth,truth_inverse,rigid\n");
    for seed in [1u64, 2] {
        let ct = synthetic_head([40, 44, 40], [5.0, 5.0, 5.0]);
        let phantom = make_phantom(&ct, &PhantomParams { seed, ..PhantomParams::default() }).unwrap();
        let name = |file: &str| format!("case{seed}_{file}");
        let save_field =
            |file: &str, field: &DisplacementField| write_field(&dir.path().join(name(file)), field).unwrap();
        write_volume(&dir.path().join(name("fixed.nii.gz")), &phantom.fixed, StoredType::Float32).unwrap();
        write_volume(&dir.path().join(name("moving.nii.gz")), &phantom.moving, StoredType::Float32).unwrap();
        save_field("truth_fwd.nii.gz", &phantom.truth_fwd);
        save_field("truth_inv.nii.gz", &phantom.truth_inv);
        save_field("zero_fwd.nii.gz", &DisplacementField::zero(phantom.fixed.geometry.clone()));
        save_field("zero_inv.nii.gz", &DisplacementField::zero(phantom.moving.geometry.clone()));
        // `phantom.rigid` maps moving to fixed points; a .tfm maps fixed to moving.
        diffeoreg::io::write_transform(&dir.path().join(name("rigid.tfm")), &phantom.rigid.inverse()).unwrap();
        for (method, warp, inverse) in [("truth", "truth_fwd", "truth_inv"), ("identity", "zero_fwd", "zero_inv")] {
            csv += &format!(
                "case{seed},{method},{},{},{},{},{},{},{}\n",
                name("fixed.nii.gz"),
                name("moving.nii.gz"),
                name(&format!("{warp}.nii.gz")),
                name(&format!("{inverse}.nii.gz")),
                name("truth_fwd.nii.gz"),
                name("truth_inv.nii.gz"),
                name("rigid.tfm"),
            );
        }
    }
    let cases = dir.path().join("cases.csv");
    std::fs::write(&cases, csv).unwrap();
    let out = dir.path().join("batch");
    let output = run(&["evaluate", "--batch", path(&cases), "--out", path(&out)]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let lines: Vec<Vec<&str>> = metrics.lines().map(|l| l.split(',').collect()).collect();
    let header = &lines[0];
    let column = |name: &str| header.iter().position(|c| *c == name).unwrap();
    // 2 cases × (truth, identity, Rigid) × 2 directions.
    assert_eq!(lines.len(), 1 + 12, "{metrics}");
    let value = |line: &Vec<&str>, name: &str| line[column(name)].parse::<f64>().unwrap();
    for line in &lines[1..] {
        let epe = value(line, "epe_mean_mm");
        match line[1] {
            "truth" => assert!(epe < 1e-6, "{line:?}"),
            "identity" => assert!(epe > 2.0, "{line:?}"),
            "Rigid" => assert!(epe > 0.1 && epe < 6.0, "{line:?}"),
            other => panic!("unexpected method {other}"),
        }
    }
    // The rigid start sits between doing nothing and the truth in endpoint error, case by case.
    for case in ["case1", "case2"] {
        let epe_of = |method: &str| {
            lines[1..]
                .iter()
                .find(|l| l[0] == case && l[1] == method && l[2] == "moving_to_fixed")
                .map(|l| value(l, "epe_mean_mm"))
                .unwrap()
        };
        assert!(epe_of("Rigid") < epe_of("identity"), "{case}");
    }
    let summary = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    assert_eq!(summary.lines().count(), 1 + 6, "{summary}");
    assert!(summary.lines().skip(1).all(|l| l.split(',').nth(2) == Some("2")), "{summary}");
    let plot = image::open(out.join("boxplots.png")).unwrap().to_rgb8();
    let coloured =
        plot.pixels().filter(|p| p.0 == [70, 130, 220] || p.0 == [230, 120, 40] || p.0 == [60, 170, 90]).count();
    assert!(coloured > 500, "{coloured} box pixels");
}
