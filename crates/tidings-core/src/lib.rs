//! Tidings' core: the domain and the hot path of the event hub, free of HTTP and database
//! client types in its API.
//!
//! The flow of an event: a publisher's [`event::NewEvent`] is appended to the durable
//! [`log::EventLog`] (a [`store`] backend); the [`hub::Hub`]'s pump hears the commit and hands the
//! stored [`event::Event`] to the [`fanout::Fanout`], which finds the matching subscribers by
//! [`selector::Selector`], encodes the event once with [`sse`], and queues the same bytes in each
//! subscriber's bounded [`mailbox::Mailbox`]. A [`hub::Subscription`] streams those bytes after
//! replaying history from the log.

pub mod budget;
pub mod event;
pub mod fanout;
pub mod hub;
pub mod log;
pub mod mailbox;
pub mod metrics;
pub mod recent;
pub mod selector;
pub mod sse;
pub mod store;

pub use hub::EARLIEST;
