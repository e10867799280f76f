//! NIfTI-1 (.nii, .nii.gz) volumes and vector fields.
//!
//! Headers are parsed by the `nifti` crate; voxel data is read and converted here so that it
//! streams into the final f32 buffer on all cores. Geometry comes from the sform when its code
//! is set, else from the qform, else from pixdim alone (NIfTI method 1), and is converted from
//! NIfTI's RAS world to our LPS world. Writing sets both sform and qform (code 1, scanner).

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use nifti::{Endianness, NiftiHeader};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::io::atomic::write_atomically;
use crate::io::gzip::write_gzip_blocks;
use crate::volume::geometry::{Mat3, det3, mat_mul, norm};
use crate::volume::{Geometry, Volume};

/// NIfTI intent code of a vector per voxel (used by ITK for displacement fields).
pub const INTENT_VECTOR: i16 = 1007;
/// NIfTI intent code of a displacement vector per voxel.
pub const INTENT_DISPVECT: i16 = 1006;

const HEADER_BYTES: usize = 348;
const DATA_OFFSET: usize = 352;

/// A NIfTI file's header fields that matter to us, with its voxel data as f32 (scaled).
pub struct NiftiImage {
    pub geometry: Geometry,
    /// dim[1..=7], unused trailing dimensions set to 1.
    pub dims: [usize; 7],
    pub intent_code: i16,
    pub datatype: i16,
    pub data: Vec<f32>,
}

/// Whether a path names a NIfTI file by its extension.
pub fn is_nifti_path(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    name.ends_with(".nii") || name.ends_with(".nii.gz")
}

