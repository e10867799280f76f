//! DICOM series: discover the image series in a folder, then assemble one into a volume.
//!
//! Files are grouped by SeriesInstanceUID; the frames of a series (one per classic slice, or
//! many per enhanced multi-frame file) are sorted by their position along the slice normal —
//! never by InstanceNumber or file name. Orientation, spacing and size must agree across
//! frames, gaps must be even (a missing slice is an error), and positions must step along the
//! normal (gantry tilt is an error). Pixel data is decoded by dicom-pixeldata (plain, deflated,
//! RLE, JPEG lossless, JPEG-LS, JPEG 2000) and RescaleSlope/Intercept applied per frame.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use dicom_object::{InMemDicomObject, OpenFileOptions};
use dicom_pixeldata::{ConvertOptions, ModalityLutOption, PixelDecoder};
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::io::dicom_write::{PATIENT_AND_STUDY_TAGS, SeriesIdentity};
use crate::progress::Progress;
use crate::volume::geometry::{Vec3, cross, dot, norm, sub};
use crate::volume::{Geometry, Volume};

/// One image series found in a folder.
#[derive(Clone, Debug, Serialize)]
pub struct SeriesSummary {
    pub series_uid: String,
    pub modality: String,
    pub description: String,
    pub frame_count: usize,
    pub file_count: usize,
    pub first_file: PathBuf,
}

/// What a folder scan found.
#[derive(Clone, Debug, Serialize)]
pub struct FolderScan {
    pub series: Vec<SeriesSummary>,
    /// Files that are not DICOM or hold no image, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
    #[serde(skip)]
    frames: Vec<FrameHeader>,
}

/// Which series of a folder to load.
#[derive(Clone, Debug, Default)]
pub enum SeriesChoice {
    /// The CT series with the most frames (any modality when there is no CT).
    #[default]
    LargestCt,
    /// The series with this SeriesInstanceUID.
    Uid(String),
}

/// A series loaded as a volume (values after the modality rescale, HU for CT).
#[derive(Debug)]
pub struct LoadedSeries {
    pub volume: Volume,
    pub summary: SeriesSummary,
    /// Things the user should know (other series present, files skipped).
    pub warnings: Vec<String>,
    /// Every image series the scan found, largest first.
    pub series_found: Vec<SeriesSummary>,
    /// Files that were not DICOM images.
    pub skipped_files: usize,
    /// Patient, study, frame of reference and instances, for objects derived from the series.
    pub identity: SeriesIdentity,
}

/// What one frame (a classic slice, or one frame of a multi-frame file) says about itself.
#[derive(Clone, Debug)]
struct FrameHeader {
    file: PathBuf,
    frame: u32,
    series_uid: String,
    modality: String,
    description: String,
    rows: usize,
    columns: usize,
    position: Vec3,
    row_direction: Vec3,
    column_direction: Vec3,
    /// (between rows, between columns), as PixelSpacing stores it.
    pixel_spacing: [f64; 2],
    slope: f64,
    intercept: f64,
    slice_thickness: Option<f64>,
    sop_class_uid: String,
    sop_instance_uid: String,
    study_uid: String,
    frame_of_reference_uid: Option<String>,
}

/// Lists the image series under `folder` (recursively; or in one file) without decoding pixel
/// data.
pub fn scan_folder(folder: &Path, progress: &dyn Progress) -> Result<FolderScan> {
    let mut files = Vec::new();
    if folder.is_dir() {
        collect_files(folder, &mut files)?;
        files.sort();
    } else {
        files.push(folder.to_path_buf());
    }
    progress.start_stage("reading DICOM headers", files.len() as u64);
    let results: Vec<Result<std::result::Result<Vec<FrameHeader>, String>>> = files
        .par_iter()
        .map(|file| {
            progress.check_cancelled()?;
            let result = without_panic(file, || read_frame_headers(file));
            progress.advance(1);
            result
        })
        .collect();
    let mut frames = Vec::new();
    let mut skipped = Vec::new();
    for (file, result) in files.into_iter().zip(results) {
        match result? {
            Ok(headers) => frames.extend(headers),
            Err(reason) => skipped.push((file, reason)),
        }
    }
    let mut by_series: BTreeMap<&str, SeriesSummary> = BTreeMap::new();
    for frame in &frames {
        let entry = by_series.entry(&frame.series_uid).or_insert_with(|| SeriesSummary {
            series_uid: frame.series_uid.clone(),
            modality: frame.modality.clone(),
            description: frame.description.clone(),
            frame_count: 0,
            file_count: 0,
            first_file: frame.file.clone(),
        });
        entry.frame_count += 1;
        if frame.frame == 0 {
            entry.file_count += 1;
        }
    }
    let mut series: Vec<SeriesSummary> = by_series.into_values().collect();
    series.sort_by(|a, b| b.frame_count.cmp(&a.frame_count).then(a.series_uid.cmp(&b.series_uid)));
    Ok(FolderScan { series, skipped, frames })
}

