//! The subscription state machine. Every status change goes through
//! [`SubscriptionStatus::apply`]; anything not listed there is an error.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    /// Registered, waiting for the billing-key callback (lives in the REG item).
    Pending,
    /// Charged for the current period, or its first charge is due.
    Active,
    /// In a free trial: the key is issued, nothing charged; the first
    /// period starts at the trial's end and is charged only with a consent
    /// to convert (`billing::trials`).
    Trialing,
    /// The current period was declined; a retry is scheduled.
    PastDue,
    /// Every retry was declined; no further charges until reactivated.
    Suspended,
    /// Ended by the merchant or the customer. Final.
    Cancelled,
    /// i'mport no longer knows the billing key; a new registration is needed.
    KeyMissing,
    /// The card was declined for good (lost, expired, closed: a hard
    /// decline class, decision 72): no retries, no access, until a new card.
    ActionRequired,
    /// An attempt needs a person (see `AttemptState::NeedsReview`): access
    /// ends and nothing is charged until an operator resolves it.
    NeedsReview,
    /// Paused by the customer or the merchant (`billing::pauses`, decision
    /// 76): no attempts, no notices; access until the paid-through date;
    /// the periods that begin while paused are skipped, never charged.
    Paused,
}

/// What can happen to a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The billing key was verified at i'mport.
    KeyVerified,
    /// The billing key was verified for a sign-up with a free trial.
    TrialStarted,
    /// A period was paid.
    Paid,
    /// A charge was declined and a retry is scheduled.
    DeclinedWillRetry,
    /// The last retry was declined; the policy's final status applies.
    DeclinedFinal(SubscriptionStatus),
    /// Declined in a hard class: retrying cannot pass.
    DeclinedHard,
    /// i'mport answered that the billing key does not exist.
    KeyGone,
    /// Cancelled by the merchant or customer.
    Cancel,
    /// A suspended or key-less subscription got a working key again.
    Reactivate,
    /// An attempt was flagged for a person.
    FlagReview,
    /// A person resolved the flagged attempt as paid.
    ResolvedPaid,
    /// A person resolved the flagged attempt as not paid: back to the status
    /// before the review (`Active`, `PastDue`, `Suspended` or `KeyMissing`).
    ResolvedUnpaid(SubscriptionStatus),
    /// Charge the outstanding period again now (a resumed suspension, a new
    /// card after declines or a lost key).
    Retry,
    /// Paused (an active subscription with nothing in flight).
    Pause,
    /// Resumed from a pause, by hand or at its `resumes_at`.
    Unpause,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal subscription transition: {from:?} on {event:?}")]
pub struct IllegalTransition {
    pub from: SubscriptionStatus,
    pub event: Event,
}

impl SubscriptionStatus {
    pub const ALL: [Self; 10] = [
        Self::Pending,
        Self::Active,
        Self::Trialing,
        Self::PastDue,
        Self::Suspended,
        Self::Cancelled,
        Self::KeyMissing,
        Self::ActionRequired,
        Self::NeedsReview,
        Self::Paused,
    ];

    /// The one table of allowed transitions.
    pub fn apply(self, event: Event) -> Result<Self, IllegalTransition> {
        use Event as E;
        use SubscriptionStatus as S;
        let next = match (self, event) {
            (S::Pending, E::KeyVerified) => S::Active,
            (S::Pending, E::TrialStarted) => S::Trialing,
            // A trial converts with its first paid period; its first charge
            // declined goes into dunning like any other.
            (S::Active | S::PastDue | S::Trialing, E::Paid) => S::Active,
            (S::Active | S::PastDue | S::Trialing, E::DeclinedWillRetry) => S::PastDue,
            (S::Active | S::PastDue | S::Trialing, E::DeclinedFinal(final_status))
                if matches!(final_status, S::Suspended | S::Cancelled) =>
            {
                final_status
            }
            (S::Active | S::PastDue | S::Trialing, E::KeyGone) => S::KeyMissing,
            (S::Active | S::PastDue | S::Trialing, E::DeclinedHard) => S::ActionRequired,
            (
                S::Pending
                | S::Active
                | S::Trialing
                | S::PastDue
                | S::Suspended
                | S::KeyMissing
                | S::ActionRequired
                | S::NeedsReview
                | S::Paused,
                E::Cancel,
            ) => S::Cancelled,
            (S::Active, E::Pause) => S::Paused,
            (S::Paused, E::Unpause) => S::Active,
            (S::Suspended | S::KeyMissing, E::Reactivate) => S::Active,
            // Any live subscription can meet an attempt that needs a person,
            // even a suspended one (a payment arriving late).
            (from, E::FlagReview) if from.is_live() => S::NeedsReview,
            (S::NeedsReview, E::ResolvedPaid) => S::Active,
            // Back to where it was before the review.
            (S::NeedsReview, E::ResolvedUnpaid(to)) if to.is_live() && to != S::NeedsReview => to,
            (S::PastDue | S::Suspended | S::KeyMissing | S::ActionRequired, E::Retry) => S::PastDue,
            (from, event) => return Err(IllegalTransition { from, event }),
        };
        Ok(next)
    }

    /// Signed up and not ended: every status but `pending` and `cancelled`.
    pub fn is_live(self) -> bool {
        !matches!(self, Self::Pending | Self::Cancelled)
    }

