//! RT Structure Sets (SOP class 1.2.840.10008.5.1.4.1.1.481.3): read the regions of interest
//! drawn on an image series, and write regions as closed planar contours on the slices of
//! another series.
//!
//! Only closed planar contours describe a region; an open contour or a point is refused by
//! name. Contour points are in mm, in the patient coordinates (LPS) of the structure set's frame
//! of reference.

use std::path::Path;

use dicom_core::VR;
use dicom_core::value::PrimitiveValue;
use dicom_dictionary_std::tags;
use dicom_object::OpenFileOptions;

use crate::error::{Error, Result};
use crate::io::dicom_write::{
    Object, RT_STRUCTURE_SET_STORAGE, SeriesIdentity, date_and_time_now, instance_reference, new_uid, put_common,
    put_decimals, put_empty, put_integer_string, put_new_series, put_sequence, put_str, sop_class_of, truncate,
    write_file,
};
use crate::volume::geometry::Vec3;

/// One region of interest.
#[derive(Clone, Debug)]
pub struct Roi {
    pub number: i64,
    pub name: String,
    pub colour: Option<[u8; 3]>,
    /// RTROIInterpretedType (ORGAN, GTV, …), empty when not given.
    pub interpreted_type: String,
    /// Closed planar contours, points in mm (LPS).
    pub contours: Vec<Vec<Vec3>>,
}

/// A structure set as read.
#[derive(Clone, Debug)]
pub struct StructureSet {
    pub label: String,
    /// The frame of reference its contours are in.
    pub frame_of_reference_uid: String,
    pub rois: Vec<Roi>,
}

fn text(object: &Object, tag: dicom_core::Tag) -> Option<String> {
    let element = object.element_opt(tag).ok().flatten()?;
    Some(element.to_str().ok()?.trim().trim_end_matches('\0').to_string())
}

fn items(object: &Object, tag: dicom_core::Tag) -> &[Object] {
    object.element_opt(tag).ok().flatten().and_then(|e| e.items()).unwrap_or(&[])
}

/// Whether `path` is a DICOM file of the RT Structure Set class.
pub fn is_structure_set(path: &Path) -> bool {
    sop_class_of(path).as_deref() == Some(RT_STRUCTURE_SET_STORAGE)
}

