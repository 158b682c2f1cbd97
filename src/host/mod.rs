//! How the functions are invoked: [`azure`] (the Functions custom-handler protocol), [`standalone`]
//! (one process with a scheduler, an HTTP server and a queue worker) and, with feature `aws`,
//! [`lambda`]. Each only translates its envelope into the host-neutral calls of [`crate::functions`].

pub mod azure;
#[cfg(feature = "aws")]
pub mod lambda;
pub mod standalone;
pub mod startup;
