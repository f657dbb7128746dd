//! Our client against the real distccd 3.4: objects identical to local
//! compiles, jobs that really go remote (counted in distccd's log), masquerading,
//! dependency files, compile errors, dead and refusing hosts, `make -j4` and ccache.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::client::*;
use crate::support::*;

const C_SOURCE: &str = "#include \"answer.h\"\nint answer(void) { return ANSWER; }\nint twice(int x) { return 2 * x + ANSWER; }\n";
const C_HEADER: &str = "#define ANSWER 42\n";
const CPP_SOURCE: &str = "#include <vector>\n#include <numeric>\nint sum(const std::vector<int>& v) { return std::accumulate(v.begin(), v.end(), 0); }\n";

fn write_sources(dir: &Path) {
    write_file(dir, "x.c", C_SOURCE);
    write_file(dir, "answer.h", C_HEADER);
    write_file(dir, "y.cpp", CPP_SOURCE);
}

/// Compile through our `distcc`, check distccd did the work, and compare with a
/// local compile — or, with `-g`, with the real distcc client's remote compile:
/// debug line tables record columns, and macro expansion in the preprocessed
/// source shifts them for every distcc (3.4 included), so only the remote
/// results can be identical there.
fn check_identical(
    server: &Distccd,
    env: &ClientEnv,
    remote_jobs: &mut usize,
    compiler: &str,
    flags: &[&str],
    input: &str,
) {
    let work = env.work();
    let mut ours: Vec<&str> = vec![compiler];
    ours.extend_from_slice(flags);
    ours.extend_from_slice(&["-c", input, "-o", "ours.o"]);
    let out = env.distcc(&ours);
    assert_success(&out, &format!("distcc {ours:?}"));
    assert!(
        out.stderr.is_empty(),
        "unexpected messages: {}",
        stderr_text(&out)
    );
    *remote_jobs += 1;
    server.wait_for_exact_compile_ok(*remote_jobs);

    if flags.contains(&"-g") {
        let mut real = ours.clone();
        *real.last_mut().unwrap() = "real.o";
        let out = env.command_in(DISTCC, &real, &work).output().unwrap();
        assert_success(&out, &format!("real distcc {real:?}"));
        *remote_jobs += 1;
        server.wait_for_exact_compile_ok(*remote_jobs);
        assert_same_file(&work.join("ours.o"), &work.join("real.o"));
    } else {
        let mut reference: Vec<&str> = flags.to_vec();
        reference.extend_from_slice(&["-c", input, "-o", "local.o"]);
        run_ok(compiler, &reference, &work);
        assert_same_file(&work.join("ours.o"), &work.join("local.o"));
    }
}

#[test]
fn objects_identical_to_local_protocol_1_and_lzo() {
    if !require_distcc("objects_identical_to_local_protocol_1_and_lzo") {
        return;
    }
    let server = Distccd::start();
    let mut remote_jobs = 0;
    for suffix in ["", ",lzo"] {
        let env = ClientEnv::new(&format!("{}{suffix}", server.hostspec()));
        write_sources(&env.work());
        check_identical(&server, &env, &mut remote_jobs, "gcc", &[], "x.c");
        check_identical(
            &server,
            &env,
            &mut remote_jobs,
            "gcc",
            &["-O2", "-g", "-DEXTRA=1", "-I."],
            "x.c",
        );
        check_identical(&server, &env, &mut remote_jobs, "g++", &["-O2"], "y.cpp");
        check_identical(&server, &env, &mut remote_jobs, "cc", &["-Wall"], "x.c");
        assert!(
            env.leftover_temp_files().is_empty(),
            "temp files left: {:?}",
            env.leftover_temp_files()
        );
        assert!(
            !env.backoff_file(server.port).exists(),
            "a successful job must not back the host off"
        );
    }
}

#[test]
fn assembly_and_odd_file_names_go_remote() {
    if !require_distcc("assembly_and_odd_file_names_go_remote") {
        return;
    }
    let server = Distccd::start();
    let env = ClientEnv::new(&server.hostspec());
    let work = env.work();
    let mut remote_jobs = 0;
    for name in ["comma,name.c", "with space.c", "ünïcødé.c"] {
        write_file(&work, name, "int f(void) { return 7; }\n");
        check_identical(&server, &env, &mut remote_jobs, "gcc", &[], name);
    }
    // -S: the reply carries assembly text, and -o is added when missing.
    write_file(&work, "s.c", "int g(int x) { return x * 3; }\n");
    let out = env.distcc(&["gcc", "-O2", "-S", "s.c"]);
    assert_success(&out, "distcc gcc -S s.c");
    remote_jobs += 1;
    server.wait_for_exact_compile_ok(remote_jobs);
    let ours = fs::read(work.join("s.s")).unwrap();
    run_ok("gcc", &["-O2", "-S", "s.c", "-o", "local.s"], &work);
    assert_eq!(ours, fs::read(work.join("local.s")).unwrap());
}

