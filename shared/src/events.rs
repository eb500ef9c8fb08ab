//! Lifecycle events for the merchant's systems, derived from committed
//! changes. Pure: given a stored record before and after one change (a
//! DynamoDB stream image pair), [`of_subscription`] and [`of_attempt`] say
//! which events that change is. An event exists if and only if its change
//! committed (the stream carries committed writes only), and the same
//! change always gives the same events with the same ids, so a replayed
//! stream batch publishes duplicates a consumer drops by `id`.
//!
//! Events never carry a billing key (`customer_uid`), a token, or buyer
//! data: the subscription id, the merchant's `user_id`, periods, amounts in
//! KRW, `merchant_uid`/`imp_uid`, the card as i'mport masks it, instants.
//! Their JSON Schemas are in `docs/events/`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use crate::billing::notices::{NoticeKind, SentNotice};
use crate::billing::price_changes::{Outcome, PriceChange};
use crate::billing::trials::Trial;
use crate::billing::{AttemptState, ChargeAttempt, Subscription, SubscriptionStatus};

/// Every event type (the EventBridge `detail-type`).
pub const TYPES: [&str; 26] = [
    "subscription.activated",
    "subscription.trial_will_end",
    "subscription.trial_consented",
    "subscription.trial_extended",
    "subscription.trial_converted",
    "subscription.past_due",
    "subscription.suspended",
    "subscription.paused",
    "subscription.resumed",
    "subscription.cancelled",
    "subscription.plan_changed",
    "subscription.price_change_requested",
    "subscription.price_change_consented",
    "subscription.price_change_declined",
    "subscription.price_change_lapsed",
    "subscription.payment_method_updated",
    "subscription.coupon_applied",
    "subscription.renewal_upcoming",
    "payment_method.action_required",
    "charge.succeeded",
    "charge.failed",
    "charge.refunded",
    "charge.needs_review",
    "receipt.cash_issued",
    "receipt.cash_cancelled",
    "receipt.cash_failed",
];

/// One event: the EventBridge `detail`, with its `detail-type` as `type`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Stable for the change it describes: consumers de-duplicate by it.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// When the change was written (RFC 3339, UTC).
    pub occurred_at: String,
    pub subscription_id: String,
    pub user_id: String,
    /// What the type says (see `docs/events/{type}.json`).
    pub data: Value,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn opt_time(t: Option<DateTime<Utc>>) -> Value {
    t.map_or(Value::Null, |t| Value::String(rfc3339(t)))
}

fn subscription_event(kind: &'static str, sub: &Subscription, data: Value) -> Event {
    Event {
        id: format!("{kind}:{}:v{}", sub.id, sub.version),
        kind,
        occurred_at: rfc3339(sub.updated_at),
        subscription_id: sub.id.to_string(),
        user_id: sub.user_id.clone(),
        data,
    }
}

fn plan(p: &crate::billing::Plan) -> Value {
    json!({"amount": p.amount, "name": p.name})
}

/// A VAT split as events show it.
fn tax(split: crate::billing::TaxSplit) -> Value {
    json!({"supply": split.supply, "vat": split.vat, "tax_free": split.tax_free})
}

/// A subscription's coupon as events show it (decision 78).
fn discount(d: &crate::billing::coupons::Discount) -> Value {
    use crate::billing::coupons::Off;
    let (percent_off, amount_off) = match d.off {
        Off::Percent(p) => (Some(i64::from(p)), None),
        Off::Amount(a) => (None, Some(a)),
    };
    json!({
        "coupon_id": d.coupon.as_str(),
        "percent_off": percent_off,
        "amount_off": amount_off,
        "duration": d.duration.label(),
        "from_period": d.from.to_string(),
        "until_period": d.until.as_ref().map(ToString::to_string),
        "end_disclosed": d.end_disclosed,
    })
}

fn card(sub: &Subscription) -> Value {
    json!({
        "pg_provider": sub.key.pg_provider,
        "card_name": sub.key.card_name,
        "card_number": sub.key.card_number,
    })
}

