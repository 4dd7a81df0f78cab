//! The page: its App (the dashboard's layout of cards) and the notices above it. The worker
//! link, the routing of its messages, the image store, storage and lesson loading are their own
//! files beside this one.

use leptos::prelude::*;

use super::cards::{
    BackendCard, CompareCard, ExploreCard, GuideCard, ImagesCard, KeepCard, LiveCard, TrainCard,
    ViewsCard,
};
use super::routing::start_worker;
use super::state::PageState;
use super::{js, lessons, storage};

pub fn mount() {
    // Test hooks only in development builds (`trunk build`, which the browser tests use); the
    // release build (`--release`, the static site) has none.
    #[cfg(debug_assertions)]
    super::hooks::expose();
    leptos::mount::mount_to_body(App);
}

#[component]
fn App() -> impl IntoView {
    let backend = js::query_param("backend");
    // A device this browser measured before is used again without measuring (until the user
    // asks for a new measurement); the address's choice comes first.
    let remembered = js::stored(storage::DEVICE_KEY)
        .and_then(|t| serde_json::from_str::<crate::backend::Remembered>(&t).ok())
        .filter(|_| backend.is_none() && !js::query_flag("cpu"));
    let backend =
        backend.or_else(|| remembered.map(|r| if r.cpu { "cpu" } else { "webgpu" }.to_string()));
    let mut page = PageState::new(js::query_flag("cpu") || backend.as_deref() == Some("cpu"));
    page.force_webgpu = backend.as_deref() == Some("webgpu");
    page.remembered = remembered;
    page.workers = js::query_param("workers").and_then(|w| w.parse().ok());
    let state = RwSignal::new(page);
    let version = RwSignal::new(0usize);
    start_worker(state, version);
    lessons::open(state);
    storage::claim(state);
    // The offer to resume is made when an earlier session left an autosave.
    leptos::task::spawn_local(async move {
        if let Ok(record) = js::idb_get("session").await
            && record.is_object()
        {
            let field = |k: &str| {
                js_sys::Reflect::get(&record, &k.into())
                    .ok()
                    .and_then(|v| v.as_f64())
                    .unwrap_or(0.0) as usize
            };
            let (epoch, images) = (field("epoch"), field("images"));
            state.update(|s| s.autosave_offer = Some((epoch, images)));
        }
    });

    // Projector mode (`?present`, or the header's button): larger type, the essentials only.
    let present = RwSignal::new(js::query_flag("present"));
    Effect::new(move |_| {
        let class = if present.get() { "present" } else { "" };
        if let Some(body) = web_sys::window()
            .and_then(|w| w.document())
            .and_then(|d| d.body())
        {
            body.set_class_name(class);
        }
    });
    view! {
        <header>
            <h1>"pcl-studio"</h1>
            <button class="present-toggle" data-testid="present" aria-pressed=move || present.get().to_string()
                on:click=move |_| present.update(|p| *p = !*p)
                title="Larger type and only the essentials, for a projector">"Projector mode"</button>
            <p class="lede">
                "Prototypical Contrastive Learning in your browser: a small image encoder learns "
                "from your own pictures without labels, clustering them at several granularities "
                "as it goes. Everything runs on this machine; no image leaves it."
            </p>
        </header>
        // Two columns on a laptop or a projector: what the user does on the left, what the run
        // shows on the right; after a run its clusters across the width, right below them; the
        // rest after that (one column on narrow screens).
        <main class="dashboard">
            <div class="controls">
                <AutosaveOffer state />
                <LessonNotice state />
                <ImagesCard state version />
                <TrainCard state />
            </div>
            <div class="shows">
                <LiveCard state version />
            </div>
            <div class="wide">
                <CompareCard state version />
                <ExploreCard state version />
            </div>
            <div class="controls">
                <KeepCard state />
                <BackendCard state />
            </div>
            <div class="shows">
                <ViewsCard state />
                <GuideCard state version />
            </div>
        </main>
    }
}

#[component]
fn AutosaveOffer(state: RwSignal<PageState>) -> impl IntoView {
    let resume = move |_| {
        leptos::task::spawn_local(async move {
            if let Err(e) = storage::resume_stored(state).await {
                state.update(|s| s.error = Some(format!("cannot resume: {e}")));
            }
        })
    };
    let discard = move |_| leptos::task::spawn_local(storage::discard(state));
    let owner = move || state.with(|s| s.owns_autosave);
    let offer = Memo::new(move |_| state.with(|s| s.autosave_offer));
    move || {
        offer.get().map(|(epoch, images)| {
            view! {
                <section class="card notice" data-testid="autosave-offer">
                    <p>
                        {format!(
                            "An earlier run was saved in this browser at epoch {epoch} on {images} \
                             images."
                        )}
                        {move || (!owner()).then_some(
                            " Another tab of pcl-studio owns it: only that tab can discard it."
                        )}
                    </p>
                    <button data-testid="resume-autosave" on:click=resume>"Resume it"</button>
                    " "
                    <button data-testid="discard-autosave" on:click=discard disabled=move || !owner()
                        title="Only the tab that owns the autosave can discard it">"Discard"</button>
                </section>
            }
        })
    }
}

#[component]
fn LessonNotice(state: RwSignal<PageState>) -> impl IntoView {
    let words = Memo::new(move |_| state.with(|s| s.lesson.clone()));
    move || {
        words.get().map(|w| {
            view! { <section class="card notice" data-testid="lesson" role="status"><p>{w}</p></section> }
        })
    }
}
