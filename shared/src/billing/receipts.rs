//! Cash receipts (현금영수증) for charges paid from an account (decision 74).
//!
//! A card payment's slip is its receipt; a payment by account transfer or a
//! virtual account (CHAI's `trans`, V2 `PaymentMethodTransfer`) calls for a
//! cash receipt issued through the PG. With `CASH_RECEIPT_MODE=auto`, each
//! such charge gets one: to the customer's number when they gave one at
//! sign-up (소득공제 to a phone or cash-receipt card number, 지출증빙 to a
//! business number), else as the merchant's self-issuance (자진발급) to the
//! tax office's number 010-000-1234.
//!
//! The receipt lives on its charge attempt ([`CashReceipt`]) and is written
//! in the same write that records the charge paid, so no paid charge loses
//! its receipt. What the PG holds is brought to what the charge needs by
//! [`next_step`]: the live receipt must cover what is left of the charge
//! after refunds, so a full refund cancels it and a partial one cancels and
//! issues it again for the rest. Each step is taken by one holder of a
//! claim (a revision check, as charges are claimed); an issuance whose
//! answer was lost is looked up before it is ever sent again, and the PG
//! refuses a second live receipt for one payment, so a charge has at most
//! one live receipt. A failure changes nothing about the charge: it is
//! retried, and after [`MAX_TRIES`] it waits for a person.

use chrono::{DateTime, Duration, Utc};

use crate::secret::Pii;

/// The tax office's number for a receipt the merchant issues of its own
/// accord when the customer gave none (국세청 자진발급 번호).
pub const SELF_ISSUE_NUMBER: &str = "0100001234";

/// Failed tries (refusals, or lost answers the PG never confirmed) before a
/// receipt waits for a person.
pub const MAX_TRIES: u32 = 5;

/// How long a lost issuance is looked up before it is sent again: the PG
/// may still be processing it (an issuance in progress).
pub const LOOK_UP_FOR: Duration = Duration::minutes(30);

/// How long an issuance may stay unconfirmed while the PG cannot be asked
/// about it (its lookups keep failing) before it waits for a person.
pub const ESCALATE_AFTER: Duration = Duration::days(2);

/// How long a claim on a receipt holds.
pub const LEASE: Duration = Duration::minutes(2);

/// Whether charges get cash receipts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CashReceiptMode {
    #[default]
    Off,
    /// Every charge paid from an account gets one.
    Auto,
}

impl CashReceiptMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "off" => Some(Self::Off),
            "auto" => Some(Self::Auto),
            _ => None,
        }
    }
}

/// 소득공제 (for a person's income deduction) or 지출증빙 (a business's
/// proof of expense).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReceiptKind {
    Personal,
    Corporate,
}

impl ReceiptKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Personal => "personal",
            Self::Corporate => "corporate",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "personal" => Some(Self::Personal),
            "corporate" => Some(Self::Corporate),
            _ => None,
        }
    }
}

/// Who a customer's receipts go to: a kind and a number (PII: masked in
/// logs, events and views).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptHolder {
    pub kind: ReceiptKind,
    /// Digits only.
    pub identifier: Pii,
}

impl ReceiptHolder {
    /// The merchant's self-issuance, for a customer who gave no number.
    pub fn self_issued() -> Self {
        Self {
            kind: ReceiptKind::Personal,
            identifier: Pii::new(SELF_ISSUE_NUMBER),
        }
    }

    /// Reads a sign-up's `cash_receipt {type, identifier}`. Hyphens and
    /// spaces are dropped. Personal: a mobile number (01x, 10–11 digits) or
    /// a cash-receipt card number (13–19 digits, not a resident registration
    /// number, which is not taken: it would need sealing at rest and the
    /// other two serve); corporate: a business registration number (10
    /// digits).
    pub fn from_input(kind: &str, identifier: &str) -> Result<Self, String> {
        let kind = ReceiptKind::parse(kind).ok_or_else(|| {
            format!("cash_receipt.type must be personal or corporate, got {kind:?}")
        })?;
        let digits: String = identifier
            .chars()
            .filter(|c| !matches!(c, '-' | ' '))
            .collect();
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err("cash_receipt.identifier must be digits (hyphens allowed)".into());
        }
        let ok = match kind {
            ReceiptKind::Personal => {
                let mobile = digits.starts_with("01") && (10..=11).contains(&digits.len());
                let card = (13..=19).contains(&digits.len()) && !looks_like_rrn(&digits);
                mobile || card
            }
            ReceiptKind::Corporate => digits.len() == 10,
        };
        if !ok {
            return Err(match kind {
                ReceiptKind::Personal => "cash_receipt.identifier for personal must be a mobile number (01x…) or a cash-receipt card number; resident registration numbers are not taken".into(),
                ReceiptKind::Corporate => "cash_receipt.identifier for corporate must be a 10-digit business registration number".into(),
            });
        }
        Ok(Self {
            kind,
            identifier: Pii::new(digits),
        })
    }
}