fn paid_through(sub: &Subscription) -> Value {
    sub.paid_through
        .as_ref()
        .map_or(Value::Null, |p| Value::String(p.to_string()))
}

/// How a subscription ended: by a cancel now, at the end of its period, or
/// by dunning. Read from the ended subscription: a cancel now clears a
/// pending period-end cancel, so the one before must not decide (C6).
fn ending(new: &Subscription) -> &'static str {
    if new.cancel_at_period_end {
        "period_end"
    } else if new.cancel_reason.is_some() {
        "now"
    } else {
        "dunning"
    }
}

/// The events one change of a subscription is (`old` before, `new` after;
/// `None` when absent). A new subscription is `subscription.activated`
/// (whatever its status: a sign-up waiting for a person is one too); a
/// status change to past due, suspended or cancelled is that event; a plan
/// change asked for (not a pending one taking effect) is
/// `subscription.plan_changed`; a new billing key is
/// `subscription.payment_method_updated`.
pub fn of_subscription(old: Option<&Subscription>, new: Option<&Subscription>) -> Vec<Event> {
    let Some(new) = new else {
        return Vec::new(); // subscriptions are never deleted
    };
    let Some(old) = old else {
        return vec![subscription_event(
            "subscription.activated",
            new,
            json!({
                "status": new.status.as_str(),
                "plan": plan(&new.plan),
                "anchor": new.anchor.date_text(),
                "interval": new.anchor.interval.label(),
                "current_period": new.current_period().to_string(),
                "next_charge_at": opt_time(new.status.is_chargeable().then_some(new.next_charge_at)),
                "paid_through": paid_through(new),
                "card": card(new),
                "trial": new.trial.as_ref().map(trial),
                "discount": new.discount.as_ref().map(discount),
            }),
        )];
    };
    let mut out = Vec::new();
    trial_events(old, new, &mut out);
    price_change_events(old, new, &mut out);
    if old.status != new.status {
        match new.status {
            SubscriptionStatus::PastDue => out.push(subscription_event(
                "subscription.past_due",
                new,
                json!({
                    "period": new.current_period().to_string(),
                    "attempt": new.attempt,
                    "next_charge_at": rfc3339(new.next_charge_at),
                }),
            )),
            // A hard decline (decision 72): only a new card can pay.
            SubscriptionStatus::ActionRequired => out.push(subscription_event(
                "payment_method.action_required",
                new,
                json!({
                    "reason": new.action_reason.map_or("unknown", |c| c.as_str()),
                    "period": new.current_period().to_string(),
                    "amount": new.plan.amount,
                    "currency": "KRW",
                    "plan": plan(&new.plan),
                    "plan_ref": new.plan_ref.as_ref().map(|r| json!({"id": r.id.as_str(), "version": r.version})),
                    "paid_through": paid_through(new),
                    "card": card(new),
                }),
            )),
            // Paused (decision 76): access until the paid-through date.
            SubscriptionStatus::Paused => out.push(subscription_event(
                "subscription.paused",
                new,
                json!({
                    "paused_at": opt_time(new.pause.map(|p| p.since)),
                    "resumes_at": opt_time(new.pause.and_then(|p| p.resumes_at)),
                    "paid_through": paid_through(new),
                    "access_until": rfc3339(new.period_due()),
                }),
            )),
            SubscriptionStatus::Active if old.status == SubscriptionStatus::Paused => {
                out.push(subscription_event(
                    "subscription.resumed",
                    new,
                    json!({
                        "paused_at": opt_time(old.pause.map(|p| p.since)),
                        "current_period": new.current_period().to_string(),
                        "next_charge_at": rfc3339(new.next_charge_at),
                        "paid_through": paid_through(new),
                    }),
                ));
            }
            SubscriptionStatus::Suspended => out.push(subscription_event(
                "subscription.suspended",
                new,
                json!({
                    "period": new.current_period().to_string(),
                    "paid_through": paid_through(new),
                }),
            )),
            SubscriptionStatus::Cancelled => out.push(subscription_event(
                "subscription.cancelled",
                new,
                json!({
                    "mode": ending(new),
                    "reason": new.cancel_reason,
                    "ended_at": opt_time(new.ended_at.or(Some(new.updated_at))),
                    "paid_through": paid_through(new),
                }),
            )),
            _ => {}
        }
    }
    let pending_took_effect =
        old.pending_plan.as_ref() == Some(&new.plan) && new.pending_plan.is_none();
    if (old.plan != new.plan || old.pending_plan != new.pending_plan) && !pending_took_effect {
        out.push(subscription_event(
            "subscription.plan_changed",
            new,
            json!({
                "plan": plan(&new.plan),
                "pending_plan": new.pending_plan.as_ref().map(plan),
                "previous_plan": plan(&old.pending_plan.clone().unwrap_or_else(|| old.plan.clone())),
                "effective": if new.pending_plan.is_some() { "next_period" } else { "next_charge" },
            }),
        ));
    }
    if let Some(notice) = &new.notice
        && old.notice.as_ref() != Some(notice)
    {
        out.push(notice_event(new, notice, notice.kind));
        // A trial whose key is gone is told both: the card is missing, and
        // the trial ends (with what it needs to consent).
        if notice.kind == NoticeKind::ActionRequired && new.status == SubscriptionStatus::Trialing {
            out.push(notice_event(new, notice, NoticeKind::TrialWillEnd));
        }
    }
    // A coupon applied to the running subscription (one redeemed with the
    // sign-up is in `subscription.activated`); its span moving with its
    // end's consent is not a new one.
    if let Some(d) = &new.discount
        && old
            .discount
            .as_ref()
            .is_none_or(|o| o.coupon != d.coupon || o.redeemed_at != d.redeemed_at)
    {
        let mut data = discount(d);
        if let Value::Object(map) = &mut data {
            map.insert("next_amount".into(), json!(new.charge_due()));
            map.insert("currency".into(), json!("KRW"));
            map.insert("redeemed_at".into(), json!(rfc3339(d.redeemed_at)));
        }
        out.push(subscription_event("subscription.coupon_applied", new, data));
    }
    if old.customer_uid != new.customer_uid {
        out.push(subscription_event(
            "subscription.payment_method_updated",
            new,
            json!({"status": new.status.as_str(), "card": card(new)}),
        ));
    }
    out
}

