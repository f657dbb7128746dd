//! distcc's process exit codes (`src/exitcode.h` in distcc 3.4). They are also
//! the codes a server fabricates into `STAT` (shifted left by 8) when it could not
//! run the compiler itself.

pub const DISTCC_FAILED: i32 = 100;
pub const BAD_ARGUMENTS: i32 = 101;
pub const BIND_FAILED: i32 = 102;
pub const CONNECT_FAILED: i32 = 103;
pub const COMPILER_CRASHED: i32 = 104;
pub const OUT_OF_MEMORY: i32 = 105;
pub const BAD_HOSTSPEC: i32 = 106;
pub const IO_ERROR: i32 = 107;
pub const TRUNCATED: i32 = 108;
pub const PROTOCOL_ERROR: i32 = 109;
pub const COMPILER_MISSING: i32 = 110;
pub const RECURSION: i32 = 111;
pub const SETUID_FAILED: i32 = 112;
pub const ACCESS_DENIED: i32 = 113;
pub const BUSY: i32 = 114;
pub const NO_SUCH_FILE: i32 = 115;
pub const NO_HOSTS: i32 = 116;
pub const GONE: i32 = 117;
pub const TIMEOUT: i32 = 118;
