//! Redis fixtures.
