//! Every image embedded, for the E-step and the explorer: the trainer's own range of the images
//! and, on the browser's CPU fallback, the helpers' ranges at the same time
//! (`parallel::EmbedJob`), so the pass uses every core as the training step does.

use burn::prelude::*;

use super::{Embedded, Trainer};
use crate::engine::data::Dataset;
use crate::engine::error::EngineError;
use crate::engine::model::Encoder;
use crate::engine::parallel::{AfterChunk, EmbedJob, EmbedReply, embed_images};
use crate::engine::params::{flat_params, read_all};
use crate::engine::records::Phase;

impl Trainer {
    /// Embeddings of every image by `encoder`, centre crop, no augmentation, in one pass; with
    /// `with_backbone` also the (L2-normalised) backbone features of the same pass.
    pub async fn embed_all(
        &self,
        encoder: &Encoder,
        data: &Dataset,
        with_backbone: bool,
        progress: &mut dyn FnMut(Phase),
    ) -> Result<Embedded, EngineError> {
        self.embed(encoder, data, with_backbone, progress, false)
            .await
    }

    /// [`Trainer::embed_all`]; `interruptible`: a command may stop it between chunks.
    pub(super) async fn embed(
        &self,
        encoder: &Encoder,
        data: &Dataset,
        with_backbone: bool,
        progress: &mut dyn FnMut(Phase),
        interruptible: bool,
    ) -> Result<Embedded, EngineError> {
        let n = data.len();
        let side = data.side;
        let size = self.config.image_size;
        let images: Vec<&[u8]> = (0..n).map(|i| data.image(i)).collect();
        // The helpers' ranges first, so that they work while this worker embeds its own.
        let helpers = self.helpers.clone().filter(|h| h.ready() > 0);
        let parts = helpers.as_ref().map_or(1, |h| h.ready() + 1).min(n.max(1));
        let per = n.div_ceil(parts);
        let ranges: Vec<std::ops::Range<usize>> = (0..parts)
            .map(|p| (p * per).min(n)..((p + 1) * per).min(n))
            .collect();
        let mut replies: Vec<EmbedReply> = Vec::new();
        if let (Some(h), true) = (&helpers, parts > 1) {
            let params = read_all(flat_params(encoder)).await?;
            for (i, r) in ranges[1..].iter().enumerate() {
                let job = EmbedJob::new(
                    self.config.encoder(),
                    &params,
                    &images[r.clone()],
                    side,
                    size,
                    with_backbone,
                );
                replies.push(h.embed(i, job));
            }
        }
        let own = ranges[0].clone();
        let interrupt = self.interrupt.clone().filter(|_| interruptible);
        let mut after_chunk = |done: usize| {
            progress(Phase::Embedding {
                done: done * parts.min(n.max(1)),
                total: n,
            });
            let interrupt = interrupt.clone();
            Box::pin(async move {
                match interrupt {
                    Some(asked) if asked().await => Err(EngineError::Interrupted),
                    _ => Ok(()),
                }
            }) as AfterChunk
        };
        let (heads, backbones) = embed_images(
            encoder,
            &images[own.clone()],
            side,
            size,
            with_backbone,
            &self.device,
            &mut after_chunk,
        )
        .await?;
        // Read chunk by chunk: one tensor of every image's features could be over a binding's
        // limit (see `tiled`).
        let (mut head_host, mut backbone_host) = read_rows(heads, backbones).await?;
        let d = self.config.feature_dim;
        let bd = if with_backbone {
            self.config.encoder().backbone_dim()
        } else {
            0
        };
        for (reply, r) in replies.into_iter().zip(&ranges[1..]) {
            let rows = r.len();
            let got = reply
                .await
                .map_err(EngineError::Device)
                .and_then(|res| res.checked((rows, d, bd)));
            match got {
                Ok(res) => {
                    let (h, b) = res.split();
                    head_host.extend_from_slice(h);
                    backbone_host.extend_from_slice(b);
                }
                Err(_) => {
                    // A helper that fails has its images done here (the next step lets it go).
                    let (h, b) = embed_images(
                        encoder,
                        &images[r.clone()],
                        side,
                        size,
                        with_backbone,
                        &self.device,
                        &mut |_| Box::pin(async { Ok(()) }),
                    )
                    .await?;
                    let (h, b) = read_rows(h, b).await?;
                    head_host.extend(h);
                    backbone_host.extend(b);
                }
            }
        }
        progress(Phase::Embedding { done: n, total: n });
        Ok(Embedded {
            head: head_host,
            backbone: with_backbone.then_some(backbone_host),
        })
    }
}

/// The chunks' head and backbone rows, read back in order.
async fn read_rows(
    heads: Vec<Tensor<2>>,
    backbones: Vec<Tensor<2>>,
) -> Result<(Vec<f32>, Vec<f32>), EngineError> {
    let h = heads.len();
    let reads = heads.into_iter().chain(backbones).map(|t| t.reshape([-1]));
    let host = read_all(reads.collect()).await?;
    Ok((host[..h].concat(), host[h..].concat()))
}
