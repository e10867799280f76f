// One slice view of volumes that share the fixed image's grid: the fixed image, the moving image,
// or the comparison image (moving warped) with an overlay. The view's rectangle is covered by one
// triangle; each fragment interpolates its continuous voxel index from the view's frame.
// colormap.wgsl is prepended by the renderer.

struct View {
    // Voxel index at the rectangle's top-left corner, and its change across the width / height.
    origin: vec4<f32>,
    across: vec4<f32>,
    down: vec4<f32>,
    // xyz: grid shape in voxels; w: how many grid voxels one texel of the field texture spans.
    shape: vec4<f32>,
    // xyz: shape of the field texture.
    field_shape: vec4<f32>,
    // xyz: voxel spacing, mm.
    spacing: vec4<f32>,
    // x: window low (HU), y: window width (HU), z: overlay opacity, w: checkerboard cell (voxels).
    window: vec4<f32>,
    // x: grid line spacing (mm), y: |log2 det| shown at full colour, z: difference at full colour (HU).
    extra: vec4<f32>,
    // x: image (0 fixed, 1 moving, 2 comparison), y: overlay, z: tissue, w: in-plane axes (h + 4 v).
    modes: vec4<u32>,
};

const OVERLAY_NONE: u32 = 0u;
const OVERLAY_BLEND: u32 = 1u;
const OVERLAY_CHECKERBOARD: u32 = 2u;
const OVERLAY_DIFFERENCE: u32 = 3u;
const OVERLAY_GRID: u32 = 4u;
const OVERLAY_JACOBIAN: u32 = 5u;
const OVERLAY_TISSUES: u32 = 6u;
const OVERLAY_MOMENTUM: u32 = 7u;

@group(0) @binding(0) var<uniform> view: View;
@group(0) @binding(1) var linear_sampler: sampler;
@group(0) @binding(2) var fixed_image: texture_3d<f32>;
@group(0) @binding(3) var moving_image: texture_3d<f32>;
@group(0) @binding(4) var compared_image: texture_3d<f32>;
@group(0) @binding(5) var jacobian: texture_3d<f32>;
@group(0) @binding(6) var displacement: texture_3d<f32>;
@group(0) @binding(7) var tissue_labels: texture_3d<u32>;
@group(0) @binding(8) var momentum: texture_3d<f32>;

struct VertexOut {
    @builtin(position) position: vec4<f32>,
    @location(0) uv: vec2<f32>,
};

@vertex
fn vs_main(@builtin(vertex_index) vertex: u32) -> VertexOut {
    // One triangle that covers the viewport: uv (0,0), (2,0), (0,2).
    let uv = vec2<f32>(f32((vertex << 1u) & 2u), f32(vertex & 2u));
    var out: VertexOut;
    out.position = vec4<f32>(uv.x * 2.0 - 1.0, 1.0 - uv.y * 2.0, 0.0, 1.0);
    out.uv = uv;
    return out;
}

fn sample_scalar(volume: texture_3d<f32>, index: vec3<f32>) -> f32 {
    return textureSampleLevel(volume, linear_sampler, (index + 0.5) / view.shape.xyz, 0.0).r;
}

// Whether a voxel's tissue code (0 outside the body, 1 body, 2 fat, 3 water, 4 bone) belongs to
// tissue `t` (0 fat, 1 water, 2 bone, 3 body: the order of the metrics' tissue list).
fn in_tissue(code: u32, t: u32) -> bool {
    if (t == 3u) {
        return code >= 1u;
    }
    return code == t + 2u;
}

// Distance to the nearest grid line, in pixels, for a coordinate in grid units.
fn line_distance_px(c: f32, c_per_px: f32) -> f32 {
    return abs(fract(c + 0.5) - 0.5) / max(c_per_px, 1e-6);
}

