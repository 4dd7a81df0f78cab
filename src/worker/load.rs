//! Taking images in: files the page sent (decoded a few at a time), the sample set, or the
//! page's own copy after a reload; added to the store in batches the page hears about.

use std::collections::VecDeque;

use super::batch::Batch;
use super::{STATE, STORE_SIDE, busy_training, decode, error, now_ms, post};
use crate::intake::{Label, MAX_IMAGES, Skipped, eta_seconds, may_start_decoding};
use crate::protocol::FromWorker;

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
            let mut shown = Shown {
                done: 0,
                total,
                t0,
                last_post: 0.0,
            };
            // Files decode a few at once (the browser decodes on its own threads), bounded by
            // their pixels as well as their count (`may_start_decoding`).
            let mut in_flight: VecDeque<Decoding> = VecDeque::new();
            for (path, blob) in files {
                let checked = if count() + batch.len() + in_flight.len() >= MAX_IMAGES {
                    Err(format!("over the limit of {MAX_IMAGES} images"))
                } else {
                    decode::check_file(&blob).await
                };
                let pixels = *checked.as_ref().unwrap_or(&0);
                while !may_start_decoding(
                    in_flight.len(),
                    in_flight.iter().map(|f| f.pixels).sum(),
                    pixels,
                ) {
                    let oldest = in_flight
                        .pop_front()
                        .expect("no room only while files decode");
                    oldest.finish(&mut batch).await;
                    shown.one_more(&mut batch);
                }
                let pending = checked.and_then(|_| decode::start_decode(&blob));
                in_flight.push_back(Decoding {
                    path,
                    pending,
                    pixels,
                });
            }
            for decoding in in_flight {
                decoding.finish(&mut batch).await;
                shown.one_more(&mut batch);
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

/// A file whose decoding has started (or that was refused: `pending` is the reason).
struct Decoding {
    path: String,
    pending: Result<wasm_bindgen_futures::JsFuture, String>,
    pixels: u64,
}

impl Decoding {
    async fn finish(self, batch: &mut Batch) {
        let decoded = match self.pending {
            Ok(p) => decode::finish_decode(p, STORE_SIDE).await,
            Err(reason) => Err(reason),
        };
        match decoded {
            Ok(rgb) => {
                let label = Label::of_path(&self.path);
                batch.add(self.path, label, rgb);
            }
            Err(reason) => batch.skip(Skipped {
                file: self.path,
                reason,
            }),
        }
    }
}

/// Loading progress as the page sees it: a few times a second, with the thumbnails so far.
struct Shown {
    done: usize,
    total: usize,
    t0: f64,
    last_post: f64,
}

impl Shown {
    fn one_more(&mut self, batch: &mut Batch) {
        self.done += 1;
        if now_ms() - self.last_post > 150.0 {
            self.last_post = now_ms();
            post(FromWorker::Loading {
                done: self.done,
                total: self.total,
                eta_s: eta_seconds(self.done, self.total, (now_ms() - self.t0) / 1000.0),
            });
            // Thumbnails appear while the rest decodes.
            if batch.len() >= 256 {
                batch.flush(self.t0, false);
            }
        }
    }
}

fn count() -> usize {
    STATE.with_borrow(|s| s.data.len())
}