/// Loads one series of a folder as a volume.
pub fn load_series(folder: &Path, choice: &SeriesChoice, progress: &dyn Progress) -> Result<LoadedSeries> {
    let scan = scan_folder(folder, progress)?;
    let mut warnings = Vec::new();
    if !scan.skipped.is_empty() {
        warnings.push(format!(
            "skipped {} file(s) that are not DICOM images, e.g. {}: {}",
            scan.skipped.len(),
            scan.skipped[0].0.display(),
            scan.skipped[0].1
        ));
    }
    if scan.series.is_empty() {
        return Err(Error::bad_input(
            folder,
            format!("holds no DICOM image series ({} file(s) skipped)", scan.skipped.len()),
        ));
    }
    let summary = choose_series(folder, &scan.series, choice)?;
    if scan.series.len() > 1 {
        let others: Vec<String> = scan
            .series
            .iter()
            .filter(|s| s.series_uid != summary.series_uid)
            .map(|s| format!("{} ({}, {} frames)", s.series_uid, s.modality, s.frame_count))
            .collect();
        warnings.push(format!(
            "the folder holds {} series; loaded {} ({}, {} frames); others: {}",
            scan.series.len(),
            summary.series_uid,
            summary.modality,
            summary.frame_count,
            others.join(", ")
        ));
    }
    let frames: Vec<FrameHeader> = scan.frames.into_iter().filter(|f| f.series_uid == summary.series_uid).collect();
    let (geometry, frames) = series_geometry(frames)?;
    let volume = decode_frames(geometry, &frames, progress)?;
    let identity = series_identity(&frames)?;
    Ok(LoadedSeries {
        volume,
        summary,
        warnings,
        series_found: scan.series,
        skipped_files: scan.skipped.len(),
        identity,
    })
}

/// The patient, study, frame of reference and instances of a series (frames in slice order),
/// the patient and study attributes read from its first file.
fn series_identity(frames: &[FrameHeader]) -> Result<SeriesIdentity> {
    let first = &frames[0];
    let object = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(&first.file)
        .map_err(|e| Error::bad_input(&first.file, format!("is a damaged DICOM file: {e}")))?;
    let patient_and_study =
        PATIENT_AND_STUDY_TAGS.iter().filter_map(|&tag| object.element_opt(tag).ok().flatten().cloned()).collect();
    let mut instances: Vec<(String, String)> = Vec::new();
    for frame in frames {
        let instance = (frame.sop_class_uid.clone(), frame.sop_instance_uid.clone());
        if !instances.contains(&instance) {
            instances.push(instance);
        }
    }
    Ok(SeriesIdentity {
        patient_and_study,
        study_uid: first.study_uid.clone(),
        series_uid: first.series_uid.clone(),
        frame_of_reference_uid: first.frame_of_reference_uid.clone(),
        modality: first.modality.clone(),
        instances,
        patient_position: text(&object, tags::PATIENT_POSITION).unwrap_or_default(),
        position_reference_indicator: text(&object, tags::POSITION_REFERENCE_INDICATOR).unwrap_or_default(),
        from_dicom: true,
    })
}

