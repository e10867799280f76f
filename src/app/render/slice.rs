//! The slice renderer: the volumes as 3D textures (uploaded once per load or result), one
//! pipeline running `shaders/slice.wgsl`, a uniform slot per view on screen, and an off-screen
//! path that renders a view into a PNG-ready image.

use std::num::NonZeroU64;

use eframe::egui_wgpu::{self, CallbackResources, CallbackTrait, ScreenDescriptor};
use eframe::{egui, wgpu};

/// Views drawn per frame, at most; the last slot is kept for off-screen renders.
pub const UNIFORM_SLOTS: usize = 16;
const EXPORT_SLOT: usize = UNIFORM_SLOTS - 1;
/// Dynamic uniform offsets must be multiples of this (WebGPU's minimum alignment).
const SLOT_BYTES: u64 = 256;
/// The largest slab written to a texture in one call, bytes (keeps staging buffers small).
const UPLOAD_CHUNK_BYTES: usize = 64 << 20;

/// The format the off-screen renders are read back in.
pub const EXPORT_FORMAT: wgpu::TextureFormat = wgpu::TextureFormat::Rgba8Unorm;

/// The per-view uniform block of `slice.wgsl` (`struct View`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ViewUniform {
    pub origin: [f32; 4],
    pub across: [f32; 4],
    pub down: [f32; 4],
    pub shape: [f32; 4],
    pub field_shape: [f32; 4],
    pub spacing: [f32; 4],
    pub window: [f32; 4],
    pub extra: [f32; 4],
    pub modes: [u32; 4],
}

/// Which texture a volume goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    Fixed,
    Moving,
    Compared,
    Jacobian,
    Displacement,
    TissueLabels,
    /// |m| of the network's momentum on the fixed grid, negative where its tiles meet.
    Momentum,
}

impl Slot {
    const ALL: [Slot; 7] = [
        Slot::Fixed,
        Slot::Moving,
        Slot::Compared,
        Slot::Jacobian,
        Slot::Displacement,
        Slot::TissueLabels,
        Slot::Momentum,
    ];

    fn format(self) -> wgpu::TextureFormat {
        match self {
            Slot::Displacement => wgpu::TextureFormat::Rgba16Float,
            Slot::TissueLabels => wgpu::TextureFormat::R8Uint,
            _ => wgpu::TextureFormat::R16Float,
        }
    }

    fn bytes_per_texel(self) -> usize {
        match self {
            Slot::Displacement => 8,
            Slot::TissueLabels => 1,
            _ => 2,
        }
    }

    fn binding(self) -> u32 {
        2 + Slot::ALL.iter().position(|&s| s == self).unwrap_or(0) as u32
    }
}

/// A texture's content: texels in the slot's format, x fastest, or a texture already on the GPU.
pub enum Texels {
    Cpu(Vec<u8>),
    Gpu(wgpu::Texture),
}

/// The content of one of the renderer's textures.
pub struct TextureData {
    pub slot: Slot,
    pub shape: [usize; 3],
    pub texels: Texels,
}

impl TextureData {
    /// Half floats from f32 values (one channel; four for the displacement slot).
    pub fn half_floats(slot: Slot, shape: [usize; 3], values: &[f32]) -> TextureData {
        use rayon::prelude::*;
        let bytes = values.par_iter().flat_map_iter(|&v| half::f16::from_f32(v).to_bits().to_le_bytes()).collect();
        TextureData { slot, shape, texels: Texels::Cpu(bytes) }
    }

    pub fn bytes(slot: Slot, shape: [usize; 3], bytes: Vec<u8>) -> TextureData {
        TextureData { slot, shape, texels: Texels::Cpu(bytes) }
    }