#[test]
fn masquerade_directory_distributes_without_recursion() {
    if !require_distcc("masquerade_directory_distributes_without_recursion") {
        return;
    }
    let server = Distccd::start();
    let env = ClientEnv::new(&server.hostspec());
    let work = env.work();
    write_sources(&work);
    let mut remote_jobs = 0;
    for (compiler, input) in [
        ("gcc", "x.c"),
        ("cc", "x.c"),
        ("g++", "y.cpp"),
        ("c++", "y.cpp"),
    ] {
        let out = env
            .command_in(compiler, &["-O2", "-c", input, "-o", "masq.o"], &work)
            .env("PATH", env.masquerade_path())
            .output()
            .unwrap();
        assert_success(&out, &format!("masqueraded {compiler}"));
        assert!(out.stderr.is_empty(), "{compiler}: {}", stderr_text(&out));
        remote_jobs += 1;
        server.wait_for_exact_compile_ok(remote_jobs);
        run_ok(compiler, &["-O2", "-c", input, "-o", "local.o"], &work);
        assert_same_file(&work.join("masq.o"), &work.join("local.o"));
    }
    // Linking through the masquerade runs locally (not distributable) and works.
    write_file(
        &work,
        "main.c",
        "int answer(void);\nint main(void) { return answer() == 42 ? 0 : 1; }\n",
    );
    let out = env
        .command_in("gcc", &["-o", "prog", "main.c", "x.c"], &work)
        .env("PATH", env.masquerade_path())
        .env("DISTCC_VERBOSE", "1")
        .output()
        .unwrap();
    assert_success(&out, "masqueraded link");
    assert!(
        stderr_text(&out).contains("compiling locally"),
        "{}",
        stderr_text(&out)
    );
    assert!(std::process::Command::new(work.join("prog"))
        .status()
        .unwrap()
        .success());
    server.wait_for_exact_compile_ok(remote_jobs);
}

#[test]
fn recursion_is_refused_with_exit_111() {
    let env = ClientEnv::new("127.0.0.1:1");
    write_sources(&env.work());
    let out = env
        .command_in(
            env.distcc_link(),
            &["gcc", "-c", "x.c", "-o", "x.o"],
            &env.work(),
        )
        .env("_DISTCC_SAFEGUARD", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(111), "{}", stderr_text(&out));
    assert!(
        stderr_text(&out).contains("recursive"),
        "{}",
        stderr_text(&out)
    );
}

#[test]
fn dependency_files_match_a_local_compile() {
    if !require_distcc("dependency_files_match_a_local_compile") {
        return;
    }
    let server = Distccd::start();
    let env = ClientEnv::new(&server.hostspec());
    let work = env.work();
    let mut remote_jobs = 0;
    let cases: [(&[&str], &str); 4] = [
        (&["-MD", "-c", "x.c", "-o", "sub/x.o"], "sub/x.d"),
        (&["-MMD", "-c", "x.c", "-o", "sub/y.o"], "sub/y.d"),
        (
            &["-MD", "-MF", "deps/x.dep", "-c", "x.c", "-o", "sub/z.o"],
            "deps/x.dep",
        ),
        (
            &[
                "-MMD",
                "-MT",
                "custom-target",
                "-MP",
                "-c",
                "x.c",
                "-o",
                "sub/w.o",
            ],
            "sub/w.d",
        ),
    ];
    for (flags, dep_file) in cases {
        // Our build and the reference build each get a tree with the same relative layout.
        let ours_dir = work.join("ours");
        let local_dir = work.join("local");
        for dir in [&ours_dir, &local_dir] {
            let _ = fs::remove_dir_all(dir);
            write_sources(dir);
            fs::create_dir_all(dir.join("sub")).unwrap();
            fs::create_dir_all(dir.join("deps")).unwrap();
        }
        let mut args = vec!["gcc"];
        args.extend_from_slice(flags);
        let out = env
            .command_in(env.distcc_link(), &args, &ours_dir)
            .output()
            .unwrap();
        assert_success(&out, &format!("distcc {args:?}"));
        remote_jobs += 1;
        server.wait_for_exact_compile_ok(remote_jobs);
        run_ok("gcc", flags, &local_dir);

        let ours = fs::read_to_string(ours_dir.join(dep_file)).unwrap();
        let local = fs::read_to_string(local_dir.join(dep_file)).unwrap();
        assert_eq!(ours, local, "{flags:?}");
        assert!(ours.contains("answer.h"), "{ours}");
        // No stray x.d in the current directory (distcc 3.4's quirk).
        assert!(
            !ours_dir.join("x.d").exists(),
            "{flags:?} left x.d in the cwd"
        );
        let output = flags[flags.iter().position(|f| *f == "-o").unwrap() + 1];
        assert_same_file(&ours_dir.join(output), &local_dir.join(output));
    }
    assert!(env.leftover_temp_files().is_empty());
}

