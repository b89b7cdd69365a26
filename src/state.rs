//! The job state machine: the one pure function every status change goes through.

use crate::job::Status;

/// A status change the state machine does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the job cannot move from \"{from}\" to \"{to}\"")]
pub struct TransitionForbidden {
    pub from: Status,
    pub to: Status,
}

/// Checks that a job in status `from` may move to `to`, as spec/queue.md draws it.
///
/// Finished statuses are terminal: nothing leaves them.
pub fn transition(from: Status, to: Status) -> Result<Status, TransitionForbidden> {
    use Status::*;
    let allowed = match from {
        Created => matches!(to, Waiting | Processing | Terminating | Cancelled),
        Waiting => matches!(to, Processing | Terminating | Cancelled | Created),
        Processing => matches!(to, Success | Warning | Error | Terminating | Created),
        Terminating => matches!(to, Terminated | Cancelled),
        Success | Warning | Error | Terminated | Cancelled => false,
    };
    if allowed {
        Ok(to)
    } else {
        Err(TransitionForbidden { from, to })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::*;

    /// Every allowed edge of spec/queue.md; every other pair must be refused.
    const ALLOWED: &[(Status, Status)] = &[
        (Created, Waiting),
        (Created, Processing),
        (Created, Terminating),
        (Created, Cancelled),
        (Waiting, Processing),
        (Waiting, Terminating),
        (Waiting, Cancelled),
        (Waiting, Created),
        (Processing, Success),
        (Processing, Warning),
        (Processing, Error),
        (Processing, Terminating),
        (Processing, Created),
        (Terminating, Terminated),
        (Terminating, Cancelled),
    ];

    #[test]
    fn every_allowed_transition_is_accepted() {
        for &(from, to) in ALLOWED {
            assert_eq!(transition(from, to), Ok(to), "{from} -> {to}");
        }
    }

    #[test]
    fn every_other_transition_is_forbidden() {
        let mut forbidden = 0;
        for from in Status::ALL {
            for to in Status::ALL {
                if ALLOWED.contains(&(from, to)) {
                    continue;
                }
                assert_eq!(
                    transition(from, to),
                    Err(TransitionForbidden { from, to }),
                    "{from} -> {to} must be forbidden"
                );
                forbidden += 1;
            }
        }
        assert_eq!(forbidden, 81 - ALLOWED.len());
    }

    #[test]
    fn finished_statuses_are_terminal() {
        for from in Status::ALL.into_iter().filter(|s| s.is_finished()) {
            for to in Status::ALL {
                assert!(transition(from, to).is_err(), "{from} -> {to}");
            }
        }
    }
}
