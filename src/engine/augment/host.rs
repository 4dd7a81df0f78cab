//! The CPU's augmentation: the views [`super::augment`] computes with tensor ops, computed on the
//! host in one pass per image. On the browser's CPU fallback the tensor ops (a sampling grid, a
//! dozen full-batch passes for the jitter, a 3x3 matrix product per image for the hue) took a
//! fifth of a training step, while the helper workers waited for the batch; here a view's
//! crop is two precomputed lists of taps (the crop is separable) and its colour work one loop
//! over its pixels. The test below holds it to the tensor path on every kind of parameter.

use super::{BatchWide, MEAN, STD, ViewParams, axis, blur_kernel, hue_matrix};

/// One view of every image: `pixels` stored RGB (HWC, `side` px) -> normalised [n, 3, s, s]
/// (row-major), what [`super::augment`] gives for the same images [`super::upload`]ed, the
/// hue matrix and the blur applied as `wide` says (the tensor path's choice for the batch).
pub fn view(pixels: &[&[u8]], side: usize, p: &ViewParams, s: usize, wide: BatchWide) -> Vec<f32> {
    let plane = s * s;
    let mut out = vec![0f32; pixels.len() * 3 * plane];
    let BatchWide { hue, blur } = wide;
    let ax = axis(s);
    for (i, (img, o)) in pixels
        .iter()
        .zip(out.chunks_exact_mut(3 * plane))
        .enumerate()
    {
        resample(img, side, &p.crop[i], &ax, o);
        let colour = Colour {
            brightness: p.brightness[i],
            contrast: p.contrast[i],
            saturation: p.saturation[i],
            hue: hue.then(|| hue_matrix(p.hue[i])),
        };
        colour.apply(o, plane);
        if blur {
            blur_image(o, s, p.blur_sigma[i]);
        }
        for (c, ch) in o.chunks_exact_mut(plane).enumerate() {
            ch.iter_mut().for_each(|v| *v = (*v - MEAN[c]) / STD[c]);
        }
    }
    out
}

/// One axis of a crop: for each output pixel its two source taps (clamped to the image, as
/// grid sampling's border padding) and the second tap's weight.
fn taps(centre: f32, half: f32, ax: &[f32], size: usize) -> Vec<(usize, usize, f32)> {
    let last = (size - 1) as f64;
    ax.iter()
        .map(|&a| {
            let g = centre + half * a; // as the tensor path's grid, in f32
            // grid_sample's unnormalisation (align_corners = false), then the border clamp
            let px = ((g as f64 + 1.0) * size as f64 / 2.0 - 0.5).clamp(0.0, last);
            let x0 = px.floor();
            let clamp = |v: f64| v.clamp(0.0, last) as usize;
            (clamp(x0), clamp(x0 + 1.0), (px - x0) as f32)
        })
        .collect()
}

/// The bilinear crop (and flip) of one stored image into `o` [3, s, s], in [0, 1].
fn resample(img: &[u8], side: usize, crop: &[f32; 4], ax: &[f32], o: &mut [f32]) {
    let s = ax.len();
    let xs = taps(crop[0], crop[2], ax, side);
    let ys = taps(crop[1], crop[3], ax, side);
    let at = |y: usize, x: usize, c: usize| img[(y * side + x) * 3 + c] as f32 / 255.0;
    for (c, ch) in o.chunks_exact_mut(s * s).enumerate() {
        for (row, &(y0, y1, fy)) in ch.chunks_exact_mut(s).zip(&ys) {
            for (v, &(x0, x1, fx)) in row.iter_mut().zip(&xs) {
                *v = at(y0, x0, c) * ((1.0 - fx) * (1.0 - fy))
                    + at(y1, x0, c) * ((1.0 - fx) * fy)
                    + at(y0, x1, c) * (fx * (1.0 - fy))
                    + at(y1, x1, c) * (fx * fy);
            }
        }
    }
}

/// One image's colour jitter, in the tensor path's order and clamps.
struct Colour {
    brightness: f32,
    contrast: f32,
    saturation: f32,
    hue: Option<[f32; 9]>,
}

impl Colour {
    fn apply(&self, o: &mut [f32], plane: usize) {
        let gray = |r: f32, g: f32, b: f32| r * 0.299 + g * 0.587 + b * 0.114;
        let unit = |v: f32| v.clamp(0.0, 1.0);
        o.iter_mut().for_each(|v| *v = unit(*v * self.brightness));
        let (r, rest) = o.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        let mean = (0..plane).map(|i| gray(r[i], g[i], b[i])).sum::<f32>() / plane as f32;
        for v in r.iter_mut().chain(g.iter_mut()).chain(b.iter_mut()) {
            *v = unit((*v - mean) * self.contrast + mean);
        }
        for i in 0..plane {
            let y = gray(r[i], g[i], b[i]);
            r[i] = unit(y + (r[i] - y) * self.saturation);
            g[i] = unit(y + (g[i] - y) * self.saturation);
            b[i] = unit(y + (b[i] - y) * self.saturation);
        }
        if let Some(m) = self.hue {
            for i in 0..plane {
                let (x, y, z) = (r[i], g[i], b[i]);
                r[i] = unit(m[0] * x + m[1] * y + m[2] * z);
                g[i] = unit(m[3] * x + m[4] * y + m[5] * z);
                b[i] = unit(m[6] * x + m[7] * y + m[8] * z);
            }
        }
    }
}

