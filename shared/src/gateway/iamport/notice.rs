//! i'mport's notification (`notice_url`): an unsigned POST of `imp_uid`,
//! `merchant_uid` and `status` (and `cancellation_id` on cancellations),
//! JSON or form-encoded.

use serde::Deserialize;

use crate::gateway::notice::{BadNotice, InboundNotice, MAX_BODY, Notice, PaymentNotice, valid_id};

/// The documented body.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Notification {
    pub imp_uid: String,
    pub merchant_uid: String,
    pub status: String,
    #[serde(default)]
    pub cancellation_id: Option<String>,
}

/// Parses a body by its content type.
pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Notification, BadNotice> {
    if body.is_empty() {
        return Err(BadNotice::Empty);
    }
    if body.len() > MAX_BODY {
        return Err(BadNotice::TooLarge);
    }
    let text = std::str::from_utf8(body).map_err(|_| BadNotice::Encoding)?;
    let mime = content_type
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase())
        .ok_or(BadNotice::ContentType)?;
    let n: Notification = match mime.as_str() {
        "application/json" => serde_json::from_str(text).map_err(|_| BadNotice::Fields)?,
        "application/x-www-form-urlencoded" => {
            serde_urlencoded::from_str(text).map_err(|_| BadNotice::Fields)?
        }
        _ => return Err(BadNotice::ContentType),
    };
    if !valid_id(&n.imp_uid)
        || !valid_id(&n.merchant_uid)
        || n.status.is_empty()
        || n.status.len() > 16
    {
        return Err(BadNotice::Fields);
    }
    Ok(n)
}

/// The neutral notice of a request (unsigned: anyone may send one, so it is
/// only ever a hint).
pub fn decode(inbound: &InboundNotice<'_>) -> Result<Notice, BadNotice> {
    let n = parse(inbound.header("content-type"), inbound.body)?;
    Ok(Notice::Payment(PaymentNotice {
        payment_ref: n.imp_uid,
        payment_id: n.merchant_uid,
        status: n.status,
        cancellation_id: n.cancellation_id,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_form_bodies_parse_alike() {
        let json = parse(
            Some("application/json; charset=utf-8"),
            br#"{"imp_uid":"imps_1","merchant_uid":"sabc","status":"paid"}"#,
        )
        .unwrap();
        let form = parse(
            Some("application/x-www-form-urlencoded"),
            b"imp_uid=imps_1&merchant_uid=sabc&status=paid",
        )
        .unwrap();
        assert_eq!(json, form);
        let cancel = parse(Some("application/json"), br#"{"imp_uid":"imps_1","merchant_uid":"sabc","status":"cancelled","cancellation_id":"c1"}"#).unwrap();
        assert_eq!(cancel.cancellation_id.as_deref(), Some("c1"));
    }

    #[test]
    fn bad_bodies_get_a_clear_reason() {
        assert_eq!(parse(Some("application/json"), b""), Err(BadNotice::Empty));
        assert_eq!(parse(Some("text/plain"), b"x"), Err(BadNotice::ContentType));
        assert_eq!(parse(None, b"x"), Err(BadNotice::ContentType));
        assert_eq!(
            parse(Some("application/json"), &[0xff, 0xfe]),
            Err(BadNotice::Encoding)
        );
        assert_eq!(
            parse(Some("application/json"), br#"{"imp_uid":"i"}"#),
            Err(BadNotice::Fields)
        );
        assert_eq!(
            parse(
                Some("application/json"),
                br#"{"imp_uid":"../x","merchant_uid":"m","status":"paid"}"#
            ),
            Err(BadNotice::Fields)
        );
        assert_eq!(
            parse(Some("application/json"), &vec![b' '; MAX_BODY + 1]),
            Err(BadNotice::TooLarge)
        );
    }
}
