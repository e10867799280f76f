//! Text on QA figures: glyph outlines of the font egui ships (Ubuntu Light), flattened and
//! filled with anti-aliasing (non-zero winding, exact along each row, four samples down it).

use std::sync::OnceLock;

use skrifa::instance::{LocationRef, Size};
use skrifa::outline::{DrawSettings, OutlinePen};
use skrifa::{FontRef, MetadataProvider};

use crate::qa::draw::{Canvas, Rgb};

fn font() -> &'static FontRef<'static> {
    static FONT: OnceLock<FontRef<'static>> = OnceLock::new();
    FONT.get_or_init(|| FontRef::new(epaint_default_fonts::UBUNTU_LIGHT).expect("egui's built-in font parses"))
}

/// Collects a glyph's outline as closed polygons (curves flattened), y pointing down.
#[derive(Default)]
struct Flattener {
    loops: Vec<Vec<[f32; 2]>>,
    at: [f32; 2],
}

impl Flattener {
    fn point(&mut self, x: f32, y: f32) {
        self.at = [x, -y];
        if let Some(current) = self.loops.last_mut() {
            current.push(self.at);
        }
    }
}

impl OutlinePen for Flattener {
    fn move_to(&mut self, x: f32, y: f32) {
        self.loops.push(Vec::new());
        self.point(x, y);
    }

    fn line_to(&mut self, x: f32, y: f32) {
        self.point(x, y);
    }

    fn quad_to(&mut self, cx: f32, cy: f32, x: f32, y: f32) {
        let [x0, y0] = [self.at[0], -self.at[1]];
        for n in 1..=8 {
            let t = n as f32 / 8.0;
            let s = 1.0 - t;
            self.point(s * s * x0 + 2.0 * s * t * cx + t * t * x, s * s * y0 + 2.0 * s * t * cy + t * t * y);
        }
    }

    fn curve_to(&mut self, cx0: f32, cy0: f32, cx1: f32, cy1: f32, x: f32, y: f32) {
        let [x0, y0] = [self.at[0], -self.at[1]];
        for n in 1..=10 {
            let t = n as f32 / 10.0;
            let s = 1.0 - t;
            let (a, b, c, d) = (s * s * s, 3.0 * s * s * t, 3.0 * s * t * t, t * t * t);
            self.point(a * x0 + b * cx0 + c * cx1 + d * x, a * y0 + b * cy0 + c * cy1 + d * y);
        }
    }

    fn close(&mut self) {}
}

/// Width in pixels of `text` at `size` pixels per em.
pub fn text_width(text: &str, size: f32) -> f32 {
    let font = font();
    let (charmap, metrics) = (font.charmap(), font.glyph_metrics(Size::new(size), LocationRef::default()));
    text.chars().filter_map(|c| charmap.map(c)).filter_map(|g| metrics.advance_width(g)).sum()
}

/// Draws `text` with its baseline at `baseline` and its left edge at `left`; returns the width.
pub fn draw_text(canvas: &mut Canvas, left: f32, baseline: f32, text: &str, size: f32, colour: Rgb) -> f32 {
    let font = font();
    let (charmap, outlines) = (font.charmap(), font.outline_glyphs());
    let metrics = font.glyph_metrics(Size::new(size), LocationRef::default());
    let mut pen_x = left;
    for c in text.chars() {
        let Some(glyph_id) = charmap.map(c).or_else(|| charmap.map('?')) else { continue };
        if let Some(glyph) = outlines.get(glyph_id) {
            let mut flattener = Flattener::default();
            if glyph.draw(DrawSettings::unhinted(Size::new(size), LocationRef::default()), &mut flattener).is_ok() {
                let loops: Vec<Vec<[f32; 2]>> = flattener
                    .loops
                    .into_iter()
                    .map(|l| l.into_iter().map(|[x, y]| [x + pen_x, y + baseline]).collect())
                    .collect();
                fill_nonzero(canvas, &loops, colour);
            }
        }
        pen_x += metrics.advance_width(glyph_id).unwrap_or(size * 0.5);
    }
    pen_x - left
}

