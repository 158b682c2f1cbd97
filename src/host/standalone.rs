//! Standalone mode: one process runs the scheduler, the HTTP server and the queue worker on the
//! embedded store.
