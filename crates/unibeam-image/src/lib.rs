//! Turns an Erlang/Elixir release into a bootable microVM image: a kernel,
//! a layered initramfs and an `image.json` manifest.

// Only a test's allocator counts allocations with unsafe code.
#![cfg_attr(not(test), forbid(unsafe_code))]

pub mod beam;
pub mod bootfiles;
pub mod content;
pub mod deb;
pub mod elf;
pub mod erlfiles;
pub mod image;
pub mod initramfs;
pub mod input;
pub mod kbuild;
pub mod kernel;
pub mod kimage;
pub mod kpatch;
pub mod layers;
pub mod manifest;
pub mod modules;
pub mod relcheck;
pub mod release;
pub mod shell;
pub mod strip;
pub mod verify;

pub use image::{build_image, BuildError, BuildOptions};
pub use input::{resolve as resolve_input, InputError, ResolvedInput, Selector};
pub use kernel::KernelChoice;
pub use kimage::KernelOrigin;
pub use layers::{Compression, LayerName};
pub use manifest::{append_config_layer, unpack_layers, ImageManifest, MANIFEST_FILE};
pub use release::Release;