/// Draws `text` centred on `centre_x`.
pub fn draw_text_centred(canvas: &mut Canvas, centre_x: f32, baseline: f32, text: &str, size: f32, colour: Rgb) {
    let width = text_width(text, size);
    draw_text(canvas, centre_x - width / 2.0, baseline, text, size, colour);
}

/// Fills polygons by the non-zero winding rule with anti-aliased edges.
fn fill_nonzero(canvas: &mut Canvas, loops: &[Vec<[f32; 2]>], colour: Rgb) {
    const SUB_ROWS: usize = 4;
    let (mut low, mut high) = (f32::INFINITY, f32::NEG_INFINITY);
    for point in loops.iter().flatten() {
        low = low.min(point[1]);
        high = high.max(point[1]);
    }
    if !low.is_finite() {
        return;
    }
    let first_row = low.floor().max(0.0) as usize;
    let last_row = (high.ceil() as usize).min(canvas.height.saturating_sub(1));
    let mut crossings: Vec<(f32, i32)> = Vec::new();
    let mut row_share = vec![0f32; canvas.width];
    for row in first_row..=last_row {
        row_share.iter_mut().for_each(|s| *s = 0.0);
        for sub in 0..SUB_ROWS {
            let y = row as f32 + (sub as f32 + 0.5) / SUB_ROWS as f32;
            crossings.clear();
            for points in loops {
                for (n, a) in points.iter().enumerate() {
                    let b = points[(n + 1) % points.len()];
                    if (a[1] <= y) != (b[1] <= y) {
                        let x = a[0] + (y - a[1]) * (b[0] - a[0]) / (b[1] - a[1]);
                        crossings.push((x, if b[1] > a[1] { 1 } else { -1 }));
                    }
                }
            }
            crossings.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut winding = 0;
            for pair in crossings.windows(2) {
                winding += pair[0].1;
                if winding == 0 {
                    continue;
                }
                let (start, end) = (pair[0].0.max(0.0), pair[1].0.min(canvas.width as f32));
                if end <= start {
                    continue;
                }
                for x in start.floor() as usize..(end.ceil() as usize).min(canvas.width) {
                    let overlap = (end.min(x as f32 + 1.0) - start.max(x as f32)).max(0.0);
                    row_share[x] += overlap / SUB_ROWS as f32;
                }
            }
        }
        for (x, &share) in row_share.iter().enumerate() {
            if share > 0.0 {
                canvas.blend(x, row, colour, share.min(1.0));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_drawn_where_it_is_asked_and_nowhere_else() {
        let mut canvas = Canvas::new(120, 30);
        let width = draw_text(&mut canvas, 10.0, 20.0, "Axial 0.95", 16.0, Rgb([255, 255, 255]));
        assert!((width - text_width("Axial 0.95", 16.0)).abs() < 1e-3);
        assert!(width > 40.0 && width < 100.0, "{width}");
        let inked = |x0: usize, x1: usize, y0: usize, y1: usize| {
            (y0..y1).flat_map(|y| (x0..x1).map(move |x| (x, y))).filter(|&(x, y)| canvas.pixel(x, y).0[0] > 0).count()
        };
        assert!(inked(10, 10 + width as usize, 6, 24) > 60, "the letters are inked");
        assert_eq!(inked(0, 9, 0, 30), 0, "nothing left of the text");
        assert_eq!(inked(0, 120, 25, 30), 0, "nothing below the descenders");
        // 'o' has a counter: its centre stays dark.
        let mut o = Canvas::new(40, 40);
        draw_text(&mut o, 5.0, 32.0, "o", 40.0, Rgb([255, 255, 255]));
        let w = text_width("o", 40.0);
        assert_eq!(o.pixel((5.0 + w / 2.0) as usize, 22).0, [0, 0, 0], "the hole of the o");
    }
}
