//! Sources of events: the synthetic venue, live venue connectors and importers of
//! existing files. Each pushes normalized events into an [`crate::event::EventSink`]
//! and knows nothing of storage details.

pub mod binance;
pub mod import;
pub mod live;
pub mod simulate;
