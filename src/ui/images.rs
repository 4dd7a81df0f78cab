//! The images the page holds: the thumbnails the worker sent (the very pixels it trains on),
//! their names and label folders, kept once, outside the reactive state (a version signal says
//! when they changed). Tiles, the views panel and the stored run read them through [`with`].

use std::cell::RefCell;

use super::state::images_fingerprint;
use crate::intake::Label;

#[derive(Default)]
pub(crate) struct Store {
    /// Side of every stored image (px).
    pub side: usize,
    pub names: Vec<String>,
    pub labels: Vec<Label>,
    /// RGB, `side` x `side` per image, in the order of `names`.
    pub pixels: Vec<u8>,
    /// The images' fingerprint, computed once per set of images.
    fingerprint: Option<String>,
}

impl Store {
    /// Images held.
    pub fn count(&self) -> usize {
        self.pixels.len() / (self.side * self.side * 3).max(1)
    }
}

thread_local! {
    static STORE: RefCell<Store> = RefCell::new(Store::default());
}

/// `f` of the images held now.
pub(crate) fn with<R>(f: impl FnOnce(&Store) -> R) -> R {
    STORE.with_borrow(f)
}

/// The name of image `i`, if there is one.
pub(crate) fn name(i: usize) -> Option<String> {
    with(|s| s.names.get(i).cloned())
}

/// Images the worker added (their pixels, RGB at `side`).
pub(crate) fn add(side: usize, names: &[String], labels: &[Label], pixels: Vec<u8>) {
    STORE.with_borrow_mut(|s| {
        s.side = side;
        s.names.extend_from_slice(names);
        s.labels.extend_from_slice(labels);
        s.pixels.extend(pixels);
        s.fingerprint = None;
    });
}

/// Every image let go.
pub(crate) fn clear() {
    STORE.with_borrow_mut(|s| *s = Store::default());
}

/// The fingerprint of the images held now (see [`images_fingerprint`]), computed once per set.
pub(crate) fn fingerprint() -> String {
    if let Some(f) = with(|s| s.fingerprint.clone()) {
        return f;
    }
    let f = with(|s| {
        let folders: Vec<String> = s.labels.iter().map(Label::folder).collect();
        images_fingerprint(s.side, &s.names, &folders, &s.pixels)
    });
    STORE.with_borrow_mut(|s| s.fingerprint = Some(f.clone()));
    f
}