/// 13 digits of a birth date, a sex digit 1–8 and six more.
fn looks_like_rrn(d: &str) -> bool {
    let b = d.as_bytes();
    d.len() == 13 && {
        let month = (b[2] - b'0') * 10 + (b[3] - b'0');
        let day = (b[4] - b'0') * 10 + (b[5] - b'0');
        (1..=12).contains(&month) && (1..=31).contains(&day) && (b'1'..=b'8').contains(&b[6])
    }
}

/// Where a receipt stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptState {
    /// The PG's receipt does not match what the charge needs yet: queued.
    Due,
    /// A holder is taking a step (until its lease ends).
    Working,
    /// What the charge needs is at the PG (issued, or cancelled after a
    /// full refund): out of the queue.
    Settled,
    /// Gave up after [`MAX_TRIES`]: waits for a person.
    Review,
}

impl ReceiptState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Due => "due",
            Self::Working => "working",
            Self::Settled => "settled",
            Self::Review => "review",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Due, Self::Working, Self::Settled, Self::Review]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// A receipt live at the PG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedReceipt {
    pub amount: i64,
    pub tax_free: i64,
    pub vat: i64,
    /// 국세청 approval number (V1 `apply_num`, V2 `issueNumber`).
    pub issue_number: String,
    pub url: Option<String>,
    pub issued_at: DateTime<Utc>,
}

/// A charge's cash receipt, kept on its attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CashReceipt {
    /// Raised by every write: a write is made only on the revision read.
    pub rev: u32,
    pub state: ReceiptState,
    pub holder: ReceiptHolder,
    /// The receipt live at the PG, if any.
    pub live: Option<IssuedReceipt>,
    /// Issuances and cancels the PG confirmed.
    pub issues: u32,
    pub cancels: u32,
    /// Failed tries since the last step that went through.
    pub tries: u32,
    /// An issuance was sent whose answer was lost (the PG may be
    /// processing it): looked up before anything is sent again.
    pub unsure_since: Option<DateTime<Utc>>,
    pub token: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    /// When the queue looks at it again (due and working).
    pub next_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// When the latest cancel went through.
    pub cancelled_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl CashReceipt {
    /// A new receipt for a charge just paid: due at once.
    pub fn new(holder: ReceiptHolder, now: DateTime<Utc>) -> Self {
        Self {
            rev: 0,
            state: ReceiptState::Due,
            holder,
            live: None,
            issues: 0,
            cancels: 0,
            tries: 0,
            unsure_since: None,
            token: None,
            lease_until: None,
            next_at: Some(now),
            last_error: None,
            cancelled_at: None,
            updated_at: now,
        }
    }

    /// Whether it is in the work queue (and when it is looked at).
    pub fn queued_at(&self) -> Option<DateTime<Utc>> {
        match self.state {
            ReceiptState::Due => self.next_at,
            ReceiptState::Working => self.lease_until,
            ReceiptState::Settled | ReceiptState::Review => None,
        }
    }

    /// Whether a holder may claim it at `now`.
    pub fn claimable(&self, now: DateTime<Utc>) -> bool {
        match self.state {
            ReceiptState::Due => true,
            ReceiptState::Working => self.lease_until.is_none_or(|l| l <= now),
            ReceiptState::Settled | ReceiptState::Review => false,
        }
    }

    /// The claimed copy (one revision on).
    pub fn claimed(&self, token: &str, now: DateTime<Utc>) -> Self {
        Self {
            rev: self.rev + 1,
            state: ReceiptState::Working,
            token: Some(token.to_owned()),
            lease_until: Some(now + LEASE),
            updated_at: now,
            ..self.clone()
        }
    }

    /// Queued again (a refund changed what the charge needs), one revision
    /// on. A receipt waiting for a person is given its tries again.
    pub fn requeued(&self, now: DateTime<Utc>) -> Self {
        let mut next = self.clone();
        next.rev += 1;
        if next.state != ReceiptState::Working {
            next.state = ReceiptState::Due;
            next.next_at = Some(now);
        }
        if self.state == ReceiptState::Review {
            next.tries = 0;
        }
        next.updated_at = now;
        next
    }
}

