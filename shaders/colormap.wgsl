// Colour maps shared by the shaders that draw volumes (the same maps as the QA figures).

// Grey level of a value through a window: `low` maps to black, `low + width` to white.
fn window_grey(value: f32, low: f32, width: f32) -> vec3<f32> {
    let g = clamp((value - low) / width, 0.0, 1.0);
    return vec3<f32>(g, g, g);
}

// Blue (-1) through white (0) to red (+1), clamped.
fn diverging(t: f32) -> vec3<f32> {
    let s = clamp(t, -1.0, 1.0);
    if (s >= 0.0) {
        return vec3<f32>(1.0, 1.0 - s, 1.0 - s);
    }
    return vec3<f32>(1.0 + s, 1.0 + s, 1.0);
}

// Black (0) through red and yellow to white (1), clamped: a length.
fn heat(t: f32) -> vec3<f32> {
    let s = clamp(t, 0.0, 1.0);
    return vec3<f32>(clamp(3.0 * s, 0.0, 1.0), clamp(3.0 * s - 1.0, 0.0, 1.0), clamp(3.0 * s - 2.0, 0.0, 1.0));
}