fn trial(t: &Trial) -> Value {
    json!({
        "days": t.terms.days,
        "ends_at": rfc3339(t.ends_at),
        "conversion_consent": t.terms.consent.as_str(),
        "on_no_consent": t.terms.on_no_consent.as_str(),
        "extended": t.extended,
        "consented": t.consent.is_some(),
    })
}

/// A trial's consent recorded, its extension, and its conversion (the
/// first period paid), each once: the consent and the conversion happen
/// once per trial, and an extension once at most.
fn trial_events(old: &Subscription, new: &Subscription, out: &mut Vec<Event>) {
    let (Some(before), Some(after)) = (&old.trial, &new.trial) else {
        return;
    };
    if before.consent.is_none()
        && let Some(c) = &after.consent
    {
        out.push(subscription_event(
            "subscription.trial_consented",
            new,
            json!({
                "channel": c.channel,
                "reference": c.reference,
                "consented_at": rfc3339(c.at),
                "converts_at": rfc3339(after.ends_at),
                "plan": plan(&new.plan),
            }),
        ));
    }
    if !before.extended && after.extended {
        out.push(subscription_event(
            "subscription.trial_extended",
            new,
            json!({
                "previous_ends_at": rfc3339(before.ends_at),
                "ends_at": rfc3339(after.ends_at),
                "reason": "no_consent",
            }),
        ));
    }
    if old.status == SubscriptionStatus::Trialing && new.status == SubscriptionStatus::Active {
        out.push(subscription_event(
            "subscription.trial_converted",
            new,
            json!({
                "period": old.current_period().to_string(),
                "plan": plan(&new.plan),
                "paid_through": paid_through(new),
            }),
        ));
    }
}

