//! `register --dicom` writes what a planning system imports, and tools we did not write read it:
//! dciodvfy finds no error in the registration object or the series, dcm2niix reads the series
//! back to the NIfTI result, pydicom's reading of the vector grid is `warp_fwd.nii.gz`, and
//! `apply --warp registration.dcm` equals `apply --warp warp_fwd.nii.gz`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{assert_same_voxels_at_same_points, binary, read_f32, read_json, reference_folder, run_reference};
use diffeoreg::io::{SeriesChoice, StoredType, load_volume, read_field, read_volume, write_volume};
use diffeoreg::progress::Silent;
use diffeoreg::volume::{Geometry, Volume};

fn run(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(binary()).args(args).output().unwrap()
}

fn register_dicom(fixed: &Path, moving: &Path, out: &Path) -> Output {
    run(&[
        "register".as_ref(),
        "--fixed".as_ref(),
        fixed.as_os_str(),
        "--moving".as_ref(),
        moving.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--dicom".as_ref(),
        "--iterations".as_ref(),
        "20,10".as_ref(),
        "--levels".as_ref(),
        "2,1".as_ref(),
    ])
}

/// dciodvfy's errors (lines starting "Error") for one file.
fn dciodvfy_errors(file: &Path) -> Vec<String> {
    let output = Command::new("dciodvfy")
        .arg("-new")
        .arg(file)
        .output()
        .expect("dciodvfy is installed (Debian dicom3tools; scripts/install-test-tools.sh)");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    text.lines().filter(|line| line.starts_with("Error")).map(String::from).collect()
}

