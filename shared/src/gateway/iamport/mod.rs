//! The i'mport (PortOne V1) REST API: a typed client in V1's own terms
//! (`client`, `model`) and its implementation of the payment-gateway port
//! (`gateway`).

mod client;
mod gateway;
mod model;
pub mod notice;
pub mod window;
pub mod wire;

pub use client::{AgainOutcome, ClientConfig, DEFAULT_BASE_URL, IamportClient};
pub use model::{AgainRequest, BillingKey, CancelRecord, CancelRequest, Payment, PaymentStatus};
