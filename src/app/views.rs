//! The 3×3 grid of slice views (rows: fixed, moving, moving warped with the overlay; columns:
//! axial, coronal, sagittal) and what the mouse does in them: click or drag to move the linked
//! cursor, scroll through slices, Ctrl+scroll to zoom, middle-drag to pan, right-drag for
//! window/level.

use eframe::egui::{self, Align2, Color32, FontId, Pos2, Rect, Sense, Stroke};

use crate::app::render::slice::slice_shape;
use crate::app::view::{Orientation, SliceView};
use crate::app::{DiffeoregApp, Row};
use crate::volume::Geometry;

/// What lies under the mouse.
#[derive(Clone, Debug)]
pub struct Hover {
    pub index: [f32; 3],
    pub world_mm: [f64; 3],
    /// (name, value, unit) of every volume at the nearest voxel.
    pub values: Vec<(&'static str, f32, &'static str)>,
}

const TITLE_HEIGHT: f32 = 16.0;

pub fn grid(app: &mut DiffeoregApp, ui: &mut egui::Ui) {
    let Some(case) = app.case.as_ref() else {
        ui.centered_and_justified(|ui| {
            ui.label("Nothing loaded yet: open a fixed and a moving image, or load the demo.")
        });
        return;
    };
    if app.render_state.is_none() {
        ui.centered_and_justified(|ui| ui.label("No GPU renderer (wgpu) is available: the views cannot be drawn."));
        return;
    }
    let geometry = case.fixed.geometry.clone();
    let area = ui.available_rect_before_wrap();
    let (cell_w, cell_h) = (area.width() / 3.0, area.height() / 3.0);
    let mut hover = None;
    app.view_rects.clear();
    for (r, &row) in Row::ALL.iter().enumerate() {
        for (c, &orientation) in Orientation::ALL.iter().enumerate() {
            let cell = Rect::from_min_size(
                Pos2::new(area.left() + c as f32 * cell_w, area.top() + r as f32 * cell_h),
                egui::vec2(cell_w, cell_h),
            )
            .shrink(2.0);
            let rect = Rect::from_min_max(Pos2::new(cell.left(), cell.top() + TITLE_HEIGHT), cell.max);
            let id = ui.scope_id().with(("view", r, c));
            let response = ui.interact(rect, id, Sense::click_and_drag());
            let Some(view) = app.slice_view(orientation, [rect.left(), rect.top(), rect.width(), rect.height()]) else {
                continue;
            };
            handle_input(app, ui, &response, &view, row, orientation, c);
            // Input may have moved the cursor or camera: draw what this frame ends with.
            let Some(view) = app.slice_view(orientation, [rect.left(), rect.top(), rect.width(), rect.height()]) else {
                continue;
            };
            let Some(uniform) =
                app.view_uniform(row, orientation, [rect.left(), rect.top(), rect.width(), rect.height()])
            else {
                continue;
            };
            app.view_rects.push(((row, orientation), rect));
            let painter = ui.painter_at(cell);
            painter.add(slice_shape(rect, 3 * r + c, uniform));
            let selected = app.selected_view == (row, orientation);
            let title = painter.text(
                cell.left_top(),
                Align2::LEFT_TOP,
                format!("{} · {} {:.0}", row_title(app, row), orientation.name(), view.slice),
                FontId::proportional(12.0),
                if selected { Color32::from_rgb(255, 210, 90) } else { Color32::LIGHT_GRAY },
            );
            if matches!(row, Row::Fixed | Row::Compared) {
                draw_carried_contours(&painter, app, &view, &geometry);
            }
            if row == Row::Compared {
                let title_strip = Rect::from_min_max(cell.left_top(), egui::pos2(cell.right(), rect.top()));
                draw_overlay_legend(&painter, app, title_strip, title.right() + 8.0);
            }
            draw_crosshair(&painter, &view, app.cursor, rect);
            draw_letters(&painter, &view.edge_letters(&geometry), rect);
            if let Some(pointer) = response.hover_pos() {
                let index = view.screen_to_index(pointer.x, pointer.y);
                if view.contains(index) {
                    hover = Some(hover_at(app, index));
                }
            }
        }
    }
    app.hover = hover;
}

fn row_title(app: &DiffeoregApp, row: Row) -> String {
    match row {
        Row::Fixed => "fixed".into(),
        Row::Moving => "moving (as loaded)".into(),
        Row::Compared if app.result.is_some() => format!("warped + {}", app.display.overlay.short_name()),
        Row::Compared => format!("moving, not registered yet + {}", app.display.overlay.short_name()),
    }
}

