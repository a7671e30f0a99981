//! The route table: every route of the API, the agent gateway and the
//! console in one place, with the layers every request passes (per-address
//! limits, the audit trail, body limits, security headers, forwarded
//! headers). Handlers never see the router; this file only composes.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use reach_proto::agent::paths as agents_paths;

use crate::{SharedState, agents, api, audit, console, http, metrics};

/// The whole route table with its layers, behind the path normalisation
/// that runs before routing (case, API version, OData call syntax).
pub fn app(state: SharedState) -> Router {
    Router::new().fallback_service(tower::Layer::layer(
        &tower::util::MapRequestLayer::new(api::paths::normalise_request),
        routes(state),
    ))
}

fn routes(state: SharedState) -> Router {
    let json_limit = state.config.limits.json_body_max_bytes;
    Router::new()
        .route("/{tenant}/oauth2/token", post(api::token::token))
        .route("/{tenant}/oauth2/v2.0/token", post(api::token::token))
        .route("/api/machines", get(api::machines::list))
        .route("/api/machines/{id}", get(api::machines::get))
        .route("/api/machines/{id}/tags", post(api::machine_tags::tag_one))
        .route(
            "/api/machines/addorremovetagformultiplemachines",
            post(api::machine_tags::tag_many),
        )
        .route(
            "/api/machines/findbytag",
            get(api::machine_tags::find_by_tag),
        )
        .route(
            "/api/machines/{id}/runliveresponse",
            post(api::live_response::run),
        )
        .route(
            "/api/machines/{id}/isolate",
            post(api::response_actions::isolate),
        )
        .route(
            "/api/machines/{id}/unisolate",
            post(api::response_actions::unisolate),
        )
        .route(
            "/api/machines/{id}/offboard",
            post(api::response_actions::offboard),
        )
        .route(
            "/api/machines/{id}/stopandquarantinefile",
            post(api::response_actions::stop_and_quarantine_file),
        )
        .route(
            "/api/machines/{id}/collectinvestigationpackage",
            post(api::response_actions::collect_investigation_package),
        )
        .route(
            "/api/machineactions/{id}/getpackageuri",
            get(api::download::package_uri),
        )
        .route(
            "/api/machines/{id}/runantivirusscan",
            post(api::unsupported_actions::run_antivirus_scan),
        )
        .route(
            "/api/machines/{id}/restrictcodeexecution",
            post(api::unsupported_actions::restrict_code_execution),
        )
        .route(
            "/api/machines/{id}/unrestrictcodeexecution",
            post(api::unsupported_actions::restrict_code_execution),
        )
        .route(
            "/api/batches",
            get(api::batches::list).post(api::batches::create),
        )
        .route("/api/batches/{id}", get(api::batches::get))
        .route(
            "/api/batches/{id}/machineactions",
            get(api::batches::machine_actions),
        )
        .route(
            "/api/batches/{id}/cancel",
            post(api::batches::control::cancel),
        )
        .route(
            "/api/batches/{id}/pause",
            post(api::batches::control::pause),
        )
        .route(
            "/api/batches/{id}/results",
            get(api::batches::results::results),
        )
        .route(
            "/api/batches/{id}/output",
            get(api::batches::output::batch_output),
        )
        .route(
            "/api/batches/{id}/resume",
            post(api::batches::control::resume),
        )
        .route("/api/auditlog", get(api::audit_log::list))
        .route("/api/machineactions", get(api::machine_actions::list))
        .route("/api/machineactions/{id}", get(api::machine_actions::get))
        .route(
            "/api/machineactions/{id}/commands/{index}/output",
            get(api::output::command_output),
        )
        .route(
            "/api/machineactions/{id}/cancel",
            post(api::machine_actions::cancel),
        )
        .route(
            "/api/machineactions/{id}/getliveresponseresultdownloadlink/{args}",
            get(api::download::link),
        )
        .route(
            "/api/libraryfiles",
            get(api::library::list)
                .post(api::library::upload)
                .layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/api/libraryfiles/{name}",
            get(api::library::get).delete(api::library::delete),
        )
        .route("/download/{*path}", get(api::download::download))
        .route(agents_paths::ENROLL, post(agents::gateway::enroll))
        .route(agents_paths::CONNECT, get(agents::gateway::connect))
        .route(
            "/agent/v1/commands/{action}/{index}/payload",
            get(agents::payload::payload),
        )
        .route(
            "/agent/v1/commands/{action}/{index}/result",
            put(agents::payload::result).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/agent/v1/commands/{action}/{index}/chunks",
            get(agents::chunks::list_chunks),
        )
        .route(
            "/agent/v1/commands/{action}/{index}/chunks/{n}",
            put(agents::chunks::put_chunk).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/agent/v1/commands/{action}/{index}/complete",
            post(agents::chunks::complete),
        )
        .route("/", get(console::index))
        .route("/console/{file}", get(console::asset))
        .route(
            "/console/session",
            get(console::current)
                .post(console::sign_in)
                .delete(console::sign_out),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(metrics::readyz))
        .route("/metrics", get(metrics::render))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            http::by_address::limit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit::record_api,
        ))
        .layer(DefaultBodyLimit::max(json_limit))
        .layer(axum::middleware::map_response(console::security_headers))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            http::origin::forwarding,
        ))
        .with_state(state)
}
