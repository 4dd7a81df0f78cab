//! The E-step's and the explorer's embedding pass shared with the helpers: each gets a
//! contiguous range of the images (their stored pixels) and an encoder's parameters, embeds them
//! exactly as the trainer embeds its own range ([`embed_images`]) and sends back the rows.
//! Embeddings of one image do not depend on the others (evaluation mode), so the rows are the
//! trainer's own up to the order of float additions inside a matrix product.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::helper::{HelperModels, loaded};
use super::wire::{bad, header, to_parts, total};
use crate::engine::augment::{center_view, upload};
use crate::engine::error::EngineError;
use crate::engine::model::{Encoder, EncoderConfig, l2_normalize};
use crate::engine::params::read_all;

/// What runs after each chunk of [`embed_images`] (progress, and a chance to be interrupted).
pub type AfterChunk = std::pin::Pin<Box<dyn Future<Output = Result<(), EngineError>>>>;

/// Images embedded per pass: the encoder's activations of a chunk stay within a few tens of MB.
pub const EMBED_CHUNK: usize = 256;

/// The head's unit embeddings [n, d] and, with `with_backbone`, the L2-normalised backbone
/// features [n, 8w] of `pixels` (stored RGB at `side` px), centre crop at `image_size`, in chunks
/// of [`EMBED_CHUNK`]; `after_chunk` runs after each chunk with the images done.
pub async fn embed_images(
    encoder: &Encoder,
    pixels: &[&[u8]],
    side: usize,
    image_size: usize,
    with_backbone: bool,
    device: &Device,
    after_chunk: &mut dyn FnMut(usize) -> AfterChunk,
) -> Result<(Vec<Tensor<2>>, Vec<Tensor<2>>), EngineError> {
    let (mut heads, mut backbones) = (Vec::new(), Vec::new());
    for start in (0..pixels.len()).step_by(EMBED_CHUNK) {
        let end = (start + EMBED_CHUNK).min(pixels.len());
        let x = center_view(upload(&pixels[start..end], side, device), image_size);
        let f = encoder.backbone(x); // f: [b, 8w]
        if with_backbone {
            backbones.push(l2_normalize(f.clone()));
        }
        heads.push(encoder.head(f)); // [b, feature_dim]
        after_chunk(end).await?;
    }
    Ok((heads, backbones))
}

/// The small fields of an embedding job; `floats`: the encoder's parameters in visiting order,
/// then the images' stored bytes (as floats 0-255), [rows, side, side, 3].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EmbedHeader {
    pub encoder: EncoderConfig,
    pub params: Vec<usize>,
    pub rows: usize,
    pub side: usize,
    pub image_size: usize,
    pub with_backbone: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EmbedJob {
    pub header: EmbedHeader,
    pub floats: Vec<f32>,
}

/// A helper's embeddings: head rows [rows, dim], then backbone rows [rows, backbone] (0: none).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EmbeddedHeader {
    pub rows: usize,
    pub dim: usize,
    pub backbone: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EmbedResult {
    pub header: EmbeddedHeader,
    pub floats: Vec<f32>,
}

impl EmbedJob {
    /// The job for `pixels` (stored RGB at `side` px) with `encoder`'s parameter values
    /// `params` (host copies, visiting order).
    pub fn new(
        encoder: EncoderConfig,
        params: &[Vec<f32>],
        pixels: &[&[u8]],
        side: usize,
        image_size: usize,
        with_backbone: bool,
    ) -> Self {
        let mut floats: Vec<f32> = params.concat();
        floats.extend(pixels.iter().flat_map(|p| p.iter().map(|&v| v as f32)));
        EmbedJob {
            header: EmbedHeader {
                encoder,
                params: params.iter().map(Vec::len).collect(),
                rows: pixels.len(),
                side,
                image_size,
                with_backbone,
            },
            floats,
        }
    }

