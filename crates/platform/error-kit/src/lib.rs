//! Two things every crate of the workspace needs about errors, defined once:
//! [`BoxError`], the boxed cause a port error carries (so the whole chain still prints),
//! and [`error_chain`], the one line a log field, a readiness reason or a start-up error
//! shows for an error and all its causes.

use std::error::Error;

/// A boxed error source, kept so the whole cause chain prints.
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

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
