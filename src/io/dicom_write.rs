//! What every DICOM object this program writes shares: new UIDs, attribute values in the forms
//! their value representations allow (a decimal string is at most 16 characters), the patient
//! and study of the series a result belongs to, and files written atomically (explicit VR
//! little endian, with their file meta group).

use std::path::Path;

use dicom_core::smallvec::SmallVec;
use dicom_core::value::{DataSetSequence, PrimitiveValue, Value};
use dicom_core::{DataElement, Length, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

use crate::error::{Error, Result};
use crate::io::atomic::write_atomically;

pub type Object = InMemDicomObject;
pub type Element = dicom_object::mem::InMemElement;

/// Written into every file meta group (ImplementationClassUID): a UID of this program's own.
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.186734096823357541209461063317455016161";
pub const IMPLEMENTATION_VERSION_NAME: &str = concat!("DIFFEOREG_", env!("CARGO_PKG_VERSION"));
pub const MANUFACTURER: &str = "diffeoreg";

pub const CT_IMAGE_STORAGE: &str = uids::CT_IMAGE_STORAGE;
pub const MR_IMAGE_STORAGE: &str = uids::MR_IMAGE_STORAGE;
pub const DEFORMABLE_SPATIAL_REGISTRATION_STORAGE: &str = uids::DEFORMABLE_SPATIAL_REGISTRATION_STORAGE;
pub const RT_STRUCTURE_SET_STORAGE: &str = uids::RT_STRUCTURE_SET_STORAGE;

/// A new globally unique identifier: "2.25." and 128 random bits as a decimal number
/// (PS3.5 B.2), from the operating system's hasher keys, the time and the process.
pub fn new_uid() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let half = |salt: u64| {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u128(nanos);
        hasher.write_u64(count);
        hasher.write_u32(std::process::id());
        hasher.write_u64(salt);
        hasher.finish()
    };
    let bits = ((half(1) as u128) << 64) | half(2) as u128;
    format!("2.25.{bits}")
}

/// Today's date (DA, YYYYMMDD) and the time (TM, HHMMSS), UTC.
pub fn date_and_time_now() -> (String, String) {
    let seconds = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, of_day) = ((seconds / 86_400) as i64, seconds % 86_400);
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (format!("{year:04}{month:02}{day:02}"), format!("{:02}{:02}{:02}", of_day / 3600, (of_day / 60) % 60, of_day % 60))
}

/// `value` as a decimal string (DS) of at most 16 characters, as precise as that allows.
pub fn decimal_string(value: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return "0".into();
    }
    for decimals in (0..=10).rev() {
        let text = format!("{value:.decimals$}");
        let text = if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_string() } else { text };
        let text = if text == "-0" { "0".to_string() } else { text };
        if text.len() <= 16 {
            return text;
        }
    }
    let text = format!("{value:.6e}");
    if text.len() <= 16 { text } else { format!("{value:.3e}") }
}

/// At most `limit` bytes of `text`, cut at a character boundary (DICOM lengths are in bytes).
pub fn truncate(text: &str, limit: usize) -> &str {
    let mut end = text.len().min(limit);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

pub fn put_str(object: &mut Object, tag: Tag, vr: VR, value: &str) {
    object.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
}

/// A type 2 attribute present with no value.
pub fn put_empty(object: &mut Object, tag: Tag, vr: VR) {
    object.put(DataElement::new(tag, vr, PrimitiveValue::Empty));
}

pub fn put_strs(object: &mut Object, tag: Tag, vr: VR, values: &[&str]) {
    let values: SmallVec<[String; 2]> = values.iter().map(|v| v.to_string()).collect();
    object.put(DataElement::new(tag, vr, PrimitiveValue::Strs(values)));
}

pub fn put_decimals(object: &mut Object, tag: Tag, values: &[f64]) {
    let values: SmallVec<[String; 2]> = values.iter().map(|&v| decimal_string(v)).collect();
    object.put(DataElement::new(tag, VR::DS, PrimitiveValue::Strs(values)));
}

pub fn put_integer_string(object: &mut Object, tag: Tag, value: i64) {
    put_str(object, tag, VR::IS, &value.to_string());
}

pub fn put_u16(object: &mut Object, tag: Tag, value: u16) {
    object.put(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
}

pub fn put_doubles(object: &mut Object, tag: Tag, values: &[f64]) {
    object.put(DataElement::new(tag, VR::FD, PrimitiveValue::F64(values.iter().copied().collect())));
}

pub fn put_sequence(object: &mut Object, tag: Tag, items: Vec<Object>) {
    object.put(DataElement::new(tag, VR::SQ, Value::from(DataSetSequence::new(items, Length::UNDEFINED))));
}

/// An item of a SOP instance reference: (ReferencedSOPClassUID, ReferencedSOPInstanceUID).
pub fn instance_reference(class_uid: &str, instance_uid: &str) -> Object {
    let mut item = Object::new_empty();
    put_str(&mut item, tags::REFERENCED_SOP_CLASS_UID, VR::UI, class_uid);
    put_str(&mut item, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, instance_uid);
    item
}

/// The SOP class of a DICOM file (from its file meta group), or None when it is not one.
pub fn sop_class_of(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut head = [0u8; 132];
    let marked = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head)).is_ok() && &head[128..] == b"DICM";
    if !marked {
        return None;
    }
    // Only the file meta group is needed: stop at the data set's first elements.
    let object = std::panic::catch_unwind(|| {
        dicom_object::OpenFileOptions::new().read_until(tags::SPECIFIC_CHARACTER_SET).open_file(path)
    })
    .ok()?
    .ok()?;
    Some(object.meta().media_storage_sop_class_uid().trim_end_matches('\0').to_string())
}

