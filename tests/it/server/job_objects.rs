//! Objects from `run_job` are byte-identical to local compiles of the same
//! preprocessed input, and do not depend on the job directory.

use crate::support::job::*;

const C_SOURCE: &str = "#include <stdio.h>\nstatic int twice(int x) { return 2 * x; }\n\
int main(void) { printf(\"%d\\n\", twice(21)); return 0; }\n";

#[tokio::test]
async fn plain_c_matches_local_compile() {
    let root = tempfile::tempdir().unwrap();
    let client = tempfile::tempdir().unwrap();
    let cfg = config(root.path());
    let pre = preprocess("gcc", client.path(), "hello.c", C_SOURCE, &[]);
    let local = local_compile("gcc", client.path(), "hello.i", &pre, &["-O2"]);
    let out = compile("gcc -O2 -c hello.c -o hello.o", &pre, &cfg).await;
    assert_eq!(out.status, 0, "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    assert!(out.object == local, "object differs from the local compile");
    assert_empty(root.path());
}

const CPP_SOURCE: &str = "#include <string>\n#include <vector>\nnamespace { struct Counter { int n = 0; } counter; }\n\
template <typename T> T sum(const std::vector<T>& v) { T s{}; for (auto& x : v) s += x; return s; }\n\
int use() { std::vector<int> v{1, 2, 3}; counter.n += sum(v); return std::string(\"ab\").size() + counter.n; }\n";

/// Compile the same preprocessed input on two job directories (two roots, as
/// two servers would have) and return both outcomes' objects.
async fn on_two_servers(command: &str, pre: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut objects = Vec::new();
    for _ in 0..2 {
        let root = tempfile::tempdir().unwrap();
        let cfg = config(root.path());
        let out = compile(command, pre, &cfg).await;
        assert_eq!(out.status, 0, "{command}: {}", text(&out.stderr));
        assert!(!out.object.is_empty());
        assert_empty(root.path());
        objects.push(out.object);
    }
    let b = objects.pop().unwrap();
    let a = objects.pop().unwrap();
    (a, b)
}

#[tokio::test]
async fn cplusplus_matches_local_compile() {
    let client = tempfile::tempdir().unwrap();
    let pre = preprocess("g++", client.path(), "lib.cc", CPP_SOURCE, &[]);
    let local = local_compile("g++", client.path(), "lib.ii", &pre, &["-O2"]);
    let (a, b) = on_two_servers("g++ -O2 -c lib.cc -o lib.o", &pre).await;
    assert!(a == local, "C++ object differs from the local compile");
    assert!(a == b, "C++ objects differ between job directories");
}

#[tokio::test]
async fn gcc_debug_info_matches_local_compile() {
    let client = tempfile::tempdir().unwrap();
    // `-g` at preprocessing time writes the client's cwd into the .i.
    let pre = preprocess("gcc", client.path(), "hello.c", C_SOURCE, &["-g"]);
    let local = local_compile("gcc", client.path(), "hello.i", &pre, &["-g", "-O1"]);
    let (a, b) = on_two_servers("gcc -g -O1 -c hello.c -o hello.o", &pre).await;
    assert!(a == local, "-g object differs from the local compile");
    assert!(a == b, "-g objects differ between job directories");

    let pre = preprocess("g++", client.path(), "lib.cc", CPP_SOURCE, &["-g"]);
    let local = local_compile("g++", client.path(), "lib.ii", &pre, &["-g", "-O2"]);
    let (a, b) = on_two_servers("g++ -g -O2 -c lib.cc -o lib.o", &pre).await;
    assert!(a == local, "C++ -g object differs from the local compile");
    assert!(a == b, "C++ -g objects differ between job directories");
}

#[tokio::test]
async fn gcc_debug_info_without_working_directory_does_not_name_the_job_dir() {
    let client = tempfile::tempdir().unwrap();
    // No cwd line in the .i: gcc would record its own cwd, the job directory.
    let pre = preprocess("gcc", client.path(), "hello.c", C_SOURCE, &[]);
    let (a, b) = on_two_servers("gcc -g -frecord-gcc-switches -c hello.c -o hello.o", &pre).await;
    assert!(a == b, "-g objects differ between job directories");
    let needle = b"dportage-job-";
    assert!(
        !a.windows(needle.len()).any(|w| w == needle),
        "the object names the job directory"
    );
}

#[tokio::test]
async fn clang_objects_do_not_depend_on_the_job_dir() {
    let client = tempfile::tempdir().unwrap();
    let pre = preprocess("clang", client.path(), "hello.c", C_SOURCE, &[]);
    let local = local_compile("clang", client.path(), "hello.i", &pre, &["-O2"]);
    let (a, b) = on_two_servers("clang -O2 -c hello.c -o hello.o", &pre).await;
    assert!(a == local, "clang object differs from the local compile");
    assert!(a == b);

    // clang ignores the cwd line: without a compilation dir from the client
    // the server pins one, so two servers still agree.
    let pre = preprocess("clang", client.path(), "hello.c", C_SOURCE, &["-g"]);
    let (a, b) = on_two_servers("clang -g -grecord-command-line -c hello.c -o hello.o", &pre).await;
    assert!(a == b, "clang -g objects differ between job directories");
    let needle = b"dportage-job-";
    assert!(!a.windows(needle.len()).any(|w| w == needle));

    // With the client's own compilation dir, identical to the local compile.
    let cwd = client.path().to_str().unwrap();
    let flag = format!("-fdebug-compilation-dir={cwd}");
    let local = local_compile(
        "clang++",
        client.path(),
        "lib.ii",
        &preprocess("clang++", client.path(), "lib.cc", CPP_SOURCE, &["-g"]),
        &["-g", "-O1"],
    );
    let pre = preprocess("clang++", client.path(), "lib.cc", CPP_SOURCE, &["-g"]);
    let (a, b) = on_two_servers(&format!("clang++ -g -O1 {flag} -c lib.cc -o lib.o"), &pre).await;
    assert!(a == b);
    assert!(
        a == local,
        "clang++ -g with the client's compilation dir differs from local"
    );
}

#[tokio::test]
async fn diagnostics_are_the_same_on_every_server() {
    let client = tempfile::tempdir().unwrap();
    let source = "int f(int x) { int unused; return x / 0; }\n\
                  void g(void) { __asm__(\".warning \\\"from the assembler\\\"\"); }\n";
    let pre = preprocess("gcc", client.path(), "warn.c", source, &[]);
    let mut seen = Vec::new();
    for _ in 0..2 {
        let root = tempfile::tempdir().unwrap();
        let cfg = config(root.path());
        let out = compile("gcc -Wall -c warn.c -o warn.o", &pre, &cfg).await;
        assert_eq!(out.status, 0, "{}", text(&out.stderr));
        seen.push(text(&out.stderr));
    }
    assert_eq!(seen[0], seen[1]);
    let stderr = &seen[0];
    assert!(stderr.contains("warn.c:1:"), "{stderr}");
    assert!(stderr.contains("division by zero"), "{stderr}");
    // ASCII quotes (LC_ALL=C) and no temporary file names.
    assert!(stderr.contains("'unused'"), "{stderr}");
    assert!(
        stderr.contains("warn.c:2: Warning: from the assembler"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("/tmp/") && !stderr.contains("dportage-job-"),
        "{stderr}"
    );

    // A failing compile: status says so, no object, errors come back.
    let root = tempfile::tempdir().unwrap();
    let cfg = config(root.path());
    let pre = preprocess(
        "gcc",
        client.path(),
        "bad.c",
        "int f(void) { return nope; }\n",
        &[],
    );
    let out = compile("gcc -c bad.c -o bad.o", &pre, &cfg).await;
    assert_eq!(out.status >> 8, 1, "{}", text(&out.stderr));
    assert!(out.object.is_empty());
    assert!(
        text(&out.stderr).contains("bad.c:1:22: error: 'nope' undeclared"),
        "{}",
        text(&out.stderr)
    );
    assert_empty(root.path());
}

#[tokio::test]
async fn assembly_output_matches_local() {
    let client = tempfile::tempdir().unwrap();
    let pre = preprocess("gcc", client.path(), "hello.c", C_SOURCE, &[]);
    std::fs::write(client.path().join("hello.i"), &pre).unwrap();
    let local = std::process::Command::new("gcc")
        .args(["-O2", "-S", "hello.i", "-o", "-"])
        .current_dir(client.path())
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert!(local.status.success());
    let root = tempfile::tempdir().unwrap();
    let out = compile("gcc -O2 -S hello.c -o hello.s", &pre, &config(root.path())).await;
    assert_eq!(out.status, 0, "{}", text(&out.stderr));
    assert_eq!(text(&out.object), text(&local.stdout));
    assert_empty(root.path());
}
