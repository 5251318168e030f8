//! Where audit events come from.
//!
//! - [`webhook`]: `audithawk serve`, the API server's audit webhook backend (hyper + rustls).
//! - [`tail`]: `audithawk tail`, following JSON-lines audit logs through rotation.
//! - [`scan`]: `audithawk scan`, offline forensics over files, directories and stdin.
//! - [`tls`]: rustls server configuration from PEM files (optional client-CA verification).
//! - [`reader`]: streaming record reader shared by scan and tail (format auto-detection).

pub mod checkpoint;
pub mod reader;
pub mod scan;
pub mod tail;
pub mod tls;
pub mod webhook;
