//! Decoded images on their way into the worker's store: gathered by the decoders
//! (`decode`), added to the store and announced to the page by the loader (`load`).

use std::rc::Rc;

use super::{STATE, STORE_SIDE, now_ms, post_bytes};
use crate::intake::{Label, Skipped};
use crate::protocol::{FromWorker, ImagesAdded};

/// Decoded images not yet added to the store and announced to the page.
#[derive(Default)]
pub(crate) struct Batch {
    names: Vec<String>,
    labels: Vec<Label>,
    pixels: Vec<u8>,
    skipped: Vec<Skipped>,
}

impl Batch {
    pub(crate) fn add(&mut self, name: String, label: Label, rgb: Vec<u8>) {
        self.names.push(name);
        self.labels.push(label);
        self.pixels.extend_from_slice(&rgb);
    }

    /// Images decoded into the batch so far.
    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }

    pub(crate) fn skip(&mut self, file: Skipped) {
        self.skipped.push(file);
    }

    /// Adds the batch to the store and sends it (with its pixels, for thumbnails) to the page.
    pub(crate) fn flush(&mut self, t0: f64, last: bool) {
        let batch = std::mem::take(self);
        let per = STORE_SIDE * STORE_SIDE * 3;
        let (total, memory) = STATE.with_borrow_mut(|s| {
            let data = Rc::make_mut(&mut s.data);
            for (i, (name, label)) in batch.names.iter().zip(&batch.labels).enumerate() {
                let rgb = &batch.pixels[i * per..(i + 1) * per];
                let (coarse, fine) = (label.coarse.as_deref(), label.fine.as_deref());
                data.push_labelled(name.clone(), rgb, coarse, fine)
                    .expect("decoded at the store size");
            }
            (data.len(), data.memory_bytes())
        });
        let msg = FromWorker::Images(ImagesAdded {
            side: STORE_SIDE,
            names: batch.names,
            labels: batch.labels,
            skipped: batch.skipped,
            total,
            memory_bytes: memory,
            seconds: (now_ms() - t0) / 1000.0,
            last,
        });
        post_bytes(msg, &batch.pixels);
    }
}
