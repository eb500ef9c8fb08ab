//! Billing rules: pure code, no I/O.

pub mod calendar;
pub mod dunning;
pub mod ids;
pub mod state;

pub use calendar::{Anchor, BILLING_TZ, PeriodId};
pub use dunning::{DunningPolicy, DunningStep};
pub use ids::{MerchantUid, SubscriptionId, generate_customer_uid};
pub use state::{Event, IllegalTransition, SubscriptionStatus};
