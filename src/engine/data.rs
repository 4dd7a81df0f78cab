//! The in-memory data set the trainer reads: square u8 RGB images of one stored size, optional
//! labels (from folder names; used only for evaluation), and the shared resize rule that makes
//! the browser and the CLI see the same pixels for the same decoded image.

use serde::{Deserialize, Serialize};

use super::error::EngineError;

/// Most label classes that metrics are computed for: k-means with K = classes, the contingency
/// tables of AMI and the linear probe grow with it, and thousands of folders would hold up
/// every E-step (and a pause waiting for it). More classes: no label metrics.
pub const MAX_LABEL_CLASSES: usize = 500;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Dataset {
    /// Side of every stored image in pixels.
    pub side: usize,
    /// `len() * side * side * 3` bytes, RGB, row-major.
    pub pixels: Vec<u8>,
    /// A name per image (its path relative to the chosen folder).
    pub names: Vec<String>,
    /// Class index per image, where the images came in labelled folders.
    pub labels: Option<Vec<u32>>,
    pub class_names: Vec<String>,
    /// Second-level labels (`coarse/fine` folders), where every image has one.
    #[serde(default)]
    pub fine_labels: Option<Vec<u32>>,
    #[serde(default)]
    pub fine_class_names: Vec<String>,
}

/// Appends image `index`'s label to `labels`, naming new classes in `names`; drops all labels
/// when an image has none (evaluation needs every image labelled).
fn track_label(
    labels: &mut Option<Vec<u32>>,
    names: &mut Vec<String>,
    index: usize,
    class: Option<&str>,
) {
    let class = class.map(|c| match names.iter().position(|n| n == c) {
        Some(i) => i as u32,
        None => {
            names.push(c.to_string());
            (names.len() - 1) as u32
        }
    });
    match (class, labels.as_mut()) {
        (Some(c), Some(l)) => l.push(c),
        (Some(c), None) if index == 0 => *labels = Some(vec![c]),
        _ => *labels = None,
    }
}