/// `receipt` after a step the PG could not be asked about (never sent,
/// our credentials refused, a lookup that failed): the same step later, no
/// try spent; an issuance unconfirmed for [`ESCALATE_AFTER`] waits for a
/// person.
pub fn not_asked(receipt: &CashReceipt, why: &str, now: DateTime<Utc>) -> CashReceipt {
    let mut r = receipt.clone();
    r.rev += 1;
    r.token = None;
    r.lease_until = None;
    r.updated_at = now;
    r.last_error = Some(why.to_owned());
    if r.unsure_since.is_some_and(|s| now - s >= ESCALATE_AFTER) {
        r.state = ReceiptState::Review;
        r.next_at = None;
    } else {
        r.state = ReceiptState::Due;
        r.next_at = Some(now + Duration::minutes(5));
    }
    r
}

/// What the charge needs at the PG: a live receipt for what is left after
/// refunds, with its tax-free part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub amount: i64,
    pub tax_free: i64,
}

/// The next thing to do with the PG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing: the PG holds what the charge needs.
    Done,
    /// An issuance's answer was lost: ask the PG what it holds first.
    LookUp,
    /// Issue a receipt for the target.
    Issue(Target),
    /// Cancel the live receipt (it covers more than is left).
    Cancel,
}

/// The step that brings `receipt` to `target`.
pub fn next_step(receipt: &CashReceipt, target: Target) -> Step {
    if receipt.unsure_since.is_some() {
        return Step::LookUp;
    }
    match &receipt.live {
        Some(live) if live.amount == target.amount => Step::Done,
        Some(_) => Step::Cancel,
        None if target.amount > 0 => Step::Issue(target),
        None => Step::Done,
    }
}

/// What the PG said to a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Issued(IssuedReceipt),
    Cancelled(DateTime<Utc>),
    /// A look-up: what the PG holds for the payment (`None`: nothing live).
    Found(Option<IssuedReceipt>),
    /// Refused: nothing happened.
    Refused(String),
    /// The answer was lost: an issuance may have gone through.
    Unclear(String),
    /// The PG says a receipt is live already (our record missed it).
    AlreadyIssued(String),
}

