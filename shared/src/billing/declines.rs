//! Why a charge was declined, in classes that decide what follows
//! (decision 72). Korean billing keys expose no card expiry and there is
//! no account updater: a lost, expired or closed card is replaced only by
//! a new registration, so retrying it only hammers the issuer. The class is
//! read from the PG's answer (V1 `fail_reason`; V2 `failure.pgCode` and
//! `pgMessage`) through [`TABLE`] and nothing else: text it does not list is
//! [`DeclineClass::Unknown`], retried like a soft decline.

use serde::{Deserialize, Serialize};

/// What a decline says about the card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeclineClass {
    InsufficientFunds,
    LimitExceeded,
    CardInvalid,
    CardLostOrStolen,
    CardExpired,
    AccountClosed,
    IssuerUnavailable,
    DoNotRetry,
    Unknown,
}

/// One row of the mapping: a PG's code (compared whole) or a phrase of its
/// message (contained, ASCII letters compared without case), and the class.
/// The first row that matches decides, so the narrower phrases come first.
pub struct Row {
    pub needle: &'static str,
    pub class: DeclineClass,
}

const fn row(needle: &'static str, class: DeclineClass) -> Row {
    Row { needle, class }
}

/// The one table from a PG's words to a class. Korean PGs answer in
/// Korean (`잔액부족`, `한도초과`, `분실카드`); the English rows cover PGs
/// and V2 `pgMessage`s that answer in English. Add a row (and its test)
/// when a PG's answer is seen classified `unknown` in the run summaries.
pub const TABLE: &[Row] = &[
    // The merchant's side (its contract with a card company, its store id):
    // no new card would help, and it is not the customer's. Retried, and
    // first, so that "거래 정지된 가맹점" or "가맹점 해지" never reads as a
    // dead card.
    row("가맹점", DeclineClass::Unknown),
    // Money: may pass another day (payday). Before the hard rows, so that
    // "한도초과로 거래불가" stays a limit.
    row("잔액부족", DeclineClass::InsufficientFunds),
    row("잔액 부족", DeclineClass::InsufficientFunds),
    row("잔고부족", DeclineClass::InsufficientFunds),
    row("insufficient", DeclineClass::InsufficientFunds),
    row("한도초과", DeclineClass::LimitExceeded),
    row("한도 초과", DeclineClass::LimitExceeded),
    row("한도를 초과", DeclineClass::LimitExceeded),
    row("limit exceeded", DeclineClass::LimitExceeded),
    // The issuer's or the bank's side is down or closed for the night (a
    // check card's bank around midnight): a later try may pass.
    row("점검", DeclineClass::IssuerUnavailable),
    row("카드사 장애", DeclineClass::IssuerUnavailable),
    row("통신장애", DeclineClass::IssuerUnavailable),
    row("응답없음", DeclineClass::IssuerUnavailable),
    row("issuer unavailable", DeclineClass::IssuerUnavailable),
    // Blocked for now (a fraud check, a bill unpaid): lifted without a new card.
    row("일시", DeclineClass::Unknown),
    row("의심", DeclineClass::Unknown),
    // Lost or stolen: the card is dead.
    row("분실", DeclineClass::CardLostOrStolen),
    row("도난", DeclineClass::CardLostOrStolen),
    row("lost card", DeclineClass::CardLostOrStolen),
    row("stolen", DeclineClass::CardLostOrStolen),
    // Past its validity.
    row("유효기간", DeclineClass::CardExpired),
    row("기간만료", DeclineClass::CardExpired),
    row("기간 만료", DeclineClass::CardExpired),
    row("expired card", DeclineClass::CardExpired),
    row("card expired", DeclineClass::CardExpired),
    // The card or the account behind it was closed.
    row("해지", DeclineClass::AccountClosed),
    row("탈회", DeclineClass::AccountClosed),
    row("account closed", DeclineClass::AccountClosed),
    row("card closed", DeclineClass::AccountClosed),
    // A card number the issuer does not know or accept.
    row("유효하지 않은 카드", DeclineClass::CardInvalid),
    row("카드번호 오류", DeclineClass::CardInvalid),
    row("카드번호오류", DeclineClass::CardInvalid),
    row("invalid card", DeclineClass::CardInvalid),
    // The issuer refuses this card for good.
    row("거래정지", DeclineClass::DoNotRetry),
    row("거래 정지", DeclineClass::DoNotRetry),
    row("do not retry", DeclineClass::DoNotRetry),
];

impl DeclineClass {
    pub const ALL: [Self; 9] = [
        Self::InsufficientFunds,
        Self::LimitExceeded,
        Self::CardInvalid,
        Self::CardLostOrStolen,
        Self::CardExpired,
        Self::AccountClosed,
        Self::IssuerUnavailable,
        Self::DoNotRetry,
        Self::Unknown,
    ];

