//! Flow 2: charging due subscriptions, one attempt at a time, never twice.
//!
//! Per subscription: re-read it; if its current attempt is already open
//! (`claimed` by a crashed run, or `unknown` after a lost answer), settle it
//! from i'mport's records first; otherwise claim a new attempt with a
//! conditional write; then charge with the attempt's deterministic
//! `merchant_uid` and record the result together with the subscription's next
//! state in one transaction. See `docs/charging.md` for the reasoning.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{StreamExt, stream};
use serde::Serialize;
use tracing::{error, info, warn};

use crate::app::App;
use crate::billing::{DunningPolicy, DunningStep, Event, MerchantUid, SubscriptionId};
use crate::iamport::{
    AgainRequest, ApiError, ChargeOutcome, Payment, PaymentStatus, RejectionKind,
};
use crate::store::{AttemptResult, AttemptState, ChargeAttempt, Item, StoreError, Subscription};

/// A verified fact about one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    Paid {
        imp_uid: String,
        paid_at: DateTime<Utc>,
    },
    Declined {
        imp_uid: Option<String>,
        reason: String,
    },
    /// i'mport refused without attempting; `key_gone` when the billing key no longer exists.
    Rejected { reason: String, key_gone: bool },
}

impl Fact {
    fn from_payment(p: &Payment, now: DateTime<Utc>) -> Option<Self> {
        match p.status {
            PaymentStatus::Paid => Some(Self::Paid {
                imp_uid: p.imp_uid.clone(),
                paid_at: DateTime::from_timestamp(p.paid_at, 0)
                    .filter(|_| p.paid_at > 0)
                    .unwrap_or(now),
            }),
            PaymentStatus::Failed => Some(Self::Declined {
                imp_uid: Some(p.imp_uid.clone()),
                reason: p.fail_reason.clone().unwrap_or_else(|| "declined".into()),
            }),
            _ => None,
        }
    }

    /// What i'mport's record `p` proves about `attempt`, after checking that
    /// it really is this charge: same `merchant_uid`, amount, currency and (when
    /// the record names one) billing key. `Err` when it is not: e.g. a payment
    /// the customer made in the browser with our (guessable) `merchant_uid` and
    /// another amount. Such a record never counts as money for the period and
    /// never lets a new attempt start: the attempt waits for a person.
    /// `Ok(None)`: a status nothing can be settled on (`ready`, unknown).
    pub fn from_record(
        p: &Payment,
        attempt: &ChargeAttempt,
        customer_uid: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Self>, String> {
        let foreign_key = p.customer_uid.as_deref().is_some_and(|c| c != customer_uid);
        let foreign_currency = p.currency.as_deref().is_some_and(|c| c != "KRW");
        if p.merchant_uid != attempt.merchant_uid
            || p.amount != attempt.amount
            || foreign_key
            || foreign_currency
        {
            return Err(format!(
                "i'mport payment {} for {} does not match the charge (amount {} vs {}, billing key matches: {}, currency {:?}); refund it and settle by hand",
                p.imp_uid, p.merchant_uid, p.amount, attempt.amount, !foreign_key, p.currency
            ));
        }
        Ok(match p.status {
            // Refunded later is still money taken for the period; the refund is recorded apart.
            PaymentStatus::Paid => Self::from_payment(p, now),
            PaymentStatus::Cancelled if p.paid_at > 0 => Some(Self::Paid {
                imp_uid: p.imp_uid.clone(),
                paid_at: DateTime::from_timestamp(p.paid_at, 0).unwrap_or(now),
            }),
            PaymentStatus::Failed => Self::from_payment(p, now),
            PaymentStatus::Cancelled => Some(Self::Declined {
                imp_uid: Some(p.imp_uid.clone()),
                reason: p
                    .cancel_reason
                    .clone()
                    .unwrap_or_else(|| "cancelled before payment".into()),
            }),
            PaymentStatus::Ready | PaymentStatus::Unknown => None,
        })
    }

    fn result(&self) -> AttemptResult {
        match self {
            Self::Paid { imp_uid, paid_at } => AttemptResult {
                state: AttemptState::Paid,
                imp_uid: Some(imp_uid.clone()),
                paid_at: Some(*paid_at),
                fail_reason: None,
            },
            Self::Declined { imp_uid, reason } => AttemptResult {
                state: AttemptState::Failed,
                imp_uid: imp_uid.clone(),
                paid_at: None,
                fail_reason: Some(reason.clone()),
            },
            Self::Rejected { reason, .. } => AttemptResult {
                state: AttemptState::Rejected,
                imp_uid: None,
                paid_at: None,
                fail_reason: Some(reason.clone()),
            },
        }
    }
}

/// The subscription after `fact` about its current attempt. Pure.
///
/// A fact is always recorded, even when the status cannot change any more
/// (e.g. cancelled while the charge was in flight): money taken is never
/// dropped; only the status stays.
pub fn next_state(
    sub: &Subscription,
    fact: &Fact,
    dunning: &DunningPolicy,
    now: DateTime<Utc>,
) -> Subscription {
    let mut next = sub.clone();
    next.version += 1;
    next.updated_at = now;
    let event = match fact {
        Fact::Paid { .. } => {
            next.paid_through = Some(sub.current_period());
            next.period_index += 1;
            next.attempt = 1;
            next.next_charge_at = sub.anchor.period_start(next.period_index);
            Event::Paid
        }
        Fact::Rejected { key_gone: true, .. } => Event::KeyGone,
        Fact::Declined { .. }
        | Fact::Rejected {
            key_gone: false, ..
        } => match dunning.after_decline(sub.period_due(), sub.attempt) {
            DunningStep::Retry { attempt, at } => {
                next.attempt = attempt;
                next.next_charge_at = at;
                Event::DeclinedWillRetry
            }
            DunningStep::GiveUp { status } => Event::DeclinedFinal(status),
        },
    };
    match sub.status.apply(event) {
        Ok(status) => next.status = status,
        Err(e) => warn!(subscription_id = %sub.id, error = %e, "status kept; fact recorded"),
    }
    next
}

/// What happened to one due subscription in a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Charged {
        imp_uid: String,
    },
    Declined {
        reason: String,
    },
    Rejected {
        reason: String,
        key_gone: bool,
    },
    /// The charge may have happened; recorded `unknown`, settled by a later run.
    Ambiguous {
        detail: String,
    },
    /// An attempt left open earlier was settled from i'mport's records.
    Reconciled {
        fact: Fact,
    },
    Skipped {
        reason: SkipReason,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    NotDue,
    /// Another live run holds the attempt.
    Busy,
    NotFound,
    /// Cancelled at the end of its paid period instead of being charged.
    CancelledAtPeriodEnd,
    /// i'mport's record could not be read; left open for the next run.
    Unsettled,
    /// i'mport's record does not match the charge, or has a status nothing
    /// can be settled on: left open, logged at error level, for a person.
    NeedsReview,
}

