//! The I/O shell of a SecNet node: key files, the data directory, the mempool, block
//! production and the HTTP API. The decisions themselves live in `secnet-contract`.

pub mod api;
pub mod backend;
pub mod backup;
pub mod core;
pub mod datadir;
pub mod dev;
pub mod keyfile;
pub mod mempool;
pub mod pdc;
pub mod problem;
mod server;
pub mod tls;
pub mod webapp;

pub use server::{RunningNode, StartError, start_dev, start_dev_serving};