/// `receipt` after `outcome`, for a charge that needs `target`: settled
/// when the PG holds it, due again (with a back-off) when more is to do or
/// a try failed, waiting for a person after [`MAX_TRIES`].
pub fn after(
    receipt: &CashReceipt,
    outcome: &Outcome,
    target: Target,
    now: DateTime<Utc>,
) -> CashReceipt {
    let mut r = receipt.clone();
    r.rev += 1;
    r.token = None;
    r.lease_until = None;
    r.updated_at = now;
    let mut failed = None;
    match outcome {
        Outcome::Issued(live) => {
            r.live = Some(live.clone());
            r.issues += 1;
            r.unsure_since = None;
        }
        Outcome::Cancelled(at) => {
            r.live = None;
            r.cancels += 1;
            r.cancelled_at = Some(*at);
        }
        Outcome::Found(found) => match (r.live.take(), found) {
            // What the PG holds is live: a lost issuance went through, or
            // a lost cancel did not.
            (had, Some(live)) => {
                if had.as_ref().map(|l| &l.issue_number) != Some(&live.issue_number) {
                    r.issues += 1;
                }
                r.live = Some(live.clone());
                r.unsure_since = None;
            }
            // Ours was live and the PG holds none: it was cancelled.
            (Some(_), None) => {
                r.cancels += 1;
                r.cancelled_at = Some(now);
                r.unsure_since = None;
            }
            // Nothing live, and we were issuing: in progress, or lost.
            (None, None) => {
                let since = r.unsure_since.unwrap_or(now);
                if now - since >= LOOK_UP_FOR {
                    // Never arrived: it may be sent again (a duplicate would be refused).
                    r.unsure_since = None;
                    failed = Some("the PG never confirmed the issuance".to_owned());
                } else if r.unsure_since.is_some() {
                    r.state = ReceiptState::Due;
                    r.next_at = Some(now + Duration::minutes(5));
                    r.last_error = Some("issuance in progress at the PG".into());
                    return r;
                }
            }
        },
        Outcome::Refused(why) => failed = Some(why.clone()),
        Outcome::Unclear(why) => {
            r.unsure_since.get_or_insert(now);
            r.state = ReceiptState::Due;
            r.next_at = Some(now + Duration::minutes(5));
            r.last_error = Some(why.clone());
            return r;
        }
        Outcome::AlreadyIssued(why) => {
            // Look up what is live before anything else.
            r.unsure_since.get_or_insert(now);
            r.last_error = Some(why.clone());
        }
    }
    if let Some(why) = failed {
        r.tries += 1;
        r.last_error = Some(why);
        if r.tries >= MAX_TRIES {
            r.state = ReceiptState::Review;
            r.next_at = None;
            return r;
        }
        r.state = ReceiptState::Due;
        // 10 min, 20, 40, 80, …
        r.next_at = Some(now + Duration::minutes(10 << (r.tries - 1).min(6)));
        return r;
    }
    if !matches!(outcome, Outcome::Found(_)) || r.live.is_some() {
        r.tries = 0;
    }
    if next_step(&r, target) == Step::Done {
        r.state = ReceiptState::Settled;
        r.next_at = None;
        r.last_error = None;
    } else {
        r.state = ReceiptState::Due;
        r.next_at = Some(now);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()
    }

    fn issued(amount: i64, n: &str) -> IssuedReceipt {
        IssuedReceipt {
            amount,
            tax_free: 0,
            vat: amount / 11,
            issue_number: n.into(),
            url: None,
            issued_at: t0(),
        }
    }

    fn target(amount: i64) -> Target {
        Target {
            amount,
            tax_free: 0,
        }
    }

    #[test]
    fn holder_input_takes_mobile_card_and_business_numbers_only() {
        let h = ReceiptHolder::from_input("personal", "010-1234-5678").unwrap();
        assert_eq!(h.identifier.expose(), "01012345678");
        assert!(ReceiptHolder::from_input("personal", "1234567890123456").is_ok());
        assert!(ReceiptHolder::from_input("corporate", "123-45-67890").is_ok());
        assert!(
            ReceiptHolder::from_input("personal", "9001011234567").is_err(),
            "RRN"
        );
        assert!(ReceiptHolder::from_input("corporate", "01012345678").is_err());
        assert!(ReceiptHolder::from_input("business", "1234567890").is_err());
        assert!(ReceiptHolder::from_input("personal", "010-12ab").is_err());
        assert_eq!(format!("{:?}", h.identifier), "\"*******5678\"");
    }

    #[test]
    fn a_paid_charge_is_issued_once_then_settled() {
        let r = CashReceipt::new(ReceiptHolder::self_issued(), t0());
        assert_eq!(next_step(&r, target(9900)), Step::Issue(target(9900)));
        let r = after(&r, &Outcome::Issued(issued(9900, "A1")), target(9900), t0());
        assert_eq!(r.state, ReceiptState::Settled);
        assert_eq!((r.issues, r.queued_at()), (1, None));
        assert_eq!(next_step(&r, target(9900)), Step::Done);
    }

    #[test]
    fn a_partial_refund_cancels_and_issues_again_a_full_one_only_cancels() {
        let r = CashReceipt::new(ReceiptHolder::self_issued(), t0());
        let r = after(&r, &Outcome::Issued(issued(9900, "A1")), target(9900), t0());
        let r = r.requeued(t0());
        assert_eq!(next_step(&r, target(6600)), Step::Cancel);
        let r = after(&r, &Outcome::Cancelled(t0()), target(6600), t0());
        assert_eq!((r.state, r.cancels), (ReceiptState::Due, 1));
        assert_eq!(next_step(&r, target(6600)), Step::Issue(target(6600)));
        let r = after(&r, &Outcome::Issued(issued(6600, "A2")), target(6600), t0());
        assert_eq!((r.state, r.issues), (ReceiptState::Settled, 2));
        let r = r.requeued(t0());
        assert_eq!(next_step(&r, target(0)), Step::Cancel);
        let r = after(&r, &Outcome::Cancelled(t0()), target(0), t0());
        assert_eq!((r.state, r.live.is_none()), (ReceiptState::Settled, true));
    }

    #[test]
    fn a_lost_issuance_is_looked_up_until_it_shows_or_the_wait_ends() {
        let r = CashReceipt::new(ReceiptHolder::self_issued(), t0());
        let r = after(&r, &Outcome::Unclear("timeout".into()), target(9900), t0());
        assert_eq!(r.state, ReceiptState::Due);
        assert_eq!(next_step(&r, target(9900)), Step::LookUp);
        // In progress: nothing to see yet, look again later, no try spent.
        let later = t0() + Duration::minutes(6);
        let r = after(&r, &Outcome::Found(None), target(9900), later);
        assert_eq!((next_step(&r, target(9900)), r.tries), (Step::LookUp, 0));
        // It shows: counted once, settled.
        let r2 = after(
            &r,
            &Outcome::Found(Some(issued(9900, "A1"))),
            target(9900),
            later,
        );
        assert_eq!((r2.state, r2.issues), (ReceiptState::Settled, 1));
        // Never shows: one try spent, then it may be issued again.
        let late = t0() + LOOK_UP_FOR;
        let r3 = after(&r, &Outcome::Found(None), target(9900), late);
        assert_eq!((r3.tries, r3.state), (1, ReceiptState::Due));
        assert_eq!(next_step(&r3, target(9900)), Step::Issue(target(9900)));
    }

    #[test]
    fn refusals_back_off_and_end_in_review() {
        let mut r = CashReceipt::new(ReceiptHolder::self_issued(), t0());
        let mut waits = Vec::new();
        for _ in 0..MAX_TRIES {
            r = after(
                &r,
                &Outcome::Refused("PG says no".into()),
                target(9900),
                t0(),
            );
            waits.push(r.next_at.map(|n| (n - t0()).num_minutes()));
        }
        assert_eq!(waits, [Some(10), Some(20), Some(40), Some(80), None]);
        assert_eq!(r.state, ReceiptState::Review);
        assert!(!r.claimable(t0()));
        let r = r.requeued(t0());
        assert_eq!((r.state, r.tries), (ReceiptState::Due, 0));
    }

    #[test]
    fn already_issued_means_look_up_first() {
        let r = CashReceipt::new(ReceiptHolder::self_issued(), t0());
        let r = after(
            &r,
            &Outcome::AlreadyIssued("이미 발행".into()),
            target(9900),
            t0(),
        );
        assert_eq!(next_step(&r, target(9900)), Step::LookUp);
    }

    #[test]
    fn an_issuance_the_pg_cannot_be_asked_about_waits_for_a_person_in_the_end() {
        let r = CashReceipt::new(ReceiptHolder::self_issued(), t0());
        let r = after(&r, &Outcome::Unclear("timeout".into()), target(9900), t0());
        let soon = not_asked(&r, "lookup 500", t0() + Duration::hours(1));
        assert_eq!((soon.state, soon.tries), (ReceiptState::Due, 0));
        let late = not_asked(&r, "lookup 500", t0() + ESCALATE_AFTER);
        assert_eq!(late.state, ReceiptState::Review);
        // Nothing unsure (a request never sent): never escalated this way.
        let fresh = CashReceipt::new(ReceiptHolder::self_issued(), t0());
        let later = not_asked(&fresh, "429", t0() + Duration::days(9));
        assert_eq!(later.state, ReceiptState::Due);
    }

    #[test]
    fn a_claim_holds_until_its_lease_ends() {
        let r = CashReceipt::new(ReceiptHolder::self_issued(), t0()).claimed("tok", t0());
        assert!(!r.claimable(t0() + Duration::seconds(30)));
        assert!(r.claimable(t0() + LEASE));
        assert_eq!(r.queued_at(), Some(t0() + LEASE));
    }
}
