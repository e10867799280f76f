//! InVesalius 3 projects (`.inv3`): a tar archive (gzip-compressed or not) holding `main.plist`
//! (an XML property list with the voxel matrix's file, type, shape and spacing) and the matrix
//! itself as raw little-endian numbers, slice after slice. Debian's `invesalius-examples` ships
//! a real head CT in this form, which is why the project reads it.
//!
//! The project stores no patient position and keeps its slices' rows in screen order (from the
//! patient's back towards the face for an axial CT), the reverse of DICOM's. The reader flips
//! the rows back, so that the volume comes out as an axial LPS series would (identity direction),
//! and places the first voxel at the world origin.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};
use crate::volume::{Geometry, Volume};

/// InVesalius' code for an axial acquisition (its `constants.AXIAL`).
const AXIAL: i64 = 1;

pub fn is_inv3_path(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("inv3"))
}

/// Reads the CT of an InVesalius project, in the values it stores (HU for a CT).
pub fn read_inv3(path: &Path) -> Result<Volume> {
    let bad = |problem: String| Error::bad_input(path, problem);
    let entries = read_archive(path)?;
    let main = entries.get("main.plist").ok_or_else(|| bad("holds no main.plist: not an InVesalius project".into()))?;
    let main = std::str::from_utf8(main).map_err(|_| bad("main.plist is not UTF-8 text".into()))?;
    let plist = parse_plist(main).map_err(|e| bad(format!("main.plist: {e}")))?;

    let orientation = plist.get("orientation").and_then(Plist::as_integer).unwrap_or(AXIAL);
    if orientation != AXIAL {
        return Err(bad(format!(
            "the project's images are not axial (orientation code {orientation}); only axial is read"
        )));
    }
    let matrix = plist.get("matrix").ok_or_else(|| bad("main.plist names no voxel matrix".into()))?;
    let file =
        matrix.get("filename").and_then(Plist::as_str).ok_or_else(|| bad("the matrix has no file name".into()))?;
    let dtype = matrix.get("dtype").and_then(Plist::as_str).ok_or_else(|| bad("the matrix has no dtype".into()))?;
    let element = Element::parse(dtype).ok_or_else(|| bad(format!("unsupported voxel type {dtype:?}")))?;
    let dims: Vec<i64> =
        matrix.get("shape").and_then(Plist::as_array).unwrap_or(&[]).iter().filter_map(Plist::as_integer).collect();
    let [nz, ny, nx] = dims[..] else { return Err(bad(format!("the matrix shape {dims:?} is not three numbers"))) };
    if [nx, ny, nz].iter().any(|&n| n <= 0) {
        return Err(bad(format!("the matrix shape {dims:?} is not positive")));
    }
    let spacing: Vec<f64> =
        plist.get("spacing").and_then(Plist::as_array).unwrap_or(&[]).iter().filter_map(Plist::as_number).collect();
    let spacing_mm: [f64; 3] =
        spacing.try_into().map_err(|s| bad(format!("the spacing {s:?} is not three numbers")))?;
    let shape = [nx as usize, ny as usize, nz as usize];
    let geometry = Geometry::axis_aligned(shape, spacing_mm, [0.0; 3]).map_err(|e| bad(e.to_string()))?;

    let data = entries.get(file).ok_or_else(|| bad(format!("main.plist names {file:?}, which the archive lacks")))?;
    let expected = geometry.voxel_count() * element.bytes();
    if data.len() != expected {
        return Err(bad(format!(
            "{file} holds {} bytes; a {dtype} matrix of {:?} needs {expected} (truncated or not this project's)",
            data.len(),
            dims
        )));
    }
    let mut voxels = vec![0f32; geometry.voxel_count()];
    let row_bytes = nx as usize * element.bytes();
    for (stored_row, row) in data.chunks_exact(row_bytes).enumerate() {
        let (k, j_stored) = (stored_row / ny as usize, stored_row % ny as usize);
        let j = ny as usize - 1 - j_stored;
        let start = geometry.linear_index(0, j, k);
        for (value, bytes) in voxels[start..start + nx as usize].iter_mut().zip(row.chunks_exact(element.bytes())) {
            *value = element.decode(bytes);
        }
    }
    let volume = Volume { geometry, voxels };
    if volume.non_finite_count() > 0 {
        return Err(bad("the matrix holds NaN or infinite values".into()));
    }
    Ok(volume)
}

/// Every file of the archive by its name (without folders).
fn read_archive(path: &Path) -> Result<HashMap<String, Vec<u8>>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let reader: Box<dyn Read> = if bytes.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(&bytes[..]))
    } else {
        Box::new(&bytes[..])
    };
    let not_tar = |e: std::io::Error| Error::bad_input(path, format!("not a readable InVesalius archive: {e}"));
    let mut archive = tar::Archive::new(reader);
    let mut entries = HashMap::new();
    for entry in archive.entries().map_err(not_tar)? {
        let mut entry = entry.map_err(not_tar)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path().map_err(not_tar)?.file_name().map(|n| n.to_string_lossy().into_owned());
        let mut data = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut data).map_err(not_tar)?;
        if let Some(name) = name {
            entries.insert(name, data);
        }
    }
    Ok(entries)
}

