//! Telling transient Redis failures from the ones retrying cannot fix.

use fred::error::{Error as FredError, ErrorKind};
use stream_consumer::StreamError;

/// Reply prefixes of server errors that go away on their own (a server loading its data
/// set, busy with a script, or a cluster in transition).
const TRANSIENT_SERVER_ERRORS: [&str; 5] =
    ["LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN"];

/// fred's own messages (of kind `Unknown`) for commands that never reached a connection.
const TRANSIENT_CLIENT_ERRORS: [&str; 6] = [
    "Client is not initialized",
    "Failed to send command to router",
    "Failed to route command",
    "Max attempts exceeded",
    "Too many failed write attempts",
    "Missing expected connection",
];

/// Whether a fred error is worth retrying: the connection is down, was lost or timed out,
/// or the server said "not now".
pub(crate) fn is_transient(error: &FredError) -> bool {
    match error.kind() {
        ErrorKind::IO
        | ErrorKind::Timeout
        | ErrorKind::Canceled
        | ErrorKind::Backpressure
        | ErrorKind::Routing
        | ErrorKind::Cluster
        | ErrorKind::Sentinel => true,
        ErrorKind::Unknown => {
            let details = error.details();
            TRANSIENT_SERVER_ERRORS
                .iter()
                .any(|code| details.split_whitespace().next() == Some(code))
                || TRANSIENT_CLIENT_ERRORS
                    .iter()
                    .any(|m| details.starts_with(m))
        }
        _ => false,
    }
}

/// Maps a fred error: transient ones to [`StreamError::Unavailable`] (cause kept), the rest
/// (`WRONGTYPE`, a reply that does not parse, a refused command) to
/// [`StreamError::Protocol`], prefixed with what was being done.
pub(crate) fn stream_error(context: &str, error: &FredError) -> StreamError {
    if is_transient(error) {
        StreamError::Unavailable(format!("{context}: {error}").into())
    } else {
        StreamError::Protocol(format!("{context}: {error}"))
    }
}

/// Whether the server answered "no such key" (XINFO on a missing stream).
pub(crate) fn is_no_such_key(error: &FredError) -> bool {
    error.details().contains("no such key")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(kind: ErrorKind, details: &str) -> FredError {
        FredError::new(kind, details.to_owned())
    }

    #[test]
    fn connection_problems_are_transient() {
        for e in [
            err(ErrorKind::IO, "Connection refused (os error 111)"),
            err(ErrorKind::Timeout, "Request timed out."),
            err(ErrorKind::Canceled, "Connection closed unexpectedly."),
            err(
                ErrorKind::Unknown,
                "LOADING Redis is loading the dataset in memory",
            ),
            err(ErrorKind::Unknown, "Client is not initialized."),
        ] {
            assert!(is_transient(&e), "{e}");
            assert!(stream_error("x", &e).is_transient());
        }
    }

    #[test]
    fn refusals_are_protocol_errors() {
        for e in [
            err(
                ErrorKind::InvalidArgument,
                "WRONGTYPE Operation against a key holding the wrong kind of value",
            ),
            err(
                ErrorKind::Unknown,
                "ERR Invalid stream ID specified as stream command argument",
            ),
            err(ErrorKind::Parse, "Could not convert to string."),
            err(ErrorKind::Auth, "WRONGPASS invalid username-password pair"),
        ] {
            assert!(!is_transient(&e), "{e}");
            let mapped = stream_error("reading s", &e);
            assert!(matches!(mapped, StreamError::Protocol(ref m) if m.starts_with("reading s: ")));
        }
    }
}
