//! GPU drawing of the app's views through egui's wgpu callbacks (rerun's `re_renderer` is the
//! model): one renderer per kind of thing drawn, its WGSL in `shaders/`.

pub mod slice;
