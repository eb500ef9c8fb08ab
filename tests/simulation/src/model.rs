//! An in-process model of i'mport's billing-key API, as the simulation's
//! gateway sees it: billing keys, a ledger of payments, and the rules that
//! matter for money (one paid payment per `merchant_uid`; a refused request
//! records nothing; a declined one records a `failed` payment; lookups
//! return the paid payment of a `merchant_uid` if there is one, else its
//! newest). Written from the V1 documentation like the HTTP simulator, not
//! from the client's types. Faults and timing live in `world`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use shared::billing::{PaymentRecord, RecordStatus};
use shared::gateway::BillingKey;

/// What a payment was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Usage {
    /// The payment window's billing-key issuance (`r…` merchant uids).
    Issue,
    /// A charge of a billing key (`POST /subscribe/payments/again`).
    Charge,
}

#[derive(Debug, Clone)]
pub(crate) struct Payment {
    pub imp_uid: String,
    pub merchant_uid: String,
    pub customer_uid: String,
    pub amount: i64,
    pub status: RecordStatus,
    pub paid_at: Option<DateTime<Utc>>,
    pub fail_reason: Option<String>,
    pub usage: Usage,
}

impl Payment {
    pub fn record(&self) -> PaymentRecord {
        PaymentRecord {
            imp_uid: self.imp_uid.clone(),
            merchant_uid: self.merchant_uid.clone(),
            status: self.status,
            amount: self.amount,
            cancelled_amount: 0,
            currency: Some("KRW".into()),
            customer_uid: Some(self.customer_uid.clone()),
            paid_at: self.paid_at,
            fail_reason: self.fail_reason.clone(),
            cancel_reason: None,
        }
    }

    /// Money was taken.
    pub fn took_money(&self) -> bool {
        self.status == RecordStatus::Paid && self.amount > 0
    }
}

/// What a charge request did at i'mport.
#[derive(Debug, Clone)]
pub(crate) enum Applied {
    Paid(PaymentRecord),
    Declined(PaymentRecord),
    /// `code != 0`, nothing recorded.
    Refused {
        code: i64,
        message: &'static str,
    },
}

#[derive(Debug, Default)]
pub(crate) struct Model {
    keys: BTreeMap<String, BillingKey>,
    pub payments: Vec<Payment>,
    next_imp: u64,
    /// Requests for a `merchant_uid` that i'mport is still processing.
    pub inflight: BTreeMap<String, u32>,
    /// Every key ever issued (deleted ones too).
    issued: std::collections::BTreeSet<String>,
}

pub(crate) const MSG_UNKNOWN_CUSTOMER: &str = "등록되지 않은 구매자입니다.";
pub(crate) const MSG_ALREADY_PAID: &str = "이미 결제 완료된 주문번호(merchant_uid)입니다.";
pub(crate) const MSG_IN_PROGRESS: &str = "동일한 주문번호로 결제가 진행 중입니다.";

impl Model {
    fn new_imp_uid(&mut self, prefix: &str) -> String {
        self.next_imp += 1;
        format!("{prefix}{:012}", self.next_imp)
    }

    /// The payment window: issues a billing key and records the issuance
    /// payment (`amount` may be 0, the plan's, or anything the merchant's
    /// page asked for). Returns its `imp_uid`.
    pub fn issue(
        &mut self,
        customer_uid: &str,
        merchant_uid: &str,
        amount: i64,
        now: DateTime<Utc>,
    ) -> String {
        self.issued.insert(customer_uid.to_owned());
        self.keys.insert(
            customer_uid.to_owned(),
            BillingKey {
                customer_uid: customer_uid.to_owned(),
                pg_provider: "chai".into(),
                pg_id: Some("sim_pg".into()),
                card_name: None,
                card_number: None,
                inserted: now.timestamp(),
                issue_id: None,
                customer_id: None,
                on_our_channel: true,
            },
        );
        let imp_uid = self.new_imp_uid("imp_");
        self.payments.push(Payment {
            imp_uid: imp_uid.clone(),
            merchant_uid: merchant_uid.to_owned(),
            customer_uid: customer_uid.to_owned(),
            amount,
            status: RecordStatus::Paid,
            paid_at: Some(now),
            fail_reason: None,
            usage: Usage::Issue,
        });
        imp_uid
    }