#[test]
fn compile_error_shows_diagnostics_once_and_exits_1() {
    if !require_distcc("compile_error_shows_diagnostics_once_and_exits_1") {
        return;
    }
    let server = Distccd::start();
    let env = ClientEnv::new(&server.hostspec());
    let work = env.work();
    write_file(&work, "bad.c", "int bad(void) { return 42 }\n");
    let out = env.distcc(&["gcc", "-c", "bad.c", "-o", "bad.o"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_text(&out));
    let stderr = stderr_text(&out);
    assert_eq!(stderr.matches("error: expected").count(), 1, "{stderr}");
    // The local retry's diagnostics include the source line, which a remote
    // compile of the .i cannot show.
    assert!(stderr.contains("return 42 }"), "{stderr}");
    assert!(!work.join("bad.o").exists());
    // The server was right, so it is not backed off.
    assert!(!env.backoff_file(server.port).exists());
    assert!(
        server.log_text().contains("COMPILE_ERROR"),
        "{}",
        server.log_text()
    );

    // DISTCC_SKIP_LOCAL_RETRY: the server's diagnostics are shown as they are.
    let mut env = env;
    env.set("DISTCC_SKIP_LOCAL_RETRY", "1");
    let out = env.distcc(&["gcc", "-c", "bad.c", "-o", "bad.o"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = stderr_text(&out);
    assert_eq!(stderr.matches("error: expected").count(), 1, "{stderr}");
    assert!(
        !stderr.contains("return 42 }"),
        "this should be the server's copy: {stderr}"
    );
    assert!(env.leftover_temp_files().is_empty());
}

/// Our client compiles x.c although the remote side fails: it says so, and
/// the object equals a local compile.
fn assert_falls_back_to_local(env: &ClientEnv, what: &str) {
    let work = env.work();
    write_sources(&work);
    let out = env.distcc(&["gcc", "-c", "x.c", "-o", "ours.o"]);
    assert_success(&out, what);
    assert!(
        stderr_text(&out).contains("failed to distribute"),
        "{}",
        stderr_text(&out)
    );
    run_ok("gcc", &["-c", "x.c", "-o", "local.o"], &work);
    assert_same_file(&work.join("ours.o"), &work.join("local.o"));
}

#[test]
fn dead_host_falls_back_to_local_and_is_backed_off() {
    let dead_port = DeadPort::new();
    let dead = dead_port.port;
    let env = ClientEnv::new(&format!("127.0.0.1:{dead}"));
    let work = env.work();
    assert_falls_back_to_local(&env, "distcc to a dead host");
    assert!(env.backoff_file(dead).exists());

    // Within the backoff period the host is not tried again; as distcc 3.4
    // does, the client says only that it compiled here.
    let out = env.distcc(&["gcc", "-c", "x.c", "-o", "again.o"]);
    assert_success(&out, "distcc with the host backed off");
    let stderr = stderr_text(&out);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.ends_with(
            "] (dcc_build_somewhere) Warning: failed to distribute, running locally instead\n"
        ),
        "{stderr}"
    );

    // DISTCC_FALLBACK=0 and every host backed off: exit 116, nothing compiled.
    let mut env = env;
    env.set("DISTCC_FALLBACK", "0");
    let out = env.distcc(&["gcc", "-c", "x.c", "-o", "never.o"]);
    assert_eq!(out.status.code(), Some(116), "{}", stderr_text(&out));
    assert!(!work.join("never.o").exists());
    assert!(env.leftover_temp_files().is_empty());
}

#[test]
fn dead_host_without_backoff_does_not_loop() {
    // distcc 3.4 retries a dead host ~1000 times here and aborts; we give up and compile locally.
    let dead_port = DeadPort::new();
    let dead = dead_port.port;
    let mut env = ClientEnv::new(&format!("127.0.0.1:{dead}"));
    env.set("DISTCC_BACKOFF_PERIOD", "0");
    write_sources(&env.work());
    let started = Instant::now();
    let out = env.distcc(&["gcc", "-c", "x.c", "-o", "ours.o"]);
    assert_success(&out, "distcc to a dead host without backoff");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(
        stderr_text(&out).matches("failed to distribute").count(),
        1,
        "{}",
        stderr_text(&out)
    );
    assert!(!env.backoff_file(dead).exists());

    env.set("DISTCC_FALLBACK", "0");
    let out = env.distcc(&["gcc", "-c", "x.c", "-o", "never.o"]);
    assert_eq!(
        out.status.code(),
        Some(103),
        "connect failure code: {}",
        stderr_text(&out)
    );
    assert!(!env.work().join("never.o").exists());
}

#[test]
fn failed_host_is_skipped_for_the_next_one() {
    if !require_distcc("failed_host_is_skipped_for_the_next_one") {
        return;
    }
    let server = Distccd::start();
    let dead_port = DeadPort::new();
    let dead = dead_port.port;
    let env = ClientEnv::new(&format!("127.0.0.1:{dead} {}", server.hostspec()));
    write_sources(&env.work());
    let out = env.distcc(&["gcc", "-c", "x.c", "-o", "ours.o"]);
    assert_success(&out, "distcc with a dead first host");
    server.wait_for_exact_compile_ok(1);
    assert!(env.backoff_file(dead).exists());
    assert!(
        !stderr_text(&out).contains("failed to distribute"),
        "{}",
        stderr_text(&out)
    );
    run_ok("gcc", &["-c", "x.c", "-o", "local.o"], &env.work());
    assert_same_file(&env.work().join("ours.o"), &env.work().join("local.o"));
}

#[test]
fn refusing_hosts_fall_back_to_local() {
    if !require_distcc("refusing_hosts_fall_back_to_local") {
        return;
    }
    // A server whose command list is empty refuses every compiler.
    let cmdlist_dir = tempfile::tempdir().unwrap();
    let cmdlist = cmdlist_dir.path().join("cmdlist");
    fs::write(&cmdlist, "").unwrap();
    // distccd reads the list as the unprivileged `distccd` user when started as root.
    fs::set_permissions(cmdlist_dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&cmdlist, fs::Permissions::from_mode(0o644)).unwrap();
    let refusing = Distccd::start_with_env(&[("DISTCC_CMDLIST", cmdlist.to_str().unwrap())]);
    let env = ClientEnv::new(&refusing.hostspec());
    assert_falls_back_to_local(&env, "distcc to a refusing server");
    assert!(env.backoff_file(refusing.port).exists());
    assert_eq!(refusing.compile_ok_count(), 0);

    // A normal server refuses a compiler given by a path outside /usr/bin.
    let server = Distccd::start();
    let env = ClientEnv::new(&server.hostspec());
    let work = env.work();
    write_sources(&work);
    let gcc_dir = env.root.path().join("elsewhere");
    fs::create_dir(&gcc_dir).unwrap();
    std::os::unix::fs::symlink("/usr/bin/gcc", gcc_dir.join("gcc")).unwrap();
    let gcc = gcc_dir.join("gcc");
    let out = env.distcc(&[gcc.to_str().unwrap(), "-c", "x.c", "-o", "ours.o"]);
    assert_success(&out, "distcc with an absolute compiler path");
    assert!(
        stderr_text(&out).contains("failed to distribute"),
        "{}",
        stderr_text(&out)
    );
    assert_same_file(&work.join("ours.o"), &{
        run_ok("gcc", &["-c", "x.c", "-o", "local.o"], &work);
        work.join("local.o")
    });
    assert_eq!(server.compile_ok_count(), 0);
    assert!(env.leftover_temp_files().is_empty());
}

#[test]
fn local_only_commands_say_why_under_verbose() {
    let mut env = ClientEnv::new("127.0.0.1:1");
    env.set("DISTCC_VERBOSE", "1");
    write_sources(&env.work());
    let out = env.distcc(&["gcc", "-march=native", "-c", "x.c", "-o", "native.o"]);
    assert_success(&out, "distcc -march=native");
    let stderr = stderr_text(&out);
    assert!(
        stderr.contains("compiling locally") && stderr.contains("-march=native"),
        "{stderr}"
    );
    assert!(env.work().join("native.o").exists());
    // Nothing was tried, so nothing was backed off.
    assert!(!env.backoff_file(1).exists());
}

#[test]
fn bad_io_timeout_is_rejected() {
    let mut env = ClientEnv::new("127.0.0.1:1");
    env.set("DISTCC_IO_TIMEOUT", "0");
    write_sources(&env.work());
    let out = env.distcc(&["gcc", "-c", "x.c", "-o", "x.o"]);
    assert_eq!(out.status.code(), Some(101), "{}", stderr_text(&out));
    assert!(stderr_text(&out).contains("DISTCC_IO_TIMEOUT"));
}

#[test]
fn save_temps_keeps_the_preprocessed_file() {
    if !require_distcc("save_temps_keeps_the_preprocessed_file") {
        return;
    }
    let server = Distccd::start();
    let mut env = ClientEnv::new(&server.hostspec());
    env.set("DISTCC_SAVE_TEMPS", "1");
    write_sources(&env.work());
    let out = env.distcc(&["gcc", "-c", "x.c", "-o", "x.o"]);
    assert_success(&out, "distcc with DISTCC_SAVE_TEMPS=1");
    server.wait_for_exact_compile_ok(1);
    let kept = env.leftover_temp_files();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].ends_with(".i"), "{kept:?}");
    let text = fs::read_to_string(env.tmpdir().join(&kept[0])).unwrap();
    assert!(text.contains("return 42;"), "{text}");
}

