//! Planar contours and the masks they enclose, on one image slice at a time, in the slice's
//! index coordinates (x along columns, y along rows, one unit per pixel, pixel centres at whole
//! numbers).
//!
//! Several loops on one slice combine by the even-odd rule: a loop inside another is a hole,
//! as planning systems (and plastimatch with `--xor-contours`) read RT structure sets.

pub mod carry;

/// A closed loop of points (the last joins the first).
pub type Loop = Vec<[f64; 2]>;

/// How many sub-rows per pixel row the coverage is sampled at (exact along each row).
const SUB_ROWS: usize = 4;

/// The share of each pixel (nx × ny, x fastest) that lies inside the loops by the even-odd
/// rule: exact along rows, sampled on four lines per row.
pub fn coverage(loops: &[Loop], nx: usize, ny: usize) -> Vec<f32> {
    let mut share = vec![0f32; nx * ny];
    let mut crossings = Vec::new();
    for j in 0..ny {
        for sub in 0..SUB_ROWS {
            let y = j as f64 - 0.5 + (sub as f64 + 0.5) / SUB_ROWS as f64;
            crossings.clear();
            for points in loops {
                for (n, a) in points.iter().enumerate() {
                    let b = points[(n + 1) % points.len()];
                    // Half-open rule: an edge counts when y lies in [min, max) of its ends.
                    if (a[1] <= y) != (b[1] <= y) {
                        crossings.push(a[0] + (y - a[1]) * (b[0] - a[0]) / (b[1] - a[1]));
                    }
                }
            }
            crossings.sort_by(f64::total_cmp);
            for span in crossings.chunks_exact(2) {
                let (start, end) = (span[0], span[1]);
                // Pixel i covers [i − 0.5, i + 0.5).
                let first = (start + 0.5).floor().max(0.0) as usize;
                let last = ((end + 0.5).floor().min(nx as f64 - 1.0)).max(-1.0);
                if last < 0.0 {
                    continue;
                }
                for i in first..=last as usize {
                    let low = (i as f64 - 0.5).max(start);
                    let high = (i as f64 + 0.5).min(end);
                    if high > low {
                        share[j * nx + i] += ((high - low) / SUB_ROWS as f64) as f32;
                    }
                }
            }
        }
    }
    share
}

