//! The gallery's files: thumbnails, made once per image and cached by blob hash in `.wanx/thumbs/`
//! (the `image` crate decodes and scales), and the static page `wanx gallery` writes, a folder that
//! holds everything it shows (`index.html`, `thumbs/HASH.jpg`, `images/HASH.EXT`) so it opens from a
//! file and from a CI artifact, with no network.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::build::Project;
use crate::cli::GalleryArgs;
use crate::error::{Error, Result};
use crate::gallery::{self, Gallery, Image};
use crate::par::par_map;
use crate::term::printer::Printer;

/// A thumbnail's longer side, in pixels (cards are at most ~320 CSS pixels wide; twice that stays
/// sharp on a high-density screen).
pub const THUMB_SIDE: u32 = 640;
/// JPEG quality of thumbnails.
const THUMB_QUALITY: u8 = 82;

/// `wanx gallery`: gathers the gallery (sending nothing) and writes it as a static page.
pub fn gallery(dir: Option<&Path>, args: &GalleryArgs, printer: &Printer) -> Result<()> {
    let started = std::time::Instant::now();
    let project = Project::load(dir, printer)?;
    let collected = gallery::collect(&project, &args.selection, &std::collections::HashMap::new())?;
    let html = crate::gallery::page::page(&collected, false);
    let out = match &args.out {
        // Relative to `-C DIR` when given, as every path on the command line is.
        Some(out) => std::path::absolute(dir.map_or_else(|| out.clone(), |d| d.join(out)))
            .map_err(|e| Error::io("could not resolve", out, e))?,
        None => project.manifest.state_dir().join("gallery"),
    };
    let written = write_static(&collected, &html, &out, &project.manifest.state_dir())?;
    printer.status(
        "Gallery",
        &format!(
            "{} task{}, {} image{} ({} new thumbnail{}) in {} ms",
            collected.cards.len(),
            plural(collected.cards.len()),
            written.images,
            plural(written.images),
            written.thumbnails_made,
            plural(written.thumbnails_made),
            started.elapsed().as_millis()
        ),
    );
    // The page's path goes to stdout, for scripts (`xdg-open "$(wanx gallery)"`).
    printer.data(&written.index.display().to_string());
    Ok(())
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The folder of cached thumbnails under the state dir.
pub fn thumbs_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("thumbs")
}

/// The cached thumbnail of `image`, made now if missing.
pub fn thumbnail(cache: &Path, image: &Image) -> io::Result<PathBuf> {
    let path = cache.join(format!("{}.jpg", image.hash));
    if path.is_file() {
        return Ok(path);
    }
    fs::create_dir_all(cache)?;
    let decoded = image::ImageReader::open(&image.source)?
        .with_guessed_format()?
        .decode()
        .map_err(io::Error::other)?;
    let small = if decoded.width().max(decoded.height()) > THUMB_SIDE {
        decoded.thumbnail(THUMB_SIDE, THUMB_SIDE)
    } else {
        decoded
    };
    let rgb = small.to_rgb8();
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, THUMB_QUALITY)
        .encode_image(&rgb)
        .map_err(io::Error::other)?;
    // Written whole, then renamed: a thumbnail is never seen half-written.
    let tmp = tempfile::NamedTempFile::new_in(cache)?;
    fs::write(tmp.path(), &bytes)?;
    tmp.persist(&path).map_err(|e| e.error)?;
    Ok(path)
}

/// What `wanx gallery` wrote.
#[derive(Debug, Default)]
pub struct Written {
    pub index: PathBuf,
    pub images: usize,
    pub thumbnails_made: usize,
}

/// Writes the static gallery into `out`: thumbnails (from the cache, made where missing), full-size
/// images, then `index.html`.
pub fn write_static(
    gallery: &Gallery,
    html: &str,
    out: &Path,
    state_dir: &Path,
) -> Result<Written> {
    let cache = thumbs_dir(state_dir);
    for sub in ["thumbs", "images"] {
        let dir = out.join(sub);
        fs::create_dir_all(&dir).map_err(|e| Error::io("could not create", &dir, e))?;
    }
    let mut seen = HashSet::new();
    let all: Vec<&Image> = gallery
        .images()
        .filter(|i| seen.insert(i.hash.clone()))
        .collect();
    let made = par_map(all.clone(), |image| -> Result<bool> {
        let fresh = !cache.join(format!("{}.jpg", image.hash)).is_file();
        let thumb = thumbnail(&cache, image)
            .map_err(|e| Error::io("could not make a thumbnail of", &image.source, e))?;
        place(
            &thumb,
            &out.join("thumbs").join(format!("{}.jpg", image.hash)),
            true,
        )?;
        // A copy, never a link: an edit in the gallery folder must not reach the blob store.
        place(
            &image.source,
            &out.join("images")
                .join(format!("{}.{}", image.hash, image.ext)),
            false,
        )?;
        Ok(fresh)
    });
    let mut thumbnails_made = 0;
    for m in made {
        thumbnails_made += usize::from(m?);
    }
    let index = out.join("index.html");
    let tmp =
        tempfile::NamedTempFile::new_in(out).map_err(|e| Error::io("could not write", out, e))?;
    fs::write(tmp.path(), html).map_err(|e| Error::io("could not write", tmp.path(), e))?;
    tmp.persist(&index)
        .map_err(|e| Error::io("could not write", &index, e.error))?;
    Ok(Written {
        index,
        images: all.len(),
        thumbnails_made,
    })
}

/// Puts `from` at `to` (named by its hash, so one already there is the same), as a hard link when
/// `link` and the filesystem allow, else as a copy.
fn place(from: &Path, to: &Path, link: bool) -> Result<()> {
    if to.is_file() {
        return Ok(());
    }
    if link && fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| Error::io("could not copy", from, e))
}
