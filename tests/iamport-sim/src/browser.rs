//! What a browser sees of the PG: stand-ins of the browser SDKs and a
//! payment window page with approve and cancel buttons.
//!
//! - `GET /sdk/iamport.js`: `IMP.init(code)` and `IMP.request_pay(params, callback)`. The stand-in
//!   always takes the redirect flow (as i'mport does on mobile, and as CHAI's guide does with
//!   `m_redirect_url`): the page navigates to the window, which redirects to `m_redirect_url`.
//! - `GET /sdk/portone.js`: `PortOne.requestIssueBillingKey(params)`, the same way to `redirectUrl`.
//! - `GET /window/page?…` and `GET /portone/window/page?…`: the window itself, showing the order and
//!   two buttons: approve (`#approve`, on to `/window` or `/portone/window` with the same parameters)
//!   and cancel (`#cancel`, the same with `scenario=user_cancel`). Those answer with the redirect.

use axum::extract::RawQuery;
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};

use crate::params::query_pairs;

const IAMPORT_JS: &str = r#"// iamport-sim: a stand-in of i'mport's browser SDK (https://cdn.iamport.kr/v1/iamport.js).
(function () {
  var origin = new URL(document.currentScript.src).origin;
  function flatten(params, prefix, query) {
    Object.keys(params || {}).forEach(function (k) {
      var v = params[k];
      var name = prefix ? prefix + "." + k : k;
      if (v !== null && typeof v === "object") flatten(v, name, query);
      else if (v !== undefined && v !== null) query.append(name, String(v));
    });
    return query;
  }
  window.IMP = {
    init: function (code) { this.code = code; },
    // The redirect flow: the window takes the whole page and comes back to m_redirect_url.
    request_pay: function (params, callback) {
      var query = flatten(params, "", new URLSearchParams());
      if (this.code) query.append("imp_code", this.code);
      window.location.assign(origin + "/window/page?" + query.toString());
    }
  };
})();
"#;

const PORTONE_JS: &str = r#"// iamport-sim: a stand-in of PortOne's V2 browser SDK (https://cdn.portone.io/v2/browser-sdk.js).
(function () {
  var origin = new URL(document.currentScript.src).origin;
  function flatten(params, prefix, query) {
    Object.keys(params || {}).forEach(function (k) {
      var v = params[k];
      var name = prefix ? prefix + "." + k : k;
      if (v !== null && typeof v === "object") flatten(v, name, query);
      else if (v !== undefined && v !== null) query.append(name, String(v));
    });
    return query;
  }
  window.PortOne = {
    // The redirect flow: the window takes the whole page and comes back to redirectUrl.
    requestIssueBillingKey: function (params) {
      var query = flatten(params, "", new URLSearchParams());
      window.location.assign(origin + "/portone/window/page?" + query.toString());
      return new Promise(function () {});
    }
  };
})();
"#;

fn script(body: &'static str) -> Response {
    (
        StatusCode::OK,
        [
            (CONTENT_TYPE, "application/javascript; charset=utf-8"),
            (CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// `GET /sdk/iamport.js`
pub(crate) async fn iamport_js() -> Response {
    script(IAMPORT_JS)
}

/// `GET /sdk/portone.js`
pub(crate) async fn portone_js() -> Response {
    script(PORTONE_JS)
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The window page for `action` (`/window` or `/portone/window`).
fn page(action: &str, title: &str, query: Option<&str>, shown: &[(&str, &str)]) -> Response {
    let pairs = match query_pairs(query) {
        Ok(pairs) => pairs,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == k)
            .map_or("", |(_, v)| v.as_str())
    };
    let hidden: String = pairs
        .iter()
        .filter(|(k, _)| k != "scenario")
        .map(|(k, v)| {
            format!(
                r#"<input type="hidden" name="{}" value="{}">"#,
                escape(k),
                escape(v)
            )
        })
        .collect();
    let rows: String = shown
        .iter()
        .filter(|(_, key)| !get(key).is_empty())
        .map(|(label, key)| {
            format!(
                "<tr><th>{}</th><td id=\"{}\">{}</td></tr>",
                escape(label),
                escape(&key.replace('.', "-")),
                escape(get(key))
            )
        })
        .collect();
    let html = format!(
        r#"<!doctype html>
<html lang="ko"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body {{ font-family: sans-serif; background: #f3f4f6; margin: 0; }}
 .window {{ max-width: 420px; margin: 48px auto; background: #fff; border-radius: 12px; padding: 24px;
           box-shadow: 0 4px 20px rgba(0,0,0,.12); }}
 h1 {{ font-size: 18px; margin: 0 0 4px; }} .sim {{ color: #b45309; font-size: 12px; margin-bottom: 16px; }}
 table {{ width: 100%; border-collapse: collapse; margin-bottom: 20px; }}
 th {{ text-align: left; color: #6b7280; font-weight: normal; padding: 6px 0; width: 40%; }}
 td {{ padding: 6px 0; }}
 form {{ display: inline; }} button {{ font-size: 16px; padding: 10px 20px; border-radius: 8px; border: 0; cursor: pointer; }}
 #approve {{ background: #2563eb; color: #fff; }} #cancel {{ background: #e5e7eb; margin-left: 8px; }}
</style></head>
<body><div class="window">
<h1>{title}</h1><div class="sim">iamport-sim: a local stand-in, no money moves</div>
<table>{rows}</table>
<form method="get" action="{action}">{hidden}<button id="approve" type="submit">승인 (approve)</button></form>
<form method="get" action="{action}">{hidden}<input type="hidden" name="scenario" value="user_cancel"><button id="cancel" type="submit">취소 (cancel)</button></form>
</div></body></html>
"#
    );
    (
        StatusCode::OK,
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

/// `GET /window/page?…` (`IMP.request_pay`'s parameters).
pub(crate) async fn window_page(RawQuery(query): RawQuery) -> Response {
    page(
        "/window",
        "결제창 · 정기결제 등록",
        query.as_deref(),
        &[
            ("상품", "name"),
            ("금액 (KRW)", "amount"),
            ("PG", "pg"),
            ("결제수단", "pay_method"),
            ("구매자", "buyer_name"),
        ],
    )
}

/// `GET /portone/window/page?…` (`PortOne.requestIssueBillingKey`'s parameters).
pub(crate) async fn portone_window_page(RawQuery(query): RawQuery) -> Response {
    page(
        "/portone/window",
        "PortOne · 빌링키 발급",
        query.as_deref(),
        &[
            ("상품", "issueName"),
            ("결제수단", "billingKeyMethod"),
            ("채널", "channelKey"),
            ("구매자", "customer.fullName"),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped() {
        assert_eq!(
            escape(r#"<script>"x"&'y'</script>"#),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;&lt;/script&gt;"
        );
    }
}
