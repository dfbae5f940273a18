//! Image folders through the driver: the ImageNet-Subset preset's settings, and a small run on
//! a generated JPEG tree (streamed, a subset of its classes) with that preset's transforms.

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
    for dir in [data, out] {
        let _ = std::fs::remove_dir_all(dir);
    }
}
