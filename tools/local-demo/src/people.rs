//! The customers of the story and what each will go through.

use shared::billing::SubscriptionId;
use url::Url;

/// What a customer will go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scenario {
    /// Pays every period.
    Pays,
    /// Every recurring charge is declined: walks the dunning schedule to `suspended`.
    AlwaysDeclined,
    /// The first recurring charge is declined; the retry a day later pays.
    DeclinedOnce,
    /// The first recurring charge is taken but the answer times out (and the
    /// immediate look-up fails): `unknown`, settled by the next run.
    TimeoutAfterCharge,
    /// Closes the payment window: no billing key, failure page.
    ClosesWindow,
    /// Pays; the merchant moves the subscription to another plan right
    /// after sign-up: the new price applies from the next period.
    PlanChange,
    /// Pays for the sign-up period; the merchant cancels at period end right
    /// away: never charged again, cancelled when the next period would begin.
    CancelAtPeriodEnd,
    /// The card is reported lost: its first renewal is declined in a hard
    /// class, which stops the subscription at once (`action_required`, no
    /// retries); the customer gives a new card (management API + payment
    /// window), charged at once.
    NewCardAfterDecline,
    /// Pays for the sign-up period, then cancels mid-term: the merchant
    /// shows the cancellation quote and cancels with its refund (the unused
    /// days, pro rata).
    MidTermCancel,
    /// Signs up to the catalogue's free trial [`TRIAL_PLAN`] (nothing
    /// charged), is told 7 days before its end, consents through the
    /// management API, and is charged from the trial's end on.
    TrialConsented,
    /// The same trial without a consent: told, never charged, cancelled at
    /// the trial's end.
    TrialLapses,
    /// Pays; the merchant raises the price to [`PLUS_PLAN`] (a pending
    /// change); when the consent request goes out the customer consents:
    /// charged the new price from the change's period on.
    PriceIncreaseConsented,
    /// The same increase declined: charged the old price until the change's
    /// period, then cancelled without a charge.
    PriceIncreaseDeclined,
    /// Signs up to the catalogue's yearly plan [`YEARLY_PLAN`] (issue 25
    /// §1): charged at sign-up, then not again while the story plays (its
    /// next charge is a year after the sign-up).
    Yearly,
    /// Signs up to [`BILLING_DAY_PLAN`], billed on the 1st (issue 25 §2):
    /// the sign-up charges the days to the next 1st, prorated; every 1st
    /// after, the price.
    BillingDay,
    /// Pays at sign-up, then pauses (issue 25 §4) until ten days into its
    /// second period: the first is skipped (never charged), the second
    /// charged for the rest of its days from the resume, prorated; every
    /// later one in full, on the old calendar.
    Pauses,
    /// Signs up with the coupon [`LAUNCH_COUPON`] (issue 25 §3): its three
    /// periods charged at half price, the fourth at the plan's price with
    /// no consent asked (its end was shown with the sign-up).
    Coupon,
}

impl Scenario {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Self::Pays => "pays every month",
            Self::AlwaysDeclined => "card always declined",
            Self::DeclinedOnce => "declined once, then pays on the retry",
            Self::TimeoutAfterCharge => "i'mport times out after charging",
            Self::ClosesWindow => "closes the payment window",
            Self::PlanChange => "moves to another plan after sign-up",
            Self::CancelAtPeriodEnd => "cancels at period end",
            Self::NewCardAfterDecline => "lost card: stopped at once, then a new card",
            Self::MidTermCancel => "cancels mid-term with a pro-rata refund",
            Self::TrialConsented => "free trial, consents, then pays",
            Self::TrialLapses => "free trial, no consent: never charged",
            Self::PriceIncreaseConsented => "price increase, consents: pays the new price",
            Self::PriceIncreaseDeclined => "price increase, declines: ends before it",
            Self::Yearly => "yearly plan: charged once a year",
            Self::BillingDay => "billed on the 1st: a prorated first charge",
            Self::Pauses => "pauses a month, resumes mid-period: the rest prorated",
            Self::Coupon => "signs up with a 3-month 50% coupon: half price, then full",
        }
    }

    /// Signs up to [`TRIAL_PLAN`].
    pub(crate) fn is_trial(self) -> bool {
        matches!(self, Self::TrialConsented | Self::TrialLapses)
    }

    /// The merchant raises this customer's price to [`PLUS_PLAN`].
    pub(crate) fn is_price_increase(self) -> bool {
        matches!(
            self,
            Self::PriceIncreaseConsented | Self::PriceIncreaseDeclined
        )
    }
}