/// Reads an RT Structure Set. Refused by name: another SOP class, no frame of reference,
/// ROIs in several frames, open contours or points, malformed contour data.
pub fn read_structure_set(path: &Path) -> Result<StructureSet> {
    let bad = |problem: String| Error::bad_input(path, problem);
    let object = std::panic::catch_unwind(|| OpenFileOptions::new().open_file(path))
        .map_err(|_| bad("is corrupt: the DICOM parser failed on it".into()))?
        .map_err(|e| bad(format!("cannot be read as DICOM: {e}")))?;
    let class = text(&object, tags::SOP_CLASS_UID).unwrap_or_default();
    if class != RT_STRUCTURE_SET_STORAGE {
        return Err(bad(format!("is not an RT Structure Set (its SOP class is {class:?})")));
    }
    let mut frames: Vec<String> = items(&object, tags::REFERENCED_FRAME_OF_REFERENCE_SEQUENCE)
        .iter()
        .filter_map(|item| text(item, tags::FRAME_OF_REFERENCE_UID))
        .collect();
    let mut rois = Vec::new();
    for roi in items(&object, tags::STRUCTURE_SET_ROI_SEQUENCE) {
        let number = text(roi, tags::ROI_NUMBER)
            .and_then(|n| n.parse::<i64>().ok())
            .ok_or_else(|| bad("has a Structure Set ROI without a ROI Number".into()))?;
        if let Some(frame) = text(roi, tags::REFERENCED_FRAME_OF_REFERENCE_UID).filter(|f| !f.is_empty()) {
            frames.push(frame);
        }
        rois.push(Roi {
            number,
            name: text(roi, tags::ROI_NAME).unwrap_or_else(|| format!("ROI {number}")),
            colour: None,
            interpreted_type: String::new(),
            contours: Vec::new(),
        });
    }
    frames.sort();
    frames.dedup();
    let frame_of_reference_uid = match frames.as_slice() {
        [one] => one.clone(),
        [] => return Err(bad("names no frame of reference for its contours".into())),
        several => return Err(bad(format!("has contours in {} frames of reference ({several:?})", several.len()))),
    };
    for observation in items(&object, tags::RTROI_OBSERVATIONS_SEQUENCE) {
        let number = text(observation, tags::REFERENCED_ROI_NUMBER).and_then(|n| n.parse::<i64>().ok());
        if let Some(roi) = rois.iter_mut().find(|r| Some(r.number) == number) {
            roi.interpreted_type = text(observation, tags::RTROI_INTERPRETED_TYPE).unwrap_or_default();
        }
    }
    for roi_contour in items(&object, tags::ROI_CONTOUR_SEQUENCE) {
        let number = text(roi_contour, tags::REFERENCED_ROI_NUMBER).and_then(|n| n.parse::<i64>().ok());
        let Some(roi) = rois.iter_mut().find(|r| Some(r.number) == number) else {
            return Err(bad(format!("has contours for ROI number {number:?}, which the structure set does not list")));
        };
        roi.colour = roi_contour
            .element_opt(tags::ROI_DISPLAY_COLOR)
            .ok()
            .flatten()
            .and_then(|e| e.to_multi_int::<i64>().ok())
            .filter(|c| c.len() == 3)
            .map(|c| [0, 1, 2].map(|n| c[n].clamp(0, 255) as u8));
        for (n, contour) in items(roi_contour, tags::CONTOUR_SEQUENCE).iter().enumerate() {
            let kind = text(contour, tags::CONTOUR_GEOMETRIC_TYPE).unwrap_or_default();
            if kind != "CLOSED_PLANAR" {
                return Err(bad(format!(
                    "ROI {:?}: contour {} is {kind:?}; only closed planar contours outline a region",
                    roi.name,
                    n + 1
                )));
            }
            let data = contour
                .element_opt(tags::CONTOUR_DATA)
                .ok()
                .flatten()
                .and_then(|e| e.to_multi_float64().ok())
                .unwrap_or_default();
            if data.len() < 9 || data.len() % 3 != 0 || data.iter().any(|v| !v.is_finite()) {
                return Err(bad(format!(
                    "ROI {:?}: contour {} has malformed Contour Data ({} values)",
                    roi.name,
                    n + 1,
                    data.len()
                )));
            }
            if let Some(count) = text(contour, tags::NUMBER_OF_CONTOUR_POINTS).and_then(|c| c.parse::<usize>().ok())
                && count * 3 != data.len()
            {
                return Err(bad(format!(
                    "ROI {:?}: contour {} says {count} points but holds {}",
                    roi.name,
                    n + 1,
                    data.len() / 3
                )));
            }
            roi.contours.push(data.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect());
        }
    }
    Ok(StructureSet {
        label: text(&object, tags::STRUCTURE_SET_LABEL).unwrap_or_default(),
        frame_of_reference_uid,
        rois,
    })
}

/// A region to write: contours on the slices of the series it is drawn on.
pub struct RoiToWrite<'a> {
    pub roi: &'a Roi,
    /// (slice index in the series, closed loop in mm).
    pub contours: Vec<(usize, Vec<Vec3>)>,
}

