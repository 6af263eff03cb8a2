//! PostgreSQL fixtures.
