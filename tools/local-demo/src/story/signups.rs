//! Chapter 2: the sign-ups, as a browser makes them: prepare, the payment
//! window (the simulator), the callback; and a refreshed callback page that
//! must charge nothing.

use std::time::Instant;

use serde_json::{Value, json};
use shared::billing::SubscriptionId;
use url::Url;

use super::Story;
use crate::people::*;
use crate::stack::*;
use crate::{Result, fail};

pub(crate) async fn chapter(story: &mut Story<'_>) -> Result<Vec<Member>> {
    let Story { stack, checks, .. } = story;
    let stack: &Stack = stack;
    stack.step(
        2,
        "sign-ups: prepare → payment window (simulator) → callback (billing-callback)",
    );
    let t = Instant::now();
    let r = stack
        .http
        .get(stack.callback_fn("/billing/callback"))
        .send()
        .await
        .map_err(|e| fail(format!("billing-callback under cargo lambda watch: {e}")))?;
    println!(
        "  billing-callback is up (a bare GET /billing/callback answers {}) after {:.1}s",
        r.status().as_u16(),
        t.elapsed().as_secs_f64()
    );
    catalogue(stack, checks).await?;
    let mut members = Vec::new();
    for p in &PEOPLE {
        let m = register(stack, p).await?;
        let ok = match p.scenario {
            Scenario::ClosesWindow => m.landed_param("reason").as_deref() == Some("payment_failed"),
            // A trial charges nothing at sign-up.
            s if s.is_trial() => m.signed_up() && m.landed_param("first_charge").is_none(),
            _ => m.signed_up() && m.landed_param("first_charge").as_deref() == Some("paid"),
        };
        checks.check(
            ok,
            format!(
                "{}: sign-up landed on {} (expected {})",
                p.label,
                short_url(&m.landed),
                if p.scenario == Scenario::ClosesWindow {
                    "the failure page with reason=payment_failed"
                } else if p.scenario.is_trial() {
                    "the success page with no first charge (a trial)"
                } else {
                    "the success page with first_charge=paid"
                }
            ),
        );
        members.push(m);
    }
    // The browser comes back with the same redirect (refresh, back button).
    let paid_before = stack
        .ledger()
        .await?
        .iter()
        .filter(|p| ever_paid(p))
        .count();
    let alice = &members[0];
    let again = stack.http.get(alice.callback.clone()).send().await?;
    let again_to = again
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .and_then(|l| Url::parse(l).ok());
    let paid_after = stack
        .ledger()
        .await?
        .iter()
        .filter(|p| ever_paid(p))
        .count();
    println!(
        "  alice refreshes the callback page: {} → {} (payments in the ledger: {paid_before} before, {paid_after} after)",
        again.status().as_u16(),
        again_to.as_ref().map(short_url).unwrap_or_default()
    );
    checks.check(
        again.status().as_u16() == 302
            && again_to.as_ref().is_some_and(|u| {
                u.query_pairs()
                    .any(|(k, v)| k == "subscription_id" && v == alice.id.as_str())
            })
            && paid_before == paid_after,
        "a repeated callback redirect must land on success again and charge nothing",
    );
    let members: Vec<Member> = members.into_iter().filter(Member::signed_up).collect();

    for m in members.iter().filter(|m| m.p.from_catalogue) {
        let plan_ref = stack.sub(&m.id).await?.plan_ref;
        println!(
            "  {:<6} signed up by plan_id: the subscription keeps {}",
            m.p.label,
            plan_ref
                .as_ref()
                .map(|r| format!("{} v{}", r.id, r.version))
                .unwrap_or_else(|| "no plan version".into())
        );
        checks.check(
            plan_ref.is_some_and(|r| r.id.as_str() == CATALOGUE_PLAN.0 && r.version == 1),
            format!(
                "{}: the subscription should keep {} v1",
                m.p.label, CATALOGUE_PLAN.0
            ),
        );
    }
    Ok(members)
}

