//! `lucir-driver data fetch` against an HTTP server on 127.0.0.1 that the test starts, serving
//! a small CIFAR-100-format archive the test builds: a good download lands atomically where
//! the CIFAR presets look by default; a wrong checksum, a truncated transfer and a server error
//! leave nothing behind and say how to fetch by hand. Wrong-layout folders get a hint.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};

use common::temp_dir;
use sha2::{Digest, Sha256};

/// `cifar-100-binary/{train,test}.bin` with one image per class, as a .tar.gz.
fn archive() -> Vec<u8> {
    let mut records = Vec::new();
    for class in 0..100u8 {
        records.extend_from_slice(&[class / 5, class]);
        records.extend(std::iter::repeat_n(class, 3072));
    }
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for name in ["train.bin", "test.bin"] {
        let mut header = tar::Header::new_gnu();
        header.set_size(records.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(
                &mut header,
                format!("cifar-100-binary/{name}"),
                &records[..],
            )
            .unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// Serves `/good` (the archive), `/truncated` (half of it, with the full Content-Length) and
/// anything else as a 500, forever, on a background thread; returns the base URL.
fn serve(body: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let path = request.split_whitespace().nth(1).unwrap_or("");
            let head = |status: &str, len: usize| {
                format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
            };
            let _ = match path {
                "/good" => stream
                    .write_all(head("200 OK", body.len()).as_bytes())
                    .and_then(|_| stream.write_all(&body)),
                "/truncated" => stream
                    .write_all(head("200 OK", body.len()).as_bytes())
                    .and_then(|_| stream.write_all(&body[..body.len() / 2])),
                _ => stream.write_all(head("500 Internal Server Error", 0).as_bytes()),
            };
        }
    });
    base
}

fn driver(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lucir-driver"))
        .args(args)
        .env("XDG_DATA_HOME", home)
        .output()
        .expect("the driver binary runs")
}

#[test]
fn fetch_checks_unpacks_atomically_and_explains_failures() {
    let body = archive();
    let sha = Sha256::digest(&body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    let base = serve(body);
    let home = temp_dir("fetch-home");
    let lucir = home.join("lucir");
    let target = lucir.join("cifar-100-binary");
    let fetch = |path: &str, sha: &str| {
        let url = format!("{base}{path}");
        driver(
            &home,
            &[
                "data", "fetch", "cifar100", "--quiet", "--url", &url, "--sha256", sha,
            ],
        )
    };
    let leftovers = || -> Vec<String> {
        std::fs::read_dir(&lucir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(".fetch-"))
                    .collect()
            })
            .unwrap_or_default()
    };

    // Failures: nothing lands, nothing is left over, the message says how to do it by hand.
    let wrong = "0".repeat(64);
    for (path, sha, why) in [
        ("/good", wrong.as_str(), "does not match the published"),
        ("/truncated", sha.as_str(), "downloading"),
        ("/missing", sha.as_str(), "500"),
    ] {
        let o = fetch(path, sha);
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{path}: {e}");
        assert!(
            e.contains(why) && e.contains("by hand (without network)"),
            "{path}: {e}"
        );
        assert!(
            e.contains("cifar-100-binary.tar.gz") && e.contains("03b5dce01913d631647c71ecec9e9cb8"),
            "{e}"
        );
        assert!(
            !target.exists(),
            "{path}: a failed fetch left {}",
            target.display()
        );
        assert!(leftovers().is_empty(), "{path}: {:?}", leftovers());
    }

    // The good archive lands in the default data folder, where the cifar100 preset finds it.
    let o = fetch("/good", &sha);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(target.join("train.bin").is_file() && target.join("test.bin").is_file());
    assert!(leftovers().is_empty(), "{:?}", leftovers());
    let o = driver(&home, &["data", "--dataset", "cifar100"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("cifar-100-binary"), "{out}");
    let o = fetch("/good", &sha);
    assert!(String::from_utf8_lossy(&o.stdout).contains("already"));

    // Wrong layouts: the parent of the binary folder, and the python version.
    let describe = |dir: &Path| {
        let args = [
            "data",
            "--dataset",
            "cifar100",
            "--data-dir",
            dir.to_str().unwrap(),
        ];
        driver(&home, &args)
    };
    let o = describe(&lucir);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("train.bin") && e.contains("one level down"),
        "{e}"
    );
    let py = home.join("cifar-100-python");
    std::fs::create_dir_all(&py).unwrap();
    std::fs::write(py.join("train"), b"pickle").unwrap();
    let o = describe(&py);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("python version") && e.contains("data fetch cifar100"),
        "{e}"
    );

    let o = driver(&home, &["data", "fetch", "imagenet"]);
    assert_eq!(o.status.code(), Some(2));
    std::fs::remove_dir_all(&home).unwrap();
}