const PROJECT_FILES: usize = 10;

/// A small C project: PROJECT_FILES sources sharing headers, built into a program.
fn write_project(dir: &Path) {
    write_file(dir, "include/common.h", "#ifndef COMMON_H\n#define COMMON_H\n#include <stddef.h>\nint f_sum(void);\n#define SCALE 3\n#endif\n");
    write_file(
        dir,
        "include/table.h",
        "static const int table[] = {1, 2, 3, 5, 8, 13};\n",
    );
    let mut calls = String::new();
    for i in 0..PROJECT_FILES {
        write_file(
            dir,
            &format!("src/f{i}.c"),
            &format!(
                "#include \"common.h\"\n#include \"table.h\"\nint f{i}(int x) {{\n  int acc = 0;\n  for (size_t k = 0; k < sizeof table / sizeof table[0]; k++) acc += table[k] * (x + {i});\n  return acc * SCALE;\n}}\n"
            ),
        );
        calls.push_str(&format!("int f{i}(int);\n"));
    }
    let mut main = calls.clone();
    main.push_str("#include <stdio.h>\nint main(void) {\n  long total = 0;\n");
    for i in 0..PROJECT_FILES {
        main.push_str(&format!("  total += f{i}({i});\n"));
    }
    main.push_str("  printf(\"%ld\\n\", total);\n  return 0;\n}\n");
    write_file(dir, "main/main.c", &main);
    let objs: Vec<String> = (0..PROJECT_FILES).map(|i| format!("obj/f{i}.o")).collect();
    write_file(
        dir,
        "Makefile",
        &format!(
            "OBJS = {objs} obj/main.o\n\
             all: prog\n\
             prog: $(OBJS)\n\t$(CC) -o $@ $(OBJS)\n\
             obj/%.o: src/%.c\n\t@mkdir -p obj\n\t$(CC) -O2 -Iinclude -MMD -c $< -o $@\n\
             obj/main.o: main/main.c\n\t@mkdir -p obj\n\t$(CC) -O2 -Iinclude -MMD -c $< -o $@\n\
             clean:\n\trm -rf obj prog\n\
             -include $(OBJS:.o=.d)\n",
            objs = objs.join(" ")
        ),
    );
}

