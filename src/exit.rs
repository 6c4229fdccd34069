//! The process exit codes (CONTRACT.md), kept from DSS as 8-bit values.

/// Clean stop.
pub const CLEAN: i32 = finch_supervisor::EXIT_CLEAN;
/// Cannot run, do not restart (DSS's -1): bad config, port taken, no permission.
pub const CANNOT_RUN: i32 = finch_supervisor::EXIT_CANNOT_RUN;
/// Restart me (DSS's -2): the worker reached FatalError.
pub const RESTART_ME: i32 = finch_supervisor::EXIT_RESTART_ME;
