//! Browser entry point of the page (trunk `data-type="main"`).

#[cfg(target_arch = "wasm32")]
fn main() {
    pcl_studio::run_static_constructors();
    pcl_studio::ui::view::mount();
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("the app runs in the browser: `trunk serve` (see README.md)");
}