/// A failure of a dependency as a whole: the run stops taking new work.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FatalError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("i'mport: {0}")]
    Iamport(ApiError),
    #[error("i'mport unavailable: {0} transient failures in a row")]
    IamportUnavailable(u32),
}

/// Who is acting, and when.
#[derive(Debug, Clone)]
pub struct Clock {
    /// The billing clock: decides what is due (the scheduled event's time).
    pub billing_time: DateTime<Utc>,
    /// A run id, written into claims (e.g. the scheduler's execution id).
    pub run_id: String,
}

fn wall() -> DateTime<Utc> {
    Utc::now()
}

fn lease(app: &App) -> chrono::Duration {
    chrono::Duration::from_std(app.config.claim_lease).unwrap_or(chrono::Duration::minutes(5))
}

/// Charges one subscription if it is due at `clock.billing_time`.
#[tracing::instrument(skip(app, clock), fields(subscription_id = %id))]
pub async fn charge_one(
    app: &App,
    id: &SubscriptionId,
    clock: &Clock,
) -> Result<Outcome, FatalError> {
    let Some(sub) = app.store.get_subscription(id).await? else {
        return Ok(Outcome::Skipped {
            reason: SkipReason::NotFound,
        });
    };
    if !sub.is_due(clock.billing_time) {
        return Ok(Outcome::Skipped {
            reason: SkipReason::NotDue,
        });
    }
    let period = sub.current_period();
    let merchant_uid = MerchantUid::charge(&sub.id, &period, sub.attempt);
    let now = wall();

    let claim = ChargeAttempt {
        subscription_id: sub.id.clone(),
        period: period.clone(),
        attempt: sub.attempt,
        merchant_uid: merchant_uid.clone(),
        amount: sub.plan.amount,
        state: AttemptState::Claimed,
        claim_token: Some(clock.run_id.clone()),
        lease_until: Some(now + lease(app)),
        imp_uid: None,
        paid_at: None,
        fail_reason: None,
        refunded: 0,
        created_at: now,
        updated_at: now,
    };
    // The common case first: a fresh attempt, claimed with one conditional write.
    if !sub.cancel_at_period_end {
        match app.store.claim_new(&claim).await {
            Ok(()) => return charge_claimed(app, &sub, &claim, &clock.run_id).await,
            Err(StoreError::Conflict(_)) => {} // it exists: see what state it is in
            Err(e) => return Err(e.into()),
        }
    }
    let attempt = match app.store.get_attempt(&sub.id, &period, sub.attempt).await? {
        Some(open) if open.state.is_open() => {
            // Left by a crashed run (expired lease) or a lost answer: take it over and settle first.
            let taken = match app
                .store
                .take_over(
                    &sub.id,
                    &period,
                    sub.attempt,
                    &clock.run_id,
                    now + lease(app),
                    now,
                )
                .await
            {
                Ok(a) => a,
                Err(StoreError::Conflict(_)) => {
                    return Ok(Outcome::Skipped {
                        reason: SkipReason::Busy,
                    });
                }
                Err(e) => return Err(e.into()),
            };
            match reconcile(app, &taken, &sub.customer_uid, &clock.run_id).await? {
                Reconciliation::Settled(fact) => return Ok(Outcome::Reconciled { fact }),
                Reconciliation::Unsettled => {
                    return Ok(Outcome::Skipped {
                        reason: SkipReason::Unsettled,
                    });
                }
                Reconciliation::NeedsReview => {
                    return Ok(Outcome::Skipped {
                        reason: SkipReason::NeedsReview,
                    });
                }
                Reconciliation::NeverArrived => {
                    info!(%merchant_uid, "open attempt never reached i'mport; sending it again with the same merchant_uid");
                    taken
                }
            }
        }
        Some(settled) => {
            // The attempt is settled but our copy of the subscription is older
            // than the settlement (a webhook or another run got there first).
            info!(%merchant_uid, state = settled.state.as_str(), "attempt already settled by someone else");
            return Ok(Outcome::Skipped {
                reason: SkipReason::Busy,
            });
        }
        None if sub.cancel_at_period_end => return cancel_at_period_end(app, &sub).await,
        None => match app.store.claim_new(&claim).await {
            Ok(()) => claim,
            Err(StoreError::Conflict(_)) => {
                return Ok(Outcome::Skipped {
                    reason: SkipReason::Busy,
                });
            }
            Err(e) => return Err(e.into()),
        },
    };
    charge_claimed(app, &sub, &attempt, &clock.run_id).await
}

