//! PortOne V2 (`https://api.portone.io`) as a payment gateway: billing-key
//! charges, payment and billing-key lookups, key deletion, refunds, and its
//! webhooks (Standard Webhooks, `webhook`).
//!
//! Facts and sources: `../shared/portone-v2/README.md` beside the repository;
//! the shapes are the official spec's (`tests/iamport-sim` checks its V2
//! face against the same subset). In V2 the billing key is issued by
//! PortOne and kept by us: it travels only in request bodies and in
//! percent-encoded path segments, never in an error text, a log or an event.

mod gateway;
pub mod model;
pub mod webhook;
pub mod window;
pub mod wire;

use std::time::Duration;

use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

use crate::gateway::{Ambiguity, AmbiguityKind, GatewayError, Rejection, RejectionKind};
use crate::secret::Secret;
use webhook::WebhookSecrets;
use wire::Answer;

/// How to reach PortOne V2 and which store and channel to use.
#[derive(Clone)]
pub struct PortOneConfig {
    pub base_url: Url,
    /// `Authorization: PortOne {api_secret}` (no token step).
    pub api_secret: Secret,
    pub store_id: String,
    /// The channel billing keys are issued on and charged through.
    pub channel_key: String,
    /// `billingKeyMethod` of the payment window.
    pub billing_key_method: String,
    /// The secrets V2 webhooks are signed with (two during a rotation).
    pub webhook_secrets: WebhookSecrets,
    pub connect_timeout: Duration,
    pub timeout: Duration,
}

impl std::fmt::Debug for PortOneConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortOneConfig")
            .field("base_url", &self.base_url.as_str())
            .field("store_id", &self.store_id)
            .field("channel_key", &self.channel_key)
            .finish_non_exhaustive()
    }
}

/// The V2 REST client.
#[derive(Clone)]
pub struct PortOneClient {
    http: reqwest::Client,
    config: PortOneConfig,
}

impl std::fmt::Debug for PortOneClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortOneClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PortOneClient {
    pub fn new(config: PortOneConfig) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .user_agent(concat!("subscription-billing/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { http, config })
    }

    pub fn config(&self) -> &PortOneConfig {
        &self.config
    }

    /// `base/segments…`, each segment percent-encoded.
    fn url(&self, segments: &[&str]) -> Result<Url, GatewayError> {
        if segments.iter().any(|s| matches!(*s, "" | "." | "..")) {
            return Err(GatewayError::Rejected(Rejection {
                kind: RejectionKind::BadRequest,
                http_status: None,
                code: None,
                message: "not a usable id".into(),
            }));
        }
        let mut url = self.config.base_url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url.query_pairs_mut()
            .append_pair("storeId", &self.config.store_id);
        Ok(url)
    }

    pub(crate) async fn call<T: DeserializeOwned, B: Serialize>(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&B>,
    ) -> Answer<T> {
        let url = match self.url(segments) {
            Ok(u) => u,
            Err(e) => return Answer::Failed(e),
        };
        let mut request = self.http.request(method, url).header(
            "Authorization",
            format!("PortOne {}", self.config.api_secret.expose()),
        );
        if let Some(b) = body {
            request = request.json(b);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Answer::Failed(transport_error(&e)),
        };
        let status = response.status();
        let bytes = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return Answer::Failed(transport_error(&e)),
        };
        wire::decode(status.as_u16(), &bytes)
    }
}

/// A transport failure, described without the URL (it may hold a billing
/// key).
fn transport_error(e: &reqwest::Error) -> GatewayError {
    if e.is_connect() {
        // Failed before the request was written: nothing reached PortOne.
        return GatewayError::not_sent("PortOne: could not connect");
    }
    let (kind, what) = if e.is_timeout() {
        (AmbiguityKind::Timeout, "timed out")
    } else {
        (AmbiguityKind::Connection, "connection failed")
    };
    GatewayError::Ambiguous(Ambiguity {
        kind,
        http_status: None,
        detail: format!("PortOne: {what}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::RejectionKind;

    #[test]
    fn a_throttled_answer_was_never_taken_even_with_a_typed_body() {
        for body in [
            &br#"{"type":"TOO_MANY_REQUESTS","message":"slow down"}"#[..],
            b"",
        ] {
            match wire::decode::<model::Ignored>(429, body) {
                Answer::Failed(GatewayError::Rejected(r)) => {
                    assert_eq!(r.kind, RejectionKind::NotSent)
                }
                _ => panic!("429 must be 'not sent'"),
            }
        }
        // A typed error of any other status stays a typed refusal.
        assert!(matches!(
            wire::decode::<model::Ignored>(409, br#"{"type":"ALREADY_PAID"}"#),
            Answer::Refused { status: 409, .. }
        ));
    }
}
