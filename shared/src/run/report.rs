//! The run's summary as one CloudWatch Embedded Metric Format line.

use super::RunReport;
use crate::billing::DeclineClass;
use crate::telemetry;

/// The metric each decline class is counted under.
fn decline_metric(class: DeclineClass) -> &'static str {
    match class {
        DeclineClass::InsufficientFunds => "DeclinedInsufficientFunds",
        DeclineClass::LimitExceeded => "DeclinedLimitExceeded",
        DeclineClass::CardInvalid => "DeclinedCardInvalid",
        DeclineClass::CardLostOrStolen => "DeclinedCardLostOrStolen",
        DeclineClass::CardExpired => "DeclinedCardExpired",
        DeclineClass::AccountClosed => "DeclinedAccountClosed",
        DeclineClass::IssuerUnavailable => "DeclinedIssuerUnavailable",
        DeclineClass::DoNotRetry => "DeclinedDoNotRetry",
        DeclineClass::Unknown => "DeclinedUnknown",
    }
}

/// The summary as one EMF line (namespace `SubscriptionBilling`, per
/// `Function` and in all).
pub fn emf_line(report: &RunReport, function: &str, timestamp_ms: i64) -> String {
    let s = &report.summary;
    let mut metrics = vec![
        ("Due", s.due),
        ("Charged", s.charged),
        ("FreePeriods", s.free),
        ("Declined", s.declined),
        ("Rejected", s.rejected),
        ("Ambiguous", s.ambiguous),
        ("Refused", s.refused),
        ("Reconciled", s.reconciled),
        ("Deferred", s.deferred),
        ("NeedsReview", s.needs_review),
        ("Corrupt", s.corrupt),
        ("Skipped", s.skipped),
        ("SignupsCompleted", s.signups_completed),
        ("Notices", s.notices),
        ("NoticesActionRequired", s.notices_action_required),
        ("ConsentRequests", s.consent_requests),
        ("ItemErrors", s.errors),
        ("HardDeclines", s.hard_declines),
        ("RunFailed", u64::from(report.error.is_some())),
        ("CashReceiptsIssued", report.cash_receipts.issued),
        ("CashReceiptsCancelled", report.cash_receipts.cancelled),
        ("CashReceiptsFailed", report.cash_receipts.failed),
        ("CashReceiptsToReview", report.cash_receipts.to_review),
    ];
    for class in DeclineClass::ALL {
        let n = s.declines.get(class.as_str()).copied().unwrap_or(0);
        metrics.push((decline_metric(class), n));
    }
    // A level, not an edge: emitted only when it could be read.
    if let Some(n) = s.waiting_for_review {
        metrics.push(("WaitingForReview", n));
    }
    telemetry::emf_line(function, &metrics, timestamp_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::Summary;

    #[test]
    fn emf_line_carries_every_count() {
        let report = RunReport {
            billing_time: chrono::Utc::now(),
            run_id: "r".into(),
            summary: Summary {
                due: 5,
                charged: 2,
                declined: 1,
                ambiguous: 1,
                reconciled: 1,
                needs_review: 1,
                waiting_for_review: Some(3),
                notices: 4,
                notices_action_required: 1,
                declines: [("card_expired", 1)].into_iter().collect(),
                hard_declines: 1,
                ..Summary::default()
            },
            stopped: None,
            error: None,
            price_changes: crate::run::rollouts::RolloutReport::default(),
            cash_receipts: crate::run::receipts::ReceiptReport {
                issued: 2,
                to_review: 1,
                ..Default::default()
            },
        };
        let v: serde_json::Value =
            serde_json::from_str(&emf_line(&report, "scheduled-charge", 1)).unwrap();
        assert_eq!(v["Charged"], 2);
        assert_eq!(v["NeedsReview"], 1);
        assert_eq!(v["WaitingForReview"], 3);
        assert_eq!(
            (v["Notices"].as_u64(), v["NoticesActionRequired"].as_u64()),
            (Some(4), Some(1))
        );
        assert_eq!(
            (
                v["DeclinedCardExpired"].as_u64(),
                v["HardDeclines"].as_u64()
            ),
            (Some(1), Some(1))
        );
        assert_eq!(v["DeclinedInsufficientFunds"], 0);
        assert_eq!(
            (
                v["CashReceiptsIssued"].as_u64(),
                v["CashReceiptsToReview"].as_u64()
            ),
            (Some(2), Some(1))
        );
        let directive = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "SubscriptionBilling");
        assert_eq!(directive["Metrics"].as_array().unwrap().len(), 33);
        // Per function and in all (what the alarms watch).
        assert_eq!(
            directive["Dimensions"],
            serde_json::json!([["Function"], []])
        );
    }
}