/// What a price change says in its events.
fn price_change(sub: &Subscription, c: &PriceChange) -> Value {
    let starts = (0..sub.period_index + 120)
        .find(|&k| sub.anchor.period_id(k) == c.effective)
        .map(|k| sub.anchor.period_start(k));
    json!({
        "plan": plan(&c.plan),
        "plan_ref": c.plan_ref.as_ref().map(|r| json!({"id": r.id.as_str(), "version": r.version})),
        "previous_amount": c.from_amount,
        "amount": c.plan.amount,
        "currency": "KRW",
        "effective_period": c.effective.to_string(),
        "effective_at": opt_time(starts),
        "on_no_consent": c.on_no_consent.as_str(),
        "requested_at": rfc3339(c.requested_at),
        "coupon_id": c.coupon.as_ref().map(|id| id.as_str()),
    })
}

/// A price increase's consent request, the customer's answer, and a lapse
/// without one (decision 69), each once per change. A change that took
/// effect is `subscription.plan_changed`.
fn price_change_events(old: &Subscription, new: &Subscription, out: &mut Vec<Event>) {
    let Some(after) = &new.price_change else {
        return;
    };
    // The same change before, or none (a new one is not announced until
    // its request goes out).
    let before = old
        .price_change
        .as_ref()
        .filter(|b| b.requested_at == after.requested_at);
    let mut push = |kind: &'static str, extra: Value| {
        let mut data = price_change(new, after);
        if let (Value::Object(map), Value::Object(more)) = (&mut data, extra) {
            map.extend(more);
        }
        out.push(subscription_event(kind, new, data));
    };
    if after.asked_at.is_some() && before.is_none_or(|b| b.asked_at.is_none()) {
        let opens_at = after.asks_at.unwrap_or(after.requested_at);
        push(
            "subscription.price_change_requested",
            json!({"consent_opens_at": rfc3339(opens_at)}),
        );
    }
    if let Some(c) = &after.consent
        && before.is_none_or(|b| b.consent.is_none())
    {
        push(
            "subscription.price_change_consented",
            json!({"channel": c.channel, "reference": c.reference, "consented_at": rfc3339(c.at)}),
        );
    }
    if let Some(at) = after.declined_at
        && before.is_none_or(|b| b.declined_at.is_none())
    {
        push(
            "subscription.price_change_declined",
            json!({"declined_at": rfc3339(at)}),
        );
    }
    if let Some((Outcome::NotConsented, at)) = after.closed
        && after.declined_at.is_none()
        && before.is_none_or(|b| b.closed.is_none())
    {
        push(
            "subscription.price_change_lapsed",
            json!({"lapsed_at": rfc3339(at), "status": new.status.as_str()}),
        );
    }
}

/// A notice: one per (subscription, period), its id made of both, so a
/// replay, or a second write of the same notice, has the same id. A
/// trial's notices are per conversion date instead (an extended trial may
/// convert in the period it first would have).
fn notice_event(sub: &Subscription, n: &SentNotice, as_kind: NoticeKind) -> Event {
    let kind = match as_kind {
        NoticeKind::RenewalUpcoming => "subscription.renewal_upcoming",
        NoticeKind::ActionRequired => "payment_method.action_required",
        NoticeKind::TrialWillEnd => "subscription.trial_will_end",
    };
    let in_trial = sub.status == SubscriptionStatus::Trialing;
    let mut data = json!({
        "period": n.period.to_string(),
        "amount": n.amount,
        "currency": "KRW",
        "charge_at": rfc3339(n.charge_at),
        "plan": plan(&sub.plan),
        "plan_ref": sub.plan_ref.as_ref().map(|r| json!({"id": r.id.as_str(), "version": r.version})),
        "notice_days": sub.notice_days(),
        "key_checked": n.key_checked,
    });
    if let Value::Object(map) = &mut data {
        if as_kind == NoticeKind::ActionRequired {
            map.insert("reason".into(), json!("billing_key_missing"));
            map.insert("card".into(), card(sub));
        }
        if as_kind == NoticeKind::TrialWillEnd
            && let Some(t) = &sub.trial
        {
            map.insert("consent_required".into(), json!(t.consent.is_none()));
            map.insert("trial".into(), trial(t));
        }
    }
    // A trial told again at a higher price (a plan change during the trial)
    // is a new notice: its amount is part of its id.
    let at = if in_trial {
        let day = n.charge_at.with_timezone(&crate::billing::BILLING_TZ);
        format!("{}:{}", day.format("%Y%m%d"), n.amount)
    } else {
        n.period.to_string()
    };
    Event {
        id: format!("{kind}:{}:{at}", sub.id),
        kind,
        occurred_at: rfc3339(n.sent_at),
        subscription_id: sub.id.to_string(),
        user_id: sub.user_id.clone(),
        data,
    }
}

