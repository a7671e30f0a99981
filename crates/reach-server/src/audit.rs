//! The audit trail: who did what, from where, on which machine, when, and
//! how it ended. Every state-changing API call, every sign-in and token
//! request, every result download link and download, every read of the
//! audit trail itself, every agent enrollment, and every command handed to
//! and finished by an agent is recorded.
//!
//! Entries are append-only and chained: each carries the hash of the one
//! before it (`link_hash`), so `verify` finds the first entry that was
//! altered, removed or inserted. The store places entries in the chain
//! (`AuditLog::append_audit`); this module decides what an entry says.
//!
//! HTTP calls are recorded by one middleware (`record_api`) after the
//! handler answers and before the response leaves, so an entry exists by
//! the time the caller sees the outcome. Handlers add what only they know
//! (the machine, the action id, the commands) through `Notes`. Writes from
//! many requests are committed together (`Auditor`), one transaction per
//! batch.
//!
//! This module never records a secret, a token or file contents: details
//! hold names, hashes, ids and the commands' parameters, which the action
//! itself shows to any reader of the API.
//!
//! `event` says what an entry holds, `middleware` records API calls,
//! `writer` commits entries in batches, `chain` verifies and exports the
//! chain, `refusals` counts strangers' refusals, and `vocabulary` names
//! every operation outside an HTTP call and every outcome.

pub mod chain;
pub mod event;
pub mod middleware;
pub mod refusals;
pub mod vocabulary;
pub mod writer;

pub use chain::{Verdict, export, verify};
pub use event::{Actor, command_event, event, finish_details, to_wire};
pub use middleware::{Notes, record_api};
pub use vocabulary::{Operation, Outcome};
pub use writer::Auditor;