/// The separable Gaussian blur of one image [3, s, s] (zero outside it, as the convolution's
/// padding), along rows, then columns.
fn blur_image(o: &mut [f32], s: usize, sigma: f32) {
    let w = blur_kernel(sigma, s);
    let half = w.len() / 2;
    let mut tmp = vec![0f32; s * s];
    for ch in o.chunks_exact_mut(s * s) {
        let taps = |i: usize| {
            (0..w.len())
                .filter_map(move |t| (i + t).checked_sub(half).filter(|&j| j < s).map(|j| (t, j)))
        };
        for y in 0..s {
            for x in 0..s {
                tmp[y * s + x] = taps(x).map(|(t, j)| w[t] * ch[y * s + j]).sum();
            }
        }
        for y in 0..s {
            for x in 0..s {
                ch[y * s + x] = taps(y).map(|(t, j)| w[t] * tmp[j * s + x]).sum();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ViewParams, augment, upload};
    use crate::engine::config::AugPreset;
    use crate::engine::rng::Rng;
    use burn::prelude::*;

    /// Images with edges, flat areas and every hue: a crop, a flip or a colour off by one
    /// place shows.
    fn images(n: usize, side: usize) -> Vec<Vec<u8>> {
        let mut rng = Rng::new(11);
        (0..n)
            .map(|k| {
                (0..side * side)
                    .flat_map(|i| {
                        let (y, x) = (i / side, i % side);
                        let edge = if (x + k) * 3 < side * 2 { 200 } else { 40 };
                        [edge, (y * 255 / side) as u8, (rng.range(0.0, 255.0)) as u8]
                    })
                    .collect()
            })
            .collect()
    }

    fn worst(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn host_views_equal_the_tensor_views_for_every_kind_of_parameter() {
        let device = Device::flex();
        for (stored, out, blur) in [(36, 32, 0.0), (40, 32, 1.0), (32, 32, 0.5), (72, 64, 1.0)] {
            let imgs = images(12, stored);
            let refs: Vec<&[u8]> = imgs.iter().map(|v| v.as_slice()).collect();
            let mut aug = AugPreset::V1.recipe(out);
            aug.hue = 0.4;
            aug.grayscale_prob = 0.3;
            aug.blur_prob = blur;
            let mut rng = Rng::new(stored as u64);
            for _ in 0..3 {
                let p = ViewParams::sample(&mut rng, refs.len(), &aug, out);
                let want: Vec<f32> = augment(upload(&refs, stored, &device), &p, out)
                    .into_data()
                    .try_into_vec_as()
                    .unwrap();
                let got = super::view(&refs, stored, &p, out, p.batch_wide());
                // A part of the batch, as a helper computes it: its rows of the same views.
                let rows = [1, 4, 5, 9];
                let part: Vec<&[u8]> = rows.iter().map(|&i| refs[i]).collect();
                let mine = super::view(&part, stored, &p.select(rows), out, p.batch_wide());
                let plane = 3 * out * out;
                for (k, &i) in rows.iter().enumerate() {
                    assert_eq!(mine[k * plane..][..plane], got[i * plane..][..plane]);
                }
                let e = worst(&got, &want);
                assert!(
                    e < 2e-5,
                    "{stored} px -> {out}, blur {blur}: worst difference {e}"
                );
            }
        }
        // The hue matrix off, as for a batch whose every image keeps its hue.
        let imgs = images(4, 36);
        let refs: Vec<&[u8]> = imgs.iter().map(|v| v.as_slice()).collect();
        let mut aug = AugPreset::V2.recipe(32);
        aug.hue = 0.0;
        let p = ViewParams::sample(&mut Rng::new(5), 4, &aug, 32);
        let want: Vec<f32> = augment(upload(&refs, 36, &device), &p, 32)
            .into_data()
            .try_into_vec_as()
            .unwrap();
        assert!(worst(&super::view(&refs, 36, &p, 32, p.batch_wide()), &want) < 2e-5);
        let floats = p.to_floats();
        assert_eq!(floats.len(), 4 * super::ViewParams::FLOATS);
        assert_eq!(super::ViewParams::from_floats(&floats), p);
    }
}
