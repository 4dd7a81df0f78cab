//! The page's cards, one file each; each wires its part of [`PageState`](super::state::PageState)
//! to the DOM and sends the worker what the user asked.

mod backend;
mod charts;
mod compare;
mod explore;
mod guide;
mod images;
mod keep;
mod live;
mod train;
mod views;

pub use backend::BackendCard;
pub use compare::CompareCard;
pub use explore::ExploreCard;
pub use guide::GuideCard;
pub use images::ImagesCard;
pub use keep::KeepCard;
pub use live::LiveCard;
pub use train::TrainCard;
pub use views::ViewsCard;