fn choose_series(folder: &Path, series: &[SeriesSummary], choice: &SeriesChoice) -> Result<SeriesSummary> {
    let listing = || {
        series
            .iter()
            .map(|s| format!("{} ({}, {} frames, {:?})", s.series_uid, s.modality, s.frame_count, s.description))
            .collect::<Vec<_>>()
            .join("; ")
    };
    match choice {
        SeriesChoice::Uid(uid) => series
            .iter()
            .find(|s| &s.series_uid == uid)
            .cloned()
            .ok_or_else(|| Error::bad_input(folder, format!("has no series {uid}; it holds: {}", listing()))),
        SeriesChoice::LargestCt => {
            let candidates: Vec<&SeriesSummary> = if series.iter().any(|s| s.modality == "CT") {
                series.iter().filter(|s| s.modality == "CT").collect()
            } else {
                series.iter().collect()
            };
            let largest = candidates[0];
            if candidates.iter().skip(1).any(|s| s.frame_count == largest.frame_count) {
                return Err(Error::bad_input(
                    folder,
                    format!("holds several series of the same size; name one with --series: {}", listing()),
                ));
            }
            Ok(largest.clone())
        }
    }
}

fn collect_files(folder: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(folder).map_err(|e| Error::io(folder, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(folder, e))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| Error::io(&path, e))?;
        if kind.is_dir() {
            collect_files(&path, files)?;
        } else if kind.is_file() {
            files.push(path);
        }
    }
    Ok(())
}

/// Whether the file has the "DICM" marker after a 128-byte preamble.
fn has_dicom_marker(file: &Path) -> Result<bool> {
    use std::io::Read;
    let mut head = [0u8; 132];
    let mut handle = std::fs::File::open(file).map_err(|e| Error::io(file, e))?;
    let mut filled = 0;
    while filled < head.len() {
        match handle.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) => return Err(Error::io(file, e)),
        }
    }
    Ok(filled == 132 && &head[128..132] == b"DICM")
}

/// The headers of every frame in a file; Ok(Err(reason)) for a file that is no DICOM image.
/// A file that claims to be DICOM but cannot be parsed is an error, not a skip.
fn read_frame_headers(file: &Path) -> Result<std::result::Result<Vec<FrameHeader>, String>> {
    if !has_dicom_marker(file)? {
        return Ok(Err("not a DICOM file (no DICM marker)".into()));
    }
    let object = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(file)
        .map_err(|e| Error::bad_input(file, format!("is a damaged DICOM file: {e}")))?;
    if object.element_opt(tags::ROWS).ok().flatten().is_none() {
        let sop = text(&object, tags::SOP_CLASS_UID).unwrap_or_default();
        return Ok(Err(format!("DICOM without an image (SOP class {sop})")));
    }
    frame_headers(file, &object).map(Ok).map_err(|problem| Error::bad_input(file, problem))
}

type Object = InMemDicomObject;

fn text(object: &Object, tag: dicom_core::Tag) -> Option<String> {
    let element = object.element_opt(tag).ok().flatten()?;
    Some(element.to_str().ok()?.trim().trim_end_matches('\0').to_string())
}

fn numbers(object: &Object, tag: dicom_core::Tag) -> Option<Vec<f64>> {
    object.element_opt(tag).ok().flatten()?.to_multi_float64().ok()
}

fn number(object: &Object, tag: dicom_core::Tag) -> Option<f64> {
    numbers(object, tag)?.first().copied()
}

/// The first item of a sequence attribute.
fn first_item(object: &Object, tag: dicom_core::Tag) -> Option<&Object> {
    object.element_opt(tag).ok().flatten()?.items()?.first()
}

/// Looks an attribute up inside a functional-group macro (per frame, then shared), then at
/// the top level of the object, as enhanced objects allow.
fn functional<T>(
    groups: &[Option<&Object>],
    top: &Object,
    macro_tag: dicom_core::Tag,
    read: impl Fn(&Object) -> Option<T>,
) -> Option<T> {
    groups.iter().flatten().filter_map(|group| first_item(group, macro_tag)).find_map(&read).or_else(|| read(top))
}

