//! weir's processing runtime. For now: the [`Bus`] trait systems program against (`bus.rs`) and its embedded
//! implementation over the in-process broker (`embedded.rs`). A system takes a `Bus` and never names a backend.

mod bus;
mod embedded;

pub use bus::{Bus, BusError, Delivery, Message, OutgoingMessage, StartFrom, SubscribeOptions, Subscription};
pub use embedded::EmbeddedBus;