    /// The class of a decline answered with `code` and `message`.
    pub fn classify(code: Option<&str>, message: Option<&str>) -> Self {
        let message = message.map(str::to_ascii_lowercase);
        TABLE
            .iter()
            .find(|r| {
                code.is_some_and(|c| c.trim() == r.needle)
                    || message.as_deref().is_some_and(|m| m.contains(r.needle))
            })
            .map_or(Self::Unknown, |r| r.class)
    }

    /// Retrying cannot succeed: only a new card can.
    pub fn is_hard(self) -> bool {
        matches!(
            self,
            Self::CardInvalid
                | Self::CardLostOrStolen
                | Self::CardExpired
                | Self::AccountClosed
                | Self::DoNotRetry
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InsufficientFunds => "insufficient_funds",
            Self::LimitExceeded => "limit_exceeded",
            Self::CardInvalid => "card_invalid",
            Self::CardLostOrStolen => "card_lost_or_stolen",
            Self::CardExpired => "card_expired",
            Self::AccountClosed => "account_closed",
            Self::IssuerUnavailable => "issuer_unavailable",
            Self::DoNotRetry => "do_not_retry",
            Self::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::DeclineClass as C;
    use super::*;

    fn of(message: &str) -> C {
        C::classify(None, Some(message))
    }

    /// Every row, as a PG would word it, with the class it must give.
    #[test]
    fn each_row_classifies_its_answer() {
        let cases = [
            ("거래 정지된 가맹점입니다", C::Unknown),
            ("잔액부족", C::InsufficientFunds),
            ("[F112] 잔액 부족", C::InsufficientFunds),
            ("계좌 잔고부족", C::InsufficientFunds),
            ("Insufficient funds", C::InsufficientFunds),
            ("한도초과로 거래불가", C::LimitExceeded),
            ("1회 한도 초과", C::LimitExceeded),
            ("월 한도를 초과하였습니다", C::LimitExceeded),
            ("Daily limit exceeded", C::LimitExceeded),
            ("은행 점검시간 거래불가", C::IssuerUnavailable),
            ("카드사 장애", C::IssuerUnavailable),
            ("카드사 통신장애", C::IssuerUnavailable),
            ("카드사 응답없음", C::IssuerUnavailable),
            ("Issuer unavailable", C::IssuerUnavailable),
            ("일시 사용정지 카드", C::Unknown),
            ("도용 의심 거래", C::Unknown),
            ("[8301] 분실카드입니다", C::CardLostOrStolen),
            ("도난 신고된 카드", C::CardLostOrStolen),
            ("Lost card", C::CardLostOrStolen),
            ("Card reported stolen", C::CardLostOrStolen),
            ("유효기간 경과 카드", C::CardExpired),
            ("카드 기간만료", C::CardExpired),
            ("카드 기간 만료", C::CardExpired),
            ("Expired card", C::CardExpired),
            ("Card expired", C::CardExpired),
            ("해지된 카드입니다", C::AccountClosed),
            ("탈회 회원 카드", C::AccountClosed),
            ("Account closed", C::AccountClosed),
            ("Card closed", C::AccountClosed),
            ("유효하지 않은 카드입니다", C::CardInvalid),
            ("카드번호 오류", C::CardInvalid),
            ("카드번호오류(0012)", C::CardInvalid),
            ("Invalid card number", C::CardInvalid),
            ("거래정지 카드", C::DoNotRetry),
            ("거래 정지 카드", C::DoNotRetry),
            ("Do not retry", C::DoNotRetry),
        ];
        assert_eq!(cases.len(), TABLE.len(), "one case per row");
        for (row, (message, class)) in TABLE.iter().zip(cases) {
            assert!(
                message.to_ascii_lowercase().contains(row.needle),
                "the case {message:?} is not the row {:?}'s",
                row.needle
            );
            assert_eq!(of(message), class, "{message:?}");
            assert_eq!(row.class, class, "row {:?}", row.needle);
        }
    }

    #[test]
    fn a_code_matches_whole_and_text_it_does_not_list_is_unknown() {
        assert_eq!(C::classify(Some("잔액부족"), None), C::InsufficientFunds);
        assert_eq!(C::classify(Some("9999"), Some("승인 거절")), C::Unknown);
        assert_eq!(C::classify(None, None), C::Unknown);
        assert_eq!(of("카드사 거절"), C::Unknown);
        // The generic issuer refusal is not a dead card; nor is a closed connection.
        assert_eq!(of("Do not honor"), C::Unknown);
        assert_eq!(of("connection closed"), C::Unknown);
        assert!(!C::Unknown.is_hard());
    }

    #[test]
    fn hard_classes_are_the_dead_cards() {
        let hard: Vec<_> = C::ALL.into_iter().filter(|c| c.is_hard()).collect();
        assert_eq!(
            hard,
            [
                C::CardInvalid,
                C::CardLostOrStolen,
                C::CardExpired,
                C::AccountClosed,
                C::DoNotRetry
            ]
        );
        for c in C::ALL {
            assert_eq!(C::parse(c.as_str()), Some(c));
        }
    }
}
