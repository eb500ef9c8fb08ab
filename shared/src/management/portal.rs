//! The customer's "my subscription" page (issue 23 §5: cancelling as easy
//! as signing up). The merchant's backend asks for a signed, short-lived
//! link to one subscription (`POST /subscriptions/{id}/portal-link`) and
//! sends the customer to its own page with it; the page's backend opens it
//! (`GET /portal/{token}`) to learn which subscription the holder may see
//! and act on, and what to show: the subscription, its pending price
//! change, and the mid-term cancel's quote beside the end-of-period one.
//! The actions themselves go through the subscription's own routes.
//!
//! A token is `pl-{subscription}-{expiry}-{tag}`: the expiry in UNIX
//! seconds and a tag under the deployment's uid key over both, so a link
//! cannot be made for another subscription or kept past its time, and
//! nothing is stored for it (decision 70).

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::Serialize;
use tracing::info;

use super::cancellation::{QuoteView, quote_id, quote_now, view};
use super::views::rfc3339;
use super::{ManageError, SubscriptionView, load, parse_id, view_of};
use crate::billing::SubscriptionId;
use crate::engine::Engine;
use crate::ledger::Ledger;

/// How long a link opens the page: long enough to read it and act, short
/// enough that a forwarded or logged link soon stops working.
pub const PORTAL_LINK_TTL: Duration = Duration::minutes(30);

const PREFIX: &str = "pl";
const LABEL: &str = "portal-link";

/// `POST /subscriptions/{id}/portal-link`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PortalLink {
    pub token: String,
    pub subscription_id: String,
    pub expires_at: String,
}

/// `GET /portal/{token}`: what the page shows.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PortalView {
    pub subscription_id: String,
    pub expires_at: String,
    pub subscription: SubscriptionView,
    /// What cancelling now would refund; absent when nothing paid covers
    /// today or the subscription has ended (`quote_unavailable` says why).
    pub cancellation_quote: Option<QuoteView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quote_unavailable: Option<String>,
}

fn token_of<L, G>(engine: &Engine<L, G>, id: &SubscriptionId, expires: i64) -> String {
    let tag = engine
        .settings
        .uid_key
        .tag_of(LABEL, &format!("{id}|{expires}"));
    format!("{PREFIX}-{id}-{expires}-{tag}")
}

/// The subscription and expiry a token names, if it is one of ours (the
/// tag checked in constant time); `None` for anything else.
fn read_token<L, G>(engine: &Engine<L, G>, token: &str) -> Option<(SubscriptionId, i64)> {
    let mut parts = token.split('-');
    let (Some(PREFIX), Some(id), Some(expires), Some(tag), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let id = SubscriptionId::parse(id)?;
    if expires.len() > 12 || !expires.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let expires: i64 = expires.parse().ok()?;
    let expected = token_of(engine, &id, expires);
    let given = format!("{PREFIX}-{id}-{expires}-{tag}");
    constant_time_eq(expected.as_bytes(), given.as_bytes()).then_some((id, expires))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Issues a link to `id`'s page, valid for [`PORTAL_LINK_TTL`].
pub async fn portal_link<L: Ledger, G>(
    engine: &Engine<L, G>,
    id: &str,
) -> Result<PortalLink, ManageError> {
    let sub = load(engine, &parse_id(id)?).await?;
    let expires = engine.now() + PORTAL_LINK_TTL;
    let token = token_of(engine, &sub.id, expires.timestamp());
    info!(subscription_id = %sub.id, expires_at = %rfc3339(expires), "portal link issued");
    Ok(PortalLink {
        token,
        subscription_id: sub.id.to_string(),
        expires_at: rfc3339(expires),
    })
}

/// Opens a link: 404 for a token that is not ours (a forged or altered
/// one says no more than that), 410 `link_expired` once its time is up.
pub async fn open_portal<L: Ledger, G>(
    engine: &Engine<L, G>,
    token: &str,
) -> Result<PortalView, ManageError> {
    let (id, expires) = read_token(engine, token)
        .ok_or_else(|| ManageError::NotFound("no such portal link".into()))?;
    let expires_at: DateTime<Utc> = Utc
        .timestamp_opt(expires, 0)
        .single()
        .ok_or_else(|| ManageError::NotFound("no such portal link".into()))?;
    if engine.now() >= expires_at {
        return Err(ManageError::Expired(format!(
            "this link expired at {}: ask the shop for a new one",
            rfc3339(expires_at)
        )));
    }
    let sub = load(engine, &id).await?;
    let subscription = view_of(engine, &sub).await?;
    let (cancellation_quote, quote_unavailable) = match quote_now(engine, &sub, false).await {
        Ok(q) => {
            let qid = quote_id(engine, &sub, &q);
            (Some(view(&sub, &q, qid)), None)
        }
        Err(ManageError::Conflict(why)) => (None, Some(why)),
        Err(e) => return Err(e),
    };
    Ok(PortalView {
        subscription_id: id.to_string(),
        expires_at: rfc3339(expires_at),
        subscription,
        cancellation_quote,
        quote_unavailable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::Anchor;
    use crate::testing::{self, ScriptedGateway};

    #[tokio::test]
    async fn a_link_opens_its_subscription_until_it_expires_and_nothing_forged_passes() {
        let engine = testing::engine(ScriptedGateway::new());
        let sub = testing::subscription(
            "sub0portal01",
            Anchor::from_instant(engine.now() - Duration::days(3)),
        );
        testing::store_subscription(&engine.ledger, &sub).await;
        let link = portal_link(&engine, sub.id.as_str()).await.unwrap();
        assert!(link.token.len() <= 64 && link.token.starts_with("pl-"));
        let opened = open_portal(&engine, &link.token).await.unwrap();
        assert_eq!(opened.subscription_id, sub.id.as_str());
        assert_eq!(opened.subscription.id, sub.id.as_str());
        assert_eq!(opened.expires_at, link.expires_at);

        let (_, expires) = read_token(&engine, &link.token).unwrap();
        let other = SubscriptionId::parse("sub0portal02").unwrap();
        let tag = link.token.rsplit('-').next().unwrap();
        for forged in [
            format!("pl-{other}-{expires}-{tag}"),
            format!("pl-{}-{}-{tag}", sub.id, expires + 3600),
            format!("pl-{}-{expires}-{}", sub.id, "0".repeat(tag.len())),
            format!("{}-x", link.token),
            link.token.replacen("pl-", "px-", 1),
            String::new(),
            "pl---".into(),
        ] {
            assert!(
                matches!(
                    open_portal(&engine, &forged).await,
                    Err(ManageError::NotFound(_))
                ),
                "{forged}"
            );
        }
        assert!(matches!(
            portal_link(&engine, "nobody").await,
            Err(ManageError::NotFound(_))
        ));

        engine.clock.advance(PORTAL_LINK_TTL);
        let late = open_portal(&engine, &link.token).await.unwrap_err();
        assert_eq!((late.http_status(), late.code()), (410, "link_expired"));
    }
}