#[derive(Clone, Copy, Debug)]
enum Element {
    I8,
    U8,
    I16,
    U16,
    I32,
    F32,
}

impl Element {
    fn parse(dtype: &str) -> Option<Element> {
        Some(match dtype {
            "int8" => Element::I8,
            "uint8" => Element::U8,
            "int16" => Element::I16,
            "uint16" => Element::U16,
            "int32" => Element::I32,
            "float32" => Element::F32,
            _ => return None,
        })
    }

    fn bytes(self) -> usize {
        match self {
            Element::I8 | Element::U8 => 1,
            Element::I16 | Element::U16 => 2,
            Element::I32 | Element::F32 => 4,
        }
    }

    fn decode(self, b: &[u8]) -> f32 {
        match self {
            Element::I8 => b[0] as i8 as f32,
            Element::U8 => b[0] as f32,
            Element::I16 => i16::from_le_bytes([b[0], b[1]]) as f32,
            Element::U16 => u16::from_le_bytes([b[0], b[1]]) as f32,
            Element::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32,
            Element::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        }
    }
}

/// A value of an XML property list: what InVesalius writes (no dates, no data blobs).
#[derive(Clone, Debug, PartialEq)]
enum Plist {
    Dict(HashMap<String, Plist>),
    Array(Vec<Plist>),
    Integer(i64),
    Real(f64),
    String(String),
    Bool(bool),
}

impl Plist {
    fn get(&self, key: &str) -> Option<&Plist> {
        match self {
            Plist::Dict(map) => map.get(key),
            _ => None,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Plist::String(s) => Some(s),
            _ => None,
        }
    }

    fn as_array(&self) -> Option<&[Plist]> {
        match self {
            Plist::Array(items) => Some(items),
            _ => None,
        }
    }

    fn as_integer(&self) -> Option<i64> {
        match self {
            Plist::Integer(n) => Some(*n),
            _ => None,
        }
    }

    fn as_number(&self) -> Option<f64> {
        match self {
            Plist::Integer(n) => Some(*n as f64),
            Plist::Real(x) => Some(*x),
            _ => None,
        }
    }
}

/// Parses the top-level value of an XML property list.
fn parse_plist(text: &str) -> std::result::Result<Plist, String> {
    let body = text.find("<plist").and_then(|start| text[start..].find('>').map(|end| start + end + 1));
    let mut tokens = Tokens { text: &text[body.ok_or("no <plist> element")?..] };
    tokens.value()
}

struct Tokens<'a> {
    text: &'a str,
}

impl<'a> Tokens<'a> {
    /// The next tag's name (with a leading '/' for a closing tag, a trailing '/' for an empty
    /// one) and the text before it.
    fn tag(&mut self) -> std::result::Result<(&'a str, &'a str), String> {
        let open = self.text.find('<').ok_or("unexpected end of the property list")?;
        let close = self.text[open..].find('>').ok_or("an unclosed tag")? + open;
        let (before, name) = (&self.text[..open], self.text[open + 1..close].trim());
        self.text = &self.text[close + 1..];
        Ok((before, name))
    }

    fn value(&mut self) -> std::result::Result<Plist, String> {
        let (_, name) = self.tag()?;
        self.value_of(name)
    }

    fn value_of(&mut self, name: &str) -> std::result::Result<Plist, String> {
        match name {
            "dict" => {
                let mut map = HashMap::new();
                loop {
                    match self.tag()? {
                        (_, "/dict") => return Ok(Plist::Dict(map)),
                        (_, "key") => {
                            let key = unescape(self.text_until("key")?);
                            map.insert(key, self.value()?);
                        }
                        (_, other) => return Err(format!("<{other}> where a <key> belongs")),
                    }
                }
            }
            "dict/" => Ok(Plist::Dict(HashMap::new())),
            "array" => {
                let mut items = Vec::new();
                loop {
                    match self.tag()? {
                        (_, "/array") => return Ok(Plist::Array(items)),
                        (_, name) => items.push(self.value_of(name)?),
                    }
                }
            }
            "array/" => Ok(Plist::Array(Vec::new())),
            "integer" => {
                let text = self.text_until("integer")?;
                text.trim().parse().map(Plist::Integer).map_err(|_| format!("{text:?} is not an integer"))
            }
            "real" => {
                let text = self.text_until("real")?;
                text.trim().parse().map(Plist::Real).map_err(|_| format!("{text:?} is not a number"))
            }
            "string" => Ok(Plist::String(unescape(self.text_until("string")?))),
            "string/" => Ok(Plist::String(String::new())),
            "true/" => Ok(Plist::Bool(true)),
            "false/" => Ok(Plist::Bool(false)),
            other => Err(format!("unsupported property-list element <{other}>")),
        }
    }