    /// Moves the texels to the GPU. wgpu's device and queue are thread-safe, so the worker does
    /// this and the UI thread only swaps the finished texture in.
    pub fn upload(&mut self, device: &wgpu::Device, queue: &wgpu::Queue) {
        if let Texels::Cpu(bytes) = &self.texels {
            let texture = create_texture(device, self.slot, self.shape);
            let row_bytes = self.shape[0] * self.slot.bytes_per_texel();
            let slice_bytes = row_bytes * self.shape[1];
            let slices_per_chunk = (UPLOAD_CHUNK_BYTES / slice_bytes.max(1)).max(1);
            let mut z = 0;
            while z < self.shape[2] {
                let depth = slices_per_chunk.min(self.shape[2] - z);
                queue.write_texture(
                    wgpu::TexelCopyTextureInfo {
                        texture: &texture,
                        mip_level: 0,
                        origin: wgpu::Origin3d { x: 0, y: 0, z: z as u32 },
                        aspect: wgpu::TextureAspect::All,
                    },
                    &bytes[z * slice_bytes..(z + depth) * slice_bytes],
                    wgpu::TexelCopyBufferLayout {
                        offset: 0,
                        bytes_per_row: Some(row_bytes as u32),
                        rows_per_image: Some(self.shape[1] as u32),
                    },
                    wgpu::Extent3d {
                        width: self.shape[0] as u32,
                        height: self.shape[1] as u32,
                        depth_or_array_layers: depth as u32,
                    },
                );
                z += depth;
            }
            self.texels = Texels::Gpu(texture);
        }
    }
}

pub struct SliceRenderer {
    target_format: wgpu::TextureFormat,
    pipeline: wgpu::RenderPipeline,
    export_pipeline: wgpu::RenderPipeline,
    layout: wgpu::BindGroupLayout,
    sampler: wgpu::Sampler,
    uniforms: wgpu::Buffer,
    textures: Vec<(Slot, wgpu::Texture)>,
    bind_group: wgpu::BindGroup,
}

