//! What a client tells a monitor, as bytes and lines (no I/O here):
//! [`binstate`] is distcc 3.4's per-process state file, read by
//! `distccmon-text`/`distccmon-gnome` and by `dportage monitor`;
//! [`outcome`] is one line per verified job in the monitor log (verdicts,
//! mismatches, cache hits), which only `dportage monitor` reads.

pub mod binstate;
pub mod outcome;