    /// The text up to the closing tag `</name>`.
    fn text_until(&mut self, name: &str) -> std::result::Result<&'a str, String> {
        let (text, closing) = self.tag()?;
        if closing.strip_prefix('/') != Some(name) {
            return Err(format!("<{name}> closed by <{closing}>"));
        }
        Ok(text)
    }
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIN: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple Computer//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>annotations</key>
	<dict>
	</dict>
	<key>matrix</key>
	<dict>
		<key>dtype</key>
		<string>int16</string>
		<key>filename</key>
		<string>matrix.dat</string>
		<key>shape</key>
		<array>
			<integer>2</integer>
			<integer>3</integer>
			<integer>4</integer>
		</array>
	</dict>
	<key>name</key>
	<string>A &amp; B</string>
	<key>orientation</key>
	<integer>1</integer>
	<key>spacing</key>
	<array>
		<real>0.5</real>
		<real>0.75</real>
		<real>2</real>
	</array>
	<key>visible</key>
	<true/>
</dict>
</plist>
"#;

    #[test]
    fn parses_what_invesalius_writes() {
        let plist = parse_plist(MAIN).unwrap();
        assert_eq!(plist.get("name").and_then(Plist::as_str), Some("A & B"));
        assert_eq!(plist.get("orientation").and_then(Plist::as_integer), Some(1));
        assert_eq!(plist.get("visible"), Some(&Plist::Bool(true)));
        assert_eq!(plist.get("annotations"), Some(&Plist::Dict(HashMap::new())));
        let spacing: Vec<f64> =
            plist.get("spacing").unwrap().as_array().unwrap().iter().filter_map(Plist::as_number).collect();
        assert_eq!(spacing, vec![0.5, 0.75, 2.0]);
        assert!(parse_plist("<plist><dict><key>a</key><integer>x</integer></dict></plist>").is_err());
        assert!(parse_plist("<plist><dict><string>a</string></dict></plist>").is_err());
    }

    fn archive(files: &[(&str, &[u8])], gzip: bool) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, format!("tmpproject/{name}"), *data).unwrap();
        }
        let tar = builder.into_inner().unwrap();
        if !gzip {
            return tar;
        }
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut encoder, &tar).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn reads_a_project_with_rows_in_dicom_order() {
        // Stored value = 100·k + 10·(stored row) + i; the reader flips rows: j = 2 − stored row.
        let matrix: Vec<u8> =
            (0..24).flat_map(|n: i16| (100 * (n / 12) + 10 * ((n / 4) % 3) + n % 4 - 1000).to_le_bytes()).collect();
        let dir = tempfile::tempdir().unwrap();
        for gzip in [true, false] {
            let path = dir.path().join(format!("p{gzip}.inv3"));
            std::fs::write(&path, archive(&[("main.plist", MAIN.as_bytes()), ("matrix.dat", &matrix)], gzip)).unwrap();
            let volume = read_inv3(&path).unwrap();
            assert_eq!(volume.geometry.shape, [4, 3, 2]);
            assert_eq!(volume.geometry.spacing_mm, [0.5, 0.75, 2.0]);
            for (i, j, k) in [(0, 0, 0), (3, 2, 1), (1, 0, 1), (2, 1, 0)] {
                let stored_row = 2 - j;
                let expected = (100 * k + 10 * stored_row + i) as f32 - 1000.0;
                assert_eq!(volume.voxels[volume.geometry.linear_index(i, j, k)], expected, "voxel {i},{j},{k}");
            }
        }
    }

    #[test]
    fn refuses_broken_projects_naming_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let refused = |name: &str, bytes: Vec<u8>| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let message = read_inv3(&path).unwrap_err().to_string();
            assert!(message.contains(name), "{message}");
            message
        };
        let matrix = vec![0u8; 48];
        assert!(
            refused("short.inv3", archive(&[("main.plist", MAIN.as_bytes()), ("matrix.dat", &matrix[..40])], true))
                .contains("truncated")
        );
        assert!(refused("nomain.inv3", archive(&[("matrix.dat", &matrix)], true)).contains("main.plist"));
        assert!(refused("nomatrix.inv3", archive(&[("main.plist", MAIN.as_bytes())], false)).contains("matrix.dat"));
        let coronal = MAIN.replace("<integer>1</integer>", "<integer>2</integer>");
        assert!(
            refused("coronal.inv3", archive(&[("main.plist", coronal.as_bytes()), ("matrix.dat", &matrix)], true))
                .contains("axial")
        );
        assert!(refused("garbage.inv3", vec![7u8; 1000]).contains("InVesalius"));
    }
}
