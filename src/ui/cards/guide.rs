//! The guide card: "What am I looking at?", the live run's E-step and M-step in words, with the
//! images they name (see [`crate::ui::guide`]).

use leptos::prelude::*;

use crate::ui::guide::{Part, guide};
use crate::ui::state::PageState;
use crate::ui::tiles::Tiles;

#[component]
pub fn GuideCard(state: RwSignal<PageState>, version: RwSignal<usize>) -> impl IntoView {
    let parts = Memo::new(move |_| state.with(guide));
    view! {
        <section class="card guide">
            <details data-testid="guide">
                <summary>"What am I looking at? A guide to the live run"</summary>
                {move || parts.get().into_iter().map(|part| view! { <GuidePart part version /> }).collect_view()}
            </details>
        </section>
    }
}

#[component]
fn GuidePart(part: Part, version: RwSignal<usize>) -> impl IntoView {
    view! {
        <div class="guide-part" data-testid=format!("guide-{}", part.id)>
            <h3>{part.title}</h3>
            {part.text.into_iter().map(|t| view! { <p>{t}</p> }).collect_view()}
            {part.images.into_iter().map(|row| view! { <div><Tiles indices=row cols=8 version /></div> }).collect_view()}
        </div>
    }
}
