//! Shared PostgreSQL plumbing: pool from a URL with timeouts, the start-up check, migrations under an advisory lock, and transient-error classification.
