//! The API over the local socket: the route table, the request and response types, and the
//! one table from failures to HTTP statuses and stable codes. Shared by the daemon's server
//! and the CLI's client, so the two cannot drift apart.

pub mod error;
pub mod routes;
pub mod wire;

pub use error::ApiError;
pub use routes::{Access, Method, ROUTES, Route, RouteSpec, lookup};
pub use wire::{Endpoint, SecretString, endpoint};