/// The closed loops where `values` (nx × ny, x fastest) crosses `level`, by marching squares
/// on the pixel centres; outside the slice counts as below the level, so every loop closes.
/// Saddles are resolved by the cell's mean.
pub fn iso_loops(values: &[f32], nx: usize, ny: usize, level: f32) -> Vec<Loop> {
    use std::collections::HashMap;
    // Padded by one pixel of "outside" all round: padded (x, y) = original (x − 1, y − 1).
    let (px, py) = (nx + 2, ny + 2);
    let value = |x: usize, y: usize| -> f32 {
        if x == 0 || y == 0 || x > nx || y > ny { f32::NEG_INFINITY } else { values[(y - 1) * nx + (x - 1)] }
    };
    // An edge point is named by its edge: (x, y, horizontal) joins (x, y)–(x + 1, y) or, when not
    // horizontal, (x, y)–(x, y + 1).
    type Edge = (usize, usize, bool);
    let point_on = |edge: Edge| -> [f64; 2] {
        let (x, y, horizontal) = edge;
        let (x2, y2) = if horizontal { (x + 1, y) } else { (x, y + 1) };
        let (a, b) = (value(x, y), value(x2, y2));
        let t = if a.is_infinite() {
            0.0
        } else if b.is_infinite() {
            1.0
        } else {
            ((level - a) / (b - a)).clamp(0.0, 1.0) as f64
        };
        let (fx, fy) = (x as f64 + t * (x2 as f64 - x as f64), y as f64 + t * (y2 as f64 - y as f64));
        // Clamp points at the padding onto the slice's border pixels.
        [(fx - 1.0).clamp(-0.5, nx as f64 - 0.5), (fy - 1.0).clamp(-0.5, ny as f64 - 0.5)]
    };
    let mut links: HashMap<Edge, Vec<Edge>> = HashMap::new();
    let mut connect = |a: Edge, b: Edge| {
        links.entry(a).or_default().push(b);
        links.entry(b).or_default().push(a);
    };
    for y in 0..py - 1 {
        for x in 0..px - 1 {
            let corners = [value(x, y), value(x + 1, y), value(x + 1, y + 1), value(x, y + 1)];
            let above = corners.map(|v| v >= level);
            let case = above.iter().enumerate().fold(0, |c, (n, &a)| c | (usize::from(a) << n));
            if case == 0 || case == 15 {
                continue;
            }
            let bottom = (x, y, true);
            let right = (x + 1, y, false);
            let top = (x, y + 1, true);
            let left = (x, y, false);
            let mean_above = {
                let finite: Vec<f32> = corners.iter().map(|&v| if v.is_finite() { v } else { level - 1.0 }).collect();
                finite.iter().sum::<f32>() / 4.0 >= level
            };
            match case {
                1 | 14 => connect(left, bottom),
                2 | 13 => connect(bottom, right),
                3 | 12 => connect(left, right),
                4 | 11 => connect(right, top),
                6 | 9 => connect(bottom, top),
                7 | 8 => connect(left, top),
                5 => {
                    if mean_above {
                        connect(left, top);
                        connect(bottom, right);
                    } else {
                        connect(left, bottom);
                        connect(right, top);
                    }
                }
                10 => {
                    if mean_above {
                        connect(left, bottom);
                        connect(right, top);
                    } else {
                        connect(left, top);
                        connect(bottom, right);
                    }
                }
                _ => unreachable!(),
            }
        }
    }
    let mut loops = Vec::new();
    let mut starts: Vec<Edge> = links.keys().copied().collect();
    starts.sort();
    let mut visited = std::collections::HashSet::new();
    for start in starts {
        if visited.contains(&start) {
            continue;
        }
        let mut points = Vec::new();
        let (mut previous, mut current) = (start, start);
        loop {
            visited.insert(current);
            points.push(point_on(current));
            let next = links[&current].iter().copied().find(|&e| e != previous && !visited.contains(&e));
            match next {
                Some(next) => (previous, current) = (current, next),
                None => break,
            }
        }
        if points.len() >= 3 {
            loops.push(points);
        }
    }
    loops
}

/// The area a loop encloses (positive when counter-clockwise in x, y).
pub fn signed_area(points: &[[f64; 2]]) -> f64 {
    let n = points.len();
    (0..n)
        .map(|i| {
            let (a, b) = (points[i], points[(i + 1) % n]);
            a[0] * b[1] - b[0] * a[1]
        })
        .sum::<f64>()
        / 2.0
}

