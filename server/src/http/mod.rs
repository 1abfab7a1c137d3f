//! HTTP/1.1 without Python: parsing heads, decoding bodies, framing responses.

pub mod body;
pub mod mime;
pub mod outbox;
pub mod parse;
pub mod redirect;
pub mod response;
pub mod statics;
pub mod uwsgi;