    /// PortOne V2's window: issues `billing_key` for the registration
    /// `issue_id` and our `customer_id`; no payment is made.
    pub fn issue_v2(
        &mut self,
        billing_key: &str,
        issue_id: &str,
        customer_id: &str,
        now: DateTime<Utc>,
    ) {
        self.issued.insert(billing_key.to_owned());
        self.keys.insert(
            billing_key.to_owned(),
            BillingKey {
                customer_uid: billing_key.to_owned(),
                pg_provider: "tosspayments".into(),
                pg_id: Some("channel-key-simulation".into()),
                card_name: None,
                card_number: None,
                inserted: now.timestamp(),
                issue_id: Some(issue_id.to_owned()),
                customer_id: Some(customer_id.to_owned()),
                on_our_channel: true,
            },
        );
    }

    /// `again`: charge the key of `customer_uid` under `merchant_uid`.
    pub fn charge(
        &mut self,
        customer_uid: &str,
        merchant_uid: &str,
        amount: i64,
        declined: bool,
        now: DateTime<Utc>,
    ) -> Applied {
        if !self.keys.contains_key(customer_uid) {
            return Applied::Refused {
                code: -1,
                message: MSG_UNKNOWN_CUSTOMER,
            };
        }
        if self
            .payments
            .iter()
            .any(|p| p.merchant_uid == merchant_uid && p.status == RecordStatus::Paid)
        {
            return Applied::Refused {
                code: 1,
                message: MSG_ALREADY_PAID,
            };
        }
        let imp_uid = self.new_imp_uid("imps_");
        let payment = Payment {
            imp_uid,
            merchant_uid: merchant_uid.to_owned(),
            customer_uid: customer_uid.to_owned(),
            amount,
            status: if declined {
                RecordStatus::Failed
            } else {
                RecordStatus::Paid
            },
            paid_at: (!declined).then_some(now),
            fail_reason: declined.then(|| "잔액부족".to_owned()),
            usage: Usage::Charge,
        };
        let record = payment.record();
        self.payments.push(payment);
        if declined {
            Applied::Declined(record)
        } else {
            Applied::Paid(record)
        }
    }

    pub fn payment(&self, imp_uid: &str) -> Option<PaymentRecord> {
        self.payments
            .iter()
            .find(|p| p.imp_uid == imp_uid)
            .map(Payment::record)
    }

    /// The paid payment of `merchant_uid` if there is one, else its newest.
    pub fn find(&self, merchant_uid: &str) -> Option<PaymentRecord> {
        let of_uid = || {
            self.payments
                .iter()
                .filter(|p| p.merchant_uid == merchant_uid)
        };
        of_uid()
            .find(|p| p.status == RecordStatus::Paid)
            .or_else(|| of_uid().next_back())
            .map(Payment::record)
    }

    /// Whether the gateway ever issued this key.
    pub fn ever_issued(&self, key: &str) -> bool {
        self.issued.contains(key)
    }

    pub fn key(&self, customer_uid: &str) -> Option<BillingKey> {
        self.keys.get(customer_uid).cloned()
    }

    pub fn delete_key(&mut self, customer_uid: &str) -> bool {
        self.keys.remove(customer_uid).is_some()
    }

    /// Paid charge payments (money taken) of one merchant_uid.
    pub fn paid_under(&self, merchant_uid: &str) -> usize {
        self.payments
            .iter()
            .filter(|p| p.merchant_uid == merchant_uid && p.took_money())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn one_paid_payment_per_merchant_uid_and_declines_may_be_retried() {
        let mut m = Model::default();
        m.issue("cu_1", "r1", 0, now());
        assert!(matches!(
            m.charge("cu_1", "s1", 9900, true, now()),
            Applied::Declined(_)
        ));
        assert!(matches!(
            m.charge("cu_1", "s1", 9900, false, now()),
            Applied::Paid(_)
        ));
        assert!(matches!(
            m.charge("cu_1", "s1", 9900, false, now()),
            Applied::Refused { code: 1, .. }
        ));
        assert_eq!(m.paid_under("s1"), 1);
        assert_eq!(m.find("s1").unwrap().status, RecordStatus::Paid);
        m.delete_key("cu_1");
        assert!(matches!(
            m.charge("cu_1", "s2", 9900, false, now()),
            Applied::Refused { code: -1, .. }
        ));
        assert!(m.find("s2").is_none());
    }
}
