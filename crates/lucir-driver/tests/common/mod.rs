//! Helpers of the driver's end-to-end tests: running the binary, temporary folders, a tiny
//! MNIST-format dataset, and comparable views of a run's results.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn driver(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lucir-driver"))
        .args(args)
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .expect("the driver binary runs")
}

pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lucir-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A 10-class MNIST-format dataset of 28×28 images: class c is a bright horizontal band at
/// rows 2c..2c+4, so the classes are easy to tell apart.
pub fn write_mnist_like(dir: &Path, per_class: usize) {
    for (prefix, n) in [("train", per_class), ("t10k", 4)] {
        let mut px = Vec::new();
        let mut lb = Vec::new();
        for i in 0..10 * n {
            let c = i % 10;
            for y in 0..28 {
                for x in 0..28 {
                    let band = y >= 2 * c && y < 2 * c + 4;
                    px.push(if band {
                        200u8
                    } else {
                        ((x * 7 + y * 3 + i) % 40) as u8
                    });
                }
            }
            lb.push(c as u8);
        }
        let mut images = vec![0, 0, 8, 3];
        for d in [(10 * n) as u32, 28, 28] {
            images.extend_from_slice(&d.to_be_bytes());
        }
        images.extend(px);
        let mut labels = vec![0, 0, 8, 1];
        labels.extend_from_slice(&((10 * n) as u32).to_be_bytes());
        labels.extend(lb);
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), images).unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), labels).unwrap();
    }
}

/// results.json without the fields that measure time.
pub fn results_without_timings(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("results.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v.as_object_mut().unwrap().remove("wall_seconds");
    for p in v["phases"].as_array_mut().unwrap() {
        let p = p.as_object_mut().unwrap();
        p.remove("train_seconds");
        p.remove("images_per_s");
    }
    v
}

pub fn small_run_args<'a>(data: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "--dataset",
        "mnist",
        "--data-dir",
        data,
        "--base",
        "8",
        "--inc",
        "1",
        "--epochs",
        "3",
        "--batch",
        "16",
        "--memory",
        "4",
        "--out",
        out,
        "--class-order",
        "3,1,4,0,5,9,2,6,8,7",
    ]
}

/// A process's standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A process's standard output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The bytes of every model file of a run, by name.
pub fn models(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    v.sort();
    v
}

/// metrics.csv without its timing column.
pub fn metrics(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("metrics.csv"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.rsplit_once(',').map_or(l, |(a, _)| a).to_string())
        .collect()
}

/// Run `b` ended exactly as run `a`: results without timings, every model file's bytes, the
/// metrics without timings.
pub fn assert_same_run(a: &Path, b: &Path) {
    assert_eq!(results_without_timings(a), results_without_timings(b));
    let (ma, mb) = (models(a), models(b));
    assert!(!ma.is_empty(), "no model file in {}", a.display());
    assert!(ma == mb, "model files differ");
    assert_eq!(metrics(a), metrics(b));
}
