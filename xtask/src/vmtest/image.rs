//! `--kernel-image PATH [--modules DIR]`: a kernel built elsewhere (a patched
//! tree, a distribution package) booted the same way as the Debian series.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

use super::kernel::{sha256_file, Kernel, KernelInfo};

/// The directory name and report label of a `--kernel-image` boot.
pub const NAME: &str = "image";

/// The x86 boot protocol's setup header (Documentation/arch/x86/boot.rst):
/// "HdrS" at 0x202, the protocol version at 0x206, and at 0x20e the offset
/// (minus 0x200) of the kernel version string `make` writes into every bzImage.
const HDRS_AT: usize = 0x202;
const PROTOCOL_AT: usize = 0x206;
const KERNEL_VERSION_AT: usize = 0x20e;

/// The release (`uname -r`) of a bzImage, from its setup header: the first
/// word of the version string ("6.1.0-56-cloud-amd64 (debian-kernel@...) #1 SMP ...").
pub fn bzimage_release(bytes: &[u8]) -> anyhow::Result<String> {
    if bytes.starts_with(b"\x7fELF") {
        bail!("an ELF file (vmlinux?), not a bootable image: pass arch/x86/boot/bzImage");
    }
    if bytes.get(HDRS_AT..HDRS_AT + 4) != Some(b"HdrS".as_slice()) {
        bail!("not an x86 bzImage (no \"HdrS\" setup header at 0x202)");
    }
    let u16_at = |at: usize| {
        bytes
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let protocol = u16_at(PROTOCOL_AT).context("truncated setup header")?;
    // kernel_version exists since boot protocol 2.00.
    if protocol < 0x0200 {
        bail!("boot protocol {protocol:#06x} is too old to name its kernel version");
    }
    let offset = u16_at(KERNEL_VERSION_AT).context("truncated setup header")?;
    if offset == 0 {
        bail!("the setup header has no kernel version string");
    }
    let start = usize::from(offset) + 0x200;
    let rest = bytes
        .get(start..)
        .context("the kernel version string lies past the end of the file")?;
    let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    let text = std::str::from_utf8(&rest[..end.min(256)])
        .context("the kernel version string is not text")?;
    let release = text.split_whitespace().next().unwrap_or("");
    if release.is_empty() || !release.chars().all(|c| c.is_ascii_graphic()) {
        bail!("the kernel version string {text:?} does not start with a release");
    }
    Ok(release.to_string())
}

/// The kernel's build configuration, where it usually sits next to an image:
/// `config-<release>` beside `vmlinuz-<release>` (a /boot or an unpacked
/// package), or the tree's `.config` for `<tree>/arch/x86/boot/bzImage`.
pub fn find_config(image: &Path, release: &str) -> Option<PathBuf> {
    let dir = image.parent()?;
    let beside = dir.join(format!("config-{release}"));
    if beside.is_file() {
        return Some(beside);
    }
    // <tree>/arch/x86/boot/bzImage -> <tree>/.config
    let tree = dir.parent()?.parent()?.parent()?;
    let dot_config = tree.join(".config");
    (dir.ends_with("arch/x86/boot") && dot_config.is_file()).then_some(dot_config)
}

/// Where the modules of `release` are under `dir`: `dir/lib/modules/<release>`
/// (`make modules_install INSTALL_MOD_PATH=dir`, or an unpacked package),
/// `dir/usr/lib/modules/<release>`, `dir/<release>`, or `dir` itself when it
/// holds `modules.dep` or `kernel/`.
pub fn modules_root(dir: &Path, release: &str) -> anyhow::Result<PathBuf> {
    if !dir.is_dir() {
        bail!("--modules {}: not a directory", dir.display());
    }
    for candidate in [
        dir.join("lib/modules").join(release),
        dir.join("usr/lib/modules").join(release),
        dir.join(release),
    ] {
        if candidate.is_dir() {
            return Ok(candidate);
        }
    }
    if dir.join("modules.dep").is_file() || dir.join("kernel").is_dir() {
        return Ok(dir.to_path_buf());
    }
    bail!(
        "--modules {}: no modules of {release} (expected lib/modules/{release}/, {release}/, \
         or a directory with modules.dep)",
        dir.display()
    )
}

/// Every regular file under `root` with its path inside the VM,
/// `/lib/modules/<release>/<relative path>` (symbolic links such as `build`
/// and `source` point into the build tree and are left out).
pub fn module_files(root: &Path, release: &str) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let mut files = Vec::new();
    for rel in super::initramfs::walk(root)? {
        let path = root.join(&rel);
        let meta =
            std::fs::symlink_metadata(&path).with_context(|| format!("stat {}", path.display()))?;
        if meta.is_file() {
            files.push((path, format!("/lib/modules/{release}/{}", rel.display())));
        }
    }
    if files.is_empty() {
        bail!("--modules: {} holds no files", root.display());
    }
    Ok(files)
}

