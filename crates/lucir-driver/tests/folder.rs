//! Image folders through the driver: the ImageNet-Subset preset's settings, a small run on a
//! generated JPEG tree (streamed, a subset of its classes) with that preset's transforms and
//! its evaluation, and `data` on a folder: the counts and sizes it reports, and `--check`.

mod common;

use common::*;

#[test]
fn imagenet_subset_preset_has_the_papers_settings() {
    let o = driver(&["--preset", "imagenet-subset-b50-inc10", "--print-config"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let toml = String::from_utf8_lossy(&o.stdout).replace([' ', '\n'], "");
    for want in [
        "dataset=\"folder\"",
        "classes=100",
        "class_order_seed=1993",
        "base=50",
        "inc=10",
        "resize=256",
        "crop=224",
        "arch=\"resnet18\"",
        "epochs=90",
        "milestones=[30,60]",
        "weight_decay=0.0001",
        "lambda_base=10.0",
        "cbf=true",
        "[method.memory]per_class=20",
    ] {
        assert!(toml.contains(want), "{want} missing from {toml}");
    }
    // --epochs scales the preset's milestones (×0.1 after 30 and 60 of 90 → 3 and 6 of 9).
    let o = driver(&[
        "--preset",
        "imagenet-subset-b50-inc10",
        "--epochs",
        "9",
        "--print-config",
    ]);
    let toml = String::from_utf8_lossy(&o.stdout).replace([' ', '\n'], "");
    assert!(toml.contains("milestones=[3,6]"), "{toml}");
    // An image folder has no default location.
    let o = driver(&["--preset", "imagenet-subset-b50-inc10", "--epochs", "1"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("--data-dir"), "{e}");
}

#[test]
fn a_small_run_streams_a_jpeg_folder() {
    let data = temp_dir("jpeg");
    for (split, n) in [("train", 4u32), ("val", 2)] {
        for class in 0..6u32 {
            let dir = data.join(split).join(format!("n{class:08}"));
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..n {
                // Class c: a bright vertical band at columns 6c..6c+6 of a 48×40 image.
                let img = image::RgbImage::from_fn(48, 40, |x, y| {
                    let band = x / 6 == class;
                    let v = if band { 230 } else { ((x + y + i) % 30) as u8 };
                    image::Rgb([v, v / 2, 255 - v])
                });
                img.save(dir.join(format!("img{i}.jpg"))).unwrap();
            }
        }
    }
    let out = temp_dir("jpeg-run");
    let o = driver(&[
        "--preset",
        "imagenet-subset-b50-inc10",
        "--data-dir",
        data.to_str().unwrap(),
        "--classes",
        "4",
        "--base",
        "2",
        "--inc",
        "1",
        "--model",
        "resnet20",
        "--epochs",
        "1",
        "--cbf-epochs",
        "1",
        "--resize",
        "36",
        "--crop",
        "32",
        "--batch",
        "4",
        "--memory",
        "2",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let phases = results["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 3, "2 + 1 + 1 classes of the 4 chosen");
    assert_eq!(phases[2]["classes_seen"], 4);
    // `eval` names each class beside its id, in a last column of both CSV files: id i is the
    // i-th of the 4 chosen folders (numpy's shuffle, seed 1993), in name order.
    let mut chosen = lucir_data::numpy_shuffle(6, 1993)[..4].to_vec();
    chosen.sort_unstable();
    let name = |id: &str| format!("n{:08}", chosen[id.parse::<usize>().unwrap()]);
    let o = driver(&["eval", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let per_class = std::fs::read_to_string(out.join("eval-phase-2/per_class.csv")).unwrap();
    let mut rows = per_class.lines();
    assert_eq!(
        rows.next(),
        Some("position,class,test_images,acc_cnn,acc_nme,name")
    );
    let ids: Vec<&str> = rows
        .map(|row| {
            let f: Vec<&str> = row.split(',').collect();
            assert_eq!(f[5], name(f[1]), "{row}");
            f[1]
        })
        .collect();
    assert_eq!(ids.len(), 4, "{per_class}");
    let confusion = std::fs::read_to_string(out.join("eval-phase-2/confusion_nme.csv")).unwrap();
    let mut rows = confusion.lines();
    assert_eq!(
        rows.next().unwrap(),
        format!("true\\predicted,{},name", ids.join(","))
    );
    for (row, id) in rows.zip(&ids) {
        let f: Vec<&str> = row.split(',').collect();
        assert_eq!((f[0], f.len()), (*id, 1 + 4 + 1), "{row}");
        assert_eq!(f[5], name(id), "{row}");
    }
    // A phase past the last names the run's phases as an inclusive range.
    let o = driver(&["eval", out.to_str().unwrap(), "--phase", "9"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("--phase 9: the run has phases 0–2"), "{e}");
    for dir in [data, out] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Writes an image of `w`×`h` to `path` (format from the extension).
fn write_image(path: &std::path::Path, w: u32, h: u32, v: u8) {
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb([v, (x + y) as u8, 255 - v]))
        .save(path)
        .unwrap();
}

/// `data` on an image folder counts only the images (not `.DS_Store`, `README.txt` or
/// `.ipynb_checkpoints/`), reports the sizes on disk from the headers beside the crop the
/// network sees, and `--check` passes a good folder and lists every bad file of a bad one
/// (exit 1), whichever class and split it is in.
#[test]
fn data_counts_sizes_and_checks_an_image_folder() {
    let data = temp_dir("data-folder");
    for (split, n) in [("train", 4), ("val", 2)] {
        let s = data.join(split);
        for class in ["bird", "cat", "dog", "eel", "fox"] {
            std::fs::create_dir_all(s.join(class)).unwrap();
            for i in 0..n {
                write_image(
                    &s.join(class).join(format!("{i}.png")),
                    64,
                    64,
                    20 * i as u8,
                );
            }
            std::fs::write(s.join(class).join(".DS_Store"), b"\0\0\0\x01Bud1").unwrap();
        }
        write_image(&s.join("dog/big.JPG"), 500, 375, 7);
        std::fs::remove_file(s.join("dog/0.png")).unwrap();
        std::fs::write(s.join("README.txt"), b"five classes").unwrap();
        std::fs::write(s.join("cat/README.txt"), b"cats").unwrap();
        std::fs::create_dir_all(s.join(".ipynb_checkpoints")).unwrap();
    }
    let dir = data.to_str().unwrap();
    let args = ["data", "--dataset", "folder", "--data-dir", dir];
    let o = driver(&args);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        out.contains("5 classes, 20 train / 10 test images"),
        "{out}"
    );
    assert!(
        out.contains(
            "images 64×64 to 500×375 on disk (read from the headers), fed to the network as \
             3×224×224 crops\n"
        ),
        "{out}"
    );
    assert!(!out.contains(".ipynb_checkpoints"), "{out}");

    let check = [&args[..], &["--check"]].concat();
    let o = driver(&check);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("check: all 30 images decode (20 train, 10 test)"),
        "{out}"
    );
    assert!(
        err.contains("checking: 30/30 files"),
        "progress on stderr: {err}"
    );

    // Two bad files, in the last classes of both splits: both are listed, then exit 1.
    std::fs::write(data.join("train/fox/3.png"), b"not a png").unwrap();
    std::fs::write(data.join("val/eel/bad.jpg"), b"").unwrap();
    let o = driver(&args);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("; 2 of 31 headers unreadable (`--check`"),
        "{out}"
    );
    let o = driver(&check);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    let bad: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("cannot decode"))
        .collect();
    assert_eq!(bad.len(), 2, "{out}");
    assert!(
        bad[0].contains("train/fox/3.png: cannot decode image"),
        "{out}"
    );
    assert!(
        bad[1].contains("val/eel/bad.jpg: cannot decode image"),
        "{out}"
    );
    assert!(err.contains("2 of 31 image files cannot be used"), "{err}");
    let _ = std::fs::remove_dir_all(data);
}