fn charge_event(
    kind: &'static str,
    id: String,
    a: &ChargeAttempt,
    user_id: &str,
    mut data: Value,
) -> Event {
    if let Value::Object(map) = &mut data {
        map.insert("merchant_uid".into(), json!(a.merchant_uid));
        map.insert("period".into(), json!(a.period.to_string()));
        map.insert("attempt".into(), json!(a.attempt));
        map.insert("amount".into(), json!(a.amount));
    }
    Event {
        id,
        kind,
        occurred_at: rfc3339(a.updated_at),
        subscription_id: a.subscription_id.to_string(),
        user_id: user_id.to_owned(),
        data,
    }
}

/// The events one change of a charge attempt is: reaching `paid`
/// (`charge.succeeded`), `failed` or `rejected` (`charge.failed`, with the
/// next retry if the period is charged again), `needs_review`
/// (`charge.needs_review`), and a higher refunded total
/// (`charge.refunded`). `user_id` is its subscription's.
pub fn of_attempt(
    old: Option<&ChargeAttempt>,
    new: Option<&ChargeAttempt>,
    user_id: &str,
) -> Vec<Event> {
    let Some(new) = new else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let id = |kind: &str| format!("{kind}:{}:{}", new.merchant_uid, new.updated_at.timestamp());
    if old.is_none_or(|o| o.state != new.state) {
        match new.state {
            AttemptState::Paid => out.push(charge_event(
                "charge.succeeded",
                id("charge.succeeded"),
                new,
                user_id,
                json!({
                    "imp_uid": new.imp_uid,
                    "paid_at": opt_time(new.paid_at),
                    "receipt_url": new.receipt_url,
                    "tax": tax(new.tax()),
                }),
            )),
            AttemptState::Failed | AttemptState::Rejected => out.push(charge_event(
                "charge.failed",
                id("charge.failed"),
                new,
                user_id,
                json!({
                    "imp_uid": new.imp_uid,
                    "state": new.state.as_str(),
                    "reason": new.fail_reason,
                    "decline_class": new.decline.map(|c| c.as_str()),
                    "next_retry_at": opt_time(new.retry_at),
                    "final": new.retry_at.is_none(),
                }),
            )),
            AttemptState::NeedsReview => out.push(charge_event(
                "charge.needs_review",
                id("charge.needs_review"),
                new,
                user_id,
                json!({"imp_uid": new.imp_uid, "reason": new.fail_reason}),
            )),
            AttemptState::Claimed | AttemptState::Unknown => {}
        }
    }
    let before = old.map_or(0, |o| o.refunded);
    if new.refunded > before {
        out.push(charge_event(
            "charge.refunded",
            format!("charge.refunded:{}:{}", new.merchant_uid, new.refunded),
            new,
            user_id,
            json!({
                "imp_uid": new.imp_uid,
                "refunded": new.refunded - before,
                "total_refunded": new.refunded,
                // This refund's parts, pro rata of the charge's (decision 73).
                "tax": tax(new.tax().refund(before, new.refunded - before)),
                "reason": new.refund_cause.map(|c| c.as_str()),
            }),
        ));
    }
    out.extend(of_receipt(
        old.and_then(|o| o.cash_receipt.as_ref()),
        new,
        user_id,
    ));
    out
}

