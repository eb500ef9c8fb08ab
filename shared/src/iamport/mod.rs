//! The i'mport (PortOne V1) REST API client.

mod client;
mod error;
mod model;

pub use client::{ChargeOutcome, ClientConfig, DEFAULT_BASE_URL, IamportClient};
pub use error::{Ambiguity, AmbiguityKind, ApiError, Rejection, RejectionKind};
pub use model::{AgainRequest, BillingKey, CancelRecord, CancelRequest, Payment, PaymentStatus};