fn frame_headers(file: &Path, object: &Object) -> std::result::Result<Vec<FrameHeader>, String> {
    let samples = number(object, tags::SAMPLES_PER_PIXEL).unwrap_or(1.0);
    if samples != 1.0 {
        return Err(format!("has {samples} samples per pixel; only grey-scale images are volumes"));
    }
    let rows = number(object, tags::ROWS).ok_or("has no Rows")? as usize;
    let columns = number(object, tags::COLUMNS).ok_or("has no Columns")? as usize;
    if rows == 0 || columns == 0 {
        return Err(format!("has an empty image ({rows}×{columns})"));
    }
    let frame_count = number(object, tags::NUMBER_OF_FRAMES).unwrap_or(1.0).max(1.0) as usize;
    let shared = first_item(object, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
    let per_frame =
        object.element_opt(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE).ok().flatten().and_then(|e| e.items());
    if let Some(items) = per_frame
        && items.len() != frame_count
    {
        return Err(format!("declares {frame_count} frames but has {} per-frame groups", items.len()));
    }
    let series_uid = text(object, tags::SERIES_INSTANCE_UID).unwrap_or_else(|| "(no SeriesInstanceUID)".into());
    let modality = text(object, tags::MODALITY).unwrap_or_default();
    let description = text(object, tags::SERIES_DESCRIPTION).unwrap_or_default();
    let sop_class_uid = text(object, tags::SOP_CLASS_UID).unwrap_or_default();
    let sop_instance_uid = text(object, tags::SOP_INSTANCE_UID).unwrap_or_default();
    let study_uid = text(object, tags::STUDY_INSTANCE_UID).unwrap_or_default();
    let frame_of_reference_uid = text(object, tags::FRAME_OF_REFERENCE_UID).filter(|uid| !uid.is_empty());

    (0..frame_count)
        .map(|frame| {
            let groups = [per_frame.and_then(|items| items.get(frame)), shared];
            let position = functional(&groups, object, tags::PLANE_POSITION_SEQUENCE, |o| numbers(o, tags::IMAGE_POSITION_PATIENT))
                .ok_or_else(|| format!("frame {frame} has no ImagePositionPatient"))?;
            let orientation =
                functional(&groups, object, tags::PLANE_ORIENTATION_SEQUENCE, |o| numbers(o, tags::IMAGE_ORIENTATION_PATIENT))
                    .ok_or_else(|| format!("frame {frame} has no ImageOrientationPatient"))?;
            let spacing = functional(&groups, object, tags::PIXEL_MEASURES_SEQUENCE, |o| numbers(o, tags::PIXEL_SPACING))
                .ok_or_else(|| format!("frame {frame} has no PixelSpacing"))?;
            let slope = functional(&groups, object, tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE, |o| number(o, tags::RESCALE_SLOPE))
                .unwrap_or(1.0);
            let intercept =
                functional(&groups, object, tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE, |o| number(o, tags::RESCALE_INTERCEPT))
                    .unwrap_or(0.0);
            let slice_thickness = functional(&groups, object, tags::PIXEL_MEASURES_SEQUENCE, |o| number(o, tags::SLICE_THICKNESS));
            if position.len() != 3 || orientation.len() != 6 || spacing.len() != 2 {
                return Err(format!(
                    "frame {frame} has malformed geometry (position {position:?}, orientation {orientation:?}, spacing {spacing:?})"
                ));
            }
            let all = position.iter().chain(&orientation).chain(&spacing).chain([&slope, &intercept]);
            if all.clone().any(|v| !v.is_finite()) {
                return Err(format!("frame {frame} has non-finite geometry or rescale values"));
            }
            if spacing.iter().any(|&s| s <= 0.0) {
                return Err(format!("frame {frame} has PixelSpacing {spacing:?}; spacing must be positive"));
            }
            let row_direction = [orientation[0], orientation[1], orientation[2]];
            let column_direction = [orientation[3], orientation[4], orientation[5]];
            if (norm(row_direction) - 1.0).abs() > 1e-3
                || (norm(column_direction) - 1.0).abs() > 1e-3
                || dot(row_direction, column_direction).abs() > 1e-3
            {
                return Err(format!("frame {frame} has ImageOrientationPatient {orientation:?}, not two unit perpendicular vectors"));
            }
            Ok(FrameHeader {
                file: file.to_path_buf(),
                frame: frame as u32,
                series_uid: series_uid.clone(),
                modality: modality.clone(),
                description: description.clone(),
                rows,
                columns,
                position: [position[0], position[1], position[2]],
                row_direction,
                column_direction,
                pixel_spacing: [spacing[0], spacing[1]],
                slope,
                intercept,
                slice_thickness,
                sop_class_uid: sop_class_uid.clone(),
                sop_instance_uid: sop_instance_uid.clone(),
                study_uid: study_uid.clone(),
                frame_of_reference_uid: frame_of_reference_uid.clone(),
            })
        })
        .collect()
}

fn describe(frame: &FrameHeader) -> String {
    if frame.frame == 0 {
        frame.file.display().to_string()
    } else {
        format!("{} (frame {})", frame.file.display(), frame.frame + 1)
    }
}

/// Checks that the frames form one regular grid and returns it with the frames in slice order.
fn series_geometry(mut frames: Vec<FrameHeader>) -> Result<(Geometry, Vec<FrameHeader>)> {
    let first = frames[0].clone();
    for frame in &frames[1..] {
        let differs = |a: Vec3, b: Vec3| norm(sub(a, b)) > 1e-4;
        if differs(frame.row_direction, first.row_direction) || differs(frame.column_direction, first.column_direction)
        {
            return Err(mixed(&first, frame, "orientation"));
        }
        if (frame.pixel_spacing[0] - first.pixel_spacing[0]).abs() > 1e-4
            || (frame.pixel_spacing[1] - first.pixel_spacing[1]).abs() > 1e-4
        {
            return Err(mixed(&first, frame, "pixel spacing"));
        }
        if (frame.rows, frame.columns) != (first.rows, first.columns) {
            return Err(mixed(&first, frame, "image size"));
        }
    }
    let normal = cross(first.row_direction, first.column_direction);
    let along = |f: &FrameHeader| dot(f.position, normal);
    frames.sort_by(|a, b| along(a).total_cmp(&along(b)));

    let steps: Vec<f64> = frames.windows(2).map(|w| along(&w[1]) - along(&w[0])).collect();
    for (w, &step) in frames.windows(2).zip(&steps) {
        if step < 1e-3 {
            return Err(Error::bad_input(
                &w[1].file,
                format!(
                    "lies at the same position as {} ({:.3} mm apart along the normal): two acquisitions mixed in one series?",
                    describe(&w[0]),
                    step
                ),
            ));
        }
    }
    let slice_step_mm = if steps.is_empty() {
        first.slice_thickness.filter(|t| *t > 0.0).unwrap_or(1.0)
    } else {
        let mut sorted = steps.clone();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    };
    for (w, &step) in frames.windows(2).zip(&steps) {
        if (step - slice_step_mm).abs() > (0.05 * slice_step_mm).max(0.01) {
            let ratio = step / slice_step_mm;
            let problem = if (ratio - ratio.round()).abs() < 0.1 && ratio.round() >= 2.0 {
                format!("{} slice(s) missing", ratio.round() as usize - 1)
            } else {
                "uneven slice spacing".to_string()
            };
            return Err(Error::bad_input(
                &w[1].file,
                format!(
                    "{problem}: it lies {step:.3} mm after {} where slices are {slice_step_mm:.3} mm apart",
                    describe(&w[0])
                ),
            ));
        }
    }
    if let (Some(head), Some(tail)) = (frames.first(), frames.last())
        && frames.len() > 1
    {
        let delta = sub(tail.position, head.position);
        let in_plane = norm(sub(delta, normal.map(|n| n * dot(delta, normal))));
        if in_plane > 0.01 * norm(delta) + 0.01 {
            return Err(Error::bad_input(
                &tail.file,
                format!(
                    "slice positions drift {in_plane:.2} mm sideways from {} over the series: gantry tilt or a sheared series is not supported",
                    head.file.display()
                ),
            ));
        }
    }
    let direction = [
        [first.row_direction[0], first.column_direction[0], normal[0]],
        [first.row_direction[1], first.column_direction[1], normal[1]],
        [first.row_direction[2], first.column_direction[2], normal[2]],
    ];
    let geometry = Geometry::new(
        [first.columns, first.rows, frames.len()],
        [first.pixel_spacing[1], first.pixel_spacing[0], slice_step_mm],
        frames[0].position,
        direction,
    )
    .map_err(|e| Error::bad_input(&first.file, e.to_string()))?;
    Ok((geometry, frames))
}

fn mixed(a: &FrameHeader, b: &FrameHeader, what: &str) -> Error {
    Error::bad_input(
        &b.file,
        format!("has a different {what} from {} in the same series: mixed series are not supported", describe(a)),
    )
}

/// Decodes every frame into its slice of the volume, one file per task.
fn decode_frames(geometry: Geometry, frames: &[FrameHeader], progress: &dyn Progress) -> Result<Volume> {
    let plane = geometry.shape[0] * geometry.shape[1];
    let mut voxels = vec![0f32; geometry.voxel_count()];
    let mut by_file: BTreeMap<&Path, Vec<(&FrameHeader, &mut [f32])>> = BTreeMap::new();
    for (frame, slice) in frames.iter().zip(voxels.chunks_mut(plane)) {
        by_file.entry(frame.file.as_path()).or_default().push((frame, slice));
    }
    progress.start_stage("decoding DICOM pixel data", by_file.len() as u64);
    by_file.into_par_iter().try_for_each(|(file, slices)| {
        progress.check_cancelled()?;
        without_panic(file, || decode_file(file, slices))?;
        progress.advance(1);
        Ok::<(), Error>(())
    })?;
    Ok(Volume { geometry, voxels })
}

/// The stored values (before RescaleSlope/Intercept) of every frame of one DICOM file, frame
/// after frame, each row by row.
pub fn decode_stored_values(file: &Path) -> Result<Vec<f32>> {
    without_panic(file, || {
        let object =
            dicom_object::open_file(file).map_err(|e| Error::bad_input(file, format!("cannot be read: {e}")))?;
        let pixels = object
            .decode_pixel_data()
            .map_err(|e| Error::bad_input(file, format!("pixel data cannot be decoded: {e}")))?;
        let raw = ConvertOptions::new().with_modality_lut(ModalityLutOption::None);
        pixels
            .to_vec_with_options(&raw)
            .map_err(|e| Error::bad_input(file, format!("pixel data cannot be converted: {e}")))
    })
}

/// Runs a parser on untrusted bytes, turning a panic inside a dependency into an error that
/// names the file.
/// The panic's own message and backtrace are not printed: the error naming the file is all
/// the user sees.
fn without_panic<T>(file: &Path, parse: impl FnOnce() -> Result<T>) -> Result<T> {
    use std::cell::Cell;
    thread_local! {
        static QUIET: Cell<bool> = const { Cell::new(false) };
    }
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
    let was_quiet = QUIET.with(|quiet| quiet.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(parse));
    QUIET.with(|quiet| quiet.set(was_quiet));
    result.unwrap_or_else(|_| Err(Error::bad_input(file, "is corrupt: the DICOM parser failed on it")))
}

fn decode_file(file: &Path, slices: Vec<(&FrameHeader, &mut [f32])>) -> Result<()> {
    let object = dicom_object::open_file(file).map_err(|e| Error::bad_input(file, format!("cannot be read: {e}")))?;
    let pixels =
        object.decode_pixel_data().map_err(|e| Error::bad_input(file, format!("pixel data cannot be decoded: {e}")))?;
    let raw = ConvertOptions::new().with_modality_lut(ModalityLutOption::None);
    for (frame, slice) in slices {
        let values: Vec<f32> = pixels
            .to_vec_frame_with_options(frame.frame, &raw)
            .map_err(|e| Error::bad_input(file, format!("frame {} cannot be decoded: {e}", frame.frame + 1)))?;
        if values.len() != slice.len() {
            return Err(Error::bad_input(
                file,
                format!("frame {} holds {} pixels, {} expected", frame.frame + 1, values.len(), slice.len()),
            ));
        }
        let (slope, intercept) = (frame.slope as f32, frame.intercept as f32);
        for (out, value) in slice.iter_mut().zip(values) {
            *out = value * slope + intercept;
        }
    }
    Ok(())
}