async fn cancel_at_period_end(app: &App, sub: &Subscription) -> Result<Outcome, FatalError> {
    let mut next = sub.clone();
    next.version += 1;
    next.updated_at = wall();
    next.status = match sub.status.apply(Event::Cancel) {
        Ok(s) => s,
        Err(_) => {
            return Ok(Outcome::Skipped {
                reason: SkipReason::NotDue,
            });
        }
    };
    match app.store.save_subscription(&next).await {
        Ok(()) => {
            info!("cancelled at period end");
            Ok(Outcome::Skipped {
                reason: SkipReason::CancelledAtPeriodEnd,
            })
        }
        Err(StoreError::Conflict(_)) => Ok(Outcome::Skipped {
            reason: SkipReason::Busy,
        }),
        Err(e) => Err(e.into()),
    }
}

/// Sends the charge for an attempt we hold, then records what came of it.
async fn charge_claimed(
    app: &App,
    sub: &Subscription,
    attempt: &ChargeAttempt,
    token: &str,
) -> Result<Outcome, FatalError> {
    let request = AgainRequest {
        customer_uid: sub.customer_uid.clone(),
        merchant_uid: attempt.merchant_uid.clone(),
        amount: attempt.amount,
        currency: "KRW",
        name: sub.plan.name.clone(),
        buyer_name: sub.buyer.name.clone(),
        buyer_email: sub.buyer.email.clone(),
        buyer_tel: sub.buyer.tel.clone(),
        custom_data: Some(
            serde_json::json!({"subscription_id": sub.id.as_str(), "period": attempt.period.as_str(), "attempt": attempt.attempt})
                .to_string(),
        ),
        notice_url: app.config.notice_url.as_ref().map(|u| u.to_string()),
    };
    let merchant_uid = attempt.merchant_uid.as_str();
    let fact = match app.iamport.charge_again(&request).await {
        ChargeOutcome::Paid(p) => Fact::from_payment(&p, wall()).unwrap_or(Fact::Paid {
            imp_uid: p.imp_uid,
            paid_at: wall(),
        }),
        ChargeOutcome::Declined(p) => Fact::Declined {
            imp_uid: Some(p.imp_uid.clone()),
            reason: p.fail_reason.unwrap_or_else(|| "declined".into()),
        },
        ChargeOutcome::Rejected(r)
            if matches!(r.kind, RejectionKind::Unauthorized | RejectionKind::NotSent) =>
        {
            // Nothing reached i'mport. Leave the attempt open so the next run
            // sends it again (same merchant_uid), and stop this run.
            mark_unknown(app, attempt, token, &format!("not sent: {}", r.message)).await?;
            return Err(FatalError::Iamport(ApiError::Rejected(r)));
        }
        ChargeOutcome::Rejected(r) => {
            match classify_rejection(app, sub, attempt, &r.message).await? {
                Classified::Fact(fact) => fact,
                Classified::Unclear { detail, review } => {
                    // Never a clean rejection while i'mport's record is unclear:
                    // leave the attempt open for the next run (or a person).
                    mark_unknown(app, attempt, token, &detail).await?;
                    return Ok(if review {
                        error!(merchant_uid, %detail, "needs review");
                        Outcome::Skipped {
                            reason: SkipReason::NeedsReview,
                        }
                    } else {
                        warn!(merchant_uid, %detail, "refusal could not be classified; left open");
                        Outcome::Ambiguous { detail }
                    });
                }
            }
        }
        ChargeOutcome::Ambiguous(a) => {
            warn!(merchant_uid, detail = %a, "charge outcome unknown; recording unknown");
            mark_unknown(app, attempt, token, &a.to_string()).await?;
            // If i'mport already shows it paid, settle now; otherwise a later
            // run settles it (never a new merchant_uid before that).
            return match app
                .iamport
                .find_payment(merchant_uid, Some(PaymentStatus::Paid))
                .await
            {
                Ok(p) if p.merchant_uid == merchant_uid => {
                    match Fact::from_record(&p, attempt, &sub.customer_uid, wall()) {
                        Ok(Some(fact)) => {
                            apply_fact(app, attempt, &fact, None).await?;
                            Ok(Outcome::Reconciled { fact })
                        }
                        Ok(None) => Ok(Outcome::Ambiguous {
                            detail: a.to_string(),
                        }),
                        Err(mismatch) => {
                            error!(merchant_uid, %mismatch, "needs review");
                            mark_unknown(app, attempt, token, &mismatch).await?;
                            Ok(Outcome::Skipped {
                                reason: SkipReason::NeedsReview,
                            })
                        }
                    }
                }
                _ => Ok(Outcome::Ambiguous {
                    detail: a.to_string(),
                }),
            };
        }
    };
    apply_fact_to(app, attempt, &fact, Some(token), Some(sub.clone())).await?;
    Ok(match fact {
        Fact::Paid { imp_uid, .. } => {
            info!(merchant_uid, %imp_uid, amount = attempt.amount, "charged");
            Outcome::Charged { imp_uid }
        }
        Fact::Declined { reason, .. } => {
            info!(merchant_uid, %reason, "declined");
            Outcome::Declined { reason }
        }
        Fact::Rejected { reason, key_gone } => {
            warn!(merchant_uid, %reason, key_gone, "rejected by i'mport");
            Outcome::Rejected { reason, key_gone }
        }
    })
}