/// Reads a NIfTI file whole: header, geometry and every voxel.
pub fn read_nifti(path: &Path) -> Result<NiftiImage> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let file_bytes = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut buffered = BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; 2];
    let gzipped = {
        let peek = std::io::BufRead::fill_buf(&mut buffered).map_err(|e| Error::io(path, e))?;
        if peek.len() >= 2 {
            magic.copy_from_slice(&peek[..2]);
        }
        magic == [0x1f, 0x8b]
    };
    let mut reader: Box<dyn Read> = if gzipped {
        Box::new(BufReader::with_capacity(1 << 20, MultiGzDecoder::new(buffered)))
    } else {
        Box::new(buffered)
    };

    let mut header_bytes = [0u8; HEADER_BYTES];
    read_fully(&mut reader, &mut header_bytes, path, "the 348-byte header")?;
    let header = NiftiHeader::from_reader(&header_bytes[..])
        .map_err(|e| Error::bad_input(path, format!("not a NIfTI-1 file: {e}")))?;
    if header.sizeof_hdr != HEADER_BYTES as i32 || !(header.magic == *b"n+1\0" || header.magic == *b"ni1\0") {
        return Err(Error::bad_input(path, "not a NIfTI-1 file (bad header size or magic)"));
    }
    if header.magic == *b"ni1\0" {
        return Err(Error::bad_input(path, "is a .hdr/.img pair header; give a single-file .nii or .nii.gz"));
    }

    let rank = header.dim[0] as usize;
    if !(1..=7).contains(&rank) {
        return Err(Error::bad_input(path, format!("dim[0] = {rank} is not between 1 and 7")));
    }
    let dims: [usize; 7] = std::array::from_fn(|d| if d < rank { header.dim[d + 1] as usize } else { 1 });
    if dims.contains(&0) {
        return Err(Error::bad_input(path, format!("a dimension is zero: {:?}", &dims[..rank])));
    }
    let geometry = geometry_from_header(&header, [dims[0], dims[1], dims[2]])
        .map_err(|e| Error::bad_input(path, e.to_string()))?;
    let element_count = dims
        .iter()
        .try_fold(1usize, |acc, &n| acc.checked_mul(n))
        .filter(|&n| n <= 4 * crate::volume::geometry::MAX_VOXELS)
        .ok_or_else(|| Error::bad_input(path, format!("dimensions {:?} are absurdly large", &dims[..rank])))?;
    let kind = ElementKind::from_code(header.datatype)
        .ok_or_else(|| Error::bad_input(path, format!("unsupported NIfTI datatype code {}", header.datatype)))?;
    let data_bytes = element_count * kind.bytes();
    // Deflate cannot expand more than about 1032:1, so a header promising more voxels than the
    // compressed file can hold is corrupt; checking first avoids allocating for it.
    if gzipped && data_bytes as u64 > file_bytes.saturating_mul(1032) {
        return Err(Error::bad_input(
            path,
            format!(
                "declares {data_bytes} bytes of voxel data but the compressed file has only {file_bytes} bytes: truncated or corrupt"
            ),
        ));
    }
    if !gzipped && (file_bytes as usize) < header.vox_offset as usize + data_bytes {
        return Err(Error::bad_input(
            path,
            format!(
                "is truncated: {} bytes of voxel data expected after offset {}, the file has {file_bytes} bytes",
                data_bytes, header.vox_offset
            ),
        ));
    }
    let skip = (header.vox_offset as usize).saturating_sub(HEADER_BYTES);
    std::io::copy(&mut (&mut reader).take(skip as u64), &mut std::io::sink()).map_err(|e| Error::io(path, e))?;

    let swap = header.endianness != Endianness::native();
    let mut data = vec![0f32; element_count];
    if kind == ElementKind::F32 {
        read_fully(&mut reader, bytemuck::cast_slice_mut(&mut data), path, "the voxel data")?;
        if swap {
            data.par_iter_mut().for_each(|v| *v = f32::from_bits(v.to_bits().swap_bytes()));
        }
    } else {
        let mut raw = vec![0u8; data_bytes];
        read_fully(&mut reader, &mut raw, path, "the voxel data")?;
        let width = kind.bytes();
        data.par_chunks_mut(1 << 16).zip(raw.par_chunks(width << 16)).for_each(|(out, bytes)| {
            for (value, element) in out.iter_mut().zip(bytes.chunks_exact(width)) {
                *value = kind.decode(element, swap);
            }
        });
    }
    let (slope, intercept) = (header.scl_slope, header.scl_inter);
    if slope.is_finite() && slope != 0.0 && (slope != 1.0 || intercept != 0.0) {
        let intercept = if intercept.is_finite() { intercept } else { 0.0 };
        data.par_iter_mut().for_each(|v| *v = *v * slope + intercept);
    }
    Ok(NiftiImage { geometry, dims, intent_code: header.intent_code, datatype: header.datatype, data })
}

fn read_fully(reader: &mut dyn Read, buffer: &mut [u8], path: &Path, what: &str) -> Result<()> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => {
                return Err(Error::bad_input(
                    path,
                    format!("is truncated: {what} needs {} bytes, only {filled} are there", buffer.len()),
                ));
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::bad_input(path, format!("cannot be read ({e}); is it truncated or corrupt?"))),
        }
    }
    Ok(())
}

/// Reads a 3D scalar volume. Trailing dimensions of size 1 are accepted; a 4D series is not.
pub fn read_volume(path: &Path) -> Result<Volume> {
    let image = read_nifti(path)?;
    if image.dims[3..].iter().any(|&n| n != 1) {
        return Err(Error::bad_input(
            path,
            format!("has dimensions {:?}; a 3D volume was expected", trim_dims(&image.dims)),
        ));
    }
    Volume::new(image.geometry, image.data).map_err(|e| Error::bad_input(path, e.to_string()))
}

pub(crate) fn trim_dims(dims: &[usize; 7]) -> Vec<usize> {
    let rank = dims.iter().rposition(|&n| n != 1).map_or(3, |r| (r + 1).max(3));
    dims[..rank].to_vec()
}

/// The element type a volume is written with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredType {
    /// int16 when every voxel is an integer in range (CT in HU), float32 otherwise.
    Automatic,
    Float32,
}

