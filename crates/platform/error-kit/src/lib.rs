//! What every crate of the workspace needs about errors, defined once: [`BoxError`], the
//! boxed cause a port error carries (so the whole chain still prints); [`error_chain`],
//! the one line a log field, a readiness reason or a start-up error shows for an error and
//! all its causes; and [`ServerFailure`], the three things a server's failure can mean to
//! a caller, which every service's port error implements so that each server kit maps its
//! failures onto any port in one place (`pg_kit::PgError::into_port`,
//! `stream_consumer::StreamError::into_port`).

use std::error::Error;

/// A boxed error source, kept so the whole cause chain prints.
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// A port error that can say what a server's failure means to its caller. Implemented by
/// each service's port error; built only by the server kits' one mapping each.
pub trait ServerFailure: Sized {
    /// Transient: the server is unreachable, a connection was lost, something timed out.
    /// Retrying may succeed on its own.
    fn unavailable(source: BoxError) -> Self;
    /// The server refused the values themselves: the same values fail the same way, so
    /// the caller skips what carried them.
    fn refused(source: BoxError) -> Self;
    /// Neither: the server or its setup needs an operator (a missing table, a key of the
    /// wrong type). Retrying waits for them; no value is to blame.
    fn backend(source: BoxError) -> Self;
}

/// Implements [`ServerFailure`] for a port error whose variants are named as the trait's
/// methods: `Unavailable(BoxError)`, `Refused(BoxError)` and `Backend(BoxError)`.
#[macro_export]
macro_rules! server_failure {
    ($error:ty) => {
        impl $crate::ServerFailure for $error {
            fn unavailable(source: $crate::BoxError) -> Self {
                Self::Unavailable(source)
            }

            fn refused(source: $crate::BoxError) -> Self {
                Self::Refused(source)
            }

            fn backend(source: $crate::BoxError) -> Self {
                Self::Backend(source)
            }
        }
    };
}

/// `error: cause: cause…` on one line. A cause whose text the line already ends with is
/// not repeated (wrappers often quote their source), an empty one is left out, and line
/// breaks inside a message (PostgreSQL's DETAIL and HINT) become `; `.
#[must_use]
pub fn error_chain(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !part.is_empty() && !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text.replace('\n', "; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    #[derive(Debug)]
    struct Wrap(&'static str, Option<Box<Wrap>>);

    impl fmt::Display for Wrap {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Wrap {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| e as &(dyn Error + 'static))
        }
    }

    #[test]
    fn the_chain_is_one_line_without_repeats_or_empty_causes() {
        let inner = Wrap("Connection refused\nsecond line", None);
        let middle = Wrap("", Some(Box::new(inner)));
        let outer = Wrap("error connecting to server", Some(Box::new(middle)));
        assert_eq!(
            error_chain(&outer),
            "error connecting to server: Connection refused; second line"
        );
        let quoting = Wrap(
            "read failed: timed out",
            Some(Box::new(Wrap("timed out", None))),
        );
        assert_eq!(error_chain(&quoting), "read failed: timed out");
    }
}