/// The merchant puts its plans in the catalogue (`POST /plans`), one
/// [`put_plan`] each.
async fn catalogue(stack: &Stack, checks: &mut Checks) -> Result<()> {
    let (id, name, amount) = CATALOGUE_PLAN;
    put_plan(
        stack,
        checks,
        json!({"id": id, "name": name, "amount": amount, "currency": "KRW",
               "tax": "mixed", "tax_free_amount": TAX_FREE}),
        &format!(
            "{name}, {} KRW a month, mixed tax: {} KRW of it tax-free",
            won(amount),
            won(TAX_FREE)
        ),
    )
    .await?;
    let (id, name, amount, days) = TRIAL_PLAN;
    put_plan(
        stack,
        checks,
        json!({"id": id, "name": name, "amount": amount, "trial_days": days,
               "conversion_consent": "explicit", "on_no_consent": "cancel"}),
        &format!(
            "{name}, {} KRW a month after a {days}-day free trial; the conversion needs a consent",
            won(amount)
        ),
    )
    .await?;
    let (id, name, amount) = YEARLY_PLAN;
    put_plan(
        stack,
        checks,
        json!({"id": id, "name": name, "amount": amount, "interval": "year"}),
        &format!("{name}, {} KRW a year: interval year", won(amount)),
    )
    .await?;
    let (id, name, amount, day) = BILLING_DAY_PLAN;
    put_plan(
        stack,
        checks,
        json!({"id": id, "name": name, "amount": amount,
               "billing_day": day, "first_period": "prorated"}),
        &format!(
            "{name}, {} KRW a month on day {day}; the first, partial period prorated",
            won(amount)
        ),
    )
    .await?;
    let (id, name, percent, periods) = LAUNCH_COUPON;
    let body = json!({"id": id, "name": name, "percent_off": percent,
                      "duration": format!("repeating:{periods}"), "max_redemptions": 1000});
    let (status, answer, _) = stack
        .api(
            "POST",
            "/coupons",
            Some(body),
            Some(&format!("coupon-{id}")),
        )
        .await?;
    println!(
        "  the merchant  POST /coupons {id} ({name}: {percent}% off for {periods} periods, at most 1,000 redemptions) → {status}"
    );
    checks.check(
        status == 201 || status == 409,
        format!("POST /coupons {id} answered {status}: {answer}"),
    );
    let (id, name, amount) = PLUS_PLAN;
    put_plan(
        stack,
        checks,
        json!({"id": id, "name": name, "amount": amount,
               "tax": "mixed", "tax_free_amount": TAX_FREE}),
        &format!("{name} at its new price, {} KRW a month", won(amount)),
    )
    .await
}

/// `POST /plans` with `body`, printed with `what`; a table kept from an
/// earlier story has the plan already (409: a version never changes).
async fn put_plan(stack: &Stack, checks: &mut Checks, body: Value, what: &str) -> Result<()> {
    let id = body["id"].as_str().unwrap_or_default().to_owned();
    let (status, answer, _) = stack
        .api("POST", "/plans", Some(body), Some(&format!("plan-{id}")))
        .await?;
    println!(
        "  the merchant  POST /plans {id} ({what}) → {status}{}",
        if status == 409 {
            " (in the catalogue from an earlier story)"
        } else {
            ""
        }
    );
    checks.check(
        status == 201 || status == 409,
        format!("POST /plans {id} answered {status}: {answer}"),
    );
    Ok(())
}

/// Registers one customer the way a browser would, printing each hop.
pub(crate) async fn register(stack: &Stack, p: &'static Persona) -> Result<Member> {
    let t = Instant::now();
    let mut body = json!({
        "user_id": p.user_id,
        "buyer": {"name": p.buyer_name, "email": p.email, "tel": p.tel},
    });
    if p.scenario.is_trial() {
        body["plan_id"] = json!(TRIAL_PLAN.0);
    } else if p.scenario == Scenario::Yearly {
        body["plan_id"] = json!(YEARLY_PLAN.0);
    } else if p.scenario == Scenario::BillingDay {
        body["plan_id"] = json!(BILLING_DAY_PLAN.0);
    } else if p.from_catalogue {
        body["plan_id"] = json!(CATALOGUE_PLAN.0);
    } else {
        body["plan"] = json!({"amount": p.amount, "name": p.plan});
    }
    if p.scenario == Scenario::Coupon {
        body["coupon_id"] = json!(LAUNCH_COUPON.0);
    }
    let r = stack
        .http
        .post(stack.callback_fn("/billing/prepare"))
        .json(&body)
        .send()
        .await?;
    let status = r.status();
    let text = r.text().await?;
    if status.as_u16() != 201 {
        return Err(fail(format!(
            "POST /billing/prepare for {} → {status}: {text}",
            p.label
        )));
    }
    let prepared: Value = serde_json::from_str(&text)?;
    let id = SubscriptionId::parse(str_of(&prepared, "subscription_id"))
        .ok_or_else(|| fail(format!("prepare answered no subscription_id: {text}")))?;
    let params = sdk_params(&prepared)
        .ok_or_else(|| fail(format!("prepare answered no SDK parameters: {text}")))?;

    let mut extra = Vec::new();
    if p.scenario == Scenario::ClosesWindow {
        extra.push(("scenario", "user_cancel"));
    }
    if let Some(sdk) = p.sdk {
        extra.push(("sdk", sdk));
    }
    let (callback, landed) = window_and_callback(stack, params, &extra).await?;
    let customer_uid = key_of(params, &callback);
    println!(
        "  {:<6} {:<9} {:>6} KRW  {}  →  prepare 201 (subscription {id}, {})",
        p.label,
        p.user_id,
        won(p.amount),
        pad_display(p.plan, 11),
        shown(&customer_uid),
    );
    println!("  {:<6} window 302 {}", "", masked_query(&callback));
    println!(
        "  {:<6} callback 302 → {}   ({:.1}s)",
        "",
        short_url(&landed),
        t.elapsed().as_secs_f64()
    );
    Ok(Member {
        p,
        id,
        customer_uid,
        callback,
        landed,
    })
}

