//! `lucir-driver data fetch cifar10|cifar100`: downloads the binary version of a CIFAR dataset
//! from its authors' page, checks the archive against the MD5 they publish (or, from a mirror
//! given with `--url`, against `--sha256`), and extracts it atomically — into a temporary folder
//! beside the target, then one rename — into the folder the CIFAR presets read by default
//! (`lucir_data::default_dir`).

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use md5::Md5;
use sha2::{Digest, Sha256};

use crate::outln;
use crate::usage;

/// Options of `lucir-driver data fetch`.
#[derive(Debug, Clone, Args)]
pub struct FetchArgs {
    /// cifar10 or cifar100.
    pub dataset: String,
    /// Folder to put the dataset folder in [default: $XDG_DATA_HOME/lucir, else
    /// ~/.local/share/lucir].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Download from this mirror instead (with --sha256 of its archive).
    #[arg(long, requires = "sha256")]
    pub url: Option<String>,
    /// SHA-256 of the archive at --url.
    #[arg(long, requires = "url")]
    pub sha256: Option<String>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// A dataset archive as its authors publish it.
struct Source {
    name: &'static str,
    url: &'static str,
    /// MD5 listed on <https://www.cs.toronto.edu/~kriz/cifar.html>.
    md5: &'static str,
    /// The folder the archive unpacks to.
    folder: &'static str,
    files: &'static [&'static str],
}

const PAGE: &str = "https://www.cs.toronto.edu/~kriz/cifar.html";

const CIFAR10: Source = Source {
    name: "cifar10",
    url: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    md5: "c32a1d4ab5d03f1284b67883e8d87530",
    folder: "cifar-10-batches-bin",
    files: &[
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ],
};

const CIFAR100: Source = Source {
    name: "cifar100",
    url: "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
    md5: "03b5dce01913d631647c71ecec9e9cb8",
    folder: "cifar-100-binary",
    files: &["train.bin", "test.bin"],
};

/// The expected digest of a download.
enum Check {
    Md5(String),
    Sha256(String),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Downloads `url` into `path`, returning the archive's MD5 and SHA-256.
fn download(url: &str, path: &Path, quiet: bool) -> Result<(String, String)> {
    let mut resp = ureq::get(url)
        .call()
        .with_context(|| format!("downloading {url}"))?;
    let total = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        let bar = total.map_or_else(ProgressBar::no_length, ProgressBar::new);
        bar.set_style(
            ProgressStyle::with_template("{bytes}/{total_bytes} {wide_bar} {bytes_per_sec} {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    };
    let mut reader = resp.body_mut().with_config().limit(u64::MAX).reader();
    let mut out =
        BufWriter::new(File::create(path).with_context(|| format!("creating {}", path.display()))?);
    let (mut md5, mut sha) = (Md5::new(), Sha256::new());
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader
            .read(&mut buf)
            .with_context(|| format!("downloading {url} (the transfer broke off)"))?;
        if n == 0 {
            break;
        }
        md5.update(&buf[..n]);
        sha.update(&buf[..n]);
        out.write_all(&buf[..n])
            .with_context(|| format!("writing {}", path.display()))?;
        bar.inc(n as u64);
    }
    out.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    bar.finish_and_clear();
    Ok((hex(&md5.finalize()), hex(&sha.finalize())))
}

/// Runs the command.
pub fn run(args: &FetchArgs) -> Result<()> {
    let src = match args.dataset.as_str() {
        "cifar10" => CIFAR10,
        "cifar100" => CIFAR100,
        o => {
            return usage(Err(format!(
                "data fetch: unknown dataset {o:?}; expected cifar10 or cifar100 \
                 (Fashion-MNIST: `apt-get install dataset-fashion-mnist`)"
            )))
        }
    };
    let home = match &args.data_dir {
        Some(d) => d.clone(),
        None => match lucir_data::data_home() {
            Some(d) => d,
            None => return usage(Err("no home folder: pass --data-dir DIR")),
        },
    };
    let target = home.join(src.folder);
    if src.files.iter().all(|f| target.join(f).is_file()) {
        outln!("{} is already in {}", src.name, target.display())?;
        return Ok(());
    }
    let (url, check) = match (&args.url, &args.sha256) {
        (Some(u), Some(h)) => (u.as_str(), Check::Sha256(h.to_lowercase())),
        _ => (src.url, Check::Md5(src.md5.into())),
    };
    std::fs::create_dir_all(&home).with_context(|| format!("creating {}", home.display()))?;
    let tmp = home.join(format!(".fetch-{}-{}", src.folder, std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let result = fetch_into(&src, url, &check, &tmp, &target, args.quiet);
    let _ = std::fs::remove_dir_all(&tmp);
    result.map_err(|e| {
        anyhow::anyhow!(
            "{e:#}; to fetch it by hand (without network): download {} from {PAGE}, check \
             its MD5 ({}) and unpack it so that {} exists",
            src.url.rsplit('/').next().unwrap_or(src.url),
            src.md5,
            target.join(src.files[0]).display()
        )
    })?;
    outln!("{} in {}", src.name, target.display())?;
    Ok(())
}

/// Download, check and unpack into `tmp`, then move the dataset folder to `target`.
fn fetch_into(
    src: &Source,
    url: &str,
    check: &Check,
    tmp: &Path,
    target: &Path,
    quiet: bool,
) -> Result<()> {
    let archive = tmp.join("archive.tar.gz");
    let (md5, sha256) = download(url, &archive, quiet)?;
    let (got, want, what) = match check {
        Check::Md5(w) => (md5, w, "MD5"),
        Check::Sha256(w) => (sha256, w, "SHA-256"),
    };
    if &got != want {
        bail!("{url}: {what} {got} does not match the published {want}; nothing was written");
    }
    let unpacked = tmp.join("unpacked");
    let file = File::open(&archive).with_context(|| format!("opening {}", archive.display()))?;
    tar::Archive::new(flate2::read::GzDecoder::new(file))
        .unpack(&unpacked)
        .with_context(|| format!("unpacking {url}"))?;
    let folder = unpacked.join(src.folder);
    if let Some(f) = src.files.iter().find(|f| !folder.join(f).is_file()) {
        bail!("{url}: the archive has no {}/{f}", src.folder);
    }
    if target.exists() {
        // An incomplete earlier copy: set aside inside `tmp` (removed with it).
        std::fs::rename(target, tmp.join("previous"))
            .with_context(|| format!("moving the incomplete {} aside", target.display()))?;
    }
    std::fs::rename(&folder, target)
        .with_context(|| format!("moving the dataset to {}", target.display()))?;
    Ok(())
}
