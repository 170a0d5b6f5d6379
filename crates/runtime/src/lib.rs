//! weir's processing runtime. For now: the [`Bus`] trait systems program against (`bus.rs`), its embedded
//! implementation over the in-process broker (`embedded.rs`) and its Kafka implementation through rdkafka
//! (`kafka.rs`). A system takes a `Bus` and never names a backend.

mod bus;
mod embedded;
mod kafka;

pub use bus::{Bus, BusError, Delivery, Message, OutgoingMessage, StartFrom, SubscribeOptions, Subscription};
pub use embedded::EmbeddedBus;
pub use kafka::{KafkaBus, KafkaEndpoint};
