//! Shared helpers for the integration tests live in `switchboard::testing`; this crate is empty.
