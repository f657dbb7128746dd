//! Challenge jobs: the coordinator's way to see that an address really serves
//! correct compiles. Each challenge is a fresh, ordinary-looking translation
//! unit (already preprocessed: no `#include`, so it compiles anywhere)
//! generated from a seed, so a host cannot recognise a challenge by its bytes
//! and answer only those honestly; its right answer comes from an established
//! host with the same toolchain, which is sent the same job. (The toolchain
//! probe cannot serve as a known answer: its source includes system headers,
//! and the coordinator has no compiler to preprocess it.) Until a toolchain
//! has an established host (the operator vouches for the first), a challenge
//! proves service only: the address compiles and returns an object.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const NOUNS: &[&str] = &[
    "buf", "node", "entry", "slot", "item", "key", "page", "chunk", "frame", "cell", "token",
    "table", "queue", "block", "range", "state", "span", "word", "index", "limit",
];
const VERBS: &[&str] = &[
    "scan", "fold", "mix", "hash", "pack", "count", "merge", "probe", "clamp", "shift", "walk",
    "fill", "find", "trim", "sum",
];
const TYPES: &[&str] = &["int", "unsigned", "long", "unsigned long", "short"];

/// A challenge: the file name the job claims and its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `name.c`, as a client would send it.
    pub file: String,
    pub source: String,
}

impl Challenge {
    /// The server argv of this challenge for `compiler` (a toolchain's name).
    pub fn argv(&self, compiler: &str) -> Vec<String> {
        let stem = self
            .file
            .rsplit_once('.')
            .map_or(self.file.as_str(), |(stem, _)| stem);
        let object = format!("{stem}.o");
        vec![
            compiler.to_owned(),
            "-O2".into(),
            "-c".into(),
            self.file.clone(),
            "-o".into(),
            object,
        ]
    }
}

fn name(rng: &mut StdRng) -> String {
    let verb = VERBS.choose(rng).copied().unwrap_or("scan");
    let noun = NOUNS.choose(rng).copied().unwrap_or("buf");
    if rng.gen_bool(0.5) {
        format!("{verb}_{noun}")
    } else {
        format!("{noun}_{verb}{}", rng.gen_range(0..10))
    }
}

/// The challenge for `seed`: same seed, same bytes.
pub fn generate(seed: u64) -> Challenge {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut used = std::collections::HashSet::new();
    let mut fresh = |rng: &mut StdRng| loop {
        let n = name(rng);
        if used.insert(n.clone()) {
            return n;
        }
    };
    let mut src = String::new();
    let record = fresh(&mut rng);
    let fields: Vec<(String, &str)> = (0..rng.gen_range(2..5))
        .map(|_| (fresh(&mut rng), *TYPES.choose(&mut rng).unwrap_or(&"int")))
        .collect();
    src.push_str(&format!("struct {record} {{\n"));
    for (f, t) in &fields {
        src.push_str(&format!("    {t} {f};\n"));
    }
    src.push_str("};\n\n");
    let table = fresh(&mut rng);
    let len = rng.gen_range(4..24);
    let values: Vec<String> = (0..len)
        .map(|_| rng.gen_range(0..100_000u32).to_string())
        .collect();
    src.push_str(&format!(
        "static const unsigned {table}[{len}] = {{ {} }};\n\n",
        values.join(", ")
    ));
    let mut functions = Vec::new();
    for _ in 0..rng.gen_range(2..5) {
        let f = fresh(&mut rng);
        let (a, b) = (fresh(&mut rng), fresh(&mut rng));
        let k1 = rng.gen_range(1..97u32);
        let k2 = rng.gen_range(1..31u32);
        let body = match rng.gen_range(0..4) {
            0 => format!(
                "    unsigned acc = {k1}u;\n    for (unsigned i = 0; i < {len}u; i++)\n        acc = acc * {k2}u + {table}[i] ^ (unsigned){a};\n    return (int)(acc >> {}) + {b};\n",
                rng.gen_range(1..9)
            ),
            1 => format!(
                "    if ({a} > {b})\n        return {a} % {k1} - {b};\n    return ({b} << {}) ^ {a};\n",
                rng.gen_range(1..5)
            ),
            2 => format!(
                "    int n = 0;\n    while ({a} > {k2}) {{\n        {a} /= {};\n        n += {b} & {k1};\n    }}\n    return n;\n",
                rng.gen_range(2..7)
            ),
            _ => format!(
                "    switch ({a} & 3) {{\n    case 0: return {b} + {k1};\n    case 1: return {b} * {k2};\n    case 2: return (int){table}[{b} & {}] - {a};\n    default: return {a} - {b};\n    }}\n",
                len - 1
            ),
        };
        let linkage = if rng.gen_bool(0.5) { "static " } else { "" };
        src.push_str(&format!(
            "{linkage}int {f}(int {a}, int {b})\n{{\n{body}}}\n\n"
        ));
        functions.push(f);
    }
    let entry = fresh(&mut rng);
    let (first_field, _) = &fields[0];
    src.push_str(&format!(
        "int {entry}(struct {record} *p, int n)\n{{\n    int total = 0;\n"
    ));
    for f in &functions {
        src.push_str(&format!("    total += {f}(n, (int)p->{first_field});\n"));
    }
    src.push_str("    return total;\n}\n");
    // Preprocessed input names its file in a line marker, and the object's
    // symbol table takes the name from there (not from the host's temporary
    // file), as with every real job.
    let file = format!("{}.c", fresh(&mut rng));
    Challenge {
        source: format!("# 1 \"{file}\"\n{src}"),
        file,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        assert_eq!(generate(7), generate(7));
        let sources: std::collections::HashSet<String> =
            (0..200).map(|s| generate(s).source).collect();
        assert_eq!(sources.len(), 200);
        let c = generate(1);
        assert!(c.file.ends_with(".c"));
        let argv = c.argv("gcc");
        assert_eq!(argv[0], "gcc");
        assert_eq!(argv[3], c.file);
        assert!(argv[5].ends_with(".o"));
        assert!(!c.source.contains("#include"));
    }
}
