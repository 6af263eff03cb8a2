//! Locating the workspace binaries for end-to-end tests.