impl SliceRenderer {
    pub fn new(device: &wgpu::Device, target_format: wgpu::TextureFormat) -> SliceRenderer {
        let source = format!(
            "{}\n{}",
            include_str!("../../../shaders/colormap.wgsl"),
            include_str!("../../../shaders/slice.wgsl")
        );
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("slice.wgsl"),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let texture_entry = |binding: u32, sample_type| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::FRAGMENT,
            ty: wgpu::BindingType::Texture {
                sample_type,
                view_dimension: wgpu::TextureViewDimension::D3,
                multisampled: false,
            },
            count: None,
        };
        let mut entries = vec![
            wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::FRAGMENT,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: true,
                    min_binding_size: NonZeroU64::new(std::mem::size_of::<ViewUniform>() as u64),
                },
                count: None,
            },
            wgpu::BindGroupLayoutEntry {
                binding: 1,
                visibility: wgpu::ShaderStages::FRAGMENT,
                ty: wgpu::BindingType::Sampler(wgpu::SamplerBindingType::Filtering),
                count: None,
            },
        ];
        for slot in Slot::ALL {
            let sample_type = if slot == Slot::TissueLabels {
                wgpu::TextureSampleType::Uint
            } else {
                wgpu::TextureSampleType::Float { filterable: true }
            };
            entries.push(texture_entry(slot.binding(), sample_type));
        }
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("slice bindings"),
            entries: &entries,
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("slice pipeline layout"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline_for = |format: wgpu::TextureFormat| {
            device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
                label: Some("slice pipeline"),
                layout: Some(&pipeline_layout),
                vertex: wgpu::VertexState {
                    module: &module,
                    entry_point: Some("vs_main"),
                    buffers: &[],
                    compilation_options: wgpu::PipelineCompilationOptions::default(),
                },
                primitive: wgpu::PrimitiveState::default(),
                depth_stencil: None,
                multisample: wgpu::MultisampleState::default(),
                fragment: Some(wgpu::FragmentState {
                    module: &module,
                    entry_point: Some("fs_main"),
                    compilation_options: wgpu::PipelineCompilationOptions::default(),
                    targets: &[Some(wgpu::ColorTargetState {
                        format,
                        blend: None,
                        write_mask: wgpu::ColorWrites::ALL,
                    })],
                }),
                multiview_mask: None,
                cache: None,
            })
        };
        let pipeline = pipeline_for(target_format);
        let export_pipeline = pipeline_for(EXPORT_FORMAT);
        let sampler = device.create_sampler(&wgpu::SamplerDescriptor {
            label: Some("trilinear"),
            mag_filter: wgpu::FilterMode::Linear,
            min_filter: wgpu::FilterMode::Linear,
            address_mode_u: wgpu::AddressMode::ClampToEdge,
            address_mode_v: wgpu::AddressMode::ClampToEdge,
            address_mode_w: wgpu::AddressMode::ClampToEdge,
            ..Default::default()
        });
        let uniforms = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("slice views"),
            size: SLOT_BYTES * UNIFORM_SLOTS as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        // One-voxel placeholders until there is something to show.
        let textures: Vec<(Slot, wgpu::Texture)> =
            Slot::ALL.iter().map(|&slot| (slot, create_texture(device, slot, [1, 1, 1]))).collect();
        let bind_group = create_bind_group(device, &layout, &sampler, &uniforms, &textures);
        SliceRenderer { target_format, pipeline, export_pipeline, layout, sampler, uniforms, textures, bind_group }
    }

    /// Replaces the textures of the given slots (uploading any still on the CPU).
    pub fn set_textures(&mut self, device: &wgpu::Device, queue: &wgpu::Queue, data: Vec<TextureData>) {
        for mut item in data {
            item.upload(device, queue);
            if let (Texels::Gpu(texture), Some(entry)) =
                (item.texels, self.textures.iter_mut().find(|(slot, _)| *slot == item.slot))
            {
                entry.1 = texture;
            }
        }
        self.bind_group = create_bind_group(device, &self.layout, &self.sampler, &self.uniforms, &self.textures);
    }

    fn draw(&self, pass: &mut wgpu::RenderPass<'_>, pipeline: &wgpu::RenderPipeline, slot: usize) {
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &self.bind_group, &[(slot as u64 * SLOT_BYTES) as u32]);
        pass.draw(0..3, 0..1);
    }

    /// Renders one view into an RGBA image of `width` × `height` pixels (blocks until the GPU is done).
    pub fn render_image(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        view: &ViewUniform,
        width: u32,
        height: u32,
    ) -> Result<image::RgbaImage, String> {
        queue.write_buffer(&self.uniforms, EXPORT_SLOT as u64 * SLOT_BYTES, bytemuck::bytes_of(view));
        let size = wgpu::Extent3d { width, height, depth_or_array_layers: 1 };
        let target = device.create_texture(&wgpu::TextureDescriptor {
            label: Some("slice export"),
            size,
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: EXPORT_FORMAT,
            usage: wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::COPY_SRC,
            view_formats: &[],
        });
        let padded_row = (width * 4).div_ceil(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT) * wgpu::COPY_BYTES_PER_ROW_ALIGNMENT;
        let readback = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("slice export readback"),
            size: padded_row as u64 * height as u64,
            usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
            mapped_at_creation: false,
        });
        let mut encoder =
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("slice export") });
        {
            let target_view = target.create_view(&wgpu::TextureViewDescriptor::default());
            let mut pass = encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
                label: Some("slice export"),
                color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                    view: &target_view,
                    depth_slice: None,
                    resolve_target: None,
                    ops: wgpu::Operations {
                        load: wgpu::LoadOp::Clear(wgpu::Color::BLACK),
                        store: wgpu::StoreOp::Store,
                    },
                })],
                ..Default::default()
            });
            self.draw(&mut pass, &self.export_pipeline, EXPORT_SLOT);
        }
        encoder.copy_texture_to_buffer(
            wgpu::TexelCopyTextureInfo {
                texture: &target,
                mip_level: 0,
                origin: wgpu::Origin3d::ZERO,
                aspect: wgpu::TextureAspect::All,
            },
            wgpu::TexelCopyBufferInfo {
                buffer: &readback,
                layout: wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(padded_row),
                    rows_per_image: Some(height),
                },
            },
            size,
        );
        queue.submit([encoder.finish()]);
        let (sender, receiver) = std::sync::mpsc::channel();
        readback.slice(..).map_async(wgpu::MapMode::Read, move |result| {
            let _ = sender.send(result);
        });
        device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| format!("the GPU did not finish: {e}"))?;
        receiver
            .recv()
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("could not read the rendered view back: {e}"))?;
        let mapped =
            readback.slice(..).get_mapped_range().map_err(|e| format!("could not map the rendered view: {e:?}"))?;
        let mut pixels = Vec::with_capacity((width * height * 4) as usize);
        for row in 0..height as usize {
            let start = row * padded_row as usize;
            pixels.extend_from_slice(&mapped[start..start + width as usize * 4]);
        }
        drop(mapped);
        readback.unmap();
        image::RgbaImage::from_raw(width, height, pixels).ok_or_else(|| "rendered image has the wrong size".into())
    }

    pub fn target_format(&self) -> wgpu::TextureFormat {
        self.target_format
    }
}

