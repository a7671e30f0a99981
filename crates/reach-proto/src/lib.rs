//! Wire types for everything that crosses a process boundary in Reach: the
//! Defender-compatible REST API (`api`) and the agent protocol (`agent`).
//!
//! This crate owns the exact JSON shapes that clients rely on. It must never
//! depend on tokio, axum, sqlx or reqwest, and never holds behaviour beyond
//! small helpers on the types themselves.

pub mod agent;
pub mod api;
