//! The nine job statuses and the state machine: the one pure function every status change goes through.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The nine job statuses of the Job Queue API.
///
/// The store knows a status by its `code()`, in the status index and in job records (serde
/// writes the code), never by its position in this enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    Created,
    Waiting,
    Processing,
    Success,
    Warning,
    Error,
    Terminating,
    Terminated,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 9] = [
        Status::Created,
        Status::Waiting,
        Status::Processing,
        Status::Success,
        Status::Warning,
        Status::Error,
        Status::Terminating,
        Status::Terminated,
        Status::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Waiting => "waiting",
            Status::Processing => "processing",
            Status::Success => "success",
            Status::Warning => "warning",
            Status::Error => "error",
            Status::Terminating => "terminating",
            Status::Terminated => "terminated",
            Status::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Success, warning, error, terminated and cancelled are final.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            Status::Success
                | Status::Warning
                | Status::Error
                | Status::Terminated
                | Status::Cancelled
        )
    }

    /// The status's one-byte code in the store: the key of its status index and the byte of
    /// job records. Fixed for each status; stored files depend on these values.
    pub fn code(self) -> u8 {
        match self {
            Status::Created => 0,
            Status::Waiting => 1,
            Status::Processing => 2,
            Status::Success => 3,
            Status::Warning => 4,
            Status::Error => 5,
            Status::Terminating => 6,
            Status::Terminated => 7,
            Status::Cancelled => 8,
        }
    }

    /// The status whose `code()` is `code`.
    pub fn from_code(code: u8) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.code() == code)
    }
}

/// Serde writes a status as its store code (one byte in bincode, as its derived variant index
/// was for codes below 251). Clients see `as_str()`, never this.
impl Serialize for Status {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(self.code())
    }
}

impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Status, D::Error> {
        let code = u8::deserialize(deserializer)?;
        Status::from_code(code)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown status code {code}")))
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status change the state machine does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the job cannot move from \"{from}\" to \"{to}\"")]
pub struct TransitionForbidden {
    pub from: Status,
    pub to: Status,
}

/// Checks that a job in status `from` may move to `to`, as docs/queue.md (Statuses) draws it.
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

    /// Every allowed edge of docs/queue.md (Statuses); every other pair must be refused.
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

    /// Stored files depend on these codes: they never change.
    #[test]
    fn status_codes_are_fixed() {
        let codes = [
            (Created, 0),
            (Waiting, 1),
            (Processing, 2),
            (Success, 3),
            (Warning, 4),
            (Error, 5),
            (Terminating, 6),
            (Terminated, 7),
            (Cancelled, 8),
        ];
        assert_eq!(codes.len(), Status::ALL.len());
        for (status, code) in codes {
            assert_eq!(status.code(), code, "{status}");
            assert_eq!(Status::from_code(code), Some(status), "{code}");
        }
        assert_eq!(Status::from_code(9), None);
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
