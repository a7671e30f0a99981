//! End-to-end tests through the public boundary: a real reach-server on
//! 127.0.0.1:0, in-process agents, and reach-client. One binary, one module
//! per area; the harness is `reach_server::testing`.

// Helpers here panic on what a test cannot go on without.
#![allow(clippy::unwrap_used)]

mod access;
mod agents;
mod audit;
mod auth;
mod batch_control;
mod batches;
mod cluster;
mod cluster_batches;
mod cluster_output;
mod compat;
mod connections;
mod console;
mod durability;
mod errors;
mod floods;
mod getfile;
mod hostile;
mod inline_results;
mod library;
mod live_output;
mod live_response;
mod names;
mod odata;
mod oidc;
mod operations;
mod package;
mod quarantine;
mod queueing;
mod response_actions;
mod retention;
mod shapes;
mod signing;
mod tags;
mod tls;
mod unsupported_actions;