#[allow(clippy::too_many_arguments)]
fn handle_input(
    app: &mut DiffeoregApp,
    ui: &egui::Ui,
    response: &egui::Response,
    view: &SliceView,
    row: Row,
    orientation: Orientation,
    column: usize,
) {
    let pointer = response.interact_pointer_pos().or(response.hover_pos());
    if response.clicked() || response.dragged_by(egui::PointerButton::Primary) {
        app.selected_view = (row, orientation);
        if let Some(p) = pointer {
            app.set_cursor(view.screen_to_index(p.x, p.y));
        }
    }
    if response.dragged_by(egui::PointerButton::Secondary) {
        let delta = response.drag_delta();
        app.display.window = app.display.window.dragged(delta.x, delta.y);
    }
    if response.dragged_by(egui::PointerButton::Middle) {
        let delta = response.drag_delta() / view.scale();
        let camera = &mut app.cameras[column];
        camera.pan_mm = [camera.pan_mm[0] + delta.x, camera.pan_mm[1] + delta.y];
    }
    if response.hovered() {
        let (zoom, scroll) = ui.input(|i| (i.zoom_delta(), i.smooth_scroll_delta.y));
        if zoom != 1.0 {
            let camera = &mut app.cameras[column];
            camera.zoom = (camera.zoom * zoom).clamp(0.25, 40.0);
        } else if scroll.abs() > 0.5 {
            let mut cursor = app.cursor;
            cursor[view.plane.normal] = (cursor[view.plane.normal] + scroll.signum()).round();
            app.set_cursor(cursor);
        }
    }
}

/// The shaders' diverging map (colormap.wgsl): blue (−1), white (0), red (+1).
fn diverging(t: f32) -> Color32 {
    let s = t.clamp(-1.0, 1.0);
    let fade = |x: f32| (255.0 * (1.0 - x)).round() as u8;
    if s >= 0.0 { Color32::from_rgb(255, fade(s), fade(s)) } else { Color32::from_rgb(fade(-s), fade(-s), 255) }
}

/// The shaders' heat map (colormap.wgsl): black through red and yellow to white.
fn heat(t: f32) -> Color32 {
    let s = t.clamp(0.0, 1.0);
    let channel = |x: f32| (255.0 * x.clamp(0.0, 1.0)).round() as u8;
    Color32::from_rgb(channel(3.0 * s), channel(3.0 * s - 1.0), channel(3.0 * s - 2.0))
}

/// What the overlay's colours mean: a colour bar with its end values and unit, at the right of
/// the view's title strip (so it never covers the image), between `free_from` and the strip's
/// right end; the bar shrinks to fit, and a view too narrow for it shows none.
fn draw_overlay_legend(painter: &egui::Painter, app: &DiffeoregApp, strip: Rect, free_from: f32) {
    let display = &app.display;
    let (low, high, unit, map): (String, String, &str, fn(f32) -> Color32) = match display.overlay {
        crate::app::Overlay::Difference => {
            (format!("-{:.0}", display.difference_hu), format!("+{:.0}", display.difference_hu), "HU", |t| {
                diverging(2.0 * t - 1.0)
            })
        }
        crate::app::Overlay::Jacobian => (
            format!("{:.2}", (-display.jacobian_log2_range).exp2()),
            format!("{:.2}", display.jacobian_log2_range.exp2()),
            "det J",
            |t| diverging(2.0 * t - 1.0),
        ),
        crate::app::Overlay::Momentum => {
            let max = app.result.as_ref().map_or(0.0, |r| r.momentum_max);
            ("0".into(), format!("{max:.3}"), "|m|", heat)
        }
        _ => return,
    };
    let font = FontId::proportional(10.0);
    let colour = Color32::LIGHT_GRAY;
    let width = |text: &str| painter.layout_no_wrap(text.to_string(), font.clone(), colour).size().x;
    let texts = width(unit) + width(&high) + width(&low) + 6.0 + 3.0 + 3.0 + 2.0;
    let bar_width = (strip.right() - free_from - texts).min(80.0);
    if bar_width < 24.0 {
        return;
    }
    let right = strip.right() - 2.0;
    let unit_rect = painter.text(egui::pos2(right, strip.center().y), Align2::RIGHT_CENTER, unit, font.clone(), colour);
    let high_rect = painter.text(
        egui::pos2(unit_rect.left() - 6.0, strip.center().y),
        Align2::RIGHT_CENTER,
        high,
        font.clone(),
        colour,
    );
    let bar = Rect::from_min_max(
        egui::pos2(high_rect.left() - 3.0 - bar_width, strip.center().y - 4.0),
        egui::pos2(high_rect.left() - 3.0, strip.center().y + 4.0),
    );
    let stripes = 40;
    for n in 0..stripes {
        let width = bar.width() / stripes as f32;
        let stripe =
            Rect::from_min_size(bar.min + egui::vec2(n as f32 * width, 0.0), egui::vec2(width + 0.5, bar.height()));
        painter.rect_filled(stripe, 0.0, map((n as f32 + 0.5) / stripes as f32));
    }
    painter.text(egui::pos2(bar.left() - 3.0, strip.center().y), Align2::RIGHT_CENTER, low, font, colour);
}