enum Classified {
    Fact(Fact),
    /// Could not tell; `review` when a person must look (a foreign payment).
    Unclear {
        detail: String,
        review: bool,
    },
}

/// A `code != 0` answer: find out whether it means "already paid" or "key gone".
async fn classify_rejection(
    app: &App,
    sub: &Subscription,
    attempt: &ChargeAttempt,
    message: &str,
) -> Result<Classified, FatalError> {
    let merchant_uid = attempt.merchant_uid.as_str();
    // i'mport refuses a merchant_uid that is already paid: then it IS paid (if it is our charge).
    match app
        .iamport
        .find_payment(merchant_uid, Some(PaymentStatus::Paid))
        .await
    {
        Ok(p) => {
            return Ok(
                match Fact::from_record(&p, attempt, &sub.customer_uid, wall()) {
                    Ok(Some(fact)) => Classified::Fact(fact),
                    Ok(None) => Classified::Unclear {
                        detail: format!(
                            "refused ({message}); payment {} is {}",
                            p.imp_uid,
                            p.status.as_str()
                        ),
                        review: true,
                    },
                    Err(mismatch) => Classified::Unclear {
                        detail: mismatch,
                        review: true,
                    },
                },
            );
        }
        Err(e) if e.is_not_found() => {}
        Err(e) if e.is_unauthorized() => return Err(FatalError::Iamport(e)),
        Err(e) => {
            return Ok(Classified::Unclear {
                detail: format!("refused ({message}) and the payment lookup failed: {e}"),
                review: false,
            });
        }
    }
    let key_gone = match app.iamport.billing_key(&sub.customer_uid).await {
        Ok(_) => false,
        Err(e) if e.is_not_found() => true,
        Err(e) if e.is_unauthorized() => return Err(FatalError::Iamport(e)),
        Err(e) => {
            return Ok(Classified::Unclear {
                detail: format!("refused ({message}) and the billing-key lookup failed: {e}"),
                review: false,
            });
        }
    };
    Ok(Classified::Fact(Fact::Rejected {
        reason: message.to_owned(),
        key_gone,
    }))
}