/// Writes a 3D volume as .nii or .nii.gz (by the extension), atomically.
pub fn write_volume(path: &Path, volume: &Volume, stored: StoredType) -> Result<()> {
    let as_int16 = stored == StoredType::Automatic
        && volume.voxels.par_iter().all(|&v| v.fract() == 0.0 && (i16::MIN as f32..=i16::MAX as f32).contains(&v));
    let dims = [volume.geometry.shape[0], volume.geometry.shape[1], volume.geometry.shape[2], 1, 1, 1, 1];
    let kind = if as_int16 { ElementKind::I16 } else { ElementKind::F32 };
    write_nifti(path, &volume.geometry, &dims, 0, kind, volume.voxels.len(), |range, sink| sink(&volume.voxels[range]))
}

/// Elements encoded per block when writing: 4 MB of float32.
const BLOCK_ELEMENTS: usize = 1 << 20;

/// Writes a NIfTI-1 file atomically; gzip when the path ends in ".gz". The `element_count`
/// values are fetched a block at a time by `elements(range, sink)`, which passes the values of
/// `range` to `sink` in one or more contiguous pieces; they are stored as `kind` (int16 or
/// float32, little endian), so no encoded copy of the whole volume is ever made.
pub(crate) fn write_nifti(
    path: &Path,
    geometry: &Geometry,
    dims: &[usize; 7],
    intent_code: i16,
    kind: ElementKind,
    element_count: usize,
    elements: impl Fn(std::ops::Range<usize>, &mut dyn FnMut(&[f32])) + Sync,
) -> Result<()> {
    let header = header_bytes(geometry, dims, intent_code, kind)?;
    let block_count = element_count.div_ceil(BLOCK_ELEMENTS);
    let encode = |n: usize| -> Vec<u8> {
        let range = n * BLOCK_ELEMENTS..((n + 1) * BLOCK_ELEMENTS).min(element_count);
        let mut bytes = Vec::with_capacity(range.len() * kind.bytes());
        elements(range, &mut |values: &[f32]| match kind {
            ElementKind::I16 => bytes.extend(values.iter().flat_map(|&v| (v as i16).to_le_bytes())),
            _ => bytes.extend(values.iter().flat_map(|&v| v.to_le_bytes())),
        });
        bytes
    };
    let gzipped = path.to_string_lossy().to_ascii_lowercase().ends_with(".gz");
    write_atomically(path, |out: &mut dyn Write| {
        let result = if gzipped {
            write_gzip_blocks(out, &header, block_count, Compression::fast(), encode)
        } else {
            out.write_all(&header).and_then(|_| (0..block_count).try_for_each(|n| out.write_all(&encode(n))))
        };
        result.map_err(|e| Error::io(path, e))
    })
}