fn compare_project(ours: &Path, local: &Path) {
    for i in 0..PROJECT_FILES {
        for ext in ["o", "d"] {
            let name = format!("obj/f{i}.{ext}");
            assert_same_file(&ours.join(&name), &local.join(&name));
        }
    }
    assert_same_file(&ours.join("obj/main.o"), &local.join("obj/main.o"));
    let run = |dir: &Path| {
        std::process::Command::new(dir.join("prog"))
            .output()
            .unwrap()
            .stdout
    };
    assert_eq!(run(ours), run(local));
}

#[test]
fn make_j4_project_builds_remotely_and_matches_local() {
    if !require_distcc("make_j4_project_builds_remotely_and_matches_local") {
        return;
    }
    let server = Distccd::start();
    let env = ClientEnv::new(&format!("{}/4", server.hostspec()));
    let ours = env.work().join("ours");
    let local = env.work().join("local");
    write_project(&ours);
    write_project(&local);

    let out = env
        .command_in("make", &["-j4", "CC=gcc"], &ours)
        .env("PATH", env.masquerade_path())
        .output()
        .unwrap();
    assert_success(&out, "make -j4 through the masquerade directory");
    // Every compile (10 sources + main.c) ran on distccd; the link ran here.
    server.wait_for_exact_compile_ok(PROJECT_FILES + 1);
    run_ok("make", &["-j4", "CC=gcc"], &local);
    compare_project(&ours, &local);
    assert!(
        env.leftover_temp_files().is_empty(),
        "{:?}",
        env.leftover_temp_files()
    );
}

