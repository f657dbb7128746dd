//! The code base under build: Lua 5.4's liblua, from the `lua-src` crate that
//! cargo fetches as a dev-dependency (so a fresh machine has it after the first
//! `cargo bench`). The crate ships the library sources without Lua's Makefile,
//! so we write one with the flags of Lua's own `make linux`.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Lua's release inside the lua-src crate.
const LUA_DIR: &str = "lua-5.4.9";

/// Lua 5.4's `src/Makefile` for target `linux`: `CC= gcc -std=gnu99`,
/// `CFLAGS= -O2 -Wall -Wextra -DLUA_COMPAT_5_3 $(SYSCFLAGS)` with
/// `SYSCFLAGS= -DLUA_USE_LINUX`. `-std=gnu99` moves into CFLAGS because the
/// benchmark replaces CC with "<client> gcc".
pub const CFLAGS: &str = "-std=gnu99 -O2 -Wall -Wextra -DLUA_COMPAT_5_3 -DLUA_USE_LINUX";

pub struct LuaSource {
    pub dir: PathBuf,
    pub c_files: Vec<String>,
}

impl LuaSource {
    /// `$LUA_SRC_DIR` if set (a directory of Lua's .c/.h files), else the
    /// lua-src package that `cargo metadata` resolves for this workspace.
    pub fn locate(manifest_dir: &Path) -> Result<LuaSource, String> {
        let dir = match std::env::var_os("LUA_SRC_DIR") {
            Some(d) => PathBuf::from(d),
            None => locate_with_cargo(manifest_dir)?,
        };
        let mut c_files: Vec<String> = fs::read_dir(&dir)
            .map_err(|e| format!("cannot read Lua sources in {}: {e}", dir.display()))?
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| n.ends_with(".c"))
            // Stand-alone interpreter and compiler, if a full release is given:
            // they have main() and do not belong in liblua.
            .filter(|n| n != "lua.c" && n != "luac.c")
            .collect();
        c_files.sort();
        if !c_files.iter().any(|f| f == "lapi.c") {
            return Err(format!(
                "{} does not look like Lua's sources (no lapi.c); set LUA_SRC_DIR to a \
                 directory holding Lua 5.4's src/*.c",
                dir.display()
            ));
        }
        Ok(LuaSource { dir, c_files })
    }

    /// A fresh build tree at `dest` (removed first): sources plus a Makefile
    /// building every object and liblua.a.
    pub fn prepare(&self, dest: &Path) -> io::Result<()> {
        if dest.exists() {
            fs::remove_dir_all(dest)?;
        }
        fs::create_dir_all(dest)?;
        for entry in fs::read_dir(&self.dir)?.flatten() {
            let name = entry.file_name();
            let is_source = name
                .to_str()
                .is_some_and(|n| n.ends_with(".c") || n.ends_with(".h"));
            if is_source {
                fs::copy(entry.path(), dest.join(&name))?;
            }
        }
        fs::write(dest.join("Makefile"), self.makefile())
    }

    fn makefile(&self) -> String {
        let objects: Vec<String> = self
            .c_files
            .iter()
            .map(|c| c.trim_end_matches(".c").to_string() + ".o")
            .collect();
        format!(
            "# Written by benches/macro: liblua of {LUA_DIR} with the flags of Lua's `make linux`.\n\
             CC = gcc\n\
             CFLAGS = {CFLAGS}\n\
             OBJS = {objs}\n\
             \n\
             liblua.a: $(OBJS)\n\
             \tar rcs $@ $(OBJS)\n\
             \n\
             %.o: %.c\n\
             \t$(CC) $(CFLAGS) -c -o $@ $<\n",
            objs = objects.join(" ")
        )
    }

    pub fn object_count(&self) -> usize {
        self.c_files.len()
    }
}

fn locate_with_cargo(manifest_dir: &Path) -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(manifest_dir.join("Cargo.toml"))
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run `cargo metadata` to find lua-src: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "`cargo metadata` failed ({}); set LUA_SRC_DIR to Lua 5.4's src directory",
            output.status
        ));
    }
    let meta: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("`cargo metadata` printed something that is not JSON: {e}"))?;
    let manifest = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"] == "lua-src")
        .find_map(|p| p["manifest_path"].as_str())
        .ok_or("lua-src is not among this workspace's packages: is `lua-src` still a dev-dependency in Cargo.toml?")?;
    let dir = Path::new(manifest)
        .parent()
        .ok_or("lua-src's manifest path has no parent directory")?
        .join(LUA_DIR);
    if !dir.is_dir() {
        return Err(format!(
            "{} is missing: the lua-src version in Cargo.lock does not ship {LUA_DIR}",
            dir.display()
        ));
    }
    Ok(dir)
}

/// Every object file in a build tree, by name.
pub fn objects(tree: &Path) -> io::Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(tree)?.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if name.ends_with(".o") {
            out.insert(name, fs::read(entry.path())?);
        }
    }
    Ok(out)
}

/// Compare a build's objects with the reference; None when identical, else
/// what differs.
pub fn compare_objects(
    reference: &BTreeMap<String, Vec<u8>>,
    built: &BTreeMap<String, Vec<u8>>,
) -> Option<String> {
    let mut problems = Vec::new();
    for (name, bytes) in reference {
        match built.get(name) {
            None => problems.push(format!("{name} missing")),
            Some(b) if b != bytes => problems.push(format!("{name} differs")),
            Some(_) => {}
        }
    }
    for name in built.keys().filter(|n| !reference.contains_key(*n)) {
        problems.push(format!("{name} unexpected"));
    }
    match problems.len() {
        0 => None,
        n if n <= 3 => Some(problems.join(", ")),
        n => Some(format!("{} and {} more", problems[..3].join(", "), n - 3)),
    }
}