/// Writes a new structure set on the series `on` (its patient, study, frame of reference, and
/// one image reference per contour when the series is DICOM). Returns its SOP instance UID.
pub fn write_structure_set(
    path: &Path,
    rois: &[RoiToWrite],
    on: &SeriesIdentity,
    label: &str,
    description: &str,
) -> Result<String> {
    let frame = on.frame("fixed", "a structure set on it")?;
    let instance_uid = new_uid();
    let (date, time) = date_and_time_now();
    let mut object = Object::new_empty();
    put_common(&mut object, RT_STRUCTURE_SET_STORAGE, &instance_uid);
    on.put_patient_and_study(&mut object);
    put_new_series(&mut object, "RTSTRUCT", &new_uid(), 9004, description);
    put_empty(&mut object, tags::OPERATORS_NAME, VR::PN);
    put_integer_string(&mut object, tags::INSTANCE_NUMBER, 1);
    put_str(&mut object, tags::STRUCTURE_SET_LABEL, VR::SH, truncate(label, 16));
    put_str(&mut object, tags::STRUCTURE_SET_DESCRIPTION, VR::ST, description);
    put_str(&mut object, tags::STRUCTURE_SET_DATE, VR::DA, &date);
    put_str(&mut object, tags::STRUCTURE_SET_TIME, VR::TM, &time);
    put_str(&mut object, tags::FRAME_OF_REFERENCE_UID, VR::UI, frame);
    put_str(&mut object, tags::POSITION_REFERENCE_INDICATOR, VR::LO, &on.position_reference_indicator);

    let mut frame_item = Object::new_empty();
    put_str(&mut frame_item, tags::FRAME_OF_REFERENCE_UID, VR::UI, frame);
    if !on.instances.is_empty() {
        let mut series = Object::new_empty();
        put_str(&mut series, tags::SERIES_INSTANCE_UID, VR::UI, &on.series_uid);
        let images = on.instances.iter().map(|(class, instance)| instance_reference(class, instance)).collect();
        put_sequence(&mut series, tags::CONTOUR_IMAGE_SEQUENCE, images);
        // The study is referenced through the Study Component Management SOP class (retired, as
        // the RT Structure Set IOD still asks).
        let mut study = instance_reference("1.2.840.10008.3.1.2.3.1", &on.study_uid);
        put_sequence(&mut study, tags::RT_REFERENCED_SERIES_SEQUENCE, vec![series]);
        put_sequence(&mut frame_item, tags::RT_REFERENCED_STUDY_SEQUENCE, vec![study]);
    }
    put_sequence(&mut object, tags::REFERENCED_FRAME_OF_REFERENCE_SEQUENCE, vec![frame_item]);

    let mut roi_items = Vec::new();
    let mut contour_items = Vec::new();
    let mut observation_items = Vec::new();
    for (n, to_write) in rois.iter().enumerate() {
        let roi = to_write.roi;
        let mut item = Object::new_empty();
        put_integer_string(&mut item, tags::ROI_NUMBER, roi.number);
        put_str(&mut item, tags::REFERENCED_FRAME_OF_REFERENCE_UID, VR::UI, frame);
        put_str(&mut item, tags::ROI_NAME, VR::LO, truncate(&roi.name, 64));
        put_str(&mut item, tags::ROI_GENERATION_ALGORITHM, VR::CS, "AUTOMATIC");
        put_str(&mut item, tags::ROI_GENERATION_DESCRIPTION, VR::LO, "carried by diffeoreg");
        roi_items.push(item);

        let mut roi_contour = Object::new_empty();
        let colour = roi.colour.unwrap_or([255, 0, 0]);
        roi_contour.put(dicom_core::DataElement::new(
            tags::ROI_DISPLAY_COLOR,
            VR::IS,
            PrimitiveValue::Strs(colour.iter().map(|c| c.to_string()).collect()),
        ));
        put_integer_string(&mut roi_contour, tags::REFERENCED_ROI_NUMBER, roi.number);
        let contours = to_write
            .contours
            .iter()
            .map(|(slice, points)| {
                let mut contour = Object::new_empty();
                if let Some((class, instance)) = on.instances.get(*slice).filter(|_| on.instances.len() > 1) {
                    put_sequence(&mut contour, tags::CONTOUR_IMAGE_SEQUENCE, vec![instance_reference(class, instance)]);
                }
                put_str(&mut contour, tags::CONTOUR_GEOMETRIC_TYPE, VR::CS, "CLOSED_PLANAR");
                put_integer_string(&mut contour, tags::NUMBER_OF_CONTOUR_POINTS, points.len() as i64);
                let data: Vec<f64> = points.iter().flatten().map(|v| (v * 1e4).round() / 1e4).collect();
                put_decimals(&mut contour, tags::CONTOUR_DATA, &data);
                contour
            })
            .collect();
        put_sequence(&mut roi_contour, tags::CONTOUR_SEQUENCE, contours);
        contour_items.push(roi_contour);

        let mut observation = Object::new_empty();
        put_integer_string(&mut observation, tags::OBSERVATION_NUMBER, n as i64 + 1);
        put_integer_string(&mut observation, tags::REFERENCED_ROI_NUMBER, roi.number);
        if roi.interpreted_type.is_empty() {
            put_empty(&mut observation, tags::RTROI_INTERPRETED_TYPE, VR::CS);
        } else {
            put_str(&mut observation, tags::RTROI_INTERPRETED_TYPE, VR::CS, &roi.interpreted_type);
        }
        put_empty(&mut observation, tags::ROI_INTERPRETER, VR::PN);
        observation_items.push(observation);
    }
    put_sequence(&mut object, tags::STRUCTURE_SET_ROI_SEQUENCE, roi_items);
    put_sequence(&mut object, tags::ROI_CONTOUR_SEQUENCE, contour_items);
    put_sequence(&mut object, tags::RTROI_OBSERVATIONS_SEQUENCE, observation_items);
    write_file(path, object)?;
    Ok(instance_uid)
}
