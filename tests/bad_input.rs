//! Bad input gives a clear error naming the file, never a panic or a silent wrong answer.

mod common;

use std::path::{Path, PathBuf};

use common::reference_folder;
use diffeoreg::io::{SeriesChoice, StoredType, load_volume, read_field, read_volume, write_volume};
use diffeoreg::progress::Silent;
use diffeoreg::volume::{Geometry, Volume};

fn small_volume() -> Volume {
    let geometry = Geometry::axis_aligned([4, 3, 4], [1.0, 1.5, 2.0], [1.0, 2.0, 3.0]).unwrap();
    Volume::new(geometry, (0..48).map(|v| v as f32 * 0.5).collect()).unwrap()
}

fn written(dir: &Path, name: &str, volume: &Volume) -> PathBuf {
    let path = dir.join(name);
    write_volume(&path, volume, StoredType::Float32).unwrap();
    path
}

fn error_of(path: &Path) -> String {
    let message = load_volume(path, &SeriesChoice::LargestCt, &Silent).unwrap_err().to_string();
    assert!(message.contains(&path.display().to_string()), "the message names the file: {message}");
    message
}

/// Overwrites little-endian bytes of an uncompressed NIfTI header.
fn patch(path: &Path, offset: usize, bytes: &[u8]) {
    let mut data = std::fs::read(path).unwrap();
    data[offset..offset + bytes.len()].copy_from_slice(bytes);
    std::fs::write(path, data).unwrap();
}

#[test]
fn truncated_nifti_files() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["t.nii", "t.nii.gz"] {
        let path = written(dir.path(), name, &small_volume());
        let length = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(length * 2 / 3).unwrap();
        let message = error_of(&path);
        assert!(message.contains("truncated"), "{message}");
    }
}

#[test]
fn zero_spacing_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = written(dir.path(), "zero.nii", &small_volume());
    // sform_code 0, so the qform and pixdim decide; pixdim[2] = 0.
    patch(&path, 254, &0i16.to_le_bytes());
    patch(&path, 84, &0f32.to_le_bytes());
    let message = error_of(&path);
    assert!(message.contains("qform") && message.contains("spacing"), "{message}");
}

#[test]
fn nan_voxels_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut volume = small_volume();
    volume.voxels[7] = f32::NAN;
    volume.voxels[9] = f32::INFINITY;
    let message = error_of(&written(dir.path(), "nan.nii.gz", &volume));
    assert!(message.contains("2 NaN or infinite voxel"), "{message}");
}

#[test]
fn a_4d_nifti_is_not_a_volume() {
    let dir = tempfile::tempdir().unwrap();
    let path = written(dir.path(), "series.nii", &small_volume());
    for (d, n) in [4i16, 4, 3, 2, 2].iter().enumerate() {
        patch(&path, 40 + 2 * d, &n.to_le_bytes());
    }
    let message = error_of(&path);
    assert!(message.contains("[4, 3, 2, 2]") && message.contains("3D volume was expected"), "{message}");
    let message = read_field(&path).unwrap_err().to_string();
    assert!(message.contains("(X, Y, Z, 1, 3)"), "{message}");
}

#[test]
fn absurd_sizes_are_refused_without_allocating() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["huge.nii", "huge.nii.gz"] {
        let plain = written(dir.path(), "huge.nii", &small_volume());
        for (d, n) in [3i16, 1500, 1500, 1500].iter().enumerate() {
            patch(&plain, 40 + 2 * d, &n.to_le_bytes());
        }
        let path = if name.ends_with(".gz") {
            let bytes = std::fs::read(&plain).unwrap();
            let gz = dir.path().join(name);
            let mut encoder =
                flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::fast());
            std::io::Write::write_all(&mut encoder, &bytes).unwrap();
            encoder.finish().unwrap();
            gz
        } else {
            plain
        };
        let message = error_of(&path);
        assert!(message.contains("truncated"), "{message}");
    }
}

#[test]
fn files_that_are_not_images() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.nii");
    std::fs::write(&text, "this is a text file with a misleading name, long enough to fill a header ".repeat(8))
        .unwrap();
    let message = error_of(&text);
    assert!(message.contains("not a NIfTI-1 file"), "{message}");
    let short = dir.path().join("short.nii.gz");
    std::fs::write(&short, "tiny").unwrap();
    error_of(&short);
    let fake_dicom = dir.path().join("fake.dcm");
    let mut bytes = vec![0u8; 128];
    bytes.extend_from_slice(b"DICM");
    bytes.extend_from_slice(&[0xff; 64]);
    std::fs::write(&fake_dicom, bytes).unwrap();
    let message = error_of(&fake_dicom);
    assert!(message.contains("damaged DICOM"), "{message}");
}

