//! The ledger port of one invocation: the shared in-memory ledger seen
//! through a watcher that adds DynamoDB's latency, counts steps, places
//! crash points, and checks the invariants that hold after every write.

use std::sync::Arc;

use shared::ledger::memory::InMemoryLedger;
use shared::ledger::observed::{Observed, Op, Watcher};
use shared::ledger::{LedgerError, TakeOver};

use super::{Side, World};

/// The ledger as one invocation sees it.
pub(crate) type SimLedger = Observed<InMemoryLedger, SimWatcher>;

pub(crate) fn sim_ledger(world: Arc<World>, inv: u32) -> SimLedger {
    Observed {
        inner: Arc::clone(&world.ledger),
        watcher: SimWatcher { world, inv },
    }
}

#[derive(Clone)]
pub(crate) struct SimWatcher {
    world: Arc<World>,
    inv: u32,
}

fn short(outcome: Result<(), &LedgerError>) -> String {
    match outcome {
        Ok(()) => "ok".into(),
        Err(LedgerError::Conflict(_)) => "conflict".into(),
        Err(e) => format!("{e}"),
    }
}

impl Watcher for SimWatcher {
    async fn before(&self, op: &Op<'_>) {
        let w = &self.world;
        if let Op::TakeOver(TakeOver { token, .. }) = op {
            // The token is ours from the moment the write may have happened.
            w.hold(self.inv, token);
        }
        w.gate(self.inv, Side::Before).await;
        w.ledger_pause(self.inv).await;
    }

    async fn after(&self, op: &Op<'_>, outcome: Result<(), &LedgerError>) {
        let w = &self.world;
        w.step();
        if outcome.is_ok() {
            match op {
                Op::ClaimNew { attempt, next } => {
                    w.check_claim(&attempt.subscription_id, "claim");
                    w.check_conversion(next);
                    w.check_price(attempt, next);
                    if let Some(t) = &attempt.claim_token {
                        w.hold(self.inv, t);
                    }
                }
                // (Taking over an open attempt of a cancelled subscription
                // is how it gets settled; only a send would be wrong.)
                Op::MarkSending { attempt, .. } => {
                    w.check_claim(&attempt.subscription_id, "re-send");
                }
                Op::FlagRefund(a, key) => w.refund_review(&a.merchant_uid, key, true),
                Op::FinishRefund(a, intent) => w.refund_review(&a.merchant_uid, &intent.key, false),
                Op::DismissRefund(a, key) => w.refund_review(&a.merchant_uid, key, false),
                Op::ChangeSubscription(c) => {
                    w.check_notice(c.next);
                    w.count_lapse(c.next);
                    w.count_price_lapse(c.next);
                }
                Op::Settle(s) if s.result.state.is_unpaid_settlement() => {
                    w.check_unpaid(&s.attempt.merchant_uid, s.next.status);
                }
                _ => {}
            }
        }
        w.record(format!(
            "{} L {} {} -> {}",
            self.inv,
            op.name(),
            op.key(),
            short(outcome)
        ));
        if outcome.is_ok() {
            w.observe();
        }
        w.gate(self.inv, Side::After).await;
        w.ledger_pause(self.inv).await;
    }
}
