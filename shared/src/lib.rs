//! The billing engine the functions share.
//!
//! - `billing`: the core (entities, calendar, dunning, ids, facts, state
//!   machines): pure, no I/O;
//! - `ledger` and `gateway`: the two ports, with their adapters (DynamoDB and
//!   in-memory; i'mport V1 in `gateway/iamport`, PortOne V2 in
//!   `gateway/portone`, the one choice between them in `gateway/any.rs`);
//! - `engine`: the ports, a clock and settings, handed to the services
//!   `registration`, `charging` (one subscription), `run` (everything due),
//!   `notification`, `notices` (renewal notices), `refunds`, `review` and
//!   `management`;
//! - `app`: production wiring; `config`, `secret`, `telemetry`, `clock`.

pub mod app;
pub mod billing;
pub mod charging;
pub mod clock;
pub mod config;
pub mod engine;
pub mod events;
pub mod gateway;
pub mod http;
pub mod ledger;
pub mod management;
pub mod notices;
pub mod notification;
pub mod refunds;
pub mod registration;
pub mod review;
pub mod run;
pub mod secret;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