fn slices(folder: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

#[test]
fn a_dicom_pair_gives_valid_objects_that_other_tools_read_back() {
    let reference = reference_folder("dicom-series");
    let fixed = reference.join("series");
    let moving = reference.join("enhanced/enhanced_ct.dcm");
    let out = tempfile::tempdir().unwrap();
    let result = register_dicom(&fixed, &moving, out.path());
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let dicom = out.path().join("dicom");
    let registration = dicom.join("registration.dcm");
    let series = slices(&dicom.join("moving_warped"));
    assert_eq!(series.len(), 30, "one file per slice of the fixed grid");

    // dciodvfy: no errors in the registration object or in any slice.
    let errors = dciodvfy_errors(&registration);
    assert!(errors.is_empty(), "registration.dcm: {errors:#?}");
    for slice in &series {
        let errors = dciodvfy_errors(slice);
        assert!(errors.is_empty(), "{}: {errors:#?}", slice.display());
    }

    // dcm2niix reads the series back: the NIfTI result, every voxel within 1 HU, same points.
    let warped = read_volume(&out.path().join("moving_warped.nii.gz")).unwrap();
    let converted = tempfile::tempdir().unwrap();
    let conversion = Command::new("dcm2niix")
        .args(["-z", "y", "-f", "warped", "-o"])
        .arg(converted.path())
        .arg(dicom.join("moving_warped"))
        .output()
        .expect("dcm2niix is installed");
    assert!(conversion.status.success(), "{}", String::from_utf8_lossy(&conversion.stdout));
    let theirs = read_volume(&converted.path().join("warped.nii.gz")).unwrap();
    assert_eq!(assert_same_voxels_at_same_points(&warped, &theirs, 1.0, "dcm2niix"), 48 * 40 * 30);
    // Our own reader too, on the fixed grid exactly.
    let ours = load_volume(&dicom.join("moving_warped"), &SeriesChoice::LargestCt, &Silent).unwrap().volume;
    let fixed_volume = load_volume(&fixed, &SeriesChoice::LargestCt, &Silent).unwrap().volume;
    assert!(ours.geometry.same_grid(&fixed_volume.geometry, 1e-3));
    let worst = ours.voxels.iter().zip(&warped.voxels).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(worst <= 0.5 + 1e-3, "HU round to within 0.5: worst {worst}");

    // pydicom reads the vector grid: warp_fwd.nii.gz to 1e-3 mm, on the fixed grid.
    let read_back = out.path().join("pydicom");
    run_reference("dicom-registration-read", &[&registration, &series[0], &read_back]);
    let described = read_json(&read_back.with_extension("json"));
    let vectors = read_f32(&read_back.with_extension("f32"));
    let field = read_field(&out.path().join("warp_fwd.nii.gz")).unwrap();
    let g = &field.geometry;
    assert_eq!(vectors.len(), 3 * g.voxel_count());
    let mut worst = 0f32;
    for n in 0..g.voxel_count() {
        for d in 0..3 {
            worst = worst.max((vectors[3 * n + d] - field.components_mm[d][n]).abs());
        }
    }
    assert!(worst <= 1e-3, "vector grid vs warp_fwd: {worst} mm");
    let position: Vec<f64> =
        described["grid_position"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    for d in 0..3 {
        assert!((position[d] - g.origin_mm[d]).abs() < 1e-3, "grid position {position:?} vs {:?}", g.origin_mm);
        assert_eq!(described["grid_dimensions"][d].as_u64().unwrap() as usize, g.shape[d]);
        assert!((described["grid_resolution"][d].as_f64().unwrap() - g.spacing_mm[d]).abs() < 1e-6);
    }
    for (name, matrix) in described["matrices"].as_object().unwrap() {
        let values: Vec<f64> = matrix["matrix"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let identity: Vec<f64> = (0..16).map(|n| if n % 5 == 0 { 1.0 } else { 0.0 }).collect();
        assert_eq!(values, identity, "{name}: the rigid part is folded into the vectors");
    }
    assert_eq!(described["sop_class"], "1.2.840.10008.5.1.4.1.1.66.3");
    assert_eq!(described["modality"], "REG");
    // Frames: registered = the fixed CT's, source = the moving image's; the series joins the
    // fixed CT's study and frame, patient copied.
    let fixed_first = diffeoreg::io::dicom::scan_folder(&fixed, &Silent).unwrap();
    assert_eq!(fixed_first.series.len(), 1);
    assert_eq!(described["frame_of_reference"], described["series_frame_of_reference"]);
    assert_eq!(described["study"], described["series_study"]);
    assert_eq!(described["series_patient_name"], "Phantom^Test");
    assert_eq!(described["series_patient_id"], "0001");
    assert_eq!(described["series_modality"], "CT");
    assert_eq!(described["referenced_source_images"], 1, "the enhanced CT is one instance");
    let referenced = described["referenced_series"].as_object().unwrap();
    assert_eq!(referenced.len(), 2, "both series are referenced: {referenced:?}");
    assert!(referenced.values().any(|count| count == 30), "the fixed series' 30 instances: {referenced:?}");

    // `info` describes the object; `apply --warp registration.dcm` is `apply --warp warp_fwd.nii.gz`.
    let info = run(&["info".as_ref(), registration.as_os_str()]);
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(info.status.success() && text.contains("Deformable Spatial Registration"), "{text}");
    assert!(text.contains("48 × 40 × 30 points"), "{text}");
    let apply = |warp: &Path, name: &str| {
        let output_path = out.path().join(name);
        let output = run(&[
            "apply".as_ref(),
            "--warp".as_ref(),
            warp.as_os_str(),
            "--image".as_ref(),
            moving.as_os_str(),
            "--reference".as_ref(),
            fixed.as_os_str(),
            "--out".as_ref(),
            output_path.as_os_str(),
        ]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        read_volume(&output_path).unwrap()
    };
    let through_dicom = apply(&registration, "through_dicom.nii.gz");
    let through_nifti = apply(&out.path().join("warp_fwd.nii.gz"), "through_nifti.nii.gz");
    assert_eq!(through_dicom.geometry, through_nifti.geometry);
    let worst = through_dicom.voxels.iter().zip(&through_nifti.voxels).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    // The grid's position and orientation travel as decimal strings: equal to ~1e-6 mm.
    assert!(worst < 0.01, "apply through registration.dcm vs warp_fwd.nii.gz: {worst} HU apart");
}

/// NIfTI inputs: new UIDs, labelled; a left-handed fixed grid is stored right-handed (slices
/// reversed) and read back onto the same points.
#[test]
fn nifti_inputs_get_labelled_new_identities_and_a_left_handed_grid_round_trips() {
    let reference = reference_folder("dicom-series");
    let volume = read_volume(&reference.join("reference.nii.gz")).unwrap();
    let g = &volume.geometry;
    let [nx, ny, nz] = g.shape;
    // The same voxels with k reversed: the third axis points the other way.
    let mut direction = g.direction;
    for row in &mut direction {
        row[2] = -row[2];
    }
    let last = g.index_to_world([0.0, 0.0, (nz - 1) as f64]);
    let flipped_geometry = Geometry::new(g.shape, g.spacing_mm, last, direction).unwrap();
    let plane = nx * ny;
    let voxels: Vec<f32> = (0..nz).rev().flat_map(|k| volume.voxels[k * plane..(k + 1) * plane].to_vec()).collect();
    let flipped = Volume::new(flipped_geometry, voxels).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fixed = dir.path().join("fixed_left_handed.nii.gz");
    write_volume(&fixed, &flipped, StoredType::Automatic).unwrap();
    let moving = reference.join("reference.nii.gz");
    let out = dir.path().join("out");
    let result = register_dicom(&fixed, &moving, &out);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(stdout.contains("inputs not DICOM"), "the terminal says the identities are made up: {stdout}");
    let report = read_json(&out.join("report.json"));
    assert_eq!(report["dicom"]["inputs_were_dicom"], false);
    let registration = out.join("dicom/registration.dcm");
    assert!(dciodvfy_errors(&registration).is_empty(), "{:?}", dciodvfy_errors(&registration));
    let series = slices(&out.join("dicom/moving_warped"));
    assert!(dciodvfy_errors(&series[0]).is_empty(), "{:?}", dciodvfy_errors(&series[0]));

    let read_back = out.join("pydicom");
    run_reference("dicom-registration-read", &[&registration, &series[0], &read_back]);
    let described = read_json(&read_back.with_extension("json"));
    assert!(described["patient_name"].as_str().unwrap().starts_with("NOT FROM DICOM"), "{described}");
    assert_ne!(described["frame_of_reference"], described["source_frame_of_reference"]);
    assert_eq!(described["frame_of_reference"], described["series_frame_of_reference"]);

    // The stored grid is right-handed, so it starts at the fixed grid's last slice.
    let object = diffeoreg::io::dicom_registration::read_registration(&registration).unwrap();
    let forward = read_field(&out.join("warp_fwd.nii.gz")).unwrap();
    assert!(!object.field.geometry.same_grid(&forward.geometry, 1e-3));
    assert!(object.field.geometry.same_points(&forward.geometry, 1e-3));
    assert_eq!(object.field.on_grid(&forward.geometry).components_mm, forward.components_mm);
}

/// A fixed series without a frame of reference is refused before registering, naming a file,
/// and nothing is written.
#[test]
fn a_fixed_series_without_a_frame_of_reference_is_refused() {
    use dicom_dictionary_std::tags;
    let reference = reference_folder("dicom-series");
    let dir = tempfile::tempdir().unwrap();
    let fixed = dir.path().join("no_frame");
    std::fs::create_dir_all(&fixed).unwrap();
    let series = reference.join("series");
    let files = slices(&series).into_iter().chain(slices(&series.join("sub")));
    for (n, file) in files.filter(|p| p.is_file()).enumerate() {
        let Ok(mut object) = dicom_object::open_file(file) else { continue };
        object.remove_element(tags::FRAME_OF_REFERENCE_UID);
        object.write_to_file(fixed.join(format!("slice{n:03}.dcm"))).unwrap();
    }
    let out = dir.path().join("out");
    let result = register_dicom(&fixed, &reference.join("reference.nii.gz"), &out);
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("FrameOfReferenceUID") && stderr.contains("no_frame"), "{stderr}");
    assert!(!out.exists(), "nothing is written");
}

/// Dice of two masks (value > 0.5) compared at the world points of `a`'s voxels.
fn dice_at_same_points(a: &Volume, b: &Volume) -> f64 {
    let g = &a.geometry;
    let (mut both, mut in_a, mut in_b) = (0usize, 0usize, 0usize);
    for k in 0..g.shape[2] {
        for j in 0..g.shape[1] {
            for i in 0..g.shape[0] {
                let p = b.geometry.world_to_index(g.index_to_world([i as f64, j as f64, k as f64]));
                let q = p.map(|v| v.round());
                assert!((0..3).all(|d| (p[d] - q[d]).abs() < 1e-2), "the masks are on different grids");
                let inside_b = (0..3).all(|d| q[d] >= 0.0 && (q[d] as usize) < b.geometry.shape[d])
                    && b.at(q[0] as usize, q[1] as usize, q[2] as usize) > 0.5;
                let inside_a = a.at(i, j, k) > 0.5;
                both += usize::from(inside_a && inside_b);
                in_a += usize::from(inside_a);
                in_b += usize::from(inside_b);
            }
        }
    }
    2.0 * both as f64 / (in_a + in_b) as f64
}

/// `register` on the structure case's CT and pseudo-CT, carrying `structures` (a file of it).
fn register_structure_case(case: &Path, structures: &str, out: &Path) -> Output {
    run(&[
        "register".as_ref(),
        "--fixed".as_ref(),
        case.join("ct").as_os_str(),
        "--moving".as_ref(),
        case.join("pseudo_ct").as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--structures".as_ref(),
        case.join(structures).as_os_str(),
    ])
}

/// The structure case: a CT, and a pseudo-CT and MRI of the same head in another frame of
/// reference with an RT Structure Set drawn on the pseudo-CT (refs.py structure-case).
#[test]
fn structures_are_carried_onto_the_ct_as_plastimatch_and_apply_labels_agree() {
    let case = reference_folder("structure-case");
    let out = tempfile::tempdir().unwrap();
    let result = register_structure_case(&case, "RS.dcm", out.path());
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    for name in ["Tumour", "Brainstem", "Ring"] {
        assert!(stdout.contains(name), "the terminal lists {name}: {stdout}");
    }
    let structures = out.path().join("dicom/structures.dcm");
    let errors = dciodvfy_errors(&structures);
    assert!(errors.is_empty(), "structures.dcm: {errors:#?}");

    // Names, numbers, colours and types kept; the frame is the CT's.
    use diffeoreg::io::dicom_structures::read_structure_set;
    let original = read_structure_set(&case.join("RS.dcm")).unwrap();
    let carried = read_structure_set(&structures).unwrap();
    let ct = load_volume(&case.join("ct"), &SeriesChoice::LargestCt, &Silent).unwrap();
    let diffeoreg::io::Source::Dicom { identity, .. } = &ct.source else { panic!("the CT is DICOM") };
    assert_eq!(Some(&carried.frame_of_reference_uid), identity.frame_of_reference_uid.as_ref());
    assert_eq!(carried.rois.len(), original.rois.len());
    for (a, b) in original.rois.iter().zip(&carried.rois) {
        assert_eq!(
            (a.number, &a.name, a.colour, &a.interpreted_type),
            (b.number, &b.name, b.colour, &b.interpreted_type)
        );
        assert!(!b.contours.is_empty());
        // Every carried contour lies on a CT slice.
        for contour in &b.contours {
            let k = ct.volume.geometry.world_to_index(contour[0])[2];
            assert!((k - k.round()).abs() < 1e-3 && contour.iter().all(|p| (p[2] - contour[0][2]).abs() < 1e-3));
        }
    }

    let info = run(&["info".as_ref(), structures.as_os_str()]);
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(info.status.success() && text.contains("RT Structure Set") && text.contains("Brainstem"), "{text}");

    // plastimatch rasterises our contours on the CT; the moving masks it rasterises on the
    // pseudo-CT, carried by `apply --labels`, agree with them (Dice ≥ 0.95 each).
    let carried_masks = out.path().join("carried_masks");
    run_reference("plastimatch-masks", &[&structures, &case.join("ct"), &carried_masks]);
    let moving_masks = out.path().join("moving_masks");
    run_reference("plastimatch-masks", &[&case.join("RS.dcm"), &case.join("pseudo_ct"), &moving_masks]);
    for name in ["Tumour", "Brainstem", "Ring"] {
        let labels = out.path().join(format!("labels_{name}.nii.gz"));
        let apply = run(&[
            "apply".as_ref(),
            "--warp".as_ref(),
            out.path().join("warp_fwd.nii.gz").as_os_str(),
            "--image".as_ref(),
            moving_masks.join(format!("{name}.nii.gz")).as_os_str(),
            "--reference".as_ref(),
            case.join("ct").as_os_str(),
            "--out".as_ref(),
            labels.as_os_str(),
            "--labels".as_ref(),
        ]);
        assert!(apply.status.success(), "{}", String::from_utf8_lossy(&apply.stderr));
        let ours = read_volume(&carried_masks.join(format!("{name}.nii.gz"))).unwrap();
        let through_labels = read_volume(&labels).unwrap();
        let truth = read_volume(&case.join(format!("truth/{name}.nii.gz"))).unwrap();
        let dice = dice_at_same_points(&ours, &through_labels);
        let dice_truth = dice_at_same_points(&ours, &truth);
        println!("{name}: Dice against apply --labels {dice:.3}, against where it truly lies {dice_truth:.3}");
        assert!(dice >= 0.95, "{name}: Dice {dice:.3} against apply --labels");
        // Measured (session 24): Tumour 0.886, Brainstem 0.934, Ring 0.844; comparing everywhere
        // rather than within the pseudo-CT's field of view (0.6 % of the CT's grid, air corners
        // only) 0.897, 0.928, 0.878. The thin ring moves most with such small changes of the field.
        assert!(dice_truth >= 0.83, "{name}: Dice {dice_truth:.3} against the truth");
    }

    // The MRI carried through the stored DICOM registration, written as an MR series on the CT.
    let mr_dicom = out.path().join("mr_on_ct");
    let apply = run(&[
        "apply".as_ref(),
        "--warp".as_ref(),
        out.path().join("dicom/registration.dcm").as_os_str(),
        "--image".as_ref(),
        case.join("mr").as_os_str(),
        "--reference".as_ref(),
        case.join("ct").as_os_str(),
        "--out".as_ref(),
        out.path().join("mr_on_ct.nii.gz").as_os_str(),
        "--dicom".as_ref(),
        mr_dicom.as_os_str(),
    ]);
    assert!(apply.status.success(), "{}", String::from_utf8_lossy(&apply.stderr));
    let slices = slices(&mr_dicom);
    assert_eq!(slices.len(), ct.volume.geometry.shape[2]);
    let errors = dciodvfy_errors(&slices[0]);
    assert!(errors.is_empty(), "MR slice: {errors:#?}");
    let mr_series = load_volume(&mr_dicom, &SeriesChoice::LargestCt, &Silent).unwrap();
    let diffeoreg::io::Source::Dicom { modality, identity: mr_identity, .. } = &mr_series.source else { panic!() };
    assert_eq!(modality, "MR");
    assert_eq!(mr_identity.frame_of_reference_uid, identity.frame_of_reference_uid);
    assert_eq!(mr_identity.study_uid, identity.study_uid);
    let mr_nifti = read_volume(&out.path().join("mr_on_ct.nii.gz")).unwrap();
    let (slope, _) =
        diffeoreg::io::dicom_series_out::rescale_for(&mr_nifti.voxels, diffeoreg::io::dicom_series_out::ImageKind::Mr);
    assert_same_voxels_at_same_points(&mr_series.volume, &mr_nifti, (slope / 2.0 + 1e-3) as f32, "MR series");
}

/// Broken structure sets are refused before any work, naming the file and the problem, and
/// nothing is written.
#[test]
fn broken_structure_sets_are_refused_by_name() {
    let case = reference_folder("structure-case");
    for (file, problem) in [
        ("RS_other_frame.dcm", "frame of reference"),
        ("RS_open.dcm", "OPEN_PLANAR"),
        ("RS_self_intersecting.dcm", "crosses itself"),
    ] {
        let out = tempfile::tempdir().unwrap().path().join("out");
        let result = register_structure_case(&case, file, &out);
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(!result.status.success(), "{file} was accepted");
        assert!(stderr.contains(file) && stderr.contains(problem), "{file}: {stderr}");
        assert!(!stderr.contains("registered"), "{file}: refused before registering");
        assert!(!out.exists(), "{file}: nothing written");
    }
}
