//! How an error is shown to a person: its message, then each of its causes.
//!
//! jobq's error messages say what failed and what to do, but never repeat their cause: a cause
//! is an error's `source()`, and whoever shows the error (the CLI's stderr, an API answer, a
//! job's result or event, the daemon log) shows it with [`chain`].

use std::error::Error;

/// `error`'s message followed by each of its causes, joined with ": ". A cause whose message is
/// already shown (some libraries' messages repeat their source) is left out, so every cause
/// appears once.
pub fn chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let message = next.to_string();
        if !message.is_empty() && !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        cause = next.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::chain;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read the settings file x.toml")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("the engine failed: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("cannot start")]
    struct Top(#[source] Repeats);

    fn not_found() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")
    }

    #[test]
    fn each_cause_follows_its_error_once() {
        assert_eq!(
            chain(&Outer(not_found())),
            "cannot read the settings file x.toml: no such file"
        );
        // A library message that already shows its source: the source is not shown again.
        assert_eq!(
            chain(&Top(Repeats(not_found()))),
            "cannot start: the engine failed: no such file"
        );
        assert_eq!(chain(&not_found()), "no such file");
    }

    #[test]
    fn api_answers_keep_the_cause() {
        let error = crate::storage::StorageError::Source {
            path: "/data/in.csv".into(),
            source: not_found(),
        };
        assert_eq!(
            crate::http::error::ApiError::from(error).message,
            "Cannot read /data/in.csv; check that it exists and jobq may read it: no such file"
        );
    }
}
