//! A small RGB canvas: filled rectangles, colour maps, digits, PNG output.

use std::path::Path;

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rgb(pub [u8; 3]);

/// Gray level of t in 0..1 (clamped).
pub fn gray(t: f32) -> Rgb {
    let g = (t.clamp(0.0, 1.0) * 255.0).round() as u8;
    Rgb([g, g, g])
}

/// Blue (−1) through white (0) to red (+1), clamped.
pub fn diverging(t: f32) -> Rgb {
    let t = if t.is_finite() { t.clamp(-1.0, 1.0) } else { 0.0 };
    let fade = |x: f32| (255.0 * (1.0 - x)).round() as u8;
    if t >= 0.0 { Rgb([255, fade(t), fade(t)]) } else { Rgb([fade(-t), fade(-t), 255]) }
}

pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pixels: Vec<u8>,
}

/// 3×5 bitmaps of the characters `text` can draw, rows top to bottom, bit 2 = left column.
fn glyph(c: char) -> Option<[u8; 5]> {
    Some(match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        ' ' => [0, 0, 0, 0, 0],
        _ => return None,
    })
}

impl Canvas {
    pub fn new(width: usize, height: usize) -> Self {
        Canvas { width, height, pixels: vec![0; 3 * width * height] }
    }

    /// Fills the rectangle at (x, y) of size w × h, clipped to the canvas.
    pub fn fill(&mut self, x: usize, y: usize, w: usize, h: usize, colour: Rgb) {
        for row in y..(y + h).min(self.height) {
            for col in x..(x + w).min(self.width) {
                let i = 3 * (col + self.width * row);
                self.pixels[i..i + 3].copy_from_slice(&colour.0);
            }
        }
    }

    /// Mixes `colour` into the pixel at (x, y) with weight `alpha` (0..1); outside: nothing.
    pub fn blend(&mut self, x: usize, y: usize, colour: Rgb, alpha: f32) {
        if x >= self.width || y >= self.height {
            return;
        }
        let i = 3 * (x + self.width * y);
        for c in 0..3 {
            let old = self.pixels[i + c] as f32;
            self.pixels[i + c] = (old + (colour.0[c] as f32 - old) * alpha.clamp(0.0, 1.0)).round() as u8;
        }
    }

    pub fn pixel(&self, x: usize, y: usize) -> Rgb {
        let i = 3 * (x + self.width * y);
        Rgb([self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]])
    }

    /// Digits, '.', '-' and spaces at (x, y), each font pixel `scale` pixels wide; other
    /// characters are skipped.
    pub fn text(&mut self, x: usize, y: usize, text: &str, scale: usize, colour: Rgb) {
        for (n, c) in text.chars().enumerate() {
            let Some(rows) = glyph(c) else { continue };
            let left = x + n * 4 * scale;
            for (r, bits) in rows.iter().enumerate() {
                for b in 0..3 {
                    if bits >> (2 - b) & 1 == 1 {
                        self.fill(left + b * scale, y + r * scale, scale, scale, colour);
                    }
                }
            }
        }
    }

    /// Writes the canvas as an 8-bit RGB PNG, atomically.
    pub fn save_png(&self, path: &Path) -> Result<()> {
        write_png(path, &self.pixels, self.width as u32, self.height as u32, image::ExtendedColorType::Rgb8)
    }
}

/// Encodes pixels as a PNG and writes it atomically.
pub fn write_png(path: &Path, pixels: &[u8], width: u32, height: u32, colour: image::ExtendedColorType) -> Result<()> {
    let mut bytes = Vec::new();
    let encoder = image::codecs::png::PngEncoder::new(&mut bytes);
    image::ImageEncoder::write_image(encoder, pixels, width, height, colour)
        .map_err(|e| Error::Invalid(format!("cannot encode {}: {e}", path.display())))?;
    crate::io::atomic::write_atomically(path, |w| w.write_all(&bytes).map_err(|e| Error::io(path, e)))
}