/// The 352 bytes (header and empty extension flag) before the voxel data.
fn header_bytes(geometry: &Geometry, dims: &[usize; 7], intent_code: i16, kind: ElementKind) -> Result<Vec<u8>> {
    if dims.iter().any(|&n| n > i16::MAX as usize) {
        return Err(Error::Invalid(format!("dimensions {dims:?} do not fit a NIfTI-1 header")));
    }
    let rank = dims.iter().rposition(|&n| n != 1).map_or(3, |r| (r + 1).max(3));
    let mut h = vec![0u8; DATA_OFFSET];
    let put_i16 = |h: &mut [u8], at: usize, v: i16| h[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put_f32 = |h: &mut [u8], at: usize, v: f32| h[at..at + 4].copy_from_slice(&v.to_le_bytes());
    h[0..4].copy_from_slice(&(HEADER_BYTES as i32).to_le_bytes());
    h[38] = b'r';
    put_i16(&mut h, 40, rank as i16);
    for (d, &n) in dims.iter().enumerate() {
        put_i16(&mut h, 42 + 2 * d, n as i16);
    }
    put_i16(&mut h, 68, intent_code);
    put_i16(&mut h, 70, kind.code());
    put_i16(&mut h, 72, (kind.bytes() * 8) as i16);

    let ras = ras_affine(geometry);
    let (quaternion, qfac) = quaternion_of(&geometry.direction_ras());
    put_f32(&mut h, 76, qfac as f32);
    for d in 0..3 {
        put_f32(&mut h, 80 + 4 * d, geometry.spacing_mm[d] as f32);
    }
    for d in 3..7 {
        put_f32(&mut h, 80 + 4 * d, 1.0);
    }
    put_f32(&mut h, 108, DATA_OFFSET as f32);
    put_f32(&mut h, 112, 1.0);
    h[123] = 2; // xyzt_units: millimetres
    let description = format!("diffeoreg {}", env!("CARGO_PKG_VERSION"));
    h[148..148 + description.len()].copy_from_slice(description.as_bytes());
    put_i16(&mut h, 252, 1);
    put_i16(&mut h, 254, 1);
    for (n, value) in quaternion.iter().enumerate() {
        put_f32(&mut h, 256 + 4 * n, *value as f32);
    }
    for d in 0..3 {
        put_f32(&mut h, 268 + 4 * d, ras[d][3] as f32);
    }
    for (r, row) in ras.iter().take(3).enumerate() {
        for (c, value) in row.iter().enumerate() {
            put_f32(&mut h, 280 + 16 * r + 4 * c, *value as f32);
        }
    }
    h[344..348].copy_from_slice(b"n+1\0");
    Ok(h)
}

/// Flips between LPS and RAS (negates the first two world coordinates).
const LPS_RAS: Mat3 = [[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]];

impl Geometry {
    /// Direction matrix expressed in RAS world coordinates.
    pub fn direction_ras(&self) -> Mat3 {
        mat_mul(&LPS_RAS, &self.direction)
    }
}

fn ras_affine(geometry: &Geometry) -> [[f64; 4]; 4] {
    let mut a = geometry.affine_lps();
    for row in a.iter_mut().take(2) {
        for v in row.iter_mut() {
            *v = -*v;
        }
    }
    a
}

fn geometry_from_header(header: &NiftiHeader, shape: [usize; 3]) -> Result<Geometry> {
    let pixdim = |d: usize| header.pixdim[d] as f64;
    let ras: [[f64; 4]; 4] = if header.sform_code > 0 {
        let row = |r: &[f32; 4]| [r[0] as f64, r[1] as f64, r[2] as f64, r[3] as f64];
        [row(&header.srow_x), row(&header.srow_y), row(&header.srow_z), [0.0, 0.0, 0.0, 1.0]]
    } else if header.qform_code > 0 {
        let (b, c, d) = (header.quatern_b as f64, header.quatern_c as f64, header.quatern_d as f64);
        let rotation = rotation_of_quaternion(b, c, d);
        let qfac = if header.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
        let scale = [pixdim(1), pixdim(2), qfac * pixdim(3)];
        let offset = [header.quatern_x as f64, header.quatern_y as f64, header.quatern_z as f64];
        std::array::from_fn(|r| {
            if r == 3 {
                [0.0, 0.0, 0.0, 1.0]
            } else {
                [rotation[r][0] * scale[0], rotation[r][1] * scale[1], rotation[r][2] * scale[2], offset[r]]
            }
        })
    } else {
        [[pixdim(1), 0.0, 0.0, 0.0], [0.0, pixdim(2), 0.0, 0.0], [0.0, 0.0, pixdim(3), 0.0], [0.0, 0.0, 0.0, 1.0]]
    };
    let mut lps = ras;
    for row in lps.iter_mut().take(2) {
        for v in row.iter_mut() {
            *v = -*v;
        }
    }
    let geometry = Geometry::from_affine_lps(shape, &lps);
    // A sform with a zero column (seen in some writers) is unusable: say which transform failed.
    geometry.map_err(|e| {
        let source = if header.sform_code > 0 {
            "sform"
        } else if header.qform_code > 0 {
            "qform"
        } else {
            "pixdim"
        };
        Error::Invalid(format!("its {source} does not describe a valid grid: {e}"))
    })
}

/// Rotation matrix of the unit quaternion (a, b, c, d) with a = sqrt(1 − b² − c² − d²).
fn rotation_of_quaternion(b: f64, c: f64, d: f64) -> Mat3 {
    let a = (1.0 - (b * b + c * c + d * d)).max(0.0).sqrt();
    [
        [a * a + b * b - c * c - d * d, 2.0 * (b * c - a * d), 2.0 * (b * d + a * c)],
        [2.0 * (b * c + a * d), a * a + c * c - b * b - d * d, 2.0 * (c * d - a * b)],
        [2.0 * (b * d - a * c), 2.0 * (c * d + a * b), a * a + d * d - c * c - b * b],
    ]
}

/// The qform quaternion (b, c, d) and qfac of a direction matrix (columns orthonormalised).
fn quaternion_of(direction: &Mat3) -> ([f64; 3], f64) {
    let mut r = *direction;
    // Normalise columns; a sheared direction gets the nearest rotation only approximately,
    // which is why the sform (exact) is always written too.
    for c in 0..3 {
        let length = norm([r[0][c], r[1][c], r[2][c]]);
        for row in r.iter_mut() {
            row[c] /= length;
        }
    }
    let qfac = if det3(&r) < 0.0 {
        for row in r.iter_mut() {
            row[2] = -row[2];
        }
        -1.0
    } else {
        1.0
    };
    let (r11, r12, r13) = (r[0][0], r[0][1], r[0][2]);
    let (r21, r22, r23) = (r[1][0], r[1][1], r[1][2]);
    let (r31, r32, r33) = (r[2][0], r[2][1], r[2][2]);
    let trace = r11 + r22 + r33 + 1.0;
    let (a, b, c, d);
    if trace > 0.5 {
        a = 0.5 * trace.sqrt();
        b = 0.25 * (r32 - r23) / a;
        c = 0.25 * (r13 - r31) / a;
        d = 0.25 * (r21 - r12) / a;
    } else {
        let (xd, yd, zd) = (1.0 + r11 - (r22 + r33), 1.0 + r22 - (r11 + r33), 1.0 + r33 - (r11 + r22));
        if xd > 1.0 {
            b = 0.5 * xd.sqrt();
            c = 0.25 * (r12 + r21) / b;
            d = 0.25 * (r13 + r31) / b;
            a = 0.25 * (r32 - r23) / b;
        } else if yd > 1.0 {
            c = 0.5 * yd.sqrt();
            b = 0.25 * (r12 + r21) / c;
            d = 0.25 * (r23 + r32) / c;
            a = 0.25 * (r13 - r31) / c;
        } else {
            d = 0.5 * zd.sqrt();
            b = 0.25 * (r13 + r31) / d;
            c = 0.25 * (r23 + r32) / d;
            a = 0.25 * (r21 - r12) / d;
        }
    }
    // (a, b, c, d) and its negation are the same rotation; NIfTI stores the one with a ≥ 0.
    let sign = if a < 0.0 { -1.0 } else { 1.0 };
    ([sign * b, sign * c, sign * d], qfac)
}

/// Element types we read (all NIfTI scalar types) and write (int16, float32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ElementKind {
    U8,
    I8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
}