/// A small deterministic generator, so that a failing mutation can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Flips, overwrites, truncates or repeats bytes of real files and loads the result: every
/// outcome must be Ok or a clear error, never a panic.
#[test]
fn corrupted_bytes_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let series = reference_folder("dicom-series");
    let mut dicom_files: Vec<PathBuf> = std::fs::read_dir(series.join("series"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.to_string_lossy().ends_with(".txt"))
        .collect();
    dicom_files.sort();
    let mut originals = vec![
        written(dir.path(), "a.nii", &small_volume()),
        written(dir.path(), "a.nii.gz", &small_volume()),
        series.join("enhanced/enhanced_ct.dcm"),
    ];
    originals.extend(dicom_files.into_iter().take(3));
    let mut rng = XorShift(0x9e3779b97f4a7c15);
    let mut outcomes = [0usize; 2];
    for original in &originals {
        let bytes = std::fs::read(original).unwrap();
        let extension = if original.to_string_lossy().ends_with(".nii.gz") {
            "nii.gz"
        } else if original.to_string_lossy().ends_with(".nii") {
            "nii"
        } else {
            "dcm"
        };
        for round in 0..150 {
            let mut mutated = bytes.clone();
            match rng.below(4) {
                0 => {
                    for _ in 0..1 + rng.below(8) {
                        let at = rng.below(mutated.len());
                        mutated[at] ^= 1 << rng.below(8);
                    }
                }
                1 => {
                    let at = rng.below(mutated.len());
                    for b in mutated.iter_mut().skip(at).take(1 + rng.below(16)) {
                        *b = rng.next() as u8;
                    }
                }
                2 => mutated.truncate(rng.below(mutated.len())),
                _ => {
                    let at = rng.below(mutated.len());
                    let chunk: Vec<u8> = mutated[at..].iter().take(64).copied().collect();
                    mutated.splice(at..at, chunk);
                }
            }
            // Header bytes matter most: aim half of the mutations at the first 1 KB.
            if round % 2 == 0 && mutated.len() > 1024 && mutated == bytes {
                let at = rng.below(1024);
                mutated[at] = mutated[at].wrapping_add(1);
            }
            let path = dir.path().join(format!("mutant.{extension}"));
            std::fs::write(&path, &mutated).unwrap();
            let result = load_volume(&path, &SeriesChoice::LargestCt, &Silent);
            outcomes[usize::from(result.is_err())] += 1;
            if let Err(error) = result {
                assert!(error.to_string().contains("mutant"), "{original:?} round {round}: {error}");
            }
            if extension != "dcm" {
                let _ = read_volume(&path);
            }
        }
    }
    println!("mutants loaded: {}, refused with an error: {}", outcomes[0], outcomes[1]);
    assert!(outcomes[1] > 100, "most mutants should be refused");
}

/// A damaged RLE slice makes the DICOM decoder panic inside a dependency; the user sees one
/// error naming the file, and neither the panic's message nor a backtrace.
#[test]
fn a_corrupt_rle_slice_gives_only_an_error_naming_the_file() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let series = reference_folder("dicom-series");
    let mut files: Vec<PathBuf> = std::fs::read_dir(series.join("series"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.to_string_lossy().ends_with(".txt"))
        .collect();
    files.sort();
    // The RLE-compressed slices: their transfer syntax UID (1.2.840.10008.1.2.5) is in the header.
    let rle: Vec<Vec<u8>> = files
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .filter(|bytes| bytes[..400].windows(19).any(|w| w == b"1.2.840.10008.1.2.5"))
        .take(2)
        .collect();
    assert!(!rle.is_empty(), "the reference series has RLE slices");
    let mut rng = XorShift(0x2545f4914f6cdd1d);
    let mut parser_failures = 0;
    for round in 0..160 {
        let mut mutated = rle[round % rle.len()].clone();
        // Damage the compressed pixel data (the last part of the file).
        let start = mutated.len() * 2 / 3;
        for _ in 0..1 + rng.below(6) {
            let at = start + rng.below(mutated.len() - start);
            mutated[at] = rng.next() as u8;
        }
        let path = dir.path().join("damaged_slice.dcm");
        std::fs::write(&path, &mutated).unwrap();
        let output = Command::new(common::binary()).env("RUST_BACKTRACE", "1").arg("info").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "round {round}: {stderr}");
        if !output.status.success() {
            assert!(stderr.contains("damaged_slice.dcm"), "round {round}: the error names the file: {stderr}");
        }
        if stderr.contains("the DICOM parser failed") {
            parser_failures += 1;
        }
    }
    println!("damaged RLE slices on which the decoder panicked: {parser_failures} of 160");
    assert!(parser_failures > 0, "no mutant reached the decoder's panic: the test no longer tests it");
}
