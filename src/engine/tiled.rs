//! Matrices that grow with the data (every image's features, raw pixels), kept on the device as
//! row tiles. A kernel binds each buffer it reads whole, and WebGPU refuses a binding over the
//! device's `maxStorageBufferBindingSize` (128 MiB unless the adapter allows more): 50,000
//! images of 1,024-d features are 205 MB, their raw pixels at 32 px 614 MB. No tile is over
//! [`TILE_BYTES`], so every product over them binds a tile, never the whole.

use burn::prelude::*;

/// The most bytes of one tile: a quarter of the default binding limit, which leaves room for
/// the products' outputs beside it.
pub const TILE_BYTES: usize = 32 << 20;

/// A matrix [n, d] as row tiles of at most [`TILE_BYTES`] each (one row where a row is more).
pub struct Tiled {
    /// Each tile with the index of its first row.
    tiles: Vec<(usize, Tensor<2>)>,
    n: usize,
    d: usize,
}

impl Tiled {
    /// The host matrix `host` ([n, d], row-major) on `device`; with `ones`, each row followed by
    /// a 1 (`[x | 1]`, [n, d + 1]).
    pub fn from_host(host: &[f32], d: usize, ones: bool, device: &Device) -> Self {
        let n = host.len() / d.max(1);
        let cols = d + usize::from(ones);
        let per = (TILE_BYTES / (4 * cols.max(1))).max(1);
        let tiles = (0..n)
            .step_by(per)
            .map(|start| {
                let end = (start + per).min(n);
                let rows = &host[start * d..end * d];
                let values = if ones {
                    rows.chunks_exact(d.max(1))
                        .flat_map(|r| r.iter().copied().chain([1.0]))
                        .collect()
                } else {
                    rows.to_vec()
                };
                let t = Tensor::from_data(TensorData::new(values, [end - start, cols]), device);
                (start, t)
            })
            .collect();
        Self { tiles, n, d: cols }
    }

    /// The tiles in row order, each with the index of its first row.
    pub fn tiles(&self) -> &[(usize, Tensor<2>)] {
        &self.tiles
    }

    /// The rows in blocks of at most `rows` (none across two tiles), each with the index of
    /// its first row: what a product over all rows takes one at a time.
    pub fn row_blocks(&self, rows: usize) -> impl Iterator<Item = (usize, Tensor<2>)> + '_ {
        let rows = rows.max(1);
        self.tiles.iter().flat_map(move |(first, tile)| {
            let m = tile.dims()[0];
            (0..m).step_by(rows).map(move |start| {
                let end = (start + rows).min(m);
                (first + start, tile.clone().slice([start..end, 0..self.d]))
            })
        })
    }

    /// [n, d].
    pub fn dims(&self) -> [usize; 2] {
        [self.n, self.d]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_hold_every_row_once_and_none_is_over_the_limit() {
        // 1,024-d rows and a ones column: 8,184 of them fill a tile; 20,000 rows make 3 tiles.
        let (n, d) = (20_000, 1024);
        let host: Vec<f32> = (0..n * d).map(|i| (i % 977) as f32).collect();
        let t = Tiled::from_host(&host, d, true, &Device::flex());
        assert_eq!(t.dims(), [n, d + 1]);
        assert_eq!(t.tiles().len(), 3);
        let mut next = 0;
        for (start, tile) in t.tiles() {
            assert_eq!(*start, next);
            let [rows, cols] = tile.dims();
            assert!(rows * cols * 4 <= TILE_BYTES, "{rows} x {cols}");
            next += rows;
        }
        assert_eq!(next, n);
        // Blocks of 5,000 rows: none across a tile, every row once, in order.
        let blocks: Vec<(usize, usize)> = t
            .row_blocks(5000)
            .map(|(first, b)| (first, b.dims()[0]))
            .collect();
        assert_eq!(
            blocks,
            [
                (0, 5000),
                (5000, 3184),
                (8184, 5000),
                (13184, 3184),
                (16368, 3632)
            ]
        );
        let last = t.tiles()[2]
            .1
            .clone()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let row = n - 1 - t.tiles()[2].0;
        assert_eq!(last[row * (d + 1) + d], 1.0, "the ones column");
        assert_eq!(last[row * (d + 1)], host[(n - 1) * d]);
    }
}
