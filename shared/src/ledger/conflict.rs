//! The one shape of every read-decide-write: read what the decision needs,
//! decide (pure), write under a condition; when the condition fails
//! because another writer got there first (`LedgerError::Conflict`), read
//! again. Each pass says which it came to; this runs the passes.

use std::future::Future;

/// What one pass of a read-decide-write came to.
#[derive(Debug)]
pub enum Pass<T, S = ()> {
    /// The answer: written, already so, or refused.
    Done(T),
    /// The write lost a race: read again, carrying `S` (what a pass learnt
    /// that the next one needs; `()` for most).
    Again(S),
}

/// Runs `pass` until it is done, at most `tries` times, handing each pass
/// the state the previous one left. `Ok(None)`: every pass lost its race
/// (the caller says so in its own words: "kept changing; try again").
pub async fn retry_on_conflict<S, T, E, F, Fut>(
    tries: u32,
    mut state: S,
    mut pass: F,
) -> Result<Option<T>, E>
where
    F: FnMut(S) -> Fut,
    Fut: Future<Output = Result<Pass<T, S>, E>>,
{
    for _ in 0..tries {
        match pass(state).await? {
            Pass::Done(answer) => return Ok(Some(answer)),
            Pass::Again(next) => state = next,
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_run_until_one_is_done_and_carry_their_state() {
        let got: Result<Option<u32>, ()> = retry_on_conflict(5, 0u32, |n| async move {
            Ok(if n == 2 {
                Pass::Done(n * 10)
            } else {
                Pass::Again(n + 1)
            })
        })
        .await;
        assert_eq!(got, Ok(Some(20)));
    }

    #[tokio::test]
    async fn every_pass_losing_is_none_and_an_error_stops_at_once() {
        let mut passes = 0;
        let lost: Result<Option<()>, ()> = retry_on_conflict(3, (), |()| {
            passes += 1;
            async { Ok(Pass::Again(())) }
        })
        .await;
        assert_eq!((lost, passes), (Ok(None), 3));
        let mut passes = 0;
        let failed: Result<Option<()>, &str> = retry_on_conflict(3, (), |()| {
            passes += 1;
            async { Err("store down") }
        })
        .await;
        assert_eq!((failed, passes), (Err("store down"), 1));
    }
}
