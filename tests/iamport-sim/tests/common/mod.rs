//! Helpers shared by the integration tests: a simulator on a free port and a small HTTP client.
#![allow(dead_code)] // each test binary uses a different subset

use std::sync::{Arc, Mutex};

use iamport_sim::{SimConfig, SimHandle};
use serde_json::{Value, json};

pub const AGAIN: &str = "/subscribe/payments/again";

pub async fn start() -> SimHandle {
    start_with(SimConfig::default()).await
}

pub async fn start_with(config: SimConfig) -> SimHandle {
    iamport_sim::spawn(config, "127.0.0.1:0")
        .await
        .expect("simulator starts")
}

/// A reply: HTTP status, raw body, and the body as JSON (`Value::Null` when it is not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub text: String,
    pub json: Value,
    pub location: Option<String>,
}

impl Reply {
    pub fn code(&self) -> Option<i64> {
        self.json["code"].as_i64()
    }

    pub fn message(&self) -> Option<&str> {
        self.json["message"].as_str()
    }

    pub fn response(&self) -> &Value {
        &self.json["response"]
    }
}

/// An HTTP client for one simulator: no redirects followed, no proxy.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
}

impl Api {
    pub fn new(sim: &SimHandle) -> Self {
        Self {
            http: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            base: sim.base_url(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.expect("body read");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            text,
            json,
            location,
        }
    }

    /// `POST /users/getToken` with the default credentials; returns the token.
    pub async fn token(&self) -> String {
        let reply = self
            .post_json(
                "/users/getToken",
                None,
                json!({"imp_key": "sim_imp_key", "imp_secret": "sim_imp_secret"}),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.response()["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        let mut request = self.http.post(self.url(path)).json(&body);
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        self.send(request).await
    }

    pub async fn post_form(&self, path: &str, token: Option<&str>, form: &[(&str, &str)]) -> Reply {
        let mut request = self.http.post(self.url(path)).form(form);
        if let Some(token) = token {
            request = request.header("Authorization", token.to_owned());
        }
        self.send(request).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        self.send(request).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Reply {
        let mut request = self.http.delete(self.url(path));
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        self.send(request).await
    }

    /// `again` with a JSON body for `customer_uid`, `merchant_uid`, `amount`.
    pub async fn again(
        &self,
        token: &str,
        customer_uid: &str,
        merchant_uid: &str,
        amount: i64,
    ) -> Reply {
        self.post_json(
            AGAIN,
            Some(token),
            json!({
                "customer_uid": customer_uid,
                "merchant_uid": merchant_uid,
                "amount": amount,
                "name": "월간 구독",
                "buyer_name": "홍길동",
                "buyer_email": "a@example.com",
                "buyer_tel": "01012345678",
            }),
        )
        .await
    }
}

/// One request a [`Receiver`] got.
#[derive(Debug, Clone)]
pub struct Received {
    pub content_type: String,
    pub body: String,
}

/// A tiny webhook receiver on a free port, answering `status` to every POST.
pub struct Receiver {
    pub url: String,
    pub got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    pub async fn start(status: u16) -> Self {
        use axum::http::{HeaderMap, StatusCode};
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let sink = Arc::clone(&got);
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let sink = Arc::clone(&sink);
                async move {
                    let content_type = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    sink.lock()
                        .expect("lock")
                        .push(Received { content_type, body });
                    StatusCode::from_u16(status).expect("status")
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, got }
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().expect("lock").clone()
    }
}

/// Query parameters of a URL, in order.
pub fn query_of(location: &str) -> Vec<(String, String)> {
    url::Url::parse(location)
        .expect("absolute URL")
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

pub fn param<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}
