//! Everything that touches CPython: starting it, loading the app, the environ, the objects a
//! WSGI app receives, and serving a request.

pub mod app;
pub mod environ;
pub mod handler;
pub mod init;
pub mod objects;