fn create_texture(device: &wgpu::Device, slot: Slot, shape: [usize; 3]) -> wgpu::Texture {
    device.create_texture(&wgpu::TextureDescriptor {
        label: Some("volume"),
        size: wgpu::Extent3d {
            width: shape[0] as u32,
            height: shape[1] as u32,
            depth_or_array_layers: shape[2] as u32,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D3,
        format: slot.format(),
        usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    })
}

fn create_bind_group(
    device: &wgpu::Device,
    layout: &wgpu::BindGroupLayout,
    sampler: &wgpu::Sampler,
    uniforms: &wgpu::Buffer,
    textures: &[(Slot, wgpu::Texture)],
) -> wgpu::BindGroup {
    let views: Vec<(u32, wgpu::TextureView)> = textures
        .iter()
        .map(|(slot, texture)| (slot.binding(), texture.create_view(&wgpu::TextureViewDescriptor::default())))
        .collect();
    let mut entries = vec![
        wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: uniforms,
                offset: 0,
                size: NonZeroU64::new(std::mem::size_of::<ViewUniform>() as u64),
            }),
        },
        wgpu::BindGroupEntry { binding: 1, resource: wgpu::BindingResource::Sampler(sampler) },
    ];
    for (binding, view) in &views {
        entries.push(wgpu::BindGroupEntry { binding: *binding, resource: wgpu::BindingResource::TextureView(view) });
    }
    device.create_bind_group(&wgpu::BindGroupDescriptor { label: Some("slice bindings"), layout, entries: &entries })
}

/// One view drawn inside egui's render pass.
pub struct SliceCallback {
    pub slot: usize,
    pub view: ViewUniform,
}

impl CallbackTrait for SliceCallback {
    fn prepare(
        &self,
        _device: &wgpu::Device,
        queue: &wgpu::Queue,
        _screen: &ScreenDescriptor,
        _encoder: &mut wgpu::CommandEncoder,
        resources: &mut CallbackResources,
    ) -> Vec<wgpu::CommandBuffer> {
        if let Some(renderer) = resources.get::<SliceRenderer>() {
            let offset = self.slot.min(EXPORT_SLOT - 1) as u64 * SLOT_BYTES;
            queue.write_buffer(&renderer.uniforms, offset, bytemuck::bytes_of(&self.view));
        }
        Vec::new()
    }

    fn paint(
        &self,
        _info: egui::PaintCallbackInfo,
        pass: &mut wgpu::RenderPass<'static>,
        resources: &CallbackResources,
    ) {
        if let Some(renderer) = resources.get::<SliceRenderer>() {
            renderer.draw(pass, &renderer.pipeline, self.slot.min(EXPORT_SLOT - 1));
        }
    }
}

/// The egui shape that draws `view` into `rect`.
pub fn slice_shape(rect: egui::Rect, slot: usize, view: ViewUniform) -> egui::Shape {
    egui::Shape::Callback(egui_wgpu::Callback::new_paint_callback(rect, SliceCallback { slot, view }))
}
