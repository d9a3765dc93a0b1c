//! The `mqgate` commands, one module each with its arguments: `main.rs`
//! parses the command line and calls them.
//!
//! - [`serve`]: run the gateway (the demo without `--config`);
//! - [`call`]: one signed call, its answer printed;
//! - [`report`]: the bill from the metering database;
//! - [`policy`]: simulate and validate RAM policies offline;
//! - [`cert`]: a self-signed CA and server certificate for trying TLS.

pub mod call;
pub mod cert;
pub mod policy;
pub mod report;
pub mod serve;