/// The SDK parameters `prepare` (or `payment-method`) answered: V1's
/// `request_pay` or V2's `request_issue_billing_key`.
pub(crate) fn sdk_params(answer: &Value) -> Option<&serde_json::Map<String, Value>> {
    answer
        .get("request_issue_billing_key")
        .or_else(|| answer.get("request_pay"))
        .and_then(Value::as_object)
}

/// Whether these are V2's `PortOne.requestIssueBillingKey` parameters.
pub(crate) fn is_v2(params: &serde_json::Map<String, Value>) -> bool {
    params.contains_key("storeId")
}

/// The key the window issued: V1's `customer_uid` (ours, in the
/// parameters), V2's `billingKey` (in PortOne's redirect; empty on failure).
pub(crate) fn key_of(params: &serde_json::Map<String, Value>, callback: &Url) -> String {
    if is_v2(params) {
        callback
            .query_pairs()
            .find(|(k, _)| k == "billingKey")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    } else {
        str_of(&Value::Object(params.clone()), "customer_uid").to_owned()
    }
}

/// A key reference for the screen: V2 billing keys are secret-grade, so
/// only their last four characters show.
pub(crate) fn shown(key: &str) -> String {
    match key.strip_prefix("billing-key-") {
        Some(rest) => format!("billing-key-…{}", &rest[rest.len().saturating_sub(4)..]),
        None => format!("{}…", &key[..key.len().min(11)]),
    }
}

/// The redirect's query for the screen, the billing key masked.
pub(crate) fn masked_query(callback: &Url) -> String {
    callback
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "billingKey" {
                shown(&v)
            } else {
                v.into_owned()
            };
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The payment window with exactly these parameters (V1's `/window` for
/// `IMP.request_pay`, V2's `/portone/window` for
/// `PortOne.requestIssueBillingKey`, nested objects flattened as `a.b`), then
/// the redirect to the callback: the real callback. Returns the callback URL
/// and where the callback sent the browser.
pub(crate) async fn window_and_callback(
    stack: &Stack,
    params: &serde_json::Map<String, Value>,
    extra: &[(&str, &str)],
) -> Result<(Url, Url)> {
    let path = if is_v2(params) {
        "portone/window"
    } else {
        "window"
    };
    let mut window = Url::parse(&format!("{}/{path}", stack.sim))?;
    {
        let mut q = window.query_pairs_mut();
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        for (k, v) in params {
            match v {
                Value::Object(inner) => {
                    for (ik, iv) in inner {
                        q.append_pair(&format!("{k}.{ik}"), &text(iv));
                    }
                }
                other => {
                    q.append_pair(k, &text(other));
                }
            }
        }
        for (k, v) in extra {
            q.append_pair(k, v);
        }
    }
    let r = stack.http.get(window).send().await?;
    let callback = location(&r, "the payment window")?;
    let r = stack
        .on_story_clock(stack.http.get(callback.clone()))
        .send()
        .await?;
    let landed = location(&r, "billing-callback")?;
    Ok((callback, landed))
}

/// A new card for `m`: `POST /subscriptions/{id}/payment-method`, the
/// payment window with the new `customer_uid`, the callback. Returns the
/// new `customer_uid` and where the browser landed.
pub(crate) async fn new_card(stack: &Stack, m: &Member) -> Result<(String, Url)> {
    // The customer hears of the decline and comes back that afternoon.
    stack.advance_story_clock(chrono::Duration::hours(4));
    let (status, body, _) = stack
        .api(
            "POST",
            &format!("/subscriptions/{}/payment-method", m.id),
            Some(json!({})),
            None,
        )
        .await?;
    let params = sdk_params(&body)
        .filter(|_| status == 201)
        .ok_or_else(|| fail(format!("payment-method answered {status}: {body}")))?;
    let (callback, landed) = window_and_callback(stack, params, &[]).await?;
    Ok((key_of(params, &callback), landed))
}

pub(crate) fn location(r: &reqwest::Response, what: &str) -> Result<Url> {
    if r.status().as_u16() != 302 {
        return Err(fail(format!(
            "{what} answered {} instead of a 302 redirect",
            r.status()
        )));
    }
    let loc = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| fail(format!("{what} redirected without a Location")))?;
    Ok(Url::parse(loc)?)
}