#[test]
fn make_j4_under_ccache_builds_remotely_and_matches_local() {
    if !require_distcc("make_j4_under_ccache_builds_remotely_and_matches_local") {
        return;
    }
    if !require_peer(
        "make_j4_under_ccache_builds_remotely_and_matches_local",
        &peer::CCACHE,
    ) {
        return;
    }
    let server = Distccd::start();
    let mut env = ClientEnv::new(&format!("{}/4", server.hostspec()));
    let ccache_dir = env.root.path().join("ccache");
    let distcc = env.distcc_link();
    env.set("CCACHE_PREFIX", distcc.to_str().unwrap());
    env.set("CCACHE_DIR", ccache_dir.to_str().unwrap());
    let ours = env.work().join("ours");
    let local = env.work().join("local");
    write_project(&ours);
    write_project(&local);

    let out = env
        .command_in("make", &["-j4", "CC=ccache gcc"], &ours)
        .output()
        .unwrap();
    assert_success(
        &out,
        "make -j4 with CC='ccache gcc' and CCACHE_PREFIX=distcc",
    );
    server.wait_for_exact_compile_ok(PROJECT_FILES + 1);
    run_ok("make", &["-j4", "CC=gcc"], &local);
    compare_project(&ours, &local);

    // A rebuild is served by ccache: nothing new reaches distccd.
    let out = env.command_in("make", &["clean"], &ours).output().unwrap();
    assert_success(&out, "make clean");
    let out = env
        .command_in("make", &["-j4", "CC=ccache gcc"], &ours)
        .output()
        .unwrap();
    assert_success(&out, "ccache rebuild");
    compare_project(&ours, &local);
    assert_eq!(server.compile_ok_count(), PROJECT_FILES + 1);
    assert!(
        env.leftover_temp_files().is_empty(),
        "{:?}",
        env.leftover_temp_files()
    );
}

/// A `,verify` host (the network's) only votes in verified dispatch: a
/// plain client (ours without `DPORTAGE_REDUNDANCY`, like distcc 3.4)
/// never sends it a job; it compiles locally, or fails without fallback.
#[test]
fn verify_hosts_are_never_used_without_verified_dispatch() {
    let server = crate::support::serve::DportageServer::start(&["--allow", "127.0.0.0/8"]);
    let env = ClientEnv::new(&format!("{},lzo,verify", server.addr));
    env.write("v.c", "int v(int x) { return x - 1; }\n");
    env.reference(&["gcc", "-O2", "-c", "v.c", "-o", "local.o"]);
    let out = env.distcc(&["gcc", "-O2", "-c", "v.c", "-o", "v.o"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(env.read("v.o"), env.read("local.o"));
    let out = env
        .command(
            env.distcc_link(),
            &["gcc", "-O2", "-c", "v.c", "-o", "none.o"],
        )
        .env("DISTCC_FALLBACK", "0")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(116),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!env.work().join("none.o").exists());
    // A host of the user's own beside it is still used.
    let own = crate::support::serve::DportageServer::start(&["--allow", "127.0.0.0/8"]);
    let env = ClientEnv::new(&format!("{},lzo,verify {},lzo", server.addr, own.addr));
    env.write("v.c", "int v(int x) { return x - 1; }\n");
    let out = env.distcc(&["gcc", "-O2", "-c", "v.c", "-o", "v.o"]);
    assert!(out.status.success());
    own.wait_counter("dcc_compile_ok", 1);
    assert_eq!(
        server.counter("dcc_compile_ok"),
        0,
        "a ,verify host compiled"
    );
}