async fn mark_unknown(
    app: &App,
    attempt: &ChargeAttempt,
    token: &str,
    detail: &str,
) -> Result<(), FatalError> {
    match app.store.mark_unknown(attempt, token, detail, wall()).await {
        Ok(()) | Err(StoreError::Conflict(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

enum Reconciliation {
    Settled(Fact),
    /// i'mport has no payment with this merchant_uid: safe to send it again.
    NeverArrived,
    /// i'mport could not tell; leave it open.
    Unsettled,
    /// i'mport's record does not match the charge, or cannot be settled on.
    NeedsReview,
}

/// Settles an open attempt from i'mport's records (`GET /payments/find/{merchant_uid}`).
async fn reconcile(
    app: &App,
    attempt: &ChargeAttempt,
    customer_uid: &str,
    token: &str,
) -> Result<Reconciliation, FatalError> {
    let merchant_uid = attempt.merchant_uid.as_str();
    let found = match app
        .iamport
        .find_payment(merchant_uid, Some(PaymentStatus::Paid))
        .await
    {
        Ok(p) => Ok(p),
        Err(e) if e.is_not_found() => app.iamport.find_payment(merchant_uid, None).await,
        Err(e) => Err(e),
    };
    let fact = match found {
        Ok(p) => match Fact::from_record(&p, attempt, customer_uid, wall()) {
            Ok(Some(fact)) => Some(fact),
            other => {
                let detail = match other {
                    Err(mismatch) => mismatch,
                    _ => format!(
                        "payment {} is {}: nothing to settle on",
                        p.imp_uid,
                        p.status.as_str()
                    ),
                };
                error!(merchant_uid, %detail, "open attempt needs review");
                mark_unknown(app, attempt, token, &detail).await?;
                return Ok(Reconciliation::NeedsReview);
            }
        },
        Err(e) if e.is_not_found() => return Ok(Reconciliation::NeverArrived),
        Err(e) if e.is_unauthorized() => {
            mark_unknown(app, attempt, token, "reconciliation refused (401)").await?;
            return Err(FatalError::Iamport(e));
        }
        Err(e) => {
            warn!(merchant_uid, error = %e, "could not settle open attempt");
            None
        }
    };
    match fact {
        Some(fact) => {
            apply_fact(app, attempt, &fact, Some(token)).await?;
            info!(
                merchant_uid,
                ?fact,
                "settled open attempt from i'mport's records"
            );
            Ok(Reconciliation::Settled(fact))
        }
        None => {
            mark_unknown(app, attempt, token, "could not be settled yet").await?;
            Ok(Reconciliation::Unsettled)
        }
    }
}

/// Records `fact` on `attempt` and moves its subscription on, atomically.
/// Retries on a version conflict; returns `false` when the attempt had
/// already been settled by someone else (nothing more to do).
pub async fn apply_fact(
    app: &App,
    attempt: &ChargeAttempt,
    fact: &Fact,
    token: Option<&str>,
) -> Result<bool, FatalError> {
    apply_fact_to(app, attempt, fact, token, None).await
}

/// [`apply_fact`], trying first with a copy of the subscription the caller
/// just read (saves a read; a stale copy only costs a retry).
async fn apply_fact_to(
    app: &App,
    attempt: &ChargeAttempt,
    fact: &Fact,
    token: Option<&str>,
    mut known: Option<Subscription>,
) -> Result<bool, FatalError> {
    for _ in 0..5 {
        let now = wall();
        let current = match known.take() {
            Some(sub) => Some(sub),
            None => app.store.get_subscription(&attempt.subscription_id).await?,
        };
        let Some(sub) = current else {
            error!(subscription_id = %attempt.subscription_id, "attempt without subscription");
            return Err(StoreError::Corrupt(format!(
                "subscription {} missing for {}",
                attempt.subscription_id, attempt.merchant_uid
            ))
            .into());
        };
        if sub.current_period() != attempt.period || sub.attempt != attempt.attempt {
            // The subscription has moved past this attempt: it must be settled already.
            return match app
                .store
                .get_attempt(&attempt.subscription_id, &attempt.period, attempt.attempt)
                .await?
            {
                Some(a) if !a.state.is_open() => Ok(false),
                _ => Err(StoreError::Corrupt(format!(
                    "open attempt {} is not the subscription's current one",
                    attempt.merchant_uid
                ))
                .into()),
            };
        }
        let next = next_state(&sub, fact, &app.config.dunning, now);
        match app
            .store
            .settle(attempt, &fact.result(), token, &next, now)
            .await
        {
            Ok(()) => return Ok(true),
            Err(StoreError::Conflict(_)) => {
                match app
                    .store
                    .get_attempt(&attempt.subscription_id, &attempt.period, attempt.attempt)
                    .await?
                {
                    Some(a) if !a.state.is_open() => return Ok(false),
                    // Our claim was taken over: the fact is verified, record it all the same.
                    Some(a) if token.is_some() && a.claim_token.as_deref() != token => {
                        return apply_fact_unclaimed(app, attempt, fact).await;
                    }
                    // Still open and ours: the subscription changed under us; re-read it.
                    Some(_) => continue,
                    None => {
                        return Err(StoreError::Corrupt(format!(
                            "attempt {} vanished while being recorded",
                            attempt.merchant_uid
                        ))
                        .into());
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Conflict(format!(
        "could not record {} after 5 tries",
        attempt.merchant_uid
    ))
    .into())
}

/// The fact is verified at i'mport, so it may be written over any open claim.
async fn apply_fact_unclaimed(
    app: &App,
    attempt: &ChargeAttempt,
    fact: &Fact,
) -> Result<bool, FatalError> {
    Box::pin(apply_fact(app, attempt, fact, None)).await
}

/// Counts of one run, also logged and emitted as metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub due: u64,
    pub charged: u64,
    pub declined: u64,
    pub rejected: u64,
    pub ambiguous: u64,
    pub reconciled: u64,
    pub skipped: u64,
}

impl Summary {
    fn add(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Charged { .. } => self.charged += 1,
            Outcome::Declined { .. } => self.declined += 1,
            Outcome::Rejected { .. } => self.rejected += 1,
            Outcome::Ambiguous { .. } => self.ambiguous += 1,
            Outcome::Reconciled { .. } => self.reconciled += 1,
            Outcome::Skipped { .. } => self.skipped += 1,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub billing_time: DateTime<Utc>,
    pub run_id: String,
    #[serde(flatten)]
    pub summary: Summary,
    /// Why the run stopped taking work early, if it did.
    pub stopped: Option<String>,
    /// A dependency failure that ended the run (error status).
    pub error: Option<String>,
}

/// Options of a run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub clock: Clock,
    /// Stop taking new work once this instant is near (the Lambda deadline).
    pub deadline: Option<tokio::time::Instant>,
}

/// How long before the deadline the run stops taking new work: enough for
/// the slowest in-flight charge (three i'mport calls and a few writes).
fn reserve(app: &App) -> Duration {
    app.config.iamport_timeout * 3 + Duration::from_secs(5)
}

const PAGE_SIZE: i32 = 100;
const TRANSIENT_LIMIT: u32 = 5;

/// Charges everything due at the billing time, with bounded concurrency.
pub async fn run(app: &App, options: RunOptions) -> RunReport {
    let clock = &options.clock;
    let stop = AtomicBool::new(false);
    let stopped: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
    let fatal: std::sync::Mutex<Option<FatalError>> = std::sync::Mutex::new(None);
    let transient_streak = Arc::new(AtomicU32::new(0));
    let reserve = reserve(app);
    let halt = |why: String| {
        stop.store(true, Ordering::SeqCst);
        if let Ok(mut s) = stopped.lock() {
            s.get_or_insert(why);
        }
    };

    let shards = app.store.shards();
    let pages = stream::unfold(Some((0u32, None::<Item>)), |state| async move {
        let (shard, start) = state?;
        match app
            .store
            .due_page(shard, clock.billing_time, PAGE_SIZE, start)
            .await
        {
            Ok(page) => {
                let next = match page.next {
                    Some(key) => Some((shard, Some(key))),
                    None if shard + 1 < shards => Some((shard + 1, None)),
                    None => None,
                };
                Some((Ok(page.ids), next))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    // A subscription is charged at most once per run: one that was late and
    // declined may already be due again, and could come back on a later page.
    let mut seen = std::collections::HashSet::new();
    let ids = pages
        .flat_map(|page| match page {
            Ok(ids) => stream::iter(ids.into_iter().map(Ok)).left_stream(),
            Err(e) => stream::iter(vec![Err(e)]).right_stream(),
        })
        .filter(move |next| {
            futures::future::ready(match next {
                Ok(id) => seen.insert(id.clone()),
                Err(_) => true,
            })
        });

    let mut summary = Summary::default();
    let work = ids
        .take_while(|_| {
            let go = !stop.load(Ordering::SeqCst)
                && options
                    .deadline
                    .is_none_or(|d| tokio::time::Instant::now() + reserve < d);
            if !go && !stop.load(Ordering::SeqCst) {
                halt("deadline near: stopped taking new work".into());
            }
            futures::future::ready(go)
        })
        .map(|next| async move {
            match next {
                Ok(id) => (Some(id.clone()), charge_one(app, &id, clock).await),
                Err(e) => (None, Err(FatalError::Store(e))),
            }
        })
        .buffer_unordered(app.config.concurrency);
    futures::pin_mut!(work);
    while let Some((id, result)) = work.next().await {
        if id.is_some() {
            summary.due += 1;
        }
        match result {
            Ok(outcome) => {
                match &outcome {
                    Outcome::Ambiguous { .. }
                    | Outcome::Skipped {
                        reason: SkipReason::Unsettled,
                    } => {
                        let streak = transient_streak.fetch_add(1, Ordering::SeqCst) + 1;
                        if streak >= TRANSIENT_LIMIT {
                            let e = FatalError::IamportUnavailable(streak);
                            halt(e.to_string());
                            if let Ok(mut f) = fatal.lock() {
                                f.get_or_insert(e);
                            }
                        }
                    }
                    _ => transient_streak.store(0, Ordering::SeqCst),
                }
                summary.add(&outcome);
            }
            Err(e) => {
                error!(subscription_id = ?id.as_ref().map(|i| i.as_str()), error = %e, "run stops taking new work");
                halt(format!("dependency failure: {e}"));
                if let Ok(mut f) = fatal.lock() {
                    f.get_or_insert(e);
                }
                if id.is_some() {
                    summary.skipped += 1;
                }
            }
        }
    }
    let error = fatal
        .lock()
        .ok()
        .and_then(|mut f| f.take())
        .map(|e| e.to_string());
    let stopped = stopped.lock().ok().and_then(|mut s| s.take());
    RunReport {
        billing_time: clock.billing_time,
        run_id: clock.run_id.clone(),
        summary,
        stopped,
        error,
    }
}

/// The summary as one CloudWatch Embedded Metric Format line (namespace
/// `SubscriptionBilling`, dimension `Function`).
pub fn emf_line(report: &RunReport, function: &str, timestamp_ms: i64) -> String {
    let s = &report.summary;
    let names = [
        "Due",
        "Charged",
        "Declined",
        "Rejected",
        "Ambiguous",
        "Reconciled",
        "Skipped",
    ];
    let values = [
        s.due,
        s.charged,
        s.declined,
        s.rejected,
        s.ambiguous,
        s.reconciled,
        s.skipped,
    ];
    let mut doc = serde_json::json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": "SubscriptionBilling",
                "Dimensions": [["Function"]],
                "Metrics": names.iter().map(|n| serde_json::json!({"Name": n, "Unit": "Count"})).collect::<Vec<_>>(),
            }],
        },
        "Function": function,
        "RunFailed": u8::from(report.error.is_some()),
    });
    if let Some(obj) = doc.as_object_mut() {
        for (n, v) in names.iter().zip(values) {
            obj.insert((*n).to_owned(), serde_json::json!(v));
        }
    }
    doc.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::{Anchor, SubscriptionStatus};
    use crate::store::{Buyer, KeyInfo, Plan};

    fn sub(anchor: Anchor) -> Subscription {
        let t = anchor.period_start(0);
        Subscription {
            id: SubscriptionId::parse("abcdefghij01").unwrap(),
            user_id: "u".into(),
            customer_uid: "cu".into(),
            pg: "chai".into(),
            plan: Plan {
                amount: 9900,
                name: "p".into(),
            },
            buyer: Buyer::default(),
            status: SubscriptionStatus::Active,
            anchor,
            period_index: 0,
            attempt: 1,
            next_charge_at: t,
            paid_through: None,
            key: KeyInfo {
                pg_provider: "chai".into(),
                pg_id: None,
                card_name: None,
                card_number: None,
                inserted_at: t,
            },
            version: 1,
            created_at: t,
            updated_at: t,
            cancel_at_period_end: false,
        }
    }

    #[test]
    fn paid_moves_to_the_next_anchor_not_from_the_charge_time() {
        let s = sub(Anchor::new(2027, 1, 31).unwrap());
        let paid = Fact::Paid {
            imp_uid: "imps_1".into(),
            paid_at: s.next_charge_at,
        };
        let late = s.next_charge_at + chrono::Duration::days(3);
        let n1 = next_state(&s, &paid, &DunningPolicy::default(), late);
        assert_eq!(n1.period_index, 1);
        assert_eq!(
            n1.next_charge_at,
            Anchor::new(2027, 1, 31).unwrap().period_start(1)
        );
        assert_eq!(n1.current_period().as_str(), "202702");
        assert_eq!(n1.paid_through.as_ref().unwrap().as_str(), "202701");
        assert_eq!(n1.version, 2);
        let n2 = next_state(&n1, &paid, &DunningPolicy::default(), late);
        assert_eq!(
            n2.anchor.period_date(n2.period_index).to_string(),
            "2027-03-31"
        );
    }

    #[test]
    fn declines_walk_the_dunning_schedule_then_suspend() {
        let policy = DunningPolicy::default();
        let mut s = sub(Anchor::new(2026, 12, 1).unwrap());
        let due = s.period_due();
        let declined = Fact::Declined {
            imp_uid: Some("imps_x".into()),
            reason: "잔액부족".into(),
        };
        let mut seen = Vec::new();
        for _ in 0..4 {
            s = next_state(&s, &declined, &policy, due);
            seen.push((s.status, s.attempt, (s.next_charge_at - due).num_days()));
        }
        assert_eq!(
            seen,
            vec![
                (SubscriptionStatus::PastDue, 2, 1),
                (SubscriptionStatus::PastDue, 3, 3),
                (SubscriptionStatus::PastDue, 4, 7),
                (SubscriptionStatus::Suspended, 4, 7),
            ]
        );
        assert!(!s.status.is_chargeable());
    }

    #[test]
    fn key_gone_stops_charging_and_a_cancelled_subscription_still_records_money() {
        let s = sub(Anchor::new(2026, 12, 1).unwrap());
        let gone = next_state(
            &s,
            &Fact::Rejected {
                reason: "등록되지 않은 구매자입니다.".into(),
                key_gone: true,
            },
            &DunningPolicy::default(),
            s.next_charge_at,
        );
        assert_eq!(gone.status, SubscriptionStatus::KeyMissing);
        let cancelled = Subscription {
            status: SubscriptionStatus::Cancelled,
            ..s
        };
        let paid = next_state(
            &cancelled,
            &Fact::Paid {
                imp_uid: "i".into(),
                paid_at: cancelled.next_charge_at,
            },
            &DunningPolicy::default(),
            cancelled.next_charge_at,
        );
        assert_eq!(paid.status, SubscriptionStatus::Cancelled);
        assert_eq!(paid.paid_through.unwrap().as_str(), "202612");
    }

    #[test]
    fn records_settle_only_when_they_are_our_charge() {
        let s = sub(Anchor::new(2026, 12, 1).unwrap());
        let period = s.current_period();
        let attempt = ChargeAttempt {
            subscription_id: s.id.clone(),
            merchant_uid: MerchantUid::charge(&s.id, &period, 1),
            period,
            attempt: 1,
            amount: 9900,
            state: AttemptState::Unknown,
            claim_token: None,
            lease_until: None,
            imp_uid: None,
            paid_at: None,
            fail_reason: None,
            refunded: 0,
            created_at: s.created_at,
            updated_at: s.created_at,
        };
        let record = |status: &str, amount: i64, paid_at: i64, customer: &str| -> Payment {
            serde_json::from_value(serde_json::json!({
                "imp_uid": "imps_1", "merchant_uid": attempt.merchant_uid, "amount": amount,
                "cancel_amount": 0, "currency": "KRW", "status": status, "paid_at": paid_at,
                "customer_uid": customer
            }))
            .unwrap()
        };
        let now = s.created_at;
        assert!(matches!(
            Fact::from_record(&record("paid", 9900, 5, "cu"), &attempt, "cu", now),
            Ok(Some(Fact::Paid { .. }))
        ));
        // Refunded after payment: still money taken for the period.
        assert!(matches!(
            Fact::from_record(&record("cancelled", 9900, 5, "cu"), &attempt, "cu", now),
            Ok(Some(Fact::Paid { .. }))
        ));
        // Cancelled before any payment: nothing was taken.
        assert!(matches!(
            Fact::from_record(&record("cancelled", 9900, 0, "cu"), &attempt, "cu", now),
            Ok(Some(Fact::Declined { .. }))
        ));
        assert!(matches!(
            Fact::from_record(&record("ready", 9900, 0, "cu"), &attempt, "cu", now),
            Ok(None)
        ));
        // Another amount or another billing key: never ours.
        assert!(Fact::from_record(&record("paid", 100, 5, "cu"), &attempt, "cu", now).is_err());
        assert!(
            Fact::from_record(&record("paid", 9900, 5, "cu_other"), &attempt, "cu", now).is_err()
        );
    }

    #[test]
    fn emf_line_carries_every_count() {
        let report = RunReport {
            billing_time: Utc::now(),
            run_id: "r".into(),
            summary: Summary {
                due: 5,
                charged: 2,
                declined: 1,
                rejected: 0,
                ambiguous: 1,
                reconciled: 1,
                skipped: 0,
            },
            stopped: None,
            error: None,
        };
        let v: serde_json::Value =
            serde_json::from_str(&emf_line(&report, "scheduled-charge", 1)).unwrap();
        assert_eq!(v["Charged"], 2);
        assert_eq!(v["Ambiguous"], 1);
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            "SubscriptionBilling"
        );
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .unwrap()
                .len(),
            7
        );
    }
}
