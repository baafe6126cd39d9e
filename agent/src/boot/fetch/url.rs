//! Kernel and initramfs by plain URL with sha256 sums (`--kernel`/`--initrd`).

use std::io::Write;
use std::time::{Duration, Instant};

use boot_artifact::digest::{HashingWriter, Sha256Digest};

use super::image::loadable_kernel;
use super::{memfd, BlobReport, Error, Fetched, Kind, Memfile, MAX_INITRAMFS_SIZE, MAX_KERNEL_SIZE};

/// Downloads `url` into a memfd, verifying sha256 and bounding the size; retries transient failures
/// (connection errors, 5xx) from the start with backoff.
async fn fetch_url(
    client: &reqwest::Client,
    url: &str,
    expected: Sha256Digest,
    limit: u64,
    retries: u32,
) -> Result<(Memfile, BlobReport), Error> {
    use futures_util::StreamExt;
    let err = |reason: String| Error::Url { url: url.to_string(), reason };
    let start = Instant::now();
    let mut attempt = 0;
    loop {
        let mut file = memfd("url")?;
        let outcome: Result<(u64, Sha256Digest), (bool, String)> = async {
            let resp = client.get(url).send().await.map_err(|e| (true, e.to_string()))?;
            let status = resp.status();
            if !status.is_success() {
                return Err((status.is_server_error() || status.as_u16() == 429, format!("HTTP {status}")));
            }
            let mut hashing = HashingWriter::new(&mut file);
            let mut n = 0u64;
            let mut stream = resp.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| (true, format!("transfer interrupted after {n} bytes: {e}")))?;
                n += chunk.len() as u64;
                if n > limit {
                    return Err((false, format!("larger than the {limit}-byte limit")));
                }
                hashing.write_all(&chunk).map_err(|e| (false, format!("memfd: {e}")))?;
            }
            Ok((n, hashing.digest()))
        }
        .await;
        match outcome {
            Ok((len, actual)) => {
                if actual != expected {
                    return Err(Error::UrlDigest { url: url.to_string(), expected, actual });
                }
                let report = BlobReport {
                    digest: actual.to_string(),
                    size: len,
                    media_type: "url".into(),
                    seconds: start.elapsed().as_secs_f64(),
                };
                crate::boot::log(&format!("fetched {url} ({:.1} MiB, verified)", len as f64 / (1 << 20) as f64));
                return Ok((Memfile { file, len, sha256: actual }, report));
            }
            Err((true, reason)) if attempt < retries => {
                crate::boot::log(&format!("{url}: {reason}; retrying"));
                tokio::time::sleep(Duration::from_millis(200) * (1 << attempt.min(4))).await;
                attempt += 1;
            }
            Err((_, reason)) => return Err(err(reason)),
        }
    }
}

/// Fetches kernel and initramfs by URL, in parallel.
pub async fn fetch_urls(
    kernel_url: &str,
    kernel_sha256: Sha256Digest,
    initrd_url: &str,
    initrd_sha256: Sha256Digest,
    arch: &str,
    retries: u32,
) -> Result<Fetched, Error> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .read_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| Error::Url { url: kernel_url.into(), reason: e.to_string() })?;
    let (k, i) = futures_util::future::try_join(
        fetch_url(&client, kernel_url, kernel_sha256, MAX_KERNEL_SIZE, retries),
        fetch_url(&client, initrd_url, initrd_sha256, MAX_INITRAMFS_SIZE, retries),
    )
    .await?;
    let (kernel, container) = loadable_kernel(k.0, arch)?;
    Ok(Fetched {
        kind: Kind::Urls,
        resolved: None,
        kernel,
        kernel_container: container,
        initramfs: i.0,
        cmdline: None,
        blobs: vec![k.1, i.1],
    })
}