/// The first pair of edges (by their first points' indices) of a closed loop that cross each
/// other, if any. Edges that share an end are not counted as crossing there.
pub fn self_intersection(points: &[[f64; 2]]) -> Option<(usize, usize)> {
    let n = points.len();
    if n < 4 {
        return None;
    }
    let orient = |a: [f64; 2], b: [f64; 2], c: [f64; 2]| (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]);
    for i in 0..n {
        let (a, b) = (points[i], points[(i + 1) % n]);
        for j in i + 2..n {
            if i == 0 && j == n - 1 {
                continue; // neighbours through the closing edge
            }
            let (c, d) = (points[j], points[(j + 1) % n]);
            let (d1, d2) = (orient(a, b, c), orient(a, b, d));
            let (d3, d4) = (orient(c, d, a), orient(c, d, b));
            if ((d1 > 0.0 && d2 < 0.0) || (d1 < 0.0 && d2 > 0.0)) && ((d3 > 0.0 && d4 < 0.0) || (d3 < 0.0 && d4 > 0.0))
            {
                return Some((i, j));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn circle(cx: f64, cy: f64, r: f64, n: usize) -> Loop {
        (0..n)
            .map(|k| {
                let t = 2.0 * std::f64::consts::PI * k as f64 / n as f64;
                [cx + r * t.cos(), cy + r * t.sin()]
            })
            .collect()
    }

    #[test]
    fn coverage_of_a_square_is_exact_and_of_a_disc_is_its_area() {
        let square = vec![[1.5, 1.5], [4.5, 1.5], [4.5, 3.5], [1.5, 3.5]];
        let share = coverage(&[square], 8, 6);
        let total: f32 = share.iter().sum();
        assert!((total - 6.0).abs() < 1e-5, "{total}");
        assert_eq!(share[2 * 8 + 2], 1.0);
        assert_eq!(share[0], 0.0);
        let disc = circle(20.0, 20.0, 10.0, 400);
        let total: f32 = coverage(&[disc], 40, 40).iter().sum();
        assert!((total as f64 - std::f64::consts::PI * 100.0).abs() < 1.0, "{total}");
    }

    #[test]
    fn a_loop_inside_another_is_a_hole() {
        let outer = circle(20.0, 20.0, 10.0, 200);
        let inner = circle(20.0, 20.0, 4.0, 200);
        let share = coverage(&[outer, inner], 40, 40);
        assert_eq!(share[20 * 40 + 20], 0.0, "the centre is in the hole");
        assert_eq!(share[20 * 40 + 27], 1.0, "the ring is filled");
        let total: f32 = share.iter().sum();
        assert!((total as f64 - std::f64::consts::PI * 84.0).abs() < 1.5, "{total}");
    }

    #[test]
    fn iso_loops_give_back_the_outline_of_a_covered_disc_with_its_hole() {
        let outer = circle(15.0, 14.0, 9.0, 300);
        let inner = circle(15.0, 14.0, 3.5, 300);
        let share = coverage(&[outer, inner], 32, 30);
        let loops = iso_loops(&share, 32, 30, 0.5);
        assert_eq!(loops.len(), 2, "an outer and an inner loop");
        let mut areas: Vec<f64> = loops.iter().map(|l| signed_area(l).abs()).collect();
        areas.sort_by(f64::total_cmp);
        assert!((areas[0] - std::f64::consts::PI * 3.5 * 3.5).abs() < 2.0, "{areas:?}");
        assert!((areas[1] - std::f64::consts::PI * 81.0).abs() < 3.0, "{areas:?}");
        // Filling the extracted loops again gives the same mask (thresholded at one half).
        let again = coverage(&loops, 32, 30);
        let differ = share.iter().zip(&again).filter(|&(a, b)| (*a >= 0.5) != (*b >= 0.5)).count();
        assert!(differ <= 6, "{differ} pixels differ");
        for l in &loops {
            assert!(self_intersection(l).is_none());
        }
    }

    #[test]
    fn a_region_touching_the_slice_border_still_closes() {
        let mut values = vec![0f32; 10 * 8];
        for j in 0..8 {
            for i in 0..4 {
                values[j * 10 + i] = 1.0;
            }
        }
        let loops = iso_loops(&values, 10, 8, 0.5);
        assert_eq!(loops.len(), 1);
        let area = signed_area(&loops[0]).abs();
        assert!((area - 4.0 * 8.0).abs() < 2.0, "{area}");
    }

    #[test]
    fn a_figure_eight_crosses_itself_and_a_circle_does_not() {
        assert!(self_intersection(&circle(0.0, 0.0, 5.0, 50)).is_none());
        let bow_tie = vec![[0.0, 0.0], [4.0, 4.0], [4.0, 0.0], [0.0, 4.0]];
        assert!(self_intersection(&bow_tie).is_some());
        let mut swapped = circle(0.0, 0.0, 5.0, 72);
        swapped.swap(5, 30);
        assert!(self_intersection(&swapped).is_some());
    }
}