    /// Whether the scheduled run may charge a subscription in this status
    /// (a trialing one only at its end, and only with a consent).
    pub fn is_chargeable(self) -> bool {
        matches!(self, Self::Active | Self::PastDue | Self::Trialing)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Trialing => "trialing",
            Self::PastDue => "past_due",
            Self::Suspended => "suspended",
            Self::Cancelled => "cancelled",
            Self::KeyMissing => "key_missing",
            Self::ActionRequired => "action_required",
            Self::NeedsReview => "needs_review",
            Self::Paused => "paused",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SubscriptionStatus as S;
    use proptest::prelude::*;

    fn any_status() -> impl Strategy<Value = S> {
        proptest::sample::select(S::ALL.to_vec())
    }

    fn any_event() -> impl Strategy<Value = Event> {
        prop_oneof![
            Just(Event::KeyVerified),
            Just(Event::TrialStarted),
            Just(Event::Paid),
            Just(Event::DeclinedWillRetry),
            any_status().prop_map(Event::DeclinedFinal),
            Just(Event::KeyGone),
            Just(Event::DeclinedHard),
            Just(Event::Cancel),
            Just(Event::Reactivate),
            Just(Event::FlagReview),
            Just(Event::ResolvedPaid),
            any_status().prop_map(Event::ResolvedUnpaid),
            Just(Event::Retry),
            Just(Event::Pause),
            Just(Event::Unpause),
        ]
    }

    #[test]
    fn happy_path_and_dunning() {
        let s = S::Pending.apply(Event::KeyVerified).unwrap();
        assert_eq!(s, S::Active);
        let s = s.apply(Event::DeclinedWillRetry).unwrap();
        assert_eq!(s, S::PastDue);
        assert_eq!(s.apply(Event::Paid).unwrap(), S::Active);
        assert_eq!(
            s.apply(Event::DeclinedFinal(S::Suspended)).unwrap(),
            S::Suspended
        );
        assert_eq!(S::Suspended.apply(Event::Reactivate).unwrap(), S::Active);
    }

    #[test]
    fn a_hard_decline_stops_until_a_new_card() {
        for from in [S::Active, S::PastDue, S::Trialing] {
            assert_eq!(from.apply(Event::DeclinedHard).unwrap(), S::ActionRequired);
        }
        let s = S::ActionRequired;
        assert!(!s.is_chargeable());
        assert!(s.apply(Event::Paid).is_err());
        assert!(s.apply(Event::DeclinedWillRetry).is_err());
        assert_eq!(s.apply(Event::Retry).unwrap(), S::PastDue);
        assert_eq!(s.apply(Event::Cancel).unwrap(), S::Cancelled);
    }

    #[test]
    fn only_an_active_subscription_pauses_and_a_paused_one_is_never_charged() {
        assert_eq!(S::Active.apply(Event::Pause).unwrap(), S::Paused);
        for from in [
            S::PastDue,
            S::Trialing,
            S::Suspended,
            S::NeedsReview,
            S::Cancelled,
        ] {
            assert!(from.apply(Event::Pause).is_err(), "{from:?}");
        }
        let p = S::Paused;
        assert!(!p.is_chargeable() && p.is_live());
        for e in [
            Event::Paid,
            Event::DeclinedWillRetry,
            Event::Retry,
            Event::Pause,
        ] {
            assert!(p.apply(e).is_err(), "{e:?}");
        }
        assert_eq!(p.apply(Event::Unpause).unwrap(), S::Active);
        assert_eq!(p.apply(Event::Cancel).unwrap(), S::Cancelled);
        assert!(S::Active.apply(Event::Unpause).is_err());
    }

    #[test]
    fn cancelled_is_final_and_pending_cannot_be_charged() {
        for e in [
            Event::Paid,
            Event::Reactivate,
            Event::KeyVerified,
            Event::Cancel,
        ] {
            assert!(S::Cancelled.apply(e).is_err(), "{e:?}");
        }
        assert!(S::Pending.apply(Event::Paid).is_err());
        assert!(S::Active.apply(Event::DeclinedFinal(S::Active)).is_err());
    }

    #[test]
    fn names_round_trip() {
        for s in S::ALL {
            assert_eq!(S::parse(s.as_str()), Some(s));
        }
        assert_eq!(S::parse("paid"), None);
    }

    proptest! {
        /// Any sequence of events either moves between known states or is
        /// refused without changing anything; Cancelled is never left.
        #[test]
        fn random_walks_stay_legal(start in any_status(), events in proptest::collection::vec(any_event(), 0..40)) {
            let mut s = start;
            for e in events {
                let was_cancelled = s == S::Cancelled;
                match s.apply(e) {
                    Ok(next) => {
                        prop_assert!(!was_cancelled, "left Cancelled via {:?}", e);
                        prop_assert!(next != S::Pending, "returned to Pending via {:?}", e);
                        if e == Event::Paid { prop_assert_eq!(next, S::Active); }
                        if e == Event::FlagReview { prop_assert_eq!(next, S::NeedsReview); }
                        // A trial is entered only at sign-up, and returned to only
                        // from a review of its sign-up resolved as not paid.
                        if next == S::Trialing {
                            prop_assert!(matches!(e, Event::TrialStarted | Event::ResolvedUnpaid(S::Trialing)), "{:?}", e);
                        }
                        s = next;
                    }
                    Err(err) => prop_assert_eq!(err.from, s),
                }
                // only Active/PastDue/Trialing are chargeable; a flagged one never is
                prop_assert_eq!(s.is_chargeable(), matches!(s, S::Active | S::PastDue | S::Trialing));
            }
        }
    }
}