/// Who the patient is and which study a series belongs to, as read from a DICOM series, or
/// made up (new UIDs, labelled) for an image that came from a NIfTI file.
#[derive(Clone, Debug)]
pub struct SeriesIdentity {
    /// Patient and general study attributes, copied as they are into derived objects.
    pub patient_and_study: Vec<Element>,
    pub study_uid: String,
    pub series_uid: String,
    /// None for a DICOM series that names none (nothing can be registered to it).
    pub frame_of_reference_uid: Option<String>,
    pub modality: String,
    /// (SOPClassUID, SOPInstanceUID) of each instance, in slice order.
    pub instances: Vec<(String, String)>,
    /// PatientPosition (e.g. HFS) and PositionReferenceIndicator of the series, empty if unknown.
    pub patient_position: String,
    pub position_reference_indicator: String,
    /// False for an identity made up for a non-DICOM input.
    pub from_dicom: bool,
}

/// The patient and study attributes copied from a series into what is derived from it.
pub const PATIENT_AND_STUDY_TAGS: [Tag; 14] = [
    tags::PATIENT_NAME,
    tags::PATIENT_ID,
    tags::ISSUER_OF_PATIENT_ID,
    tags::PATIENT_BIRTH_DATE,
    tags::PATIENT_SEX,
    tags::OTHER_PATIENT_I_DS_SEQUENCE,
    tags::STUDY_INSTANCE_UID,
    tags::STUDY_DATE,
    tags::STUDY_TIME,
    tags::REFERRING_PHYSICIAN_NAME,
    tags::STUDY_ID,
    tags::ACCESSION_NUMBER,
    tags::STUDY_DESCRIPTION,
    tags::PATIENT_AGE,
];

impl SeriesIdentity {
    /// A made-up identity for an image read from a NIfTI file (or built in memory): new study,
    /// series and frame of reference UIDs, an empty patient ID and a name that says so.
    pub fn made_up(modality: &str, description: &str) -> SeriesIdentity {
        let study_uid = new_uid();
        let (date, time) = date_and_time_now();
        let mut object = Object::new_empty();
        put_str(&mut object, tags::PATIENT_NAME, VR::PN, &format!("NOT FROM DICOM^{description}"));
        put_empty(&mut object, tags::PATIENT_ID, VR::LO);
        put_empty(&mut object, tags::PATIENT_BIRTH_DATE, VR::DA);
        put_empty(&mut object, tags::PATIENT_SEX, VR::CS);
        put_str(&mut object, tags::STUDY_INSTANCE_UID, VR::UI, &study_uid);
        put_str(&mut object, tags::STUDY_DATE, VR::DA, &date);
        put_str(&mut object, tags::STUDY_TIME, VR::TM, &time);
        put_empty(&mut object, tags::REFERRING_PHYSICIAN_NAME, VR::PN);
        put_empty(&mut object, tags::STUDY_ID, VR::SH);
        put_empty(&mut object, tags::ACCESSION_NUMBER, VR::SH);
        put_str(&mut object, tags::STUDY_DESCRIPTION, VR::LO, "made by diffeoreg from files that were not DICOM");
        SeriesIdentity {
            patient_and_study: object.into_iter().collect(),
            study_uid,
            series_uid: new_uid(),
            frame_of_reference_uid: Some(new_uid()),
            modality: modality.into(),
            instances: Vec::new(),
            patient_position: String::new(),
            position_reference_indicator: String::new(),
            from_dicom: false,
        }
    }

    /// The frame of reference, or an error saying that `what` (an object to be placed in it)
    /// cannot be written without one.
    pub fn frame(&self, role: &str, what: &str) -> Result<&str> {
        self.frame_of_reference_uid.as_deref().ok_or_else(|| {
            Error::Invalid(format!("the {role} series has no FrameOfReferenceUID: {what} cannot be written"))
        })
    }

