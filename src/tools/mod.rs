//! Things that are not roles of the network but run the roles: the demo (a
//! whole network on 127.0.0.x), the WAN emulator of the benchmarks and the
//! lying server of the tests. Tools may import any layer; nothing imports them
//! except `main.rs`, tests and benchmarks.

pub mod adversary;
pub mod demo;
pub mod wanproxy;
