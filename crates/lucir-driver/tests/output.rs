//! Output that cannot be written: standard output on a full device (`> /dev/full`) is an error
//! naming standard output and exit code 1, never a panic; a reader that stops reading (`| head`)
//! ends the program quietly through SIGPIPE.
#![cfg(target_os = "linux")]

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output, Stdio};

use common::{driver, temp_dir, write_mnist_like};

/// The driver with `args`, its standard output on `/dev/full`.
fn driver_into_full_device(args: &[&str]) -> Output {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full opens for writing");
    Command::new(env!("CARGO_BIN_EXE_lucir-driver"))
        .args(args)
        .env("RAYON_NUM_THREADS", "2")
        .stdout(Stdio::from(full))
        .output()
        .expect("the driver binary runs")
}

fn assert_fails_naming_standard_output(o: &Output, what: &str) {
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{what}: {:?}\n{e}", o.status);
    assert!(
        e.lines()
            .any(|l| l.starts_with("error: ") && l.contains("writing to standard output")),
        "{what}: {e}"
    );
    assert!(!e.contains("panicked"), "{what}: {e}");
}

#[test]
fn a_full_standard_output_is_an_error_not_a_panic() {
    let data = temp_dir("out-full-data");
    write_mnist_like(&data, 6);
    let d = data.to_str().unwrap();
    let o = driver_into_full_device(&["data", "--dataset", "mnist", "--data-dir", d]);
    assert_fails_naming_standard_output(&o, "data");

    let dir = temp_dir("out-full-run");
    let run = dir.join("run");
    let r = run.to_str().unwrap();
    let o = driver(&[
        "--dataset",
        "mnist",
        "--data-dir",
        d,
        "--base",
        "8",
        "--inc",
        "2",
        "--epochs",
        "1",
        "--batch",
        "16",
        "--memory",
        "2",
        "--quiet",
        "--out",
        r,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report = dir.join("report");
    let o = driver_into_full_device(&["report", r, "--out", report.to_str().unwrap()]);
    assert_fails_naming_standard_output(&o, "report");
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&data).unwrap();
}

/// A reader gone before the first line (`| head -0`): SIGPIPE ends the driver, silently.
#[test]
fn a_closed_pipe_ends_the_program_quietly() {
    let data = temp_dir("out-pipe-data");
    write_mnist_like(&data, 2);
    // The read end is closed before the driver starts, so its first write finds no reader.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let o = Command::new(env!("CARGO_BIN_EXE_lucir-driver"))
        .args(["data", "--dataset", "mnist", "--data-dir"])
        .arg(&data)
        .stdout(writer)
        .output()
        .expect("the driver binary runs");
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.signal(),
        Some(libc::SIGPIPE),
        "{:?}: {e}",
        o.status
    );
    assert!(e.is_empty(), "{e}");
    std::fs::remove_dir_all(&data).unwrap();
}
