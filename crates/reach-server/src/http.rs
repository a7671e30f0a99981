//! The pieces of HTTP that the API, the agent gateway and the console
//! share: request bodies (`body`), a `Path` extractor whose refusal is an
//! `ApiError` (`extract`), the base URL and forwarded headers (`origin`),
//! limits per client address on the routes that take no token
//! (`by_address`), and the bound on slow uploads (`slow_body`). Nothing
//! here handles a route; nothing here imports `api`, `agents` or `console`.

pub mod body;
pub mod by_address;
pub mod extract;
pub mod origin;
pub mod slow_body;

pub use body::{JsonBody, OptionalJsonBody, RawBody};
pub use extract::Path;
pub use origin::{base_url, odata_context};