pub(crate) struct Persona {
    pub(crate) label: &'static str,
    pub(crate) user_id: &'static str,
    pub(crate) buyer_name: &'static str,
    pub(crate) email: &'static str,
    pub(crate) tel: &'static str,
    pub(crate) amount: i64,
    pub(crate) plan: &'static str,
    pub(crate) scenario: Scenario,
    /// Which i'mport SDK generation the browser plays (success flag shape).
    pub(crate) sdk: Option<&'static str>,
    /// Signs up to the catalogue's plan [`CATALOGUE_PLAN`] by `plan_id`
    /// (the others by amount and name, the deprecated form).
    pub(crate) from_catalogue: bool,
}

/// The plan the story puts in the catalogue first (`POST /plans`): id,
/// name, amount.
pub(crate) const CATALOGUE_PLAN: (&str, &str, i64) = ("basic-monthly", "베이직 월간", 9900);

/// The part of each charge of [`CATALOGUE_PLAN`] (and [`PLUS_PLAN`]) that
/// is tax-free: a mixed plan (decision 73), e.g. a bundle with e-books.
pub(crate) const TAX_FREE: i64 = 4000;

/// The catalogue's plan with a free trial (id, name, amount, trial days):
/// the conversion needs the customer's consent (`explicit`), and without
/// one the subscription ends (`cancel`).
pub(crate) const TRIAL_PLAN: (&str, &str, i64, u16) = ("trial-monthly", "체험 후 월간", 9900, 10);

/// The dearer plan of [`CATALOGUE_PLAN`]'s name the merchant moves two
/// customers to (issue 23 §3): an increase, so it needs their consent.
pub(crate) const PLUS_PLAN: (&str, &str, i64) = ("basic-plus", "베이직 월간", 12900);

/// The catalogue's yearly plan (id, name, amount): `interval: year`.
pub(crate) const YEARLY_PLAN: (&str, &str, i64) = ("basic-yearly", "베이직 연간", 99000);

/// The catalogue's plan billed on a fixed day (id, name, amount, day):
/// `billing_day` with a `prorated` first period.
pub(crate) const BILLING_DAY_PLAN: (&str, &str, i64, u8) =
    ("basic-1st", "베이직 월간 (1일 결제)", 9900, 1);

/// The merchant's launch coupon (id, name, percent off, periods): half
/// price for three periods, redeemed with the sign-up.
pub(crate) const LAUNCH_COUPON: (&str, &str, i64, u32) = ("launch-3m", "런칭 3개월 50%", 50, 3);

/// How far into its second period the pausing customer resumes.
pub(crate) const PAUSE_RESUMES_AFTER_DAYS: i64 = 10;

