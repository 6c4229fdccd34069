//! The process exit codes (CONTRACT.md), kept from DSS as 8-bit values.

/// Clean stop.
pub const CLEAN: i32 = 0;
/// Cannot run, do not restart (DSS's -1): bad config, port taken, no permission.
pub const CANNOT_RUN: i32 = 255;
