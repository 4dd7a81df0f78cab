//! Taking images in: files the page sent (decoded a few at a time), the sample set, or the
//! page's own copy after a reload; added to the store in batches the page hears about.

use std::rc::Rc;

use super::{
    DECODE_IN_FLIGHT, STATE, STORE_SIDE, busy_training, decode, error, now_ms, post, post_bytes,
};
use crate::intake::{Label, MAX_IMAGES, Skipped, eta_seconds};
use crate::protocol::{FromWorker, ImagesAdded};

pub(super) enum Source {
    Files(Vec<(String, web_sys::Blob)>),
    Sample(Option<usize>),
    /// Images the page kept (thumbnails are the stored pixels), restored after a reload.
    Decoded(Vec<String>, Vec<Label>, Vec<u8>),
}

pub(super) async fn load(source: Source) {
    if busy_training() {
        return error("stop the run before adding images (a run trains on a fixed set)");
    }
    if STATE.with_borrow(|s| s.loading) {
        return error("images are still loading; wait for them to finish");
    }
    STATE.with_borrow_mut(|s| s.loading = true);
    let t0 = now_ms();
    let mut batch = Batch::default();
    let result = match source {
        Source::Files(files) => {
            let total = files.len();
            let mut last_post = 0.0;
            let mut done = 0;
            // A few files in flight at once: the browser decodes them in parallel.
            for chunk in files.chunks(DECODE_IN_FLIGHT) {
                let mut started = Vec::with_capacity(chunk.len());
                for (path, blob) in chunk {
                    let over = count() + batch.names.len() + started.len() >= MAX_IMAGES;
                    let pending = if over {
                        Err(format!("over the limit of {MAX_IMAGES} images"))
                    } else {
                        decode::start_decode(blob).await
                    };
                    started.push((path.clone(), pending));
                }
                for (path, pending) in started {
                    let decoded = match pending {
                        Ok(p) => decode::finish_decode(p, STORE_SIDE).await,
                        Err(reason) => Err(reason),
                    };
                    match decoded {
                        Ok(rgb) => {
                            let label = Label::of_path(&path);
                            batch.add(path, label, rgb);
                        }
                        Err(reason) => batch.skipped.push(Skipped { file: path, reason }),
                    }
                    done += 1;
                }
                if now_ms() - last_post > 150.0 {
                    last_post = now_ms();
                    post(FromWorker::Loading {
                        done,
                        total,
                        eta_s: eta_seconds(done, total, (now_ms() - t0) / 1000.0),
                    });
                    // Thumbnails appear while the rest decodes.
                    if batch.names.len() >= 256 {
                        batch.flush(t0, false);
                    }
                }
            }
            Ok(())
        }
        Source::Sample(limit) => decode::load_sample(limit, STORE_SIDE, &mut batch).await,
        Source::Decoded(names, labels, bytes) => {
            let per = STORE_SIDE * STORE_SIDE * 3;
            if bytes.len() != names.len() * per || labels.len() != names.len() {
                Err(format!(
                    "restored images: {} bytes for {} names, expected {}",
                    bytes.len(),
                    names.len(),
                    names.len() * per
                ))
            } else {
                for ((name, label), rgb) in names.into_iter().zip(labels).zip(bytes.chunks(per)) {
                    batch.add(name, label, rgb.to_vec());
                }
                Ok(())
            }
        }
    };
    STATE.with_borrow_mut(|s| s.loading = false);
    batch.flush(t0, true);
    if let Err(e) = result {
        error(e);
    }
}

fn count() -> usize {
    STATE.with_borrow(|s| s.data.len())
}

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

    /// Adds the batch to the store and sends it (with its pixels, for thumbnails) to the page.
    fn flush(&mut self, t0: f64, last: bool) {
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