pub(crate) const PEOPLE: [Persona; 17] = [
    Persona {
        label: "alice",
        user_id: "user-1001",
        buyer_name: "김하나",
        email: "hana@example.com",
        tel: "010-1111-0001",
        amount: 9900,
        plan: "베이직 월간",
        scenario: Scenario::Pays,
        from_catalogue: true,
        sdk: None,
    },
    Persona {
        label: "bob",
        user_id: "user-1002",
        buyer_name: "이두리",
        email: "duri@example.com",
        tel: "010-1111-0002",
        amount: 14900,
        plan: "프로 월간",
        scenario: Scenario::AlwaysDeclined,
        from_catalogue: false,
        sdk: Some("new"),
    },
    Persona {
        label: "carol",
        user_id: "user-1003",
        buyer_name: "박세진",
        email: "sejin@example.com",
        tel: "010-1111-0003",
        amount: 9900,
        plan: "베이직 월간",
        scenario: Scenario::DeclinedOnce,
        from_catalogue: false,
        sdk: Some("legacy_success"),
    },
    Persona {
        label: "dave",
        user_id: "user-1004",
        buyer_name: "최네오",
        email: "neo@example.com",
        tel: "010-1111-0004",
        amount: 29900,
        plan: "팀 월간",
        scenario: Scenario::TimeoutAfterCharge,
        from_catalogue: false,
        sdk: None,
    },
    Persona {
        label: "erin",
        user_id: "user-1005",
        buyer_name: "정다섯",
        email: "daseot@example.com",
        tel: "010-1111-0005",
        amount: 4900,
        plan: "라이트 월간",
        scenario: Scenario::PlanChange,
        from_catalogue: false,
        sdk: Some("new"),
    },
    Persona {
        label: "frank",
        user_id: "user-1006",
        buyer_name: "한여섯",
        email: "yeoseot@example.com",
        tel: "010-1111-0006",
        amount: 9900,
        plan: "베이직 월간",
        scenario: Scenario::ClosesWindow,
        from_catalogue: false,
        sdk: None,
    },
    Persona {
        label: "gina",
        user_id: "user-1007",
        buyer_name: "윤일곱",
        email: "ilgop@example.com",
        tel: "010-1111-0007",
        amount: 9900,
        plan: "베이직 월간",
        scenario: Scenario::CancelAtPeriodEnd,
        from_catalogue: false,
        sdk: None,
    },
    Persona {
        label: "hana",
        user_id: "user-1008",
        buyer_name: "서여덟",
        email: "yeodeol@example.com",
        tel: "010-1111-0008",
        amount: 14900,
        plan: "프로 월간",
        scenario: Scenario::NewCardAfterDecline,
        from_catalogue: false,
        sdk: None,
    },
    Persona {
        label: "ivan",
        user_id: "user-1009",
        buyer_name: "강아홉",
        email: "ahop@example.com",
        tel: "010-1111-0009",
        amount: 19900,
        plan: "프리미엄 월간",
        scenario: Scenario::MidTermCancel,
        from_catalogue: false,
        sdk: None,
    },
    Persona {
        label: "judy",
        user_id: "user-1010",
        buyer_name: "문열",
        email: "yeol@example.com",
        tel: "010-1111-0010",
        amount: TRIAL_PLAN.2,
        plan: TRIAL_PLAN.1,
        scenario: Scenario::TrialConsented,
        from_catalogue: false,
        sdk: None,
    },
    Persona {
        label: "ken",
        user_id: "user-1011",
        buyer_name: "배열하나",
        email: "hana11@example.com",
        tel: "010-1111-0011",
        amount: TRIAL_PLAN.2,
        plan: TRIAL_PLAN.1,
        scenario: Scenario::TrialLapses,
        from_catalogue: false,
        sdk: None,
    },
    Persona {
        label: "liam",
        user_id: "user-1012",
        buyer_name: "노열둘",
        email: "yeoldul@example.com",
        tel: "010-1111-0012",
        amount: CATALOGUE_PLAN.2,
        plan: CATALOGUE_PLAN.1,
        scenario: Scenario::PriceIncreaseConsented,
        from_catalogue: true,
        sdk: None,
    },
    Persona {
        label: "mina",
        user_id: "user-1013",
        buyer_name: "오열셋",
        email: "yeolset@example.com",
        tel: "010-1111-0013",
        amount: CATALOGUE_PLAN.2,
        plan: CATALOGUE_PLAN.1,
        scenario: Scenario::PriceIncreaseDeclined,
        from_catalogue: true,
        sdk: None,
    },
    Persona {
        label: "nora",
        user_id: "user-1014",
        buyer_name: "유열넷",
        email: "yeollet@example.com",
        tel: "010-1111-0014",
        amount: YEARLY_PLAN.2,
        plan: YEARLY_PLAN.1,
        scenario: Scenario::Yearly,
        from_catalogue: false,
        sdk: None,
    },
    Persona {
        label: "oscar",
        user_id: "user-1015",
        buyer_name: "임열다섯",
        email: "yeoldaseot@example.com",
        tel: "010-1111-0015",
        amount: BILLING_DAY_PLAN.2,
        plan: BILLING_DAY_PLAN.1,
        scenario: Scenario::BillingDay,
        from_catalogue: false,
        sdk: None,
    },
    Persona {
        label: "pia",
        user_id: "user-1016",
        buyer_name: "장열여섯",
        email: "yeolyeoseot@example.com",
        tel: "010-1111-0016",
        amount: 9900,
        plan: "베이직 월간",
        scenario: Scenario::Pauses,
        from_catalogue: false,
        sdk: None,
    },
    Persona {
        label: "quinn",
        user_id: "user-1017",
        buyer_name: "권열일곱",
        email: "yeolilgop@example.com",
        tel: "010-1111-0017",
        amount: 9900,
        plan: "베이직 월간",
        scenario: Scenario::Coupon,
        from_catalogue: false,
        sdk: None,
    },
];

/// The plan erin moves to.
pub(crate) const ERIN_NEW_PLAN: (i64, &str) = (9900, "베이직 월간");
/// What is refunded of alice's last charge.
pub(crate) const ALICE_REFUND: i64 = 3000;

/// A customer after the sign-up round trip.
pub(crate) struct Member {
    pub(crate) p: &'static Persona,
    pub(crate) id: SubscriptionId,
    pub(crate) customer_uid: String,
    /// The callback URL i'mport redirected the browser to.
    pub(crate) callback: Url,
    /// Where the callback sent the browser.
    pub(crate) landed: Url,
}

impl Member {
    pub(crate) fn landed_param(&self, key: &str) -> Option<String> {
        self.landed
            .query_pairs()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }

    pub(crate) fn signed_up(&self) -> bool {
        self.landed_param("subscription_id").is_some()
    }
}
