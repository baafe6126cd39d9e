//! Test support for moonboot: builders of the stand-in Talos release and extension images
//! (test fixtures, never shipped) and helpers shared by the integration and end-to-end tests.
//!
//! - [`zboot`]: write and read EFI zboot kernels (the arm64 `vmlinuz` of Talos ≥ 1.8);
//! - [`oci`]: reproducible OCI image layouts; [`registry`]: a tiny distribution-API client;
//!   [`private_registry`]: a `docker-registry` of a test's own on a kernel-chosen loopback port;
//! - [`pull_through`]: a fleet of agents through a `docker-registry` pull-through cache, with the
//!   bytes it fetched from upstream;
//! - [`cpio`]: a newc reader; [`kmod`]: kernel module dependencies from `.modinfo`;
//! - [`extensions`]: the stand-in spin and tailscale extension images;
//! - [`bundles`]: the extensions and overlays bundle images and the stand-in overlay image, and
//!   helpers that push bundles with any content;
//! - [`build`]: what `scripts/fixtures` runs (`cargo run -p moonboot-tests --bin fixtures`);
//! - [`fixtures`]: `target/fixtures/fixtures.json`, read by the tests;
//! - [`realistic`]: realistic-size extension and imager images for `scripts/bench-imager
//!   --realistic` (real arm64 programs from Debian packages);
//! - [`qemu`]: boot a guest and wait for console marker lines;
//! - [`matchbox`]: a matchbox-compatible HTTP test server (the netboot test's iPXE chain);
//! - [`stage1`]: the static `talos-agent` and the first-stage initramfs of the kexec tests;
//! - [`whiteout`]: imager images whose top layer deletes or replaces the kernel;
//! - [`ec2`]: the EC2 path end to end (user-data, cloud-init, IMDSv2, the bastion's registry);
//! - [`imds`]: an EC2 instance metadata service (IMDSv2) test server;
//! - [`netns`]: network namespaces with no route out, for tests that use real addresses;
//! - [`cloud_guest`]: the cached Debian 12 arm64 cloud guest (cloud-init, Ec2 datasource).
#![deny(missing_docs)]

pub mod build;
pub mod bundles;
pub mod cloud_guest;
pub mod cpio;
pub mod demo;
pub mod ec2;
pub mod extensions;
pub mod faulty;
pub mod fixtures;
pub mod imds;
pub mod kmod;
pub mod matchbox;
pub mod netns;
pub mod oci;
pub mod private_registry;
pub mod pull_through;
pub mod qemu;
pub mod realistic;
pub mod registry;
pub mod rpi;
pub mod stage1;
pub mod whiteout;
pub mod zboot;