/// The events of a charge's cash receipt (decision 74): issued (again,
/// after a partial refund), cancelled, a try refused. The holder's number
/// is masked.
fn of_receipt(
    old: Option<&crate::billing::CashReceipt>,
    new: &ChargeAttempt,
    user_id: &str,
) -> Vec<Event> {
    let Some(r) = new.cash_receipt.as_ref() else {
        return Vec::new();
    };
    let (issues, cancels, tries) = old.map_or((0, 0, 0), |o| (o.issues, o.cancels, o.tries));
    let holder = json!({
        "type": r.holder.kind.as_str(),
        "identifier": r.holder.identifier.masked(),
        "self_issued": r.holder.identifier.expose() == crate::billing::receipts::SELF_ISSUE_NUMBER,
    });
    let mut out = Vec::new();
    if r.cancels > cancels {
        out.push(charge_event(
            "receipt.cash_cancelled",
            format!("receipt.cash_cancelled:{}:{}", new.merchant_uid, r.cancels),
            new,
            user_id,
            json!({
                "imp_uid": new.imp_uid,
                "holder": holder,
                "cancelled_at": opt_time(r.cancelled_at),
                "total_refunded": new.refunded,
            }),
        ));
    }
    if r.issues > issues
        && let Some(live) = &r.live
    {
        out.push(charge_event(
            "receipt.cash_issued",
            format!("receipt.cash_issued:{}:{}", new.merchant_uid, r.issues),
            new,
            user_id,
            json!({
                "imp_uid": new.imp_uid,
                "holder": holder,
                "receipt_amount": live.amount,
                "tax_free": live.tax_free,
                "vat": live.vat,
                "issue_number": live.issue_number,
                "url": live.url,
                "issued_at": rfc3339(live.issued_at),
                "reissue": r.issues > 1,
            }),
        ));
    }
    if r.tries > tries {
        out.push(charge_event(
            "receipt.cash_failed",
            format!("receipt.cash_failed:{}:{}", new.merchant_uid, r.rev),
            new,
            user_id,
            json!({
                "imp_uid": new.imp_uid,
                "holder": holder,
                "reason": r.last_error,
                "tries": r.tries,
                "final": r.state == crate::billing::ReceiptState::Review,
                "next_try_at": opt_time(r.next_at),
            }),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::{Anchor, Plan};
    use crate::testing;

    fn sub() -> Subscription {
        let anchor = Anchor::new(2026, 12, 1).unwrap();
        let mut s = testing::subscription("abcdefghij01", anchor);
        s.user_id = "user-7".into();
        s.customer_uid = "cu_secret_key_ref".into();
        s.plan.name = "월간".into();
        s.period_index = 1;
        s.next_charge_at = anchor.period_start(1);
        s.paid_through = Some(anchor.period_id(0));
        s.key.card_number = Some("5365-****-****-1234".into());
        s.version = 3;
        s
    }

    fn attempt(s: &Subscription, state: AttemptState) -> ChargeAttempt {
        ChargeAttempt {
            sent_at: None,
            ..testing::attempt(s, state)
        }
    }

    fn kinds(events: &[Event]) -> Vec<&'static str> {
        events.iter().map(|e| e.kind).collect()
    }

    #[test]
    fn subscription_changes_are_the_events_a_merchant_acts_on() {
        let s = sub();
        assert_eq!(
            kinds(&of_subscription(None, Some(&s))),
            ["subscription.activated"]
        );
        let mut past_due = s.next_version(s.updated_at);
        past_due.status = SubscriptionStatus::PastDue;
        past_due.attempt = 2;
        assert_eq!(
            kinds(&of_subscription(Some(&s), Some(&past_due))),
            ["subscription.past_due"]
        );
        // The same state written again (a version bump only): nothing.
        let bumped = past_due.next_version(s.updated_at);
        assert!(of_subscription(Some(&past_due), Some(&bumped)).is_empty());
        let mut card = bumped.next_version(s.updated_at);
        card.customer_uid = "cu_new".into();
        card.status = SubscriptionStatus::Active;
        assert_eq!(
            kinds(&of_subscription(Some(&bumped), Some(&card))),
            ["subscription.payment_method_updated"]
        );
        let mut ended = card.next_version(s.updated_at);
        ended.status = SubscriptionStatus::Cancelled;
        ended.cancel_reason = Some("asked".into());
        let events = of_subscription(Some(&card), Some(&ended));
        assert_eq!(kinds(&events), ["subscription.cancelled"]);
        assert_eq!(events[0].data["mode"], "now");
        // No billing key, ever.
        let text = serde_json::to_string(&events).unwrap();
        assert!(!text.contains("cu_"), "{text}");
    }

    /// Defect C6: a cancel now of a subscription that was set to end at
    /// period end was reported as `period_end`.
    #[test]
    fn a_cancel_now_after_a_period_end_cancel_is_reported_as_now() {
        let s = sub();
        let mut ending = s.next_version(s.updated_at);
        ending.cancel_at_period_end = true;
        ending.cancel_reason = Some("too expensive".into());
        assert!(of_subscription(Some(&s), Some(&ending)).is_empty());
        let mut now = ending.next_version(s.updated_at);
        now.status = SubscriptionStatus::Cancelled;
        now.cancel_at_period_end = false;
        now.cancel_reason = Some("asked to stop now".into());
        let events = of_subscription(Some(&ending), Some(&now));
        assert_eq!(kinds(&events), ["subscription.cancelled"]);
        assert_eq!(events[0].data["mode"], "now");
        // And the period-end cancel reaching its end is `period_end`.
        let mut reached = ending.next_version(s.updated_at);
        reached.status = SubscriptionStatus::Cancelled;
        let events = of_subscription(Some(&ending), Some(&reached));
        assert_eq!(events[0].data["mode"], "period_end");
    }

    #[test]
    fn a_plan_change_is_announced_once_not_again_when_it_takes_effect() {
        let s = sub();
        let mut asked = s.next_version(s.updated_at);
        asked.pending_plan = Some(Plan {
            amount: 14900,
            name: "프로".into(),
            notice_days: crate::billing::notices::DEFAULT_NOTICE_DAYS,
            tax: crate::billing::TaxSetting::Taxable,
        });
        let events = of_subscription(Some(&s), Some(&asked));
        assert_eq!(kinds(&events), ["subscription.plan_changed"]);
        assert_eq!(events[0].data["effective"], "next_period");
        let mut paid = asked.next_version(s.updated_at);
        paid.plan = asked.pending_plan.clone().unwrap();
        paid.pending_plan = None;
        assert!(of_subscription(Some(&asked), Some(&paid)).is_empty());
    }

    #[test]
    fn a_trial_is_noticed_consented_and_converted_once_each() {
        use crate::billing::notices::{KeyCheck, noticed};
        use crate::billing::trials::{self, ConversionConsent, OnNoConsent, TrialTerms, consented};
        let now = DateTime::parse_from_rfc3339("2026-12-03T03:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap();
        let terms = TrialTerms {
            days: 14,
            consent: ConversionConsent::Explicit,
            on_no_consent: OnNoConsent::ExtendTrialOnce,
        };
        let s = crate::testing::trialing("abcdefghij01", terms, now);
        let (anchor, ends_at) = (s.anchor, s.next_charge_at);
        let activated = of_subscription(None, Some(&s));
        assert_eq!(activated[0].data["status"], "trialing");
        assert_eq!(activated[0].data["trial"]["ends_at"], rfc3339(ends_at));
        let at = s.notice_at().unwrap();
        let told = noticed(&s, KeyCheck::OnFile, at);
        let events = of_subscription(Some(&s), Some(&told));
        assert_eq!(kinds(&events), ["subscription.trial_will_end"]);
        assert_eq!(
            events[0].id,
            "subscription.trial_will_end:abcdefghij01:20261217:9900"
        );
        assert_eq!(events[0].data["consent_required"], true);
        assert_eq!(events[0].data["notice_days"], 7);
        let agreed = consented(&told, "web", "consent-77", at, 30, at)
            .unwrap()
            .unwrap();
        let events = of_subscription(Some(&told), Some(&agreed));
        assert_eq!(kinds(&events), ["subscription.trial_consented"]);
        assert_eq!(events[0].data["reference"], "consent-77");
        let mut paid = agreed.next_version(ends_at);
        paid.status = SubscriptionStatus::Active;
        paid.period_index = 1;
        paid.paid_through = Some(anchor.period_id(0));
        let events = of_subscription(Some(&agreed), Some(&paid));
        assert_eq!(kinds(&events), ["subscription.trial_converted"]);
        assert_eq!(events[0].data["period"], "202612");
        // Without a consent: extended once, with a notice of its own.
        let extended = trials::lapsed(&told, ends_at).unwrap();
        let events = of_subscription(Some(&told), Some(&extended));
        assert_eq!(kinds(&events), ["subscription.trial_extended"]);
        // A trial whose key is gone is told both.
        let lost = noticed(&s, KeyCheck::Missing, at);
        assert_eq!(
            kinds(&of_subscription(Some(&s), Some(&lost))),
            [
                "payment_method.action_required",
                "subscription.trial_will_end"
            ]
        );
        let again = noticed(&extended, KeyCheck::OnFile, extended.notice_at().unwrap());
        let events = of_subscription(Some(&extended), Some(&again));
        assert_eq!(
            events[0].id,
            "subscription.trial_will_end:abcdefghij01:20261231:9900"
        );
    }

    #[test]
    fn a_notice_is_one_event_per_period_with_the_same_id_on_replay() {
        use crate::billing::notices::{KeyCheck, noticed};
        let s = sub();
        let at = s.notice_at().unwrap();
        let sent = noticed(&s, KeyCheck::OnFile, at);
        let events = of_subscription(Some(&s), Some(&sent));
        assert_eq!(events.len(), 1, "{events:?}");
        let e = &events[0];
        assert_eq!(e.kind, "subscription.renewal_upcoming");
        assert_eq!(e.id, "subscription.renewal_upcoming:abcdefghij01:202701");
        assert_eq!(e.data["amount"], s.plan.amount);
        assert_eq!(e.data["charge_at"], rfc3339(s.next_charge_at));
        assert_eq!(e.data["period"], "202701");
        assert_eq!(of_subscription(Some(&s), Some(&sent)), events, "a replay");
        // A later write that keeps the notice announces nothing again.
        let mut later = sent.next_version(at);
        later.cancel_at_period_end = true;
        assert!(
            of_subscription(Some(&sent), Some(&later))
                .iter()
                .all(|e| e.kind != "subscription.renewal_upcoming")
        );
        let lost = noticed(&s, KeyCheck::Missing, at);
        let events = of_subscription(Some(&s), Some(&lost));
        assert_eq!(
            events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["payment_method.action_required:abcdefghij01:202701"]
        );
        assert_eq!(events[0].data["reason"], "billing_key_missing");
        assert!(
            !serde_json::to_string(&events)
                .unwrap()
                .contains("cu_secret")
        );
    }

    #[test]
    fn charge_events_follow_the_attempt_and_keep_their_ids_on_replay() {
        let s = sub();
        let claimed = attempt(&s, AttemptState::Claimed);
        assert!(of_attempt(None, Some(&claimed), "user-7").is_empty());
        let mut failed = claimed.clone();
        failed.state = AttemptState::Failed;
        failed.fail_reason = Some("잔액부족".into());
        failed.retry_at = Some(s.next_charge_at);
        let events = of_attempt(Some(&claimed), Some(&failed), "user-7");
        assert_eq!(kinds(&events), ["charge.failed"]);
        assert_eq!(events[0].data["final"], false);
        assert_eq!(events, of_attempt(Some(&claimed), Some(&failed), "user-7"));
        let mut paid = claimed.clone();
        paid.state = AttemptState::Paid;
        paid.imp_uid = Some("imps_1".into());
        let mut refunded = paid.clone();
        refunded.refunded = 3000;
        refunded.refund_cause = Some(crate::billing::RefundCause::ProratedCancel);
        let events = of_attempt(Some(&paid), Some(&refunded), "user-7");
        assert_eq!(kinds(&events), ["charge.refunded"]);
        assert_eq!(events[0].data["refunded"], 3000);
        assert_eq!(events[0].data["reason"], "prorated_cancel");
        assert_eq!(events[0].user_id, "user-7");
    }
}
