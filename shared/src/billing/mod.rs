//! The core: entities and the rules that decide what happens to money.
//! Pure code, no I/O, no AWS or HTTP types: the services fetch and store,
//! these modules decide.

pub mod calendar;
pub mod changes;
pub mod coupons;
pub mod declines;
pub mod dunning;
pub mod entities;
pub mod facts;
pub mod ids;
pub mod notices;
pub mod pauses;
pub mod plans;
pub mod price_changes;
pub mod quotes;
pub mod receipts;
pub mod rollouts;
pub mod state;
pub mod tax;
pub mod trials;

pub use calendar::{Anchor, BILLING_TZ, BillingDay, FirstPeriod, Interval, PeriodId};
pub use declines::DeclineClass;
pub use dunning::{DunningPolicy, DunningStep};
pub use entities::{
    Actor, AttemptEvent, AttemptResult, AttemptState, AuditEntry, Buyer, ChargeAttempt,
    ESCALATE_AFTER, FIRST_WINDOW_SLOT, IllegalAttemptTransition, KeyInfo, MAX_SENDS, Plan,
    RefundCause, Registration, RegistrationStatus, Resolution, Subscription, retry_of,
};
pub use facts::{
    Fact, Issuance, Lookup, Mismatch, PaymentRecord, RecordStatus, Verdict, flagged_state,
    issuance, next_state, next_state_for, refusal, verdict,
};
pub use ids::{
    MerchantUid, SubscriptionId, UidKey, generate_customer_uid, random_customer_uid, random_nonce,
};
pub use plans::{PlanId, PlanRecord, PlanRef};
pub use receipts::{CashReceipt, CashReceiptMode, ReceiptHolder, ReceiptKind, ReceiptState};
pub use state::{Event, IllegalTransition, SubscriptionStatus};
pub use tax::{TaxSetting, TaxSplit};
