//! Exit classification: how a container's end becomes the job's status and result.

pub use crate::model::ErrorKind;
use crate::model::{Status, UserError};
use crate::runner::output::message_text;

/// How the container ended, as the runner observed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i64),
    /// The engine reports the container OOM-killed.
    OutOfMemory,
    /// The daemon killed it at the process timeout.
    TimedOut,
    /// The daemon killed it when it reached its process limit (a fork bomb).
    ProcessLimit,
    /// The daemon stopped it because the job was killed.
    Terminated,
    /// The container no longer exists in the engine.
    Lost,
}

/// What the job becomes after its container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub status: Status,
    pub message: String,
    pub error: Option<ErrorKind>,
}

/// What the classification needs to know besides the exit itself.
pub struct ExitContext<'a> {
    /// `image:tag`, named by the timeout message.
    pub image: &'a str,
    pub memory_limit: &'a str,
    pub timeout_seconds: u64,
    /// The container's process limit, named by the message of a container that reached it.
    pub pids_limit: i64,
    pub stdout: &'a str,
    pub stderr: &'a str,
}

pub const SUCCESS_MESSAGE: &str = "Component processing finished.";
pub const LOST_MESSAGE: &str =
    "The container of the job was lost: it no longer exists in the Docker engine.";
pub const APPLICATION_ERROR_MESSAGE: &str = "Application error";

/// Classifies an exit exactly as the table in docs/runner.md (Exit classification).
pub fn classify(exit: Exit, context: &ExitContext<'_>) -> Verdict {
    let user = |message: String| Verdict {
        status: Status::Error,
        message,
        error: Some(ErrorKind::User),
    };
    match exit {
        Exit::Code(0) => Verdict {
            status: Status::Success,
            message: SUCCESS_MESSAGE.into(),
            error: None,
        },
        Exit::Terminated => Verdict {
            status: Status::Terminated,
            message: "Job was terminated.".into(),
            error: None,
        },
        Exit::OutOfMemory => user(format!(
            "Component out of memory (exceeded {})",
            context.memory_limit
        )),
        Exit::TimedOut => user(format!(
            "Running {} container exceeded the timeout of {} seconds.",
            context.image, context.timeout_seconds
        )),
        Exit::ProcessLimit => user(format!(
            "Component reached its process limit ({} processes) and was stopped; a component \
             must not start more processes at once (the component's pids_limit setting).",
            context.pids_limit
        )),
        Exit::Code(137) | Exit::Code(125) => {
            user("Component terminated. Possibly due to out of memory error".into())
        }
        Exit::Code(1) => {
            let text = [context.stderr, context.stdout]
                .into_iter()
                .map(str::trim)
                .find(|text| !text.is_empty())
                .unwrap_or("No error message.");
            user(message_text(text))
        }
        Exit::Code(_) => Verdict {
            status: Status::Error,
            message: APPLICATION_ERROR_MESSAGE.into(),
            error: Some(ErrorKind::Application),
        },
        Exit::Lost => classify_lost(),
    }
}

/// In `dev_mode`: an application error's message goes on with the component's stderr (the
/// developer's own machine; on-prem keeps Keboola's bare "Application error").
pub fn show_stderr(verdict: &mut Verdict, stderr: &str) {
    let stderr = stderr.trim();
    if verdict.error == Some(ErrorKind::Application) && !stderr.is_empty() {
        verdict.message = message_text(&format!("{}: {stderr}", verdict.message));
    }
}

/// A user error found outside the container (such as mapping): the job fails with its message.
pub fn user_verdict(error: UserError) -> Verdict {
    Verdict {
        status: Status::Error,
        message: error.0,
        error: Some(ErrorKind::User),
    }
}

/// A job whose container vanished ends with an application error saying so.
pub fn classify_lost() -> Verdict {
    Verdict {
        status: Status::Error,
        message: LOST_MESSAGE.into(),
        error: Some(ErrorKind::Application),
    }
}

/// A new `exception-<hex>` id, shared by an error answer or result and the log line that explains it.
pub fn new_exception_id() -> String {
    format!("exception-{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(exit: Exit, stdout: &str, stderr: &str) -> Verdict {
        classify(
            exit,
            &ExitContext {
                image: "local/ex:1.0.0",
                memory_limit: "32m",
                timeout_seconds: 5,
                pids_limit: 1024,
                stdout,
                stderr,
            },
        )
    }

    #[test]
    fn exit_zero_is_success() {
        let verdict = check(Exit::Code(0), "out", "err");
        assert_eq!(verdict.status, Status::Success);
        assert_eq!(verdict.message, "Component processing finished.");
        assert_eq!(verdict.error, None);
    }

    #[test]
    fn oom_is_a_user_error_naming_the_limit() {
        let verdict = check(Exit::OutOfMemory, "", "");
        assert_eq!(verdict.message, "Component out of memory (exceeded 32m)");
        assert_eq!(verdict.error, Some(ErrorKind::User));
    }

    #[test]
    fn timeout_names_image_and_seconds() {
        let verdict = check(Exit::TimedOut, "", "");
        assert_eq!(
            verdict.message,
            "Running local/ex:1.0.0 container exceeded the timeout of 5 seconds."
        );
        assert_eq!(verdict.error, Some(ErrorKind::User));
    }

    #[test]
    fn the_process_limit_is_a_user_error_naming_it() {
        let verdict = check(Exit::ProcessLimit, "", "");
        assert_eq!(
            verdict.message,
            "Component reached its process limit (1024 processes) and was stopped; a component \
             must not start more processes at once (the component's pids_limit setting)."
        );
        assert_eq!(verdict.error, Some(ErrorKind::User));
    }

    #[test]
    fn exit_137_and_125_suggest_out_of_memory() {
        for code in [137, 125] {
            let verdict = check(Exit::Code(code), "", "");
            assert_eq!(
                verdict.message,
                "Component terminated. Possibly due to out of memory error"
            );
            assert_eq!(verdict.error, Some(ErrorKind::User));
        }
    }

    #[test]
    fn exit_one_prefers_stderr_then_stdout_then_a_default() {
        assert_eq!(check(Exit::Code(1), "out", "err\n").message, "err");
        assert_eq!(check(Exit::Code(1), "out\n", " \n").message, "out");
        assert_eq!(check(Exit::Code(1), "", "").message, "No error message.");
        let long = "x".repeat(10_000);
        assert_eq!(
            check(Exit::Code(1), "", &long).message.chars().count(),
            4000
        );
    }

    #[test]
    fn other_exits_are_application_errors() {
        for code in [2, 3, 127, 255] {
            let verdict = check(Exit::Code(code), "", "details");
            assert_eq!(verdict.status, Status::Error);
            assert_eq!(verdict.message, "Application error");
            assert_eq!(verdict.error, Some(ErrorKind::Application));
        }
    }

    #[test]
    fn dev_mode_shows_stderr_in_application_errors_only() {
        let mut verdict = check(Exit::Code(2), "", "");
        show_stderr(&mut verdict, "panicked at main.rs\n");
        assert_eq!(verdict.message, "Application error: panicked at main.rs");
        let mut verdict = check(Exit::Code(1), "", "bad input");
        show_stderr(&mut verdict, "bad input");
        assert_eq!(verdict.message, "bad input");
        let mut verdict = check(Exit::Code(3), "", "");
        show_stderr(&mut verdict, " \n");
        assert_eq!(verdict.message, "Application error");
    }

    #[test]
    fn termination_ends_terminated() {
        assert_eq!(check(Exit::Terminated, "", "").status, Status::Terminated);
    }
}
