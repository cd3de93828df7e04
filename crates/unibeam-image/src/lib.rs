//! Turns an Erlang/Elixir release into a bootable microVM image: a kernel,
//! an initramfs and an `image.json` manifest.

pub mod deb;
pub mod elf;
pub mod image;
pub mod initramfs;
pub mod kernel;
pub mod modules;
pub mod release;

pub use image::{build_image, BuildError, BuildOptions, ImageManifest, MANIFEST_FILE};
pub use release::Release;