@fragment
fn fs_main(in: VertexOut) -> @location(0) vec4<f32> {
    let index = view.origin.xyz + in.uv.x * view.across.xyz + in.uv.y * view.down.xyz;

    // Everything that needs screen-space derivatives comes first, in uniform control flow.
    let field_coord = (index / view.shape.w + 0.5) / view.field_shape.xyz;
    let u = textureSampleLevel(displacement, linear_sampler, field_coord, 0.0).xyz;
    let mapped_mm = (index + u) * view.spacing.xyz / max(view.extra.x, 1e-3);
    let h = view.modes.w & 3u;
    let v = (view.modes.w >> 2u) & 3u;
    let lines = min(
        line_distance_px(mapped_mm[h], fwidth(mapped_mm[h])),
        line_distance_px(mapped_mm[v], fwidth(mapped_mm[v]))
    );

    let outside = any(index < vec3<f32>(-0.5)) || any(index > view.shape.xyz - vec3<f32>(0.5));
    if (outside) {
        return vec4<f32>(0.06, 0.06, 0.07, 1.0);
    }
    let low = view.window.x;
    let width = view.window.y;
    let opacity = view.window.z;
    let fixed_value = sample_scalar(fixed_image, index);
    if (view.modes.x == 0u) {
        return vec4<f32>(window_grey(fixed_value, low, width), 1.0);
    }
    if (view.modes.x == 1u) {
        return vec4<f32>(window_grey(sample_scalar(moving_image, index), low, width), 1.0);
    }
    let compared = sample_scalar(compared_image, index);
    let fixed_grey = window_grey(fixed_value, low, width);
    let compared_grey = window_grey(compared, low, width);
    var colour = compared_grey;
    switch view.modes.y {
        case OVERLAY_BLEND: {
            colour = mix(fixed_grey, compared_grey, opacity);
        }
        case OVERLAY_CHECKERBOARD: {
            let cell = floor(index / max(view.window.w, 1.0) + 0.5);
            let parity = i32(cell.x + cell.y + cell.z) & 1;
            if (parity == 0) {
                colour = fixed_grey;
            }
        }
        case OVERLAY_DIFFERENCE: {
            colour = diverging((compared - fixed_value) / max(view.extra.z, 1.0));
        }
        case OVERLAY_GRID: {
            let line = clamp(1.5 - lines, 0.0, 1.0) * opacity;
            colour = mix(compared_grey, vec3<f32>(1.0, 0.85, 0.1), line);
        }
        case OVERLAY_JACOBIAN: {
            let det = sample_scalar(jacobian, index);
            var map = diverging(log2(max(det, 1e-6)) / max(view.extra.y, 1e-3));
            if (det <= 0.0) {
                map = vec3<f32>(0.0, 0.9, 0.2);
            }
            colour = mix(compared_grey, map, opacity);
        }
        case OVERLAY_TISSUES: {
            let voxel = clamp(vec3<i32>(round(index)), vec3<i32>(0), vec3<i32>(view.shape.xyz) - vec3<i32>(1));
            let code = textureLoad(tissue_labels, voxel, 0).r;
            let in_fixed = in_tissue(code & 15u, view.modes.z);
            let in_compared = in_tissue(code >> 4u, view.modes.z);
            var mark = fixed_grey;
            if (in_fixed && in_compared) {
                mark = vec3<f32>(1.0, 0.9, 0.1);
            } else if (in_fixed) {
                mark = vec3<f32>(1.0, 0.25, 0.25);
            } else if (in_compared) {
                mark = vec3<f32>(0.25, 0.6, 1.0);
            }
            colour = mix(fixed_grey, mark, opacity);
        }
        case OVERLAY_MOMENTUM: {
            // Nearest voxel: the tile borders are single planes of negative values.
            let voxel = clamp(vec3<i32>(round(index)), vec3<i32>(0), vec3<i32>(view.shape.xyz) - vec3<i32>(1));
            let m = textureLoad(momentum, min(voxel, vec3<i32>(textureDimensions(momentum)) - vec3<i32>(1)), 0).r;
            if (m < 0.0) {
                colour = vec3<f32>(0.1, 0.9, 1.0);
            } else {
                colour = mix(compared_grey, heat(m / max(view.extra.w, 1e-6)), opacity);
            }
        }
        default: {}
    }
    return vec4<f32>(colour, 1.0);
}
