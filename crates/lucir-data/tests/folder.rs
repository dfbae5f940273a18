//! Image folders: the reader lists files without decoding them, the loader decodes each batch
//! with the torchvision transforms, classes can be a seeded subset, and bad files are errors
//! naming them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lucir_data::{load, numpy_shuffle, DatasetKind, FolderOptions, Loader, Sample, Split};

/// A fresh empty folder under the system temp dir.
fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lucir-folder-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_png(path: &Path, w: u32, h: u32, value: u8) {
    let img = image::RgbImage::from_fn(w, h, |x, _| image::Rgb([value, x as u8, 255 - value]));
    img.save(path).unwrap();
}

/// Every sample of a split, labelled by class id.
fn all_samples(split: &Split) -> Vec<Sample> {
    (0..split.len())
        .map(|i| Sample {
            id: i,
            label: split.labels[i],
        })
        .collect()
}

/// The folder reader lists files without decoding them; the loader decodes per batch: the test
/// transform (shorter side to `resize`, central `crop`) and the training one (random resized
/// crop + flip) both give `crop`×`crop` images of the right colours, the training draws are
/// keyed by (seed, epoch) alone, and a file that does not decode is an error naming it.
#[test]
fn image_folder_reader_streams_and_labels_by_sorted_folder() {
    let dir = temp_dir("folder");
    for split in ["train", "val"] {
        for (c, name) in ["cat", "ant"].iter().enumerate() {
            let d = dir.join(split).join(name);
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..2 {
                write_png(
                    &d.join(format!("{i}.png")),
                    20 + 4 * i,
                    12,
                    10 * c as u8 + 50,
                );
            }
        }
    }
    let opts = FolderOptions {
        resize: 8,
        crop: 6,
        ..FolderOptions::default()
    };
    let ds = load(DatasetKind::Folder, Some(&dir), opts).unwrap();
    assert_eq!(ds.class_names, vec!["ant", "cat"]);
    assert_eq!(
        (ds.train.len(), ds.train.shape, ds.augment.crop),
        (4, [3, 8, 8], 6)
    );
    assert!(ds.train.image(0).is_none(), "pixels stay on disk");
    assert!(ds.train.file(3).unwrap().ends_with("cat/1.png"));
    // "ant" (label 0) was written with red = 60, "cat" (label 1) with red = 50.
    assert_eq!(ds.train.labels, vec![0, 0, 1, 1]);
    let red = |v: f32| (v / 255.0 - 0.485) / 0.229;
    let (train, test) = (Arc::new(ds.train), Arc::new(ds.test));
    let tl = Loader::test(
        test.clone(),
        all_samples(&test),
        8,
        ds.norm.clone(),
        ds.augment,
        false,
    );
    let b = tl.epoch(0).next().unwrap().unwrap();
    assert_eq!(b.images.shape(), &[4, 3, 6, 6]);
    let px = b.images.as_slice();
    assert!((px[0] - red(60.0)).abs() < 1e-5 && (px[3 * 108] - red(50.0)).abs() < 1e-5);
    let trl = |seed| {
        let s = all_samples(&train);
        Loader::train(train.clone(), s, 8, ds.norm.clone(), ds.augment, seed)
    };
    let epoch = |l: &Loader, e| l.epoch(e).next().unwrap().unwrap().images.into_vec();
    let e1 = epoch(&trl(3), 1);
    assert_eq!(e1.len(), 4 * 3 * 36);
    let (order, crops) = (trl(3).draws(1).order, trl(3).draws(1).crops);
    for (k, &i) in order.iter().enumerate() {
        let want = red(if train.labels[i] == 0 { 60.0 } else { 50.0 });
        let img = &e1[k * 108..k * 108 + 36];
        assert!(
            img.iter().all(|v| (v - want).abs() < 1e-5),
            "red channel of image {i}"
        );
        assert_ne!(crops[k].seed, 0, "files draw a window seed");
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    assert_eq!(
        pool.install(|| epoch(&trl(3), 1)),
        e1,
        "thread count changes nothing"
    );
    assert_ne!(epoch(&trl(3), 2), e1, "a new epoch draws new windows");

    std::fs::write(dir.join("val/cat/broken.png"), b"not a png").unwrap();
    let ds = load(DatasetKind::Folder, Some(&dir), opts).unwrap();
    let test = Arc::new(ds.test);
    let tl = Loader::test(
        test.clone(),
        all_samples(&test),
        8,
        ds.norm,
        ds.augment,
        false,
    );
    let e = tl.epoch(0).find_map(Result::err).unwrap().to_string();
    assert!(
        e.contains("broken.png") && e.contains("cannot decode image"),
        "{e}"
    );
    std::fs::remove_file(dir.join("val/cat/broken.png")).unwrap();
    for f in ["0.png", "1.png"] {
        std::fs::remove_file(dir.join("val/ant").join(f)).unwrap();
    }
    let e = load(DatasetKind::Folder, Some(&dir), opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("ant") && e.contains("empty class"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `classes: Some(n)` keeps the first n of numpy's shuffle of all class ids (seed
/// `class_seed`), in name order; more classes than the folder has is an error.
#[test]
fn image_folder_class_subset_follows_the_seeded_shuffle() {
    let dir = temp_dir("folder-subset");
    let names = ["a", "b", "c", "d", "e", "f"];
    for split in ["train", "val"] {
        for name in names {
            let d = dir.join(split).join(name);
            std::fs::create_dir_all(&d).unwrap();
            write_png(&d.join("0.png"), 4, 4, 9);
        }
    }
    let opts = |classes| FolderOptions {
        resize: 4,
        crop: 4,
        classes,
        class_seed: 1993,
    };
    let ds = load(DatasetKind::Folder, Some(&dir), opts(Some(3))).unwrap();
    let mut want: Vec<usize> = numpy_shuffle(6, 1993)[..3].to_vec();
    want.sort();
    let want: Vec<&str> = want.iter().map(|&i| names[i]).collect();
    assert_eq!(ds.class_names, want);
    assert_eq!((ds.classes, ds.train.len(), ds.test.len()), (3, 3, 3));
    assert_eq!(
        load(DatasetKind::Folder, Some(&dir), opts(Some(6)))
            .unwrap()
            .classes,
        6
    );
    let e = load(DatasetKind::Folder, Some(&dir), opts(Some(7)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("7 classes") && e.contains("has 6"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