impl Dataset {
    pub fn new(side: usize) -> Self {
        Self {
            side,
            ..Default::default()
        }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn image(&self, i: usize) -> &[u8] {
        let s = self.side * self.side * 3;
        &self.pixels[i * s..(i + 1) * s]
    }

    /// Adds an image already resized to `side`; `class` names its folder, if any.
    pub fn push(
        &mut self,
        name: String,
        rgb: &[u8],
        class: Option<&str>,
    ) -> Result<(), EngineError> {
        self.push_labelled(name, rgb, class, None)
    }

    /// Adds an image with a label and a second-level (fine) label.
    pub fn push_labelled(
        &mut self,
        name: String,
        rgb: &[u8],
        class: Option<&str>,
        fine: Option<&str>,
    ) -> Result<(), EngineError> {
        let want = self.side * self.side * 3;
        if rgb.len() != want {
            return Err(EngineError::Shape(format!(
                "image {name} has {} bytes, expected {want} ({side}x{side} RGB)",
                rgb.len(),
                side = self.side
            )));
        }
        self.pixels.extend_from_slice(rgb);
        let index = self.names.len();
        self.names.push(name);
        track_label(&mut self.labels, &mut self.class_names, index, class);
        track_label(
            &mut self.fine_labels,
            &mut self.fine_class_names,
            index,
            fine,
        );
        Ok(())
    }

    /// Bytes of pixel memory held.
    /// `count` images to show augmentations of, spread over the set: evenly spaced in the order
    /// of their names, so that the page and the CLI pick the same ones whatever order the files
    /// arrived in.
    pub fn preview_indices(&self, count: usize) -> Vec<usize> {
        let n = self.len();
        let mut by_name: Vec<usize> = (0..n).collect();
        by_name.sort_by(|&a, &b| self.names[a].cmp(&self.names[b]));
        let count = count.min(n);
        (0..count).map(|i| by_name[i * n / count]).collect()
    }

    pub fn memory_bytes(&self) -> usize {
        self.pixels.len()
    }

    /// Fine labels, if every image has one and there are 2 to [`MAX_LABEL_CLASSES`] fine classes.
    pub fn eval_fine_labels(&self) -> Option<&[u32]> {
        self.fine_labels
            .as_deref()
            .filter(|l| l.len() == self.len())
            .filter(|_| (2..=MAX_LABEL_CLASSES).contains(&self.fine_class_names.len()))
    }

    /// Labels, if every image has one and there are at least two classes.
    /// Labels for measuring, if every image has one and there are 2 to [`MAX_LABEL_CLASSES`]
    /// classes.
    pub fn eval_labels(&self) -> Option<&[u32]> {
        self.labels
            .as_deref()
            .filter(|l| l.len() == self.len())
            .filter(|_| (2..=MAX_LABEL_CLASSES).contains(&self.class_names.len()))
    }
}

/// Indices of `take` items spread evenly over `n` (all of them when `take >= n`): how the page
/// and the CLI pick a smaller sample set, so both get the same images.
pub fn spread(n: usize, take: usize) -> impl Iterator<Item = usize> {
    let take = take.clamp(1, n.max(1)).min(n);
    (0..take).map(move |j| j * n / take)
}

/// The built-in sample set's index (www/sample/emoji.json, made by scripts/make-sample-set.py):
/// tiles of `side` px in an atlas `cols` tiles wide, `[group, subgroup, name]` per tile.
#[derive(Deserialize)]
pub struct SampleIndex {
    pub side: usize,
    pub cols: usize,
    pub count: usize,
    pub items: Vec<[String; 3]>,
}

/// One tile of the sample atlas: where it lies and what it is called.
#[derive(Debug, PartialEq)]
pub struct SampleTile {
    pub x: usize,
    pub y: usize,
    /// `group/subgroup/name.png` (a slash inside a part becomes `-`).
    pub path: String,
}

impl SampleIndex {
    /// `limit` tiles spread over the set, checked against an atlas of `w` x `h` pixels: an
    /// empty, stale or damaged index (a cached file of another build) is an error, not a panic.
    pub fn tiles(
        &self,
        w: usize,
        h: usize,
        limit: Option<usize>,
    ) -> Result<Vec<SampleTile>, String> {
        let n = self.count.min(self.items.len());
        if n == 0 || self.side == 0 || self.cols == 0 {
            return Err(
                "the sample index lists no images (reload the page to fetch it again)".into(),
            );
        }
        let rows = n.div_ceil(self.cols);
        let fits = self.cols.checked_mul(self.side).is_some_and(|cw| cw <= w)
            && rows.checked_mul(self.side).is_some_and(|rh| rh <= h);
        if !fits {
            return Err(format!(
                "the sample index ({n} tiles of {0}x{0} in {1} columns) does not match its \
                 {w}x{h} atlas (reload the page to fetch both again)",
                self.side, self.cols
            ));
        }
        Ok(spread(n, limit.unwrap_or(n).max(1))
            .map(|i| {
                let part = |k: usize| self.items[i][k].replace('/', "-");
                SampleTile {
                    x: (i % self.cols) * self.side,
                    y: (i / self.cols) * self.side,
                    path: format!("{}/{}/{}.png", part(0), part(1), part(2)),
                }
            })
            .collect())
    }
}

/// Resizes an RGBA image (`w` x `h`) to `side` x `side` RGB: the short side is scaled to `side`
/// with an area (box) filter, the long side centre-cropped, alpha composited on white.
pub fn resize_rgba_square(rgba: &[u8], w: usize, h: usize, side: usize) -> Vec<u8> {
    assert_eq!(rgba.len(), w * h * 4, "RGBA buffer does not match {w}x{h}");
    let short = w.min(h) as f64;
    let scale = short / side as f64; // source pixels per output pixel
    let (x_off, y_off) = ((w as f64 - short) / 2.0, (h as f64 - short) / 2.0);
    let mut out = Vec::with_capacity(side * side * 3);
    let src = |x: usize, y: usize| -> [f64; 3] {
        let p = &rgba[(y * w + x) * 4..(y * w + x) * 4 + 4];
        let a = p[3] as f64 / 255.0;
        [0, 1, 2].map(|c| p[c] as f64 * a + 255.0 * (1.0 - a))
    };
    for oy in 0..side {
        let (y0, y1) = (y_off + oy as f64 * scale, y_off + (oy + 1) as f64 * scale);
        for ox in 0..side {
            let (x0, x1) = (x_off + ox as f64 * scale, x_off + (ox + 1) as f64 * scale);
            let mut acc = [0f64; 3];
            let mut weight = 0.0;
            // Box filter with fractional coverage; for upscaling the box is under a pixel wide
            // and this is nearest-with-blend, which keeps the rule identical in both directions.
            let (ys, ye) = (y0.floor() as usize, (y1.ceil() as usize).min(h));
            let (xs, xe) = (x0.floor() as usize, (x1.ceil() as usize).min(w));
            for y in ys..ye.max(ys + 1) {
                let wy = (y1.min(y as f64 + 1.0) - y0.max(y as f64)).max(0.0);
                for x in xs..xe.max(xs + 1) {
                    let wx = (x1.min(x as f64 + 1.0) - x0.max(x as f64)).max(0.0);
                    let wgt = wx * wy;
                    if wgt > 0.0 {
                        let p = src(x.min(w - 1), y.min(h - 1));
                        for c in 0..3 {
                            acc[c] += p[c] * wgt;
                        }
                        weight += wgt;
                    }
                }
            }
            for a in acc {
                out.push((a / weight.max(1e-12)).round().clamp(0.0, 255.0) as u8);
            }
        }
    }
    out
}

/// A synthetic labelled set with planted two-level structure, for tests and benchmarks:
/// `coarse` colour families, each holding `fine` pattern kinds (stripes of several
/// orientations), with random phase, stripe width, brightness and pixel noise. Label = fine group.
pub fn planted_groups(
    coarse: usize,
    fine: usize,
    per_group: usize,
    side: usize,
    seed: u64,
) -> Dataset {
    let mut rng = super::rng::Rng::new(seed);
    let mut data = Dataset::new(side);
    let palette = [
        [220.0, 60.0, 50.0],
        [50.0, 90.0, 220.0],
        [60.0, 180.0, 70.0],
        [230.0, 190.0, 40.0],
    ];
    for c in 0..coarse {
        for f in 0..fine {
            let class = format!("c{c}_f{f}");
            for i in 0..per_group {
                let base = palette[c % palette.len()];
                let angle = std::f32::consts::PI * f as f32 / fine as f32;
                let (sin, cos) = angle.sin_cos();
                let period = rng.range(5.0, 9.0);
                let phase = rng.range(0.0, std::f32::consts::TAU);
                let light = rng.range(0.7, 1.1);
                let mut rgb = Vec::with_capacity(side * side * 3);
                for y in 0..side {
                    for x in 0..side {
                        let t = (x as f32 * cos + y as f32 * sin) / period * std::f32::consts::TAU;
                        let stripe = if (t + phase).sin() > 0.0 { 1.0 } else { 0.35 };
                        for ch in base {
                            let v = ch * stripe * light + rng.range(-20.0, 20.0);
                            rgb.push(v.clamp(0.0, 255.0) as u8);
                        }
                    }
                }
                data.push(format!("{class}/{i}.png"), &rgb, Some(&class))
                    .expect("sizes match");
            }
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_images_are_spread_by_name_whatever_the_order_they_came_in() {
        let mut a = Dataset::new(1);
        let mut b = Dataset::new(1);
        let names: Vec<String> = (0..10).map(|i| format!("img{i}")).collect();
        for n in &names {
            a.push(n.clone(), &[0, 0, 0], None).unwrap();
        }
        for n in names.iter().rev() {
            b.push(n.clone(), &[0, 0, 0], None).unwrap();
        }
        let pick = |d: &Dataset| -> Vec<String> {
            d.preview_indices(4)
                .into_iter()
                .map(|i| d.names[i].clone())
                .collect()
        };
        assert_eq!(pick(&a), ["img0", "img2", "img5", "img7"]);
        assert_eq!(pick(&a), pick(&b));
        assert_eq!(a.preview_indices(50).len(), 10);
        assert!(Dataset::new(1).preview_indices(6).is_empty());
    }

    #[test]
    fn resize_averages_crops_and_composites_alpha() {
        // 4x2 image: left half red, right half blue; short side 2 -> 1 px keeps the centre 2x2.
        let mut rgba = Vec::new();
        for _y in 0..2 {
            for x in 0..4 {
                rgba.extend_from_slice(if x < 2 {
                    &[255, 0, 0, 255]
                } else {
                    &[0, 0, 255, 255]
                });
            }
        }
        assert_eq!(resize_rgba_square(&rgba, 4, 2, 1), vec![128, 0, 128]);
        assert_eq!(
            resize_rgba_square(&rgba, 4, 2, 2),
            vec![255, 0, 0, 0, 0, 255, 255, 0, 0, 0, 0, 255]
        );
        // Fully transparent black is white; 1x1 upscales to a flat image.
        let out = resize_rgba_square(&[0, 0, 0, 0], 1, 1, 3);
        assert_eq!(out, vec![255; 27]);
    }

    #[test]
    fn spread_picks_evenly_and_never_repeats() {
        assert_eq!(spread(10, 4).collect::<Vec<_>>(), vec![0, 2, 5, 7]);
        assert_eq!(spread(3, 9).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(spread(0, 5).count(), 0);
    }

    #[test]
    fn dataset_tracks_labels_and_checks_sizes() {
        let mut d = Dataset::new(1);
        d.push("a/1".into(), &[1, 2, 3], Some("a")).unwrap();
        d.push("b/1".into(), &[4, 5, 6], Some("b")).unwrap();
        d.push("a/2".into(), &[7, 8, 9], Some("a")).unwrap();
        assert_eq!(d.eval_labels(), Some(&[0, 1, 0][..]));
        assert_eq!(d.image(1), &[4, 5, 6]);
        let e = d.push("x".into(), &[1, 2], None).unwrap_err();
        assert!(e.to_string().contains("2 bytes, expected 3"), "{e}");
        d.push("c".into(), &[0, 0, 0], None).unwrap();
        assert_eq!(d.eval_labels(), None);
    }

    #[test]
    fn a_damaged_sample_index_is_an_error_not_a_panic() {
        let index = |json: &str| serde_json::from_str::<SampleIndex>(json).unwrap();
        let good = index(
            r#"{"side":2,"cols":2,"count":3,"items":[["a","b","c"],["a","b/x","d"],["e","f","g"]]}"#,
        );
        let tiles = good.tiles(4, 4, None).unwrap();
        assert_eq!(tiles.len(), 3);
        assert_eq!(
            tiles[1],
            SampleTile {
                x: 2,
                y: 0,
                path: "a/b-x/d.png".into()
            }
        );
        assert_eq!(
            tiles[2],
            SampleTile {
                x: 0,
                y: 2,
                path: "e/f/g.png".into()
            }
        );
        assert_eq!(good.tiles(4, 4, Some(1)).unwrap().len(), 1);
        assert_eq!(good.tiles(4, 4, Some(0)).unwrap().len(), 1);
        for (json, w, h) in [
            (r#"{"side":2,"cols":2,"count":0,"items":[]}"#, 4, 4),
            (r#"{"side":2,"cols":2,"count":5,"items":[]}"#, 4, 4),
            (
                r#"{"side":2,"cols":0,"count":1,"items":[["a","b","c"]]}"#,
                4,
                4,
            ),
            (
                r#"{"side":0,"cols":2,"count":1,"items":[["a","b","c"]]}"#,
                4,
                4,
            ),
            // An index of a larger atlas than the one fetched.
            (
                r#"{"side":2,"cols":2,"count":3,"items":[["a","b","c"],["a","b","d"],["e","f","g"]]}"#,
                4,
                2,
            ),
            (
                r#"{"side":4,"cols":2,"count":1,"items":[["a","b","c"]]}"#,
                4,
                4,
            ),
            (
                r#"{"side":99999999999,"cols":99999999999,"count":1,"items":[["a","b","c"]]}"#,
                4,
                4,
            ),
        ] {
            assert!(index(json).tiles(w, h, None).is_err(), "{json}");
        }
    }
}