    /// Checks the sizes against the floats, before any tensor is made.
    pub fn check(&self) -> Result<(), EngineError> {
        let h = &self.header;
        let image = h.side.checked_mul(h.side).and_then(|v| v.checked_mul(3));
        let pixels = image.and_then(|v| v.checked_mul(h.rows));
        let want = total(h.params.iter().map(|&p| Some(p)).chain([pixels]))?;
        if want != self.floats.len() {
            return Err(bad(format!(
                "the embedding job needs {want} values, {} came",
                self.floats.len()
            )));
        }
        if h.rows == 0 || h.image_size == 0 || h.image_size > h.side {
            return Err(bad(format!(
                "{} images of {} px cropped to {} px",
                h.rows, h.side, h.image_size
            )));
        }
        Ok(())
    }

    pub fn to_parts(&self) -> (String, &[f32]) {
        to_parts(&self.header, &self.floats)
    }

    pub fn from_parts(json: &str, floats: Vec<f32>) -> Result<Self, EngineError> {
        let header = header(json)?;
        let job = Self { header, floats };
        job.check()?;
        Ok(job)
    }
}

impl EmbedResult {
    pub fn to_parts(&self) -> (String, &[f32]) {
        to_parts(&self.header, &self.floats)
    }

    /// The answer of a message, checked against what was asked ([`EmbedResult::checked`]).
    pub fn from_parts(
        json: &str,
        floats: Vec<f32>,
        asked: (usize, usize, usize),
    ) -> Result<Self, EngineError> {
        let header: EmbeddedHeader = header(json)?;
        Self { header, floats }.checked(asked)
    }

    /// This answer if it holds what was asked: `rows` images, `dim` and `backbone` values each
    /// (backbone 0: none asked).
    pub fn checked(
        self,
        (rows, dim, backbone): (usize, usize, usize),
    ) -> Result<Self, EngineError> {
        let h = &self.header;
        if (h.rows, h.dim, h.backbone) != (rows, dim, backbone) {
            return Err(bad(format!(
                "embeddings of {} images ({} + {} values each), asked for {rows} ({dim} + \
                 {backbone})",
                h.rows, h.dim, h.backbone
            )));
        }
        let want = rows
            .checked_mul(dim + backbone)
            .ok_or_else(|| bad("sizes overflow"))?;
        if want != self.floats.len() {
            return Err(bad(format!(
                "the embeddings need {want} values, {} came",
                self.floats.len()
            )));
        }
        Ok(self)
    }

    /// The head rows and the backbone rows (empty when none was asked).
    pub fn split(&self) -> (&[f32], &[f32]) {
        self.floats.split_at(self.header.rows * self.header.dim)
    }
}

/// A helper's side of an embedding job.
pub async fn run_embed(
    job: &EmbedJob,
    device: &Device,
    models: &mut HelperModels,
) -> Result<EmbedResult, EngineError> {
    job.check()?;
    let h = &job.header;
    let mut at = 0;
    let values: Vec<Vec<f32>> = h
        .params
        .iter()
        .map(|&p| {
            at += p;
            job.floats[at - p..at].to_vec()
        })
        .collect();
    let encoder = loaded(&mut models.key, &h.encoder, values, device)?;
    let bytes: Vec<u8> = job.floats[at..].iter().map(|&v| v as u8).collect();
    let image = h.side * h.side * 3;
    let pixels: Vec<&[u8]> = bytes.chunks_exact(image).collect();
    let (heads, backbones) = embed_images(
        &encoder,
        &pixels,
        h.side,
        h.image_size,
        h.with_backbone,
        device,
        &mut |_| Box::pin(async { Ok(()) }),
    )
    .await?;
    let head = Tensor::cat(heads, 0); // [rows, d]
    let [rows, dim] = head.dims();
    let mut reads = vec![head.reshape([-1])];
    let mut backbone = 0;
    if h.with_backbone {
        let b = Tensor::cat(backbones, 0); // [rows, 8w]
        backbone = b.dims()[1];
        reads.push(b.reshape([-1]));
    }
    Ok(EmbedResult {
        header: EmbeddedHeader {
            rows,
            dim,
            backbone,
        },
        floats: read_all(reads).await?.concat(),
    })
}
