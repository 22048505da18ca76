//! Downloads a task's result images into the blob store, verified and bounded in size.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::shared::Shared;
use crate::executor::dashscope::{Client, ProviderError};
use crate::store::StoredImage;
use crate::tree::output_name;

/// The largest image wanx accepts from a result URL.
pub(super) const MAX_IMAGE_BYTES: u64 = 64 * 1024 * 1024;

/// Downloads every successful result into the blob store, except those `saved` already holds (by
/// result index, with their blob intact). Returns the images by result index (`None` for a failed
/// result or a failed download) and the first error, after trying every image.
pub(super) async fn download_all(
    shared: &Arc<Shared>,
    client: &Client,
    results: &[crate::executor::dashscope::TaskResult],
    saved: &[Option<StoredImage>],
    deadline: Instant,
) -> (Vec<Option<StoredImage>>, Result<(), String>) {
    let mut images = Vec::new();
    let mut first_error = Ok(());
    for (index, result) in results.iter().enumerate() {
        let Some(url) = &result.url else {
            images.push(None);
            continue;
        };
        if let Some(Some(image)) = saved.get(index)
            && shared.exec.blobs.contains(&image.blake3)
        {
            images.push(Some(image.clone()));
            continue;
        }
        match download_one(shared, client, url, deadline).await {
            Ok((blake3, size)) => images.push(Some(StoredImage {
                blake3,
                size,
                actual_prompt: result.actual_prompt.clone(),
                seed: None,
                paid_at: Some(output_name::now_unix()),
            })),
            Err(e) => {
                images.push(None);
                if first_error.is_ok() {
                    first_error = Err(format!("image {}: {e}", index + 1));
                }
            }
        }
    }
    (images, first_error)
}

pub(super) async fn download_one(
    shared: &Arc<Shared>,
    client: &Client,
    url: &str,
    deadline: Instant,
) -> Result<(String, u64), String> {
    let tmp_dir = shared
        .exec
        .blobs
        .tmp_dir()
        .map_err(|e| format!("could not create the cache's temp directory: {e}"))?;
    let tmp = tempfile::Builder::new()
        .prefix("download-")
        .tempfile_in(&tmp_dir)
        .map_err(|e| format!("could not create a temp file: {e}"))?
        .into_temp_path();
    let mut last = String::new();
    for attempt in 0..3 {
        match client
            .download_until(url, &tmp, MAX_IMAGE_BYTES, deadline)
            .await
        {
            // A body cut short still starts with the magic: never cache it, fetch it again.
            Ok(_) if !crate::executor::image_check::is_complete(&tmp) => {
                last = crate::executor::image_check::describe_download(&tmp);
                tokio::time::sleep(Duration::from_millis(300 << attempt)).await;
            }
            Ok(_) => {
                last.clear();
                break;
            }
            Err(ProviderError::Transient { code, message }) => {
                last = format!("{code}: {message}");
                tokio::time::sleep(Duration::from_millis(300 << attempt)).await;
            }
            Err(e) => return Err(format!("download failed: {e}")),
        }
    }
    if !last.is_empty() {
        return Err(format!("download failed: {last}"));
    }
    let blobs = Arc::clone(&shared.exec.blobs);
    let path = tmp.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let stored = blobs
            .insert_file(&path)
            .map_err(|e| format!("could not store the image: {e}"))?;
        drop(tmp);
        Ok(stored)
    })
    .await
    .unwrap_or_else(|e| panic!("storing a download panicked: {e}"))
}