    /// Copies the patient and study attributes into `object`, filling the type 2 ones a source
    /// left out with empty values.
    pub fn put_patient_and_study(&self, object: &mut Object) {
        for element in &self.patient_and_study {
            object.put(element.clone());
        }
        for (tag, vr) in [
            (tags::PATIENT_NAME, VR::PN),
            (tags::PATIENT_ID, VR::LO),
            (tags::PATIENT_BIRTH_DATE, VR::DA),
            (tags::PATIENT_SEX, VR::CS),
            (tags::STUDY_DATE, VR::DA),
            (tags::STUDY_TIME, VR::TM),
            (tags::REFERRING_PHYSICIAN_NAME, VR::PN),
            (tags::STUDY_ID, VR::SH),
            (tags::ACCESSION_NUMBER, VR::SH),
        ] {
            if object.get(tag).is_none() {
                put_empty(object, tag, vr);
            }
        }
        put_str(object, tags::STUDY_INSTANCE_UID, VR::UI, &self.study_uid);
    }
}

/// The General Series attributes of a new series: modality, new series UID, number,
/// description (cut to 64 bytes), and today's date and time.
pub fn put_new_series(object: &mut Object, modality: &str, series_uid: &str, number: i64, description: &str) {
    let (date, time) = date_and_time_now();
    put_str(object, tags::MODALITY, VR::CS, modality);
    put_str(object, tags::SERIES_INSTANCE_UID, VR::UI, series_uid);
    put_integer_string(object, tags::SERIES_NUMBER, number);
    put_str(object, tags::SERIES_DESCRIPTION, VR::LO, truncate(description, 64));
    put_str(object, tags::SERIES_DATE, VR::DA, &date);
    put_str(object, tags::SERIES_TIME, VR::TM, &time);
}

/// Attributes every object written here carries: character set (UTF-8), SOP class and
/// instance, equipment and the time of creation.
pub fn put_common(object: &mut Object, class_uid: &str, instance_uid: &str) {
    let (date, time) = date_and_time_now();
    put_str(object, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
    put_str(object, tags::SOP_CLASS_UID, VR::UI, class_uid);
    put_str(object, tags::SOP_INSTANCE_UID, VR::UI, instance_uid);
    put_str(object, tags::INSTANCE_CREATION_DATE, VR::DA, &date);
    put_str(object, tags::INSTANCE_CREATION_TIME, VR::TM, &time);
    put_str(object, tags::MANUFACTURER, VR::LO, MANUFACTURER);
    put_str(object, tags::MANUFACTURER_MODEL_NAME, VR::LO, MANUFACTURER);
    put_str(object, tags::SOFTWARE_VERSIONS, VR::LO, env!("CARGO_PKG_VERSION"));
}

/// Writes `object` as a DICOM file (explicit VR little endian) at `path`, atomically.
pub fn write_file(path: &Path, object: Object) -> Result<()> {
    let meta = FileMetaTableBuilder::new()
        .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME);
    let file =
        object.with_meta(meta).map_err(|e| Error::Invalid(format!("{}: file meta group: {e}", path.display())))?;
    write_atomically(path, |writer| {
        file.write_all(writer).map_err(|e| Error::Invalid(format!("{}: cannot be written: {e}", path.display())))
    })
}

/// Replaces the folder `path` by one that `fill` writes into a temporary folder beside it, so
/// that a failure leaves the old folder (or none) and never a half-written series.
pub fn write_folder_atomically(path: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temporary = path.with_file_name(format!(".{name}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&temporary);
    std::fs::create_dir_all(&temporary).map_err(|e| Error::io(&temporary, e))?;
    let result = fill(&temporary).and_then(|()| {
        if path.exists() {
            std::fs::remove_dir_all(path).map_err(|e| Error::io(path, e))?;
        }
        std::fs::rename(&temporary, path).map_err(|e| Error::io(path, e))
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&temporary);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_new_each_time_and_valid() {
        let a = new_uid();
        let b = new_uid();
        assert_ne!(a, b);
        for uid in [a, b] {
            assert!(uid.len() <= 64, "{uid}");
            assert!(uid.starts_with("2.25."));
            let number = &uid[5..];
            assert!(number.chars().all(|c| c.is_ascii_digit()) && !number.starts_with('0'), "{uid}");
        }
    }

    #[test]
    fn decimal_strings_fit_sixteen_characters() {
        assert_eq!(decimal_string(0.5), "0.5");
        assert_eq!(decimal_string(-1024.0), "-1024");
        assert_eq!(decimal_string(0.0), "0");
        assert_eq!(decimal_string(-1e-12), "0");
        for value in [std::f64::consts::PI * 1e5, -123.456_789_012_345_6, 1.0 / 3.0, -0.957_031_25, 1e20, -3.2e-9] {
            let text = decimal_string(value);
            assert!(text.len() <= 16, "{value} → {text}");
            let back: f64 = text.parse().unwrap();
            assert!((back - value).abs() <= 1e-9 * value.abs().max(1.0), "{value} → {text}");
        }
    }

    #[test]
    fn dates_are_civil_dates() {
        let (date, time) = date_and_time_now();
        assert_eq!(date.len(), 8);
        assert_eq!(time.len(), 6);
        let year: u32 = date[..4].parse().unwrap();
        let month: u32 = date[4..6].parse().unwrap();
        let day: u32 = date[6..].parse().unwrap();
        assert!((2024..2200).contains(&year) && (1..=12).contains(&month) && (1..=31).contains(&day), "{date}");
    }
}