/// The carried structures' contours that lie on the slice this view shows (contours lie on the
/// fixed grid's slices, so only views across its third axis show them), in each region's colour.
fn draw_carried_contours(painter: &egui::Painter, app: &DiffeoregApp, view: &SliceView, geometry: &Geometry) {
    if view.plane.normal != 2 || app.carried.is_empty() {
        return;
    }
    let slice = view.slice.round() as usize;
    for carried in &app.carried {
        let [r, g, b] = carried.roi.colour.unwrap_or([255, 0, 0]);
        let stroke = Stroke::new(1.5, Color32::from_rgb(r, g, b));
        for (k, contour) in &carried.contours {
            if *k != slice {
                continue;
            }
            let points: Vec<Pos2> = contour
                .iter()
                .map(|&p| {
                    let index = geometry.world_to_index(p);
                    let [x, y] = view.index_to_screen([index[0] as f32, index[1] as f32, index[2] as f32]);
                    Pos2::new(x, y)
                })
                .collect();
            painter.add(egui::Shape::closed_line(points, stroke));
        }
    }
}

fn draw_crosshair(painter: &egui::Painter, view: &SliceView, cursor: [f32; 3], rect: Rect) {
    let [x, y] = view.index_to_screen(cursor);
    let stroke = Stroke::new(1.0, Color32::from_rgba_unmultiplied(90, 200, 255, 140));
    if rect.x_range().contains(x) {
        painter.line_segment([Pos2::new(x, rect.top()), Pos2::new(x, rect.bottom())], stroke);
    }
    if rect.y_range().contains(y) {
        painter.line_segment([Pos2::new(rect.left(), y), Pos2::new(rect.right(), y)], stroke);
    }
}

fn draw_letters(painter: &egui::Painter, letters: &[char; 4], rect: Rect) {
    let font = FontId::monospace(13.0);
    let colour = Color32::from_rgb(255, 200, 80);
    let places = [
        (rect.left_center() + egui::vec2(4.0, 0.0), Align2::LEFT_CENTER),
        (rect.right_center() - egui::vec2(4.0, 0.0), Align2::RIGHT_CENTER),
        (rect.center_top() + egui::vec2(0.0, 2.0), Align2::CENTER_TOP),
        (rect.center_bottom() - egui::vec2(0.0, 2.0), Align2::CENTER_BOTTOM),
    ];
    for (letter, (position, align)) in letters.iter().zip(places) {
        painter.text(position, align, letter.to_string(), font.clone(), colour);
    }
}

fn hover_at(app: &DiffeoregApp, index: [f32; 3]) -> Hover {
    let Some(case) = app.case.as_ref() else {
        return Hover { index, world_mm: [0.0; 3], values: Vec::new() };
    };
    let geometry = &case.fixed.geometry;
    let voxel = std::array::from_fn::<usize, 3, _>(|d| (index[d].round().max(0.0) as usize).min(geometry.shape[d] - 1));
    let n = geometry.linear_index(voxel[0], voxel[1], voxel[2]);
    let mut values = vec![("fixed", case.fixed.voxels[n], "HU"), ("moving", case.moving_on_fixed.voxels[n], "HU")];
    if let Some(result) = &app.result {
        values.push(("warped", result.registration.moving_warped.voxels[n], "HU"));
        values.push(("det J", result.jacobian[n], ""));
    }
    Hover { index, world_mm: geometry.index_to_world(index.map(|v| v as f64)), values }
}
