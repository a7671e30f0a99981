//! Wire types for everything that crosses a process boundary in Reach: the
//! Defender-compatible REST API (`api`), the agent protocol (`agent`), the destinations an
//! isolated device still reaches (`destination`) and the gzip framing of a collected file (`gzip_frame`).
//!
//! This crate owns the exact JSON shapes that clients rely on. It must never
//! depend on tokio, axum, sqlx or reqwest, and never holds behaviour beyond
//! small helpers on the types themselves.

pub mod agent;
pub mod api;
pub mod destination;
pub mod gzip_frame;