impl ElementKind {
    fn from_code(code: i16) -> Option<Self> {
        Some(match code {
            2 => Self::U8,
            256 => Self::I8,
            4 => Self::I16,
            512 => Self::U16,
            8 => Self::I32,
            768 => Self::U32,
            1024 => Self::I64,
            1280 => Self::U64,
            16 => Self::F32,
            64 => Self::F64,
            _ => return None,
        })
    }

    fn code(self) -> i16 {
        match self {
            Self::U8 => 2,
            Self::I8 => 256,
            Self::I16 => 4,
            Self::U16 => 512,
            Self::I32 => 8,
            Self::U32 => 768,
            Self::I64 => 1024,
            Self::U64 => 1280,
            Self::F32 => 16,
            Self::F64 => 64,
        }
    }

    fn bytes(self) -> usize {
        match self {
            Self::U8 | Self::I8 => 1,
            Self::I16 | Self::U16 => 2,
            Self::I32 | Self::U32 | Self::F32 => 4,
            Self::I64 | Self::U64 | Self::F64 => 8,
        }
    }

    #[inline]
    fn decode(self, bytes: &[u8], swap: bool) -> f32 {
        let mut buffer = [0u8; 8];
        let n = bytes.len();
        buffer[..n].copy_from_slice(bytes);
        if swap {
            buffer[..n].reverse();
        }
        let b = buffer;
        match self {
            Self::U8 => b[0] as f32,
            Self::I8 => b[0] as i8 as f32,
            Self::I16 => i16::from_ne_bytes([b[0], b[1]]) as f32,
            Self::U16 => u16::from_ne_bytes([b[0], b[1]]) as f32,
            Self::I32 => i32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as f32,
            Self::U32 => u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as f32,
            Self::I64 => i64::from_ne_bytes(b) as f32,
            Self::U64 => u64::from_ne_bytes(b) as f32,
            Self::F32 => f32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            Self::F64 => f64::from_ne_bytes(b) as f32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::geometry::mat_mul;

    fn oblique_volume() -> Volume {
        let (c, s) = (0.4f64.cos(), 0.4f64.sin());
        let direction =
            mat_mul(&[[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], &[[1.0, 0.0, 0.0], [0.0, c, s], [0.0, -s, c]]);
        let geometry = Geometry::new([5, 4, 3], [0.7, 0.9, 2.0], [12.0, -30.5, 8.25], direction).unwrap();
        let voxels = (0..60).map(|v| v as f32 * 1.5 - 20.0).collect();
        Volume::new(geometry, voxels).unwrap()
    }

    #[test]
    fn write_then_read_keeps_voxels_and_geometry() {
        let dir = tempfile::tempdir().unwrap();
        let volume = oblique_volume();
        for name in ["v.nii", "v.nii.gz"] {
            let path = dir.path().join(name);
            write_volume(&path, &volume, StoredType::Automatic).unwrap();
            let back = read_volume(&path).unwrap();
            assert_eq!(back.voxels, volume.voxels);
            assert!(back.geometry.same_grid(&volume.geometry, 1e-4), "{:?}", back.geometry);
        }
    }

    #[test]
    fn qform_alone_gives_the_same_geometry_as_the_sform() {
        let volume = oblique_volume();
        let mut header = header_bytes(&volume.geometry, &[5, 4, 3, 1, 1, 1, 1], 0, ElementKind::F32).unwrap();
        header[254..256].copy_from_slice(&0i16.to_le_bytes());
        let parsed = NiftiHeader::from_reader(&header[..348]).unwrap();
        let geometry = geometry_from_header(&parsed, [5, 4, 3]).unwrap();
        assert!(geometry.same_grid(&volume.geometry, 1e-4), "{geometry:?}");
    }

    #[test]
    fn integral_volumes_are_stored_as_int16_and_others_as_float32() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.nii");
        let mut volume = oblique_volume();
        volume.voxels.iter_mut().for_each(|v| *v = v.round());
        write_volume(&path, &volume, StoredType::Automatic).unwrap();
        assert_eq!(read_nifti(&path).unwrap().datatype, 4);
        volume.voxels[3] = 0.5;
        write_volume(&path, &volume, StoredType::Automatic).unwrap();
        assert_eq!(read_nifti(&path).unwrap().datatype, 16);
    }
}
