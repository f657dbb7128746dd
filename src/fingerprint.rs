//! Exact toolchain identity: what may be paired with what.
//!
//! Two hosts are put in one pool bucket only when their compilers produce
//! byte-identical objects, so "gcc 12" is not enough: Debian's and Gentoo's gcc
//! 12.2 differ in `.comment` and in configure defaults (`-fcf-protection`,
//! default PIE, stack protector). The fingerprint therefore combines
//!
//! * the first line of `--version` (carries the vendor string),
//! * `-dumpfullversion` (gcc) or the same first line (clang has no such flag),
//! * `-dumpmachine` (the target triple), and
//! * the blake3 hash of the object the compiler produces for [`PROBE_C`] /
//!   [`PROBE_CXX`] compiled with [`PROBE_FLAGS`], which catches codegen defaults
//!   and the assembler version that the strings do not name.
//!
//! This module is pure (part of the core); `crate::probe` is the one edge that
//! runs the compiler to fill these values in.

use serde::{Deserialize, Serialize};

/// Flags the probe is compiled with. No `-g`: debug info would carry the probe's
/// temporary directory as `DW_AT_comp_dir`, which differs per run.
pub const PROBE_FLAGS: &[&str] = &["-O2", "-c"];

/// The C probe: loops, floating point, arrays on the stack (stack protector),
/// an indirect call (CET/`endbr64`, PIE code model) and a switch (jump tables).
pub const PROBE_C: &str = r#"/* dportage toolchain probe (C) */
#include <stddef.h>
static double scale(double x, int n) { double r = 1.0; for (int i = 0; i < n; i++) r *= x; return r; }
int dportage_probe_table(int k) {
    switch (k) { case 0: return 7; case 1: return 11; case 2: return 13; case 3: return 17;
                 case 4: return 19; case 5: return 23; default: return -1; }
}
int dportage_probe(const char *s, int (*cb)(int)) {
    char buf[64]; size_t n = 0;
    while (s[n] && n < sizeof buf - 1) { buf[n] = (char)(s[n] ^ 0x20); n++; }
    buf[n] = 0;
    long acc = 0;
    for (size_t i = 0; i < n; i++) acc = acc * 31 + buf[i] + cb((int)i);
    return (int)(acc ^ (long)scale(1.5, (int)(n & 7))) + dportage_probe_table((int)(acc & 7));
}
"#;

/// The C++ probe: templates, a static constructor, an anonymous namespace,
/// exceptions and a virtual call.
pub const PROBE_CXX: &str = r#"// dportage toolchain probe (C++)
#include <cstddef>
namespace {
struct Base { virtual ~Base() {} virtual int f(int x) const { return x + 1; } };
struct Derived : Base { int f(int x) const override { return x * 3; } };
template <typename T> T sum(const T *p, std::size_t n) { T s{}; for (std::size_t i = 0; i < n; ++i) s += p[i]; return s; }
struct Init { int v; Init() : v(42) {} };
Init init_value;
}
int dportage_probe_cxx(int k) {
    Derived d; const Base &b = d;
    double xs[4] = {1.5, 2.5, 3.5, static_cast<double>(k)};
    if (k < 0) throw k;
    return b.f(k) + static_cast<int>(sum(xs, 4)) + init_value.v;
}
"#;

/// The identity of one compiler as a host would advertise it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Toolchain {
    /// The name the compiler was asked for (`gcc`, `c++`, `clang-14`…).
    pub name: String,
    /// First line of `--version`, e.g. `gcc (Debian 12.2.0-14+deb12u1) 12.2.0`.
    pub version: String,
    /// `-dumpmachine`, e.g. `x86_64-linux-gnu`.
    pub target: String,
    /// blake3 (hex) of the probe object.
    pub probe_hash: String,
    /// [`fingerprint_id`] of the above: the pairing key.
    pub id: String,
}

/// The pairing key: blake3 over the length-prefixed components, hex.
/// `full_version` is `-dumpfullversion` where the compiler has it, else "".
pub fn fingerprint_id(version: &str, full_version: &str, target: &str, probe_hash: &str) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"dportage-toolchain-v1\0");
    for part in [version, full_version, target, probe_hash] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// Is this a C++ driver name (`g++`, `c++`, `clang++-14`, `x86_64-linux-gnu-g++-12`)?
pub fn is_cxx_name(name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name);
    base.contains("++")
}

/// A plausible fingerprint id: 64 lowercase hex digits.
pub fn is_fingerprint_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Facts about this machine that a host advertises next to its compilers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFacts {
    /// glibc version (`gnu_get_libc_version`), else the first line of `ldd --version`.
    pub libc: String,
    /// `std::env::consts::ARCH`, e.g. `x86_64`.
    pub arch: String,
    /// Offset of local time from UTC in seconds, east positive.
    pub tz_offset_secs: i32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_separates_components() {
        // Length prefixes keep "ab"+"c" apart from "a"+"bc".
        assert_ne!(
            fingerprint_id("ab", "c", "t", "h"),
            fingerprint_id("a", "bc", "t", "h")
        );
        assert_eq!(
            fingerprint_id("a", "b", "c", "d"),
            fingerprint_id("a", "b", "c", "d")
        );
        assert!(is_fingerprint_id(&fingerprint_id("a", "b", "c", "d")));
        assert!(!is_fingerprint_id("XYZ"));
    }

    #[test]
    fn cxx_names() {
        assert!(is_cxx_name("g++"));
        assert!(is_cxx_name("/usr/bin/x86_64-linux-gnu-g++-12"));
        assert!(is_cxx_name("clang++"));
        assert!(!is_cxx_name("gcc"));
        assert!(!is_cxx_name("cc"));
    }
}