/// A `--kernel-image` ready to boot, and the files its overlay adds.
pub struct Image {
    pub kernel: Kernel,
    /// (source, path in the VM): the config and the modules.
    pub overlay: Vec<(PathBuf, String)>,
}

impl Image {
    /// "release R, config PATH, N module files", for the log.
    pub fn describe(&self) -> String {
        let config = self.kernel.config.as_deref();
        format!(
            "release {}, config {}, {} module files",
            self.kernel.info.version,
            config.map_or_else(|| "not found".to_string(), |c| c.display().to_string()),
            self.overlay.len() - usize::from(config.is_some())
        )
    }
}

/// Reads and checks the image, finds its config, lists its modules.
pub fn prepare(image: &Path, modules: Option<&Path>) -> anyhow::Result<Image> {
    let bytes =
        std::fs::read(image).with_context(|| format!("--kernel-image {}", image.display()))?;
    let release =
        bzimage_release(&bytes).with_context(|| format!("--kernel-image {}", image.display()))?;
    let config = find_config(image, &release);
    let mut overlay = Vec::new();
    if let Some(c) = &config {
        overlay.push((c.clone(), format!("/boot/config-{release}")));
    }
    if let Some(dir) = modules {
        overlay.extend(module_files(&modules_root(dir, &release)?, &release)?);
    }
    let sha256 = sha256_file(image)?;
    Ok(Image {
        kernel: Kernel {
            vmlinuz: image.to_path_buf(),
            info: KernelInfo {
                package: image.display().to_string(),
                version: release.clone(),
                sha256,
            },
            config,
        },
        overlay,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A setup header of boot protocol 2.15 naming `version` at 0x3000.
    fn bzimage(version: &str) -> Vec<u8> {
        let mut b = vec![0u8; 0x3100];
        b[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
        b[HDRS_AT..HDRS_AT + 4].copy_from_slice(b"HdrS");
        b[PROTOCOL_AT..PROTOCOL_AT + 2].copy_from_slice(&0x020fu16.to_le_bytes());
        b[KERNEL_VERSION_AT..KERNEL_VERSION_AT + 2]
            .copy_from_slice(&(0x3000u16 - 0x200).to_le_bytes());
        b[0x3000..0x3000 + version.len()].copy_from_slice(version.as_bytes());
        b
    }

    #[test]
    fn release_comes_from_the_setup_header() {
        let b =
            bzimage("6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC");
        assert_eq!(
            bzimage_release(&b).expect("release"),
            "6.1.0-56-cloud-amd64"
        );
        assert_eq!(
            bzimage_release(&bzimage("7.2.0-rc3+ (me@box) #4")).expect("release"),
            "7.2.0-rc3+"
        );
    }

    #[test]
    fn non_images_are_refused_with_the_reason() {
        let err = |b: &[u8]| format!("{:#}", bzimage_release(b).expect_err("refused"));
        assert!(err(b"\x7fELF\x02\x01\x01").contains("ELF file (vmlinux?)"));
        assert!(err(b"#!/bin/sh\n").contains("not an x86 bzImage"));
        assert!(err(&[]).contains("not an x86 bzImage"));
        let mut old = bzimage("6.1.0 x");
        old[PROTOCOL_AT..PROTOCOL_AT + 2].copy_from_slice(&0x0104u16.to_le_bytes());
        assert!(err(&old).contains("too old"));
        let mut none = bzimage("6.1.0 x");
        none[KERNEL_VERSION_AT..KERNEL_VERSION_AT + 2].copy_from_slice(&[0, 0]);
        assert!(err(&none).contains("no kernel version string"));
        let mut past = bzimage("6.1.0 x");
        past[KERNEL_VERSION_AT..KERNEL_VERSION_AT + 2].copy_from_slice(&0xff00u16.to_le_bytes());
        assert!(err(&past).contains("past the end"));
        assert!(err(&bzimage(" ")).contains("does not start with a release"));
        let mut truncated = bzimage("6.1.0 x");
        truncated.truncate(PROTOCOL_AT + 1);
        assert!(err(&truncated).contains("truncated"));
    }

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-image-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        dir
    }

    #[test]
    fn config_is_found_beside_the_image_or_in_the_tree() {
        let root = tmp("config");
        // An unpacked Debian package: boot/vmlinuz-R and boot/config-R.
        std::fs::create_dir_all(root.join("pkg/boot")).expect("mkdir");
        let image = root.join("pkg/boot/vmlinuz-6.1.0-56-cloud-amd64");
        std::fs::write(&image, b"k").expect("write");
        assert_eq!(find_config(&image, "6.1.0-56-cloud-amd64"), None);
        std::fs::write(root.join("pkg/boot/config-6.1.0-56-cloud-amd64"), b"").expect("write");
        assert_eq!(
            find_config(&image, "6.1.0-56-cloud-amd64"),
            Some(root.join("pkg/boot/config-6.1.0-56-cloud-amd64"))
        );
        // A kernel tree: arch/x86/boot/bzImage and .config.
        std::fs::create_dir_all(root.join("linux/arch/x86/boot")).expect("mkdir");
        let bz = root.join("linux/arch/x86/boot/bzImage");
        std::fs::write(&bz, b"k").expect("write");
        assert_eq!(find_config(&bz, "7.2.0"), None);
        std::fs::write(root.join("linux/.config"), b"CONFIG_BPF=y\n").expect("write");
        assert_eq!(find_config(&bz, "7.2.0"), Some(root.join("linux/.config")));
        // A .config three levels up of some other directory does not count.
        std::fs::create_dir_all(root.join("a/b/c")).expect("mkdir");
        std::fs::write(root.join(".config"), b"").expect("write");
        assert_eq!(find_config(&root.join("a/b/c/bzImage"), "7.2.0"), None);
        std::fs::remove_dir_all(&root).expect("cleanup");
    }

    #[test]
    fn modules_dir_in_every_usual_layout() {
        let root = tmp("modules");
        let r = "7.2.0-test";
        assert!(format!(
            "{:#}",
            modules_root(&root.join("missing"), r).expect_err("no dir")
        )
        .contains("not a directory"));
        let e = format!("{:#}", modules_root(&root, r).expect_err("empty"));
        assert!(e.contains("no modules of 7.2.0-test"), "{e}");
        // INSTALL_MOD_PATH layout.
        let installed = root.join("lib/modules").join(r);
        std::fs::create_dir_all(installed.join("kernel/net")).expect("mkdir");
        assert_eq!(modules_root(&root, r).expect("found"), installed);
        // The release directory itself.
        assert_eq!(modules_root(&installed, r).expect("found"), installed);
        // The parent of release directories (/lib/modules).
        assert_eq!(
            modules_root(&root.join("lib/modules"), r).expect("found"),
            installed
        );
        // A release directory with only modules.dep.
        let flat = root.join("flat");
        std::fs::create_dir_all(&flat).expect("mkdir");
        std::fs::write(flat.join("modules.dep"), b"").expect("write");
        assert_eq!(modules_root(&flat, r).expect("found"), flat);
        std::fs::remove_dir_all(&root).expect("cleanup");
    }

    #[test]
    fn module_files_keep_relative_paths_and_skip_links() {
        let root = tmp("files");
        std::fs::create_dir_all(root.join("kernel/net")).expect("mkdir");
        std::fs::write(root.join("kernel/net/dummy.ko.xz"), b"m").expect("write");
        std::fs::write(root.join("modules.dep"), b"").expect("write");
        std::os::unix::fs::symlink("/nonexistent/tree", root.join("build")).expect("symlink");
        let files = module_files(&root, "6.1.0-x").expect("files");
        let inside: Vec<&str> = files.iter().map(|(_, p)| p.as_str()).collect();
        assert_eq!(
            inside,
            [
                "/lib/modules/6.1.0-x/kernel/net/dummy.ko.xz",
                "/lib/modules/6.1.0-x/modules.dep"
            ]
        );
        assert_eq!(files[1].0, root.join("modules.dep"));
        let empty = root.join("kernel/empty");
        std::fs::create_dir_all(&empty).expect("mkdir");
        assert!(module_files(&empty, "6.1.0-x").is_err());
        std::fs::remove_dir_all(&root).expect("cleanup");
    }

    #[test]
    fn prepare_reads_release_config_modules_and_checksum() {
        let root = tmp("prepare");
        std::fs::create_dir_all(root.join("boot")).expect("mkdir");
        let image = root.join("boot/vmlinuz-6.1.0-9-test");
        std::fs::write(&image, bzimage("6.1.0-9-test (x) #1")).expect("write");
        std::fs::write(root.join("boot/config-6.1.0-9-test"), b"CONFIG_X=y\n").expect("write");
        let mods = root.join("lib/modules/6.1.0-9-test");
        std::fs::create_dir_all(&mods).expect("mkdir");
        std::fs::write(mods.join("modules.dep"), b"").expect("write");
        let img = prepare(&image, Some(&root)).expect("prepared");
        assert_eq!(img.kernel.info.version, "6.1.0-9-test");
        assert_eq!(img.kernel.info.package, image.display().to_string());
        assert_eq!(img.kernel.info.sha256.len(), 64);
        assert_eq!(img.kernel.vmlinuz, image);
        assert_eq!(
            img.overlay,
            vec![
                (
                    root.join("boot/config-6.1.0-9-test"),
                    "/boot/config-6.1.0-9-test".to_string()
                ),
                (
                    mods.join("modules.dep"),
                    "/lib/modules/6.1.0-9-test/modules.dep".to_string()
                ),
            ]
        );
        assert_eq!(
            img.describe(),
            format!(
                "release 6.1.0-9-test, config {}, 1 module files",
                root.join("boot/config-6.1.0-9-test").display()
            )
        );
        // Without modules: the config alone. Not an image: one error naming the file.
        assert_eq!(prepare(&image, None).expect("prepared").overlay.len(), 1);
        let text = root.join("notes.txt");
        std::fs::write(&text, b"hello").expect("write");
        let e = format!("{:#}", prepare(&text, None).err().expect("refused"));
        assert!(
            e.starts_with(&format!(
                "--kernel-image {}: not an x86 bzImage",
                text.display()
            )),
            "{e}"
        );
        let e = format!(
            "{:#}",
            prepare(&root.join("none"), None).err().expect("refused")
        );
        assert!(
            e.contains("--kernel-image") && e.contains("No such file"),
            "{e}"
        );
        std::fs::remove_dir_all(&root).expect("cleanup");
    }
}
