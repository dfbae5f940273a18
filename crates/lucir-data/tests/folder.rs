//! Image folders: the reader lists files without decoding them, the loader decodes each batch
//! with the torchvision transforms, classes can be a seeded subset, and bad files are errors
//! naming them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lucir_data::{
    check_images, image_sizes, load, numpy_shuffle, DatasetKind, FolderOptions, Loader, Sample,
    Split,
};

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

/// Writes `train/<class>/` and `val/<class>/` with `per_class` 8×8 PNGs each.
fn write_tree(dir: &Path, classes: &[&str], per_class: usize) {
    for split in ["train", "val"] {
        for (c, name) in classes.iter().enumerate() {
            let d = dir.join(split).join(name);
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..per_class {
                write_png(&d.join(format!("{i}.png")), 8, 8, 40 * c as u8);
            }
        }
    }
}

/// Only files with an image extension (any case) are images, and hidden files and folders are
/// neither images nor classes: `.DS_Store`, `README.txt`, `._0.png`, a folder inside a class
/// and `.ipynb_checkpoints/` change nothing, and every listed file decodes.
#[test]
fn image_folders_skip_hidden_and_non_image_files() {
    let dir = temp_dir("junk");
    write_tree(&dir, &["cat", "dog"], 2);
    for split in ["train", "val"] {
        let s = dir.join(split);
        let jpg = image::RgbImage::from_pixel(8, 8, image::Rgb([9, 9, 9]));
        jpg.save_with_format(s.join("dog/2.JPG"), image::ImageFormat::Jpeg)
            .unwrap();
        jpg.save_with_format(s.join("cat/2.jpeg"), image::ImageFormat::Jpeg)
            .unwrap();
        for junk in [".DS_Store", "README.txt", "cat/.DS_Store", "cat/README.txt"] {
            std::fs::write(s.join(junk), b"not an image").unwrap();
        }
        std::fs::write(s.join("dog/._0.png"), b"AppleDouble").unwrap();
        for sub in [".ipynb_checkpoints", "dog/nested"] {
            std::fs::create_dir_all(s.join(sub)).unwrap();
            write_png(&s.join(sub).join("0.png"), 8, 8, 1);
        }
    }
    let opts = FolderOptions {
        resize: 8,
        crop: 8,
        ..FolderOptions::default()
    };
    let ds = load(DatasetKind::Folder, Some(&dir), opts).unwrap();
    assert_eq!(ds.class_names, vec!["cat", "dog"]);
    assert_eq!((ds.train.len(), ds.test.len()), (6, 6));
    let names: Vec<String> = (0..6)
        .map(|i| {
            let f = ds.train.file(i).unwrap();
            let class = f.parent().unwrap().file_name().unwrap().to_string_lossy();
            format!("{class}/{}", f.file_name().unwrap().to_string_lossy())
        })
        .collect();
    assert_eq!(
        names,
        [
            "cat/0.png",
            "cat/1.png",
            "cat/2.jpeg",
            "dog/0.png",
            "dog/1.png",
            "dog/2.JPG"
        ]
    );
    assert!(check_images(&ds.image_files(), || ()).is_empty());
    let test = Arc::new(ds.test);
    let tl = Loader::test(
        test.clone(),
        all_samples(&test),
        4,
        ds.norm,
        ds.augment,
        false,
    );
    assert_eq!(
        tl.epoch(0).map(|b| b.unwrap().labels.len()).sum::<usize>(),
        6
    );
    // A class folder holding only non-images is an empty class, and says what an image is.
    for f in ["0.png", "1.png", "2.JPG"] {
        std::fs::remove_file(dir.join("val/dog").join(f)).unwrap();
    }
    let e = load(DatasetKind::Folder, Some(&dir), opts)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("val/dog") && e.contains("empty class") && e.contains(".png"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// When train/ and val/ differ in their classes, the error names the classes only one side
/// has, each side.
#[test]
fn mismatched_class_folders_are_named() {
    let dir = temp_dir("mismatch");
    write_tree(&dir, &["ant", "bee", "dog"], 1);
    std::fs::rename(dir.join("val/dog"), dir.join("val/dgo")).unwrap();
    let e = load(DatasetKind::Folder, Some(&dir), FolderOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("val/ has `dgo` that train/ lacks; train/ has `dog` that val/ lacks"),
        "{e}"
    );
    std::fs::remove_dir_all(dir.join("val/dgo")).unwrap();
    std::fs::remove_dir_all(dir.join("val/bee")).unwrap();
    let e = load(DatasetKind::Folder, Some(&dir), FolderOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("train/ has `bee`, `dog` that val/ lacks"), "{e}");
    assert!(!e.contains("val/ has"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `check_images` decodes every file once and returns each bad one with its reason — not only
/// the first, and whichever class it belongs to — and reports every file done.
#[test]
fn check_images_lists_every_bad_file() {
    let dir = temp_dir("check");
    write_tree(&dir, &["a", "b", "c"], 3);
    let good = std::fs::read(dir.join("train/a/0.png")).unwrap();
    std::fs::write(dir.join("train/c/broken.png"), b"not a png").unwrap();
    std::fs::write(dir.join("val/b/cut.png"), &good[..good.len() / 2]).unwrap();
    std::fs::write(dir.join("val/c/empty.jpg"), b"").unwrap();
    let ds = load(DatasetKind::Folder, Some(&dir), FolderOptions::default()).unwrap();
    let files = ds.image_files();
    assert_eq!(files.len(), 9 + 9 + 3);
    let done = std::sync::atomic::AtomicUsize::new(0);
    let bad = check_images(&files, || {
        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });
    assert_eq!(done.into_inner(), files.len());
    let got: Vec<(String, &str)> = bad
        .iter()
        .map(|b| {
            let rel = b
                .path
                .strip_prefix(&dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (rel, b.reason.as_str())
        })
        .collect();
    let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        ["train/c/broken.png", "val/b/cut.png", "val/c/empty.jpg"]
    );
    for (p, reason) in &got {
        assert!(reason.contains("cannot decode image"), "{p}: {reason}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `image_sizes` reads the width and height from each header: the smallest and largest image
/// by pixel count, and how many headers could not be read.
#[test]
fn image_sizes_come_from_the_headers() {
    let dir = temp_dir("sizes");
    let mut files = Vec::new();
    for (i, (w, h)) in [(64, 64), (500, 375), (30, 100), (64, 64)]
        .into_iter()
        .enumerate()
    {
        let f = dir.join(format!("{i}.png"));
        write_png(&f, w, h, 3);
        files.push(f);
    }
    let jpg = dir.join("wide.JPG");
    image::RgbImage::from_pixel(640, 8, image::Rgb([1, 2, 3]))
        .save_with_format(&jpg, image::ImageFormat::Jpeg)
        .unwrap();
    files.push(jpg);
    std::fs::write(dir.join("junk.png"), b"junk").unwrap();
    files.push(dir.join("junk.png"));
    let s = image_sizes(&files, || ());
    assert_eq!(
        (s.read, s.unreadable, s.smallest, s.largest),
        (5, 1, Some((30, 100)), Some((500, 375)))
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
